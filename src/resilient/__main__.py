"""``python -m resilient``: operator commands.

``python -m resilient config [NAME ...]`` prints the effective configuration of named policies
(each field's value and whether it came from the environment, the code or the library's
defaults) as an aligned table, or as JSON with ``--json``; exit code 2 and the
:class:`~resilient.ConfigError` message when the configuration is bad, so a deployment can run
it as a pre-flight check. Without a NAME it lists the names found in the environment (and
checks every variable of each). ``python -m resilient dashboard`` prints a Grafana dashboard
for the library's metrics (``_dashboard.py``). ``python -m resilient health --app module:attr``
imports the application's module (which creates its named policies) and prints
``registry.health()`` as JSON; exit code 1 while a breaker is open, so it can serve as a
liveness or readiness probe script.

Subcommands register in :data:`COMMANDS` (built in) and :data:`PLUGINS` (modules imported
lazily, each exposing ``add_parser(subparsers)``; a missing module is skipped). Every
subcommand's parser sets ``func=run`` with ``run(args: argparse.Namespace) -> int`` (or the
plugin module exposes ``run(args)`` and ``add_parser`` returns its parser), e.g.::

    def add_parser(subparsers):
        parser = subparsers.add_parser("saga", help="...")
        parser.set_defaults(func=run)
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import _config_render, _dashboard, config
from ._registry import Registry, registry
from .errors import ConfigError

__all__ = ["COMMANDS", "PLUGINS", "main"]

# argparse's subparsers object has a private generic type; Any keeps the plugin API simple.
AddParser = Callable[[Any], argparse.ArgumentParser]
Run = Callable[[argparse.Namespace], int]

EXIT_OK = 0
EXIT_DEGRADED = 1
EXIT_CONFIG = 2


# -- config ------------------------------------------------------------------------------------
def _add_config_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "config",
        help="show the effective configuration of named policies",
        description=(
            "Show each field of the named policies with its value and where it came from "
            "(env, code, default). Without NAME, list the names found in RESILIENT__<NAME>__* "
            "variables. Exit code 2 when the configuration is bad."
        ),
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="policy names to show")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--kind",
        action="append",
        default=[],
        metavar="KIND",
        help="show this policy kind (repeatable; default: the kinds configured for the name, "
        "or all kinds when none is)",
    )
    parser.add_argument(
        "--import",
        dest="imports",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first, so policies it registers show their code defaults",
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="print the Markdown reference of every variable (docs/configuration.md)",
    )
    return parser


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines)


def _registered(reg: Registry) -> dict[str, tuple[str, set[str]]]:
    """``{env key: (name as registered, kinds)}`` of the registry's policies."""
    found: dict[str, tuple[str, set[str]]] = {}
    for pol in reg:
        key = config.env_key(pol.name)
        found.setdefault(key, (pol.name, set()))[1].add(pol.kind)
    return found


def _list_names(args: argparse.Namespace, reg: Registry) -> int:
    in_env = config.names_in_environment()
    registered = _registered(reg)
    names: dict[str, tuple[str, set[str]]] = {}
    for key, env_kinds in in_env.items():
        names[key] = (key, set(env_kinds))
    for key, (name, kinds) in registered.items():
        names[key] = (name, names.get(key, (name, set()))[1] | kinds)
    problems = _malformed_variables()
    for name, _ in names.values():
        _resolve_name(name, args, reg, problems)  # values too: a pre-flight check of it all
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_CONFIG
    order = list(config.policy_classes())
    rows = [
        (name, sorted(kinds, key=lambda k: order.index(k) if k in order else len(order)))
        for _, (name, kinds) in sorted(names.items())
    ]
    if args.json:
        doc = {"names": [{"name": n, "policies": k} for n, k in rows]}
        print(json.dumps(doc, indent=2))
    elif rows:
        print(_table(("NAME", "POLICIES"), [(n, ", ".join(k)) for n, k in rows]))
    else:
        print("no RESILIENT__<NAME>__<POLICY>__<FIELD> variables are set")
    return EXIT_OK


def _malformed_variables() -> list[str]:
    prefix = config.ENV_PREFIX + "__"
    bad = []
    for var in sorted(os.environ):
        if var.startswith(prefix) and len(var[len(prefix) :].split("__")) < 3:
            bad.append(
                f"{var}={os.environ[var]!r}: expected the shape {prefix}<NAME>__<POLICY>__<FIELD>"
            )
    return bad


def _kinds_for(name: str, args: argparse.Namespace, reg: Registry) -> list[str]:
    classes = config.policy_classes()
    if args.kind:
        for kind in args.kind:
            config.policy_class(kind)  # ValueError with "did you mean"
        wanted = set(args.kind)
    else:
        key = config.env_key(name)
        wanted = set(config.names_in_environment().get(key, []))
        wanted |= {p.kind for p in reg if config.env_key(p.name) == key}
        wanted &= set(classes)
        if not wanted:
            wanted = set(classes)
    return [kind for kind in classes if kind in wanted]


def _resolve_name(
    name: str,
    args: argparse.Namespace,
    reg: Registry,
    problems: list[str],
    needs_code: dict[tuple[str, str], str] | None = None,
) -> list[config.ResolvedPolicy]:
    """Resolve (and, when complete, build) every shown policy of ``name``, collecting every
    problem into ``problems`` so one run reports them all.

    A kind that cannot be built from the environment alone (a Fallback needs its value or
    handler, a Timeout its seconds, from code) is not a configuration error: its reason goes
    into ``needs_code`` and it is shown as such."""
    try:
        config.check_environment(name)
    except ConfigError as exc:
        problems.append(str(exc))
        return []
    resolved = []
    for kind in _kinds_for(name, args, reg):
        cls = config.policy_class(kind)
        try:
            res = config.resolve(cls, name, reg.code_defaults(name, kind))
            if res.enabled and res.missing and needs_code is not None:
                missing = ", ".join(f.name for f in res.missing)
                needs_code[name, kind] = f"needs {missing} (from code or the environment)"
            elif res.enabled:
                config.construct(res)  # the constructor's own checks, with variable names
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        except (TypeError, ValueError) as exc:
            # refused although nothing came from the environment: only code can supply it
            if needs_code is None:
                raise
            needs_code[name, kind] = f"needs code: {exc}"
        resolved.append(res)
    return resolved


