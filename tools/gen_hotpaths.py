"""Generate the mirrored hot paths of the policies from one template each.

Why generate: a protected call must cost as little as possible, so the per-call code of every
policy is written out in full (no helper frames) for each way it can be entered — the sync
decorator wrapper, the async one, ``_call``/``_acall`` for pipelines and ``call()``, and the
context manager. Written by hand, that is the same admission block five times and a sync and an
async twin of every loop, which drift apart. Here each block is written once, in a template in
``src/resilient/_templates/``, and this script writes the copies into marked regions of the
policy modules (the approach of trio's ``gen_exports`` and of httpcore's ``unasync``).

The generated functions go into a few generated modules (``src/resilient/_hot_paths.py`` by
default, another one when a template says ``#@ module NAME``), so the copies sit apart from the
policy modules; each target class gets a small generated region that binds them as its methods
(``_acall = _hot_paths.breaker_acall``).

Template syntax (one directive per line, ``#@`` first on the line after indentation):

``#@ target PATH CLASS PREFIX SELF``
    Following methods are methods of class ``CLASS`` in ``PATH`` (relative to the repository
    root); each becomes the function ``PREFIX + method name`` (``breaker`` + ``_acall``) with
    ``self`` typed as the protocol ``SELF`` (the generated module cannot import the policy
    module, which imports it). A template may have several targets.
``#@ module NAME``
    Write this template's functions into ``src/resilient/NAME.py`` instead of ``_hot_paths``
    (a generated module stays under the project's 900-line limit).
``#@ imports`` ... ``#@ end``
    Import lines the template's code needs (merged into the generated module); a line
    ``typing: from x import Y`` goes under ``if TYPE_CHECKING:``.
``#@ code`` ... ``#@ end``
    Module-level code for the generated module, typically the ``SELF`` protocols: what the
    per-call code reads and calls on ``self``. mypy checks that the class satisfies it
    (``src/resilient/_hot_checks.py``, also generated, is never imported: it only exists for
    mypy, which fails when a class does not provide what its per-call code uses).
``#@ rename old=new ...``
    Renames applied to the sync twin of every ``both`` method of this template (``_acall=_call``,
    ``Awaitable[Any]=Any``); ``async``/``await`` are always removed.
``#@ snippet NAME`` ... ``#@ end``
    A block of code to reuse; not emitted by itself. Snippets of
    ``src/resilient/telemetry/per_call.tmpl`` (the telemetry mode check of one call) can be
    inlined by every template.
``#@ inline NAME [slot=SNIPPET ...]``
    Replaced by snippet ``NAME``, indented like the directive. Snippets may inline snippets;
    ``slot=SNIPPET`` makes every ``#@ inline slot`` inside it (at any depth) inline
    ``SNIPPET`` instead (one body, several endings: e.g. how a call is counted on return).
``#@ both``
    The next method (an ``async def``, or a ``def`` building an async closure) is emitted as
    written and as its sync twin.
``#@ sync`` / ``#@ async``
    The next method is emitted once, as written (a ``sync`` method that inlines snippets
    written for async code, such as the telemetry mode check, gets them unasynced with the
    template's renames).
``#@ if async`` / ``#@ if sync`` ... ``#@ else`` ... ``#@ endif``
    Lines for one flavour of a ``both`` method only (``else`` is optional).

In each target file the binding region is delimited by the lines::

    # --- generated from src/resilient/_templates/NAME.tmpl by tools/gen_hotpaths.py ---
    # --- end of generated code ---

(indented like the class body). Usage::

    python tools/gen_hotpaths.py          # rewrite (then ruff-format) the generated code
    python tools/gen_hotpaths.py --check  # exit 1 if anything is stale (the test suite runs it)
"""

from __future__ import annotations

import argparse
import difflib
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "src" / "resilient" / "_templates"
# Snippets any template may inline; the telemetry mode check lives with the telemetry.
SHARED = [ROOT / "src" / "resilient" / "telemetry" / "per_call.tmpl"]
OUTPUT = "src/resilient/_hot_paths.py"
CHECKS = "src/resilient/_hot_checks.py"
PROTOCOLS = "src/resilient/_hot_protocols.py"
END = "# --- end of generated code ---"


@dataclass
class Method:
    flavour: str  # "both", "sync" or "async"
    lines: list[str]


@dataclass
class Target:
    path: str
    cls: str
    prefix: str
    self_type: str
    methods: list[Method] = field(default_factory=list)


@dataclass
class Template:
    name: str
    module: str = "_hot_paths"
    targets: list[Target] = field(default_factory=list)
    renames: dict[str, str] = field(default_factory=dict)
    snippets: dict[str, list[str]] = field(default_factory=dict)
    imports: list[str] = field(default_factory=list)
    code: list[str] = field(default_factory=list)


