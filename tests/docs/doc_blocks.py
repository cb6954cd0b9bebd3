"""Find the ```python blocks of README.md and docs/ and the markers that say how to run them.

The documentation is tested by running its examples (``test_doc_blocks.py``). This module is
the pure half: it reads Markdown and returns :class:`Block` values; it runs nothing.

A block runs unchanged, as a reader would paste it into a file. Two markers, HTML comments on
the line right above the opening fence (invisible on the rendered site and on GitHub), change
that:

``<!-- docs-test: partial: REASON -->``
    the block is deliberately incomplete (it shows a fragment, or needs software that
    ``resilient`` does not install); its test is skipped and pytest's skip summary shows
    REASON next to the block's file and line.

``<!-- docs-test: continue -->``
    the block continues the previous ```python block of the same page: it runs after that
    block (and whatever that one continues), in the same namespace. Use it sparingly: a reader
    who copies only this block gets something that does not run on its own.

Every fence must name its language, so that no Python hides in an untagged block.
"""

from __future__ import annotations

import ast
import builtins
import re
import symtable
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYTHON_LANGUAGES = frozenset({"python", "py", "python3"})

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$")
_LANGUAGE = re.compile(r"^\{?\s*\.?(?P<lang>[\w+-]+)")


@dataclass(frozen=True)
class Block:
    """One fenced code block: where it is, its language, its code (de-indented) and marker."""

    path: Path  # relative to the repository root, e.g. docs/saga.md
    line: int  # 1-based line of the opening fence
    language: str  # "" for a fence that names none
    code: str
    partial: str | None = None  # the reason, for a block marked partial
    continues: Block | None = None  # the block this one continues
    marker_errors: tuple[str, ...] = field(default=())

    @property
    def id(self) -> str:
        """``docs/saga.md:12``: what a failure or a skip points at."""
        return f"{self.path.as_posix()}:{self.line}"

    def chain(self) -> list[Block]:
        """This block preceded by every block it continues, first one first."""
        blocks: list[Block] = []
        block: Block | None = self
        while block is not None:
            blocks.append(block)
            block = block.continues
        return blocks[::-1]

    def uses_pytest_asyncio(self) -> bool:
        """A test module written for pytest-asyncio (``@pytest.mark.asyncio`` or an import of
        ``pytest_asyncio``) runs with that plugin on; every other one with it off."""
        return "pytest.mark.asyncio" in self.code or "pytest_asyncio" in self.code

    def is_pytest_module(self) -> bool:
        """A block defining top-level ``test_*`` functions is a test module: it runs under
        pytest (so its fixtures and tests really run), not as a script."""
        tree = ast.parse(self.code)
        return any(
            isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name.startswith("test_")
            for node in tree.body
        )


def markdown_files(root: Path = ROOT) -> list[Path]:
    """README.md and every Markdown file under docs/, sorted, relative to ``root``."""
    files = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return [f.relative_to(root) for f in files if f.is_file()]


def parse_markdown(path: Path, text: str) -> list[Block]:
    """Every fenced block of one Markdown file, in order, with markers resolved."""
    lines = text.splitlines()
    blocks: list[Block] = []
    previous_python: Block | None = None
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence, info = opening["indent"], opening["fence"], opening["info"].strip()
        language_match = _LANGUAGE.match(info)
        language = language_match["lang"].lower() if language_match else ""
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = _FENCE.match(lines[j])
            if (
                closing is not None
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            line = lines[j]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            j += 1
        marker = _MARKER.match(lines[i - 1]) if i > 0 else None
        partial, continues, errors = _read_marker(marker, language, previous_python)
        block = Block(
            path=path,
            line=i + 1,
            language=language,
            code="\n".join(body) + "\n",
            partial=partial,
            continues=continues,
            marker_errors=errors,
        )
        blocks.append(block)
        if language in PYTHON_LANGUAGES:
            previous_python = block
        i = j + 1
    return blocks


def _read_marker(
    marker: re.Match[str] | None, language: str, previous: Block | None
) -> tuple[str | None, Block | None, tuple[str, ...]]:
    if marker is None:
        return None, None, ()
    body = marker["body"]
    if language not in PYTHON_LANGUAGES:
        return None, None, (f"marker {body!r} is above a {language or 'plain'} block",)
    if body == "continue":
        if previous is None:
            return None, None, ("'continue' but no ```python block comes before it",)
        if previous.partial is not None:
            return None, None, ("'continue' after a partial block: that one does not run",)
        return None, previous, ()
    kind, _, reason = body.partition(":")
    if kind.strip() == "partial":
        if not reason.strip():
            return None, None, ("'partial' needs a reason: <!-- docs-test: partial: why -->",)
        return reason.strip(), None, ()
    return None, None, (f"unknown marker {body!r}: use 'partial: REASON' or 'continue'",)


def stray_markers(text: str) -> list[int]:
    """Lines (1-based) of markers that are not right above a fence, so would be ignored."""
    lines = text.splitlines()
    return [
        n + 1
        for n, line in enumerate(lines)
        if "docs-test" in line
        and line.lstrip().startswith("<!--")
        and (_MARKER.match(line) is None or n + 1 >= len(lines) or not _FENCE.match(lines[n + 1]))
    ]


def page_source(chain: Sequence[Block], header: str = "") -> str:
    """The chain's code laid out on the lines it has in the Markdown file, so that line
    numbers in tracebacks are the page's. ``header`` goes on line 1 (always a padding line:
    a block's code starts after its fence)."""
    lines = [header]
    for block in chain:
        lines.extend([""] * (block.line - len(lines)))
        lines.extend(block.code.splitlines())
    return "\n".join(lines) + "\n"


def all_blocks(root: Path = ROOT) -> list[Block]:
    """Every fenced block of README.md and docs/."""
    blocks: list[Block] = []
    for path in markdown_files(root):
        blocks.extend(parse_markdown(path, (root / path).read_text(encoding="utf-8")))
    return blocks


def python_blocks(blocks: Iterable[Block]) -> list[Block]:
    return [b for b in blocks if b.language in PYTHON_LANGUAGES]


def undefined_names(sources: Sequence[str]) -> list[str]:
    """Global names the code reads but never binds (and that are not builtins).

    Running a block only proves what it executes; a function body that calls an undefined
    ``inventory.reserve(...)`` runs fine until someone calls it. This catches that statically,
    with the compiler's own scoping rules (``symtable``): a name that a function, class or the
    module reads as a global must be bound at the top level of the block (or of a block it
    continues).
    """
    bound: set[str] = set()
    read: set[str] = set()
    for source in sources:
        module = symtable.symtable(source, "<block>", "exec")
        for symbol in module.get_symbols():
            if symbol.is_assigned() or symbol.is_imported() or symbol.is_namespace():
                bound.add(symbol.get_name())
        _collect_global_reads(module, read)
    return sorted(name for name in read - bound if not hasattr(builtins, name))


def _collect_global_reads(table: symtable.SymbolTable, read: set[str]) -> None:
    for symbol in table.get_symbols():
        if not symbol.is_referenced():
            continue
        at_module = table.get_type() == "module"
        if at_module or symbol.is_global():
            read.add(symbol.get_name())
    for child in table.get_children():
        _collect_global_reads(child, read)