def _show(args: argparse.Namespace, reg: Registry) -> int:
    all_resolved: list[config.ResolvedPolicy] = []
    problems: list[str] = []
    needs_code: dict[tuple[str, str], str] = {}
    for name in args.names:
        all_resolved.extend(_resolve_name(name, args, reg, problems, needs_code))
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_CONFIG
    if args.json:
        doc = {
            "policies": [
                {
                    "name": res.name,
                    "kind": res.kind,
                    "enabled": res.enabled,
                    "needs_code": needs_code.get((res.name, res.kind)),
                    "fields": {
                        fv.name: {
                            "value": _config_render.json_value(fv.value),
                            "source": fv.source,
                            "variable": fv.variable,
                        }
                        for fv in res.fields
                    },
                }
                for res in all_resolved
            ]
        }
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    rows = [
        (res.name, res.kind, fv.name, _config_render.display_value(fv.value), fv.source)
        for res in all_resolved
        for fv in res.fields
    ]
    print(_table(("NAME", "POLICY", "FIELD", "VALUE", "SOURCE"), rows))
    for (name, kind), why in needs_code.items():  # a note for people; stdout stays a table
        print(f"{name} {kind}: not buildable from the environment alone; {why}", file=sys.stderr)
    return EXIT_OK


def _run_config(args: argparse.Namespace) -> int:
    if args.reference:
        print(_config_render.reference_markdown(), end="")
        return EXIT_OK
    for module in args.imports:
        try:
            importlib.import_module(module)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_CONFIG
        except ImportError as exc:
            print(f"--import {module}: {exc}", file=sys.stderr)
            return EXIT_CONFIG
    try:
        if not args.names:
            return _list_names(args, registry)
        return _show(args, registry)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    except ValueError as exc:  # an unknown --kind
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG


# -- health ------------------------------------------------------------------------------------
def _add_health_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "health",
        help="print the health snapshot of the named policies (JSON)",
        description=(
            "Import the application (which creates its named policies) and print "
            "registry.health() as JSON. Exit code 0 when no breaker is open, 1 when one is "
            "(OPEN or FORCED_OPEN), 2 when the application cannot be imported."
        ),
    )
    parser.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="MODULE[:ATTR]",
        help="import MODULE (repeatable); when ATTR names a resilient.Registry, report that "
        "registry instead of the default one (any other ATTR, such as an ASGI app, is only "
        "checked to exist)",
    )
    parser.add_argument(
        "--compact", action="store_true", help="one line of JSON instead of an indented one"
    )
    return parser


def _load_app(spec: str) -> Registry | None:
    """Import ``module[:attr]``; the registry ``attr`` names, if it is one."""
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise ImportError(f"--app {spec!r}: expected MODULE or MODULE:ATTR")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: the app lives where we run
    target: Any = importlib.import_module(module_name)
    for part in attr.split(".") if attr else ():
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ImportError(f"--app {spec!r}: {module_name} has no attribute {attr!r}") from None
    return target if isinstance(target, Registry) else None


def _run_health(args: argparse.Namespace) -> int:
    chosen = registry
    for spec in args.app:
        try:
            found = _load_app(spec)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_CONFIG
        except ImportError as exc:
            print(f"--app {spec}: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        if found is not None:
            chosen = found
    snapshot = chosen.health()
    print(json.dumps(snapshot, indent=None if args.compact else 2))
    return EXIT_DEGRADED if snapshot["open_breakers"] else EXIT_OK


# -- registration ------------------------------------------------------------------------------
COMMANDS: list[tuple[str, AddParser, Run]] = [
    ("config", _add_config_parser, _run_config),
    ("dashboard", _dashboard.add_parser, _dashboard.run),
    ("health", _add_health_parser, _run_health),
]
"""Built-in subcommands: ``(name, add_parser(subparsers) -> parser, run(args) -> int)``."""

PLUGINS: list[str] = ["resilient.saga._cli"]
"""Modules exposing ``add_parser(subparsers)`` (which sets ``func=run`` on its parser),
imported when the CLI starts; one that cannot be imported is left out."""


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m resilient", description="Operator commands for resilient."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for _name, add_parser, run in COMMANDS:
        add_parser(subparsers).set_defaults(func=run)
    for module_name in PLUGINS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        added = module.add_parser(subparsers)
        plugin_run = getattr(module, "run", None)
        # A plugin may expose run(args) and return its parser instead of set_defaults(func=).
        if (
            isinstance(added, argparse.ArgumentParser)
            and added.get_default("func") is None
            and callable(plugin_run)
        ):
            added.set_defaults(func=plugin_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``) and return the exit code:
    0 success, 1 a breaker is open (``health``), 2 bad usage or bad configuration."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2): return, don't exit
        return exc.code if isinstance(exc.code, int) else EXIT_CONFIG
    run: Run | None = getattr(args, "func", None)
    if run is None:  # a plugin subcommand that registered no function to run
        parser.print_help(sys.stderr)
        return EXIT_CONFIG
    try:
        code = run(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away (``... | head``): not an error of ours, and no traceback.
        # Point stdout at devnull so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    return code if isinstance(code, int) else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
