"""Generate the mirrored hot paths of the policies from one template each.

Why generate: a protected call must cost as little as possible, so the per-call code of every
policy is written out in full (no helper frames) for each way it can be entered — the sync
decorator wrapper, the async one, ``_call``/``_acall`` for pipelines and ``call()``, and the
context manager. Written by hand, that is the same admission block five times and a sync and an
async twin of every loop, which drift apart. Here each block is written once, in a template in
``src/resilient/_templates/``, and this script writes the copies into marked regions of the
policy modules (the approach of trio's ``gen_exports`` and of httpcore's ``unasync``).

Template syntax (one directive per line, ``#@`` first on the line after indentation):

``#@ target PATH CLASS``
    Following methods go into the generated region of class ``CLASS`` in ``PATH`` (relative to
    the repository root). A template may have several targets.
``#@ rename old=new ...``
    Identifier renames applied to the sync twin of every ``both`` method of this template
    (``_acall=_call``); ``async``/``await`` are always removed.
``#@ snippet NAME`` ... ``#@ end``
    A block of code to reuse; not emitted by itself. Snippets of ``shared.tmpl`` can be
    inlined by every template.
``#@ inline NAME``
    Replaced by snippet ``NAME``, indented like the directive. Snippets may inline snippets.
``#@ both``
    The next method (an ``async def``) is emitted as written and as its sync twin.
``#@ sync`` / ``#@ async``
    The next method is emitted once, as written.
``#@ if async`` ... ``#@ else`` ... ``#@ endif``
    Lines for one flavour of a ``both`` method only (``else`` is optional).

In the target file the region is delimited by the lines::

    # --- generated from src/resilient/_templates/NAME.tmpl by tools/gen_hotpaths.py ---
    # --- end of generated code ---

(indented like the class body). Usage::

    python tools/gen_hotpaths.py          # rewrite the regions (then ruff-formats the files)
    python tools/gen_hotpaths.py --check  # exit 1 if a region is stale (the test suite runs it)
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
END = "# --- end of generated code ---"


@dataclass
class Method:
    flavour: str  # "both", "sync" or "async"
    lines: list[str]


@dataclass
class Target:
    path: str
    cls: str
    methods: list[Method] = field(default_factory=list)


@dataclass
class Template:
    name: str
    targets: list[Target] = field(default_factory=list)
    renames: dict[str, str] = field(default_factory=dict)
    snippets: dict[str, list[str]] = field(default_factory=dict)


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
            if len(words) != 3:
                raise TemplateError(f"{path}:{i + 1}: target needs PATH CLASS")
            tpl.targets.append(Target(words[1], words[2]))
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


def _expand(lines: list[str], snippets: dict[str, list[str]], depth: int = 0) -> list[str]:
    if depth > 10:
        raise TemplateError("snippets inline each other in a circle")
    out: list[str] = []
    for line in lines:
        words = _directive(line)
        if words and words[0] == "inline":
            indent = line[: len(line) - len(line.lstrip())]
            body = snippets.get(words[1])
            if body is None:
                raise TemplateError(f"unknown snippet {words[1]!r}")
            out.extend(indent + x if x else "" for x in _expand(body, snippets, depth + 1))
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


def render_methods(tpl: Template, target: Target) -> list[str]:
    """The methods of ``target``, ready to indent into the class body."""
    out: list[str] = []
    for method in target.methods:
        body = _expand(method.lines, tpl.snippets)
        flavours = [True, False] if method.flavour == "both" else [method.flavour == "async"]
        for is_async in flavours:
            lines = _flavour(body, is_async)
            if method.flavour == "both" and not is_async:
                lines = _unasync(lines, tpl.renames)
            out.extend(lines)
            out.append("")
    while out and not out[-1]:
        out.pop()
    return out


def _begin(name: str) -> str:
    return f"# --- generated from src/resilient/_templates/{name}.tmpl by tools/gen_hotpaths.py ---"


def apply(text: str, tpl: Template, target: Target) -> str:
    """``text`` with the region of ``target`` replaced by freshly generated methods."""
    lines = text.splitlines()
    begin = _begin(tpl.name)
    class_at = next(
        (n for n, x in enumerate(lines) if re.match(rf"class {target.cls}\b", x)), None
    )
    if class_at is None:
        raise TemplateError(f"{target.path}: no class {target.cls}")
    start = next((n for n in range(class_at, len(lines)) if lines[n].strip() == begin), None)
    if start is None:
        raise TemplateError(f"{target.path}: class {target.cls} has no line {begin!r}")
    end = next((n for n in range(start, len(lines)) if lines[n].strip() == END), None)
    if end is None:
        raise TemplateError(f"{target.path}: the generated region of {target.cls} has no end")
    indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
    body = [indent + x if x else "" for x in render_methods(tpl, target)]
    new = [*lines[: start + 1], *body, lines[end], *lines[end + 1 :]]
    return "\n".join(new) + "\n"


def _ruff() -> str:
    found = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(found).exists():
        raise SystemExit("ruff is needed to format the generated code (pip install ruff)")
    return found


def generate() -> dict[str, str]:
    """Every target file's new content (formatted), by path relative to the root."""
    texts: dict[str, str] = {}
    templates = [parse(path) for path in sorted(TEMPLATES.glob("*.tmpl"))]
    shared = {}
    for tpl in templates:
        if tpl.name == "shared":
            shared = tpl.snippets
    for tpl in templates:
        tpl.snippets = {**shared, **tpl.snippets}
        for target in tpl.targets:
            current = texts.get(target.path)
            if current is None:
                current = (ROOT / target.path).read_text(encoding="utf-8")
            texts[target.path] = apply(current, tpl, target)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for rel, text in texts.items():
            out = Path(tmp) / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
            files.append(str(out))
        subprocess.run(
            [_ruff(), "format", "--quiet", "--config", str(ROOT / "pyproject.toml"), *files],
            check=True,
        )
        return {rel: (Path(tmp) / rel).read_text(encoding="utf-8") for rel in texts}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only check; exit 1 when stale")
    args = ap.parse_args(argv)
    stale = []
    for rel, text in generate().items():
        path = ROOT / rel
        old = path.read_text(encoding="utf-8")
        if old == text:
            continue
        stale.append(rel)
        if args.check:
            diff = difflib.unified_diff(
                old.splitlines(True), text.splitlines(True), f"{rel} (on disk)", f"{rel} (generated)"
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