class TemplateError(Exception):
    pass


def _directive(line: str) -> list[str] | None:
    stripped = line.strip()
    if not stripped.startswith("#@"):
        return None
    return stripped[2:].split()


def _dedent(lines: list[str]) -> list[str]:
    widths = [len(x) - len(x.lstrip()) for x in lines if x.strip()]
    cut = min(widths, default=0)
    return [x[cut:] if x.strip() else "" for x in lines]


def parse(path: Path) -> Template:
    tpl = Template(path.stem)
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    pending: str | None = None
    while i < len(lines):
        line = lines[i]
        words = _directive(line)
        if words and words[0] == "target":
            if len(words) != 5:
                raise TemplateError(f"{path}:{i + 1}: target needs PATH CLASS PREFIX SELF")
            tpl.targets.append(Target(*words[1:5]))
            i += 1
        elif words and words[0] == "code":
            i += 1
            while _directive(lines[i]) != ["end"]:
                tpl.code.append(lines[i])
                i += 1
            i += 1
        elif words and words[0] == "module":
            tpl.module = words[1]
            i += 1
        elif words and words[0] == "imports":
            i += 1
            while _directive(lines[i]) != ["end"]:
                if lines[i].strip():
                    tpl.imports.append(lines[i].strip())
                i += 1
            i += 1
        elif words and words[0] == "rename":
            for pair in words[1:]:
                old, _, new = pair.partition("=")
                tpl.renames[old] = new
            i += 1
        elif words and words[0] == "snippet":
            body = []
            i += 1
            while _directive(lines[i]) != ["end"]:
                body.append(lines[i])
                i += 1
            tpl.snippets[words[1]] = _dedent(body)
            i += 1
        elif words and words[0] in ("both", "sync", "async"):
            pending = words[0]
            i += 1
        elif line.startswith(("def ", "async def ")):
            if pending is None:
                raise TemplateError(f"{path}:{i + 1}: say #@ both, #@ sync or #@ async first")
            if not tpl.targets:
                raise TemplateError(f"{path}:{i + 1}: a method before any #@ target")
            body = [line]
            i += 1
            while i < len(lines) and (
                not lines[i].strip() or lines[i].startswith((" ", "\t", ")"))
            ):
                body.append(lines[i])
                i += 1
            while body and not body[-1].strip():
                body.pop()
            tpl.targets[-1].methods.append(Method(pending, body))
            pending = None
        elif not line.strip() or line.lstrip().startswith("#"):
            i += 1  # comments and blank lines between methods document the template
        else:
            raise TemplateError(f"{path}:{i + 1}: unexpected line {line!r}")
    return tpl


def _expand(
    lines: list[str],
    snippets: dict[str, list[str]],
    depth: int = 0,
    aliases: dict[str, str] | None = None,
) -> list[str]:
    if depth > 10:
        raise TemplateError("snippets inline each other in a circle")
    aliases = aliases or {}
    out: list[str] = []
    for line in lines:
        words = _directive(line)
        if words and words[0] == "inline":
            indent = line[: len(line) - len(line.lstrip())]
            name = aliases.get(words[1], words[1])
            body = snippets.get(name)
            if body is None:
                raise TemplateError(f"unknown snippet {name!r}")
            inner = dict(aliases)
            for pair in words[2:]:
                key, _, value = pair.partition("=")
                inner[key] = value
            expanded = _expand(body, snippets, depth + 1, inner)
            out.extend(indent + x if x else "" for x in expanded)
        else:
            out.append(line)
    return out


def _flavour(lines: list[str], is_async: bool) -> list[str]:
    out: list[str] = []
    keep = [True]
    for line in lines:
        words = _directive(line)
        if words and words[0] == "if":
            keep.append(keep[-1] and (words[1] == "async") == is_async)
        elif words and words[0] == "else":
            parent = keep[-2]
            keep[-1] = parent and not keep[-1]
        elif words and words[0] == "endif":
            keep.pop()
        elif keep[-1]:
            out.append(line)
    if len(keep) != 1:
        raise TemplateError("unbalanced #@ if / #@ endif")
    return out


def _unasync(lines: list[str], renames: dict[str, str]) -> list[str]:
    out = []
    keys = sorted(renames, key=len, reverse=True)
    pattern = (
        re.compile(r"(?<!\w)(" + "|".join(map(re.escape, keys)) + r")(?!\w)") if keys else None
    )
    for line in lines:
        line = line.replace("async def ", "def ").replace("async with ", "with ")
        line = line.replace("async for ", "for ").replace("await ", "")
        if pattern is not None:
            line = pattern.sub(lambda m: renames[m.group(1)], line)
        out.append(line)
    return out


_DEF = re.compile(r"^(async def |def )(\w+)\(")
_SELF = re.compile(r"\bself\b(?=\s*[,)])")


def render_functions(tpl: Template, target: Target) -> list[tuple[str, list[str]]]:
    """``(method name, function lines)`` for every method of ``target``, both flavours."""
    out: list[tuple[str, list[str]]] = []
    for method in target.methods:
        body = _expand(method.lines, tpl.snippets)
        flavours = [True, False] if method.flavour == "both" else [method.flavour == "async"]
        for is_async in flavours:
            lines = _flavour(body, is_async)
            if method.flavour == "both" and not is_async:
                lines = _unasync(lines, tpl.renames)
            elif not is_async and any("await " in line for line in lines):
                lines = _unasync(lines, tpl.renames)  # a sync method inlined async snippets
            match = _DEF.match(lines[0])
            if match is None:
                raise TemplateError(f"{tpl.name}: a method must start with def: {lines[0]!r}")
            name = match.group(2)
            lines[0] = f"{match.group(1)}{target.prefix}{name}(" + lines[0][match.end() :]
            at = next((n for n in range(min(3, len(lines))) if _SELF.search(lines[n])), None)
            if at is None:
                raise TemplateError(f"{tpl.name}: {name} has no self parameter")
            lines[at] = _SELF.sub(f"self: {target.self_type}", lines[at], count=1)
            out.append((name, lines))
    return out


def _begin(name: str) -> str:
    return f"# --- generated from src/resilient/_templates/{name}.tmpl by tools/gen_hotpaths.py ---"


def bind(text: str, tpl: Template, target: Target, names: list[str]) -> str:
    """``text`` with the binding region of ``target`` rewritten for ``names``."""
    lines = text.splitlines()
    begin = _begin(tpl.name)
    class_at = next((n for n, x in enumerate(lines) if re.match(rf"class {target.cls}\b", x)), None)
    if class_at is None:
        raise TemplateError(f"{target.path}: no class {target.cls}")
    start = next((n for n in range(class_at, len(lines)) if lines[n].strip() == begin), None)
    if start is None:
        raise TemplateError(f"{target.path}: class {target.cls} has no line {begin!r}")
    end = next((n for n in range(start, len(lines)) if lines[n].strip() == END), None)
    if end is None:
        raise TemplateError(f"{target.path}: the generated region of {target.cls} has no end")
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    body = [f"{indent}{name} = {tpl.module}.{target.prefix}{name}" for name in names]
    new = [*lines[: start + 1], *body, lines[end], *lines[end + 1 :]]
    return "\n".join(new) + "\n"


_MODULE_DOC = '''"""The policies' per-call code, GENERATED by tools/gen_hotpaths.py: do not edit.

Edit the templates in ``src/resilient/_templates/`` and run ``python tools/gen_hotpaths.py``;
a test fails when this file is stale. Each function is one method of one policy class, bound
there in a generated region (``_acall = _hot_paths.breaker_acall``); why the code is written
out in full, and twice (``def`` and ``async def``), is explained in the generator.
"""

from __future__ import annotations
'''


_PROTOCOLS_DOC = '''"""What each policy's per-call code uses, GENERATED by tools/gen_hotpaths.py.

The ``#@ code`` blocks of the templates in ``src/resilient/_templates/``: one protocol per
policy class, typing ``self`` in the generated functions of ``_hot_paths.py`` (which cannot
import the policy modules, as they import it).
"""

from __future__ import annotations
'''


def _imports(templates: list[Template]) -> tuple[list[str], list[str]]:
    imports: list[str] = []
    checking: list[str] = []
    for tpl in templates:
        for line in tpl.imports:
            if line.startswith("typing:"):
                checking.append(line.removeprefix("typing:").strip())
            else:
                imports.append(line)
    return imports, checking


def _import_block(imports: list[str], checking: list[str]) -> list[str]:
    out = list(dict.fromkeys(imports))
    if checking:
        out.append("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:")
        out.extend("    " + x for x in dict.fromkeys(checking))
    return out


def protocols_text(templates: list[Template]) -> str:
    imports, checking = _imports(templates)
    code = ["\n".join(tpl.code).strip("\n") for tpl in templates if tpl.code]
    names = [target.self_type for tpl in templates for target in tpl.targets]
    out = [_PROTOCOLS_DOC, *_import_block(imports, checking)]
    out.append("\n__all__ = [" + ", ".join(f'"{n}"' for n in sorted(names)) + "]\n")
    out.extend("\n" + block + "\n" for block in code)
    return "\n".join(out) + "\n"


def module_text(templates: list[Template], every: list[Template]) -> str:
    """The generated module holding ``templates``' functions; it may use any template's
    imports (``every``): the unused ones are dropped by ruff afterwards."""
    imports, checking = _imports(every)
    functions: list[str] = []
    exported: list[str] = []
    self_types: list[str] = []
    for tpl in templates:
        for target in tpl.targets:
            self_types.append(target.self_type)
            for name, lines in render_functions(tpl, target):
                exported.append(f"{target.prefix}{name}")
                functions.append("\n".join(lines))
    imports.append(f"from ._hot_protocols import {', '.join(sorted(self_types))}")
    out = [_MODULE_DOC, *_import_block(imports, checking)]
    out.append("\n__all__ = [" + ", ".join(f'"{n}"' for n in sorted(exported)) + "]\n")
    out.extend("\n" + fn + "\n" for fn in functions)
    return "\n".join(out) + "\n"


_CHECKS_DOC = '''"""Type checks of the generated per-call code, GENERATED by tools/gen_hotpaths.py.

Never imported. Each function below hands a policy to the protocol its per-call code in
``_hot_paths.py`` is typed with, so mypy fails when a class stops providing what that code
reads or calls on ``self``.
"""

from __future__ import annotations

from . import _hot_protocols
'''


def checks_text(templates: list[Template]) -> str:
    out = [_CHECKS_DOC]
    checks = []
    for tpl in templates:
        for target in tpl.targets:
            module = target.path.removeprefix("src/resilient/").removesuffix(".py")
            out.append(f"from .{module.replace('/', '.')} import {target.cls}")
            protocol = f"_hot_protocols.{target.self_type}"
            checks.append(
                f"def _{target.prefix}(policy: {target.cls}) -> {protocol}:\n    return policy\n"
            )
    return "\n".join(out) + "\n\n" + "\n\n".join(checks)


def _ruff() -> str:
    found = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(found).exists():
        raise SystemExit("ruff is needed to format the generated code (pip install ruff)")
    return found


def generate() -> dict[str, str]:
    """The generated module's and every target file's new content (formatted), by path
    relative to the root."""
    # policy.tmpl first: its protocols are the bases of the others'
    paths = sorted(TEMPLATES.glob("*.tmpl"), key=lambda p: (p.stem != "policy", p.stem))
    templates = [parse(path) for path in paths]
    shared: dict[str, list[str]] = {}
    for path in sorted(SHARED):
        shared.update(parse(path).snippets)
    texts: dict[str, str] = {}
    for tpl in templates:
        tpl.snippets = {**shared, **tpl.snippets}
        for target in tpl.targets:
            current = texts.get(target.path)
            if current is None:
                current = (ROOT / target.path).read_text(encoding="utf-8")
            names = [name for name, _ in render_functions(tpl, target)]
            texts[target.path] = bind(current, tpl, target, names)
    for module in dict.fromkeys(tpl.module for tpl in templates):
        texts[f"src/resilient/{module}.py"] = module_text(
            [tpl for tpl in templates if tpl.module == module], templates
        )
    texts[PROTOCOLS] = protocols_text(templates)
    texts[CHECKS] = checks_text(templates)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for rel, text in texts.items():
            out = Path(tmp) / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
            files.append(str(out))
        config = ["--config", str(ROOT / "pyproject.toml")]
        generated = [
            str(Path(tmp) / name)
            for name in texts
            if name.startswith("src/resilient/_hot_") or name in (CHECKS, PROTOCOLS)
        ]
        subprocess.run(
            [_ruff(), "check", "--quiet", "--fix", "--select", "I,F401", *config, *generated],
            check=False,
        )
        subprocess.run([_ruff(), "format", "--quiet", *config, *files], check=True)
        return {rel: (Path(tmp) / rel).read_text(encoding="utf-8") for rel in texts}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check; exit 1 when stale")
    args = ap.parse_args(argv)
    stale = []
    for rel, text in generate().items():
        path = ROOT / rel
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        if old == text:
            continue
        stale.append(rel)
        if args.check:
            diff = difflib.unified_diff(
                old.splitlines(True),
                text.splitlines(True),
                f"{rel} (on disk)",
                f"{rel} (generated)",
            )
            sys.stdout.writelines(list(diff)[:80])
        else:
            path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print(f"\nstale generated code in {', '.join(stale)}: run python tools/gen_hotpaths.py")
        return 1
    if not args.check:
        print("regenerated: " + (", ".join(stale) if stale else "nothing changed"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
