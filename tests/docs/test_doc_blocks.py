"""Every ```python block of README.md and docs/ runs, unchanged, as a reader would paste it.

Each block is one test, named after its page and the line of its fence
(``docs/saga.md:9``), and runs:

* in a fresh ``__main__`` namespace (nothing is imported for it: a block imports what it
  uses, because readers copy it), in a temporary working directory;
* as a script; or, when it defines top-level ``test_*`` functions, as a test module under an
  in-process pytest (``pytester``), so its fixtures and tests really run (with pytest-asyncio
  when the block marks tests ``@pytest.mark.asyncio``, and the ``resilient`` plugin's
  fixtures, as in a reader's suite);
* with the fake services of ``doc_fakes.py`` answering httpx requests to ``http://inventory``
  and the other hosts the examples use;
* with the process-wide state a block can change put back afterwards: the named-policy
  registry, telemetry (listeners, sinks, metric registry), instant retries and environment
  variables.

Before running, a block must not read a global name it never binds (``doc_blocks.
undefined_names``): an example whose function calls an undefined ``inventory.reserve`` would
otherwise pass as long as nobody calls the function. Blocks marked ``partial`` in the Markdown
are skipped with their reason; the markers are described in ``doc_blocks.py``.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import doc_blocks
import doc_fakes
import httpx
import pytest
from doc_blocks import ROOT, Block

import resilient as rs
from resilient import _sleeping
from resilient.telemetry import reset_telemetry

BLOCKS = doc_blocks.all_blocks()
PYTHON = doc_blocks.python_blocks(BLOCKS)


def _params() -> list[object]:
    params: list[object] = []
    for block in PYTHON:
        marks = []
        if block.partial is not None:
            marks.append(pytest.mark.skip(reason=f"{block.id} partial: {block.partial}"))
        params.append(pytest.param(block, id=block.id, marks=marks))
    return params


def _reset_global_state() -> None:
    rs.registry.clear()
    reset_telemetry()
    while _sleeping.instant():  # instant_retries() nests: leave every level a block entered
        _sleeping.set_instant(False)


@contextmanager
def _isolated() -> Iterator[None]:
    """No process-wide state a block can change gets in or out: the named-policy registry,
    telemetry (listeners, sinks, metric registry), instant retries, environment variables."""
    environ = dict(os.environ)
    _reset_global_state()
    try:
        yield
    finally:
        _reset_global_state()
        for name in set(os.environ) - set(environ):
            del os.environ[name]
        os.environ.update(environ)


@pytest.fixture
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary working directory, the fake services, and :func:`_isolated`."""
    monkeypatch.chdir(tmp_path)
    doc_fakes.install(monkeypatch)
    with _isolated():
        yield tmp_path


@pytest.mark.parametrize("block", _params())
def test_block_runs(block: Block, sandbox: Path, request: pytest.FixtureRequest) -> None:
    chain = block.chain()
    missing = doc_blocks.undefined_names([b.code for b in chain])
    assert not missing, (
        f"{block.id} reads names it never defines or imports: {', '.join(missing)}. Add the "
        "imports or small stand-ins to the example (readers copy it), or mark the block "
        "<!-- docs-test: partial: REASON -->"
    )
    if block.is_pytest_module():
        _run_as_test_module(chain, request.getfixturevalue("pytester"))
    else:
        _run_as_script(chain)


def _run_as_script(chain: list[Block]) -> None:
    block = chain[-1]
    source = doc_blocks.page_source(chain)
    # dont_inherit: this file's `from __future__ import annotations` must not reach the block
    code = compile(source, str(ROOT / block.path), "exec", dont_inherit=True)
    module = types.ModuleType("__main__")
    saved = sys.modules["__main__"]
    sys.modules["__main__"] = module  # dataclasses, typing and pickle look names up here
    try:
        exec(code, module.__dict__)
    finally:
        sys.modules["__main__"] = saved


def _run_as_test_module(chain: list[Block], pytester: pytest.Pytester) -> None:
    block = chain[-1]
    header = f"# {block.id}: line numbers below are the Markdown file's"
    test_file = pytester.path / "test_docs_block.py"
    test_file.write_text(doc_blocks.page_source(chain, header), encoding="utf-8")
    # Blocks written for pytest-asyncio run under it, in its default (strict) mode; the others
    # (anyio's plugin, or sync) run without it, which would only add warnings about its
    # settings. The resilient plugin loads through its entry point, as in a reader's suite.
    if block.uses_pytest_asyncio():
        plugin = ["-o", "asyncio_mode=strict", "-o", "asyncio_default_fixture_loop_scope=function"]
    else:
        plugin = ["-p", "no:asyncio"]
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", *plugin, "-W", "error::pytest.PytestWarning", "-q", test_file.name
    )
    outcomes = result.parseoutcomes()
    output = "\n".join(result.outlines)
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, output
    assert outcomes.get("passed", 0) >= 1, f"{block.id} defines tests but none ran:\n{output}"


# The collector itself: it must see every block and every marker, or a block would go untested.


def test_the_docs_have_python_blocks() -> None:
    pages = {b.path.as_posix() for b in PYTHON}
    assert {"README.md", "docs/getting-started.md", "docs/saga.md"} <= pages
    fences = sum(
        line.strip() == "```python"
        for path in doc_blocks.markdown_files()
        for line in (ROOT / path).read_text(encoding="utf-8").splitlines()
    )
    assert fences == len(PYTHON)


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.id)
def test_fence_names_its_language(block: Block) -> None:
    assert block.language, f"{block.id}: name the language (```text, ```sh, ```python, ...)"


@pytest.mark.parametrize("path", doc_blocks.markdown_files(), ids=lambda p: p.as_posix())
def test_markers_are_well_formed(path: Path) -> None:
    text = (ROOT / path).read_text(encoding="utf-8")
    stray = doc_blocks.stray_markers(text)
    assert not stray, f"{path}: docs-test markers not right above a fence, lines {stray}"
    problems = [
        f"{b.id}: {error}"
        for b in doc_blocks.parse_markdown(path, text)
        for error in b.marker_errors
    ]
    assert not problems


SAMPLE = """\
# Page

```python
x = 1
```

<!-- docs-test: continue -->
```python
y = x + 1
```

1. In a list:

   <!-- docs-test: partial: needs a database -->
   ```py
   def f():
       return conn
   ```

<!-- docs-test: continue -->
```python
z = 3
```

<!-- docs-test: partial -->
```python
```

<!-- docs-test: sometimes -->
~~~~python
~~~~

```
plain
```
"""


def test_parser_reads_blocks_markers_and_indentation() -> None:
    blocks = doc_blocks.parse_markdown(Path("page.md"), SAMPLE)
    assert [(b.line, b.language) for b in blocks] == [
        (3, "python"),
        (8, "python"),
        (15, "py"),
        (21, "python"),
        (26, "python"),
        (30, "python"),
        (33, ""),
    ]
    first, second, in_list, after_partial, no_reason, unknown, _ = blocks
    assert second.chain() == [first, second]
    assert in_list.partial == "needs a database"
    assert in_list.code == "def f():\n    return conn\n"
    assert after_partial.continues is None and after_partial.marker_errors
    assert no_reason.partial is None and "needs a reason" in no_reason.marker_errors[0]
    assert "unknown marker" in unknown.marker_errors[0]
    assert doc_blocks.page_source(second.chain()).splitlines()[3:9] == [
        "x = 1",
        "",
        "",
        "",
        "",
        "y = x + 1",
    ]


def test_stray_markers_are_found() -> None:
    text = "<!-- docs-test: partial: why -->\n\n```python\npass\n```\n<!-- docs-test: x -->\n"
    assert doc_blocks.stray_markers(text) == [1, 6]


def test_undefined_names_follow_python_scoping() -> None:
    code = (
        "import os\n"
        "def f(a):\n"
        "    b = a\n"
        "    return [b + c for c in range(3)], os.sep, inventory.reserve, len\n"
        "class K:\n"
        "    size = missing_at_class_level\n"
        "g = lambda: later\n"
        "later = 1\n"
    )
    assert doc_blocks.undefined_names([code]) == ["inventory", "missing_at_class_level"]
    assert doc_blocks.undefined_names([code, "inventory = missing_at_class_level = 0\n"]) == []


LEAKY_BLOCK = """\
import os
import resilient as rs
from prometheus_client import CollectorRegistry
from resilient import _sleeping

os.environ["RESILIENT__LEAK__TIMEOUT__SECONDS"] = "1s"
os.environ["HOME"] = "/nowhere"
rs.registry.timeout("leak")
rs.add_listener(print)
rs.configure_telemetry(registry=CollectorRegistry())
_sleeping.set_instant(True)  # what instant_retries() does, twice, never left
_sleeping.set_instant(True)
"""


def test_a_block_leaks_no_global_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    home = os.environ.get("HOME")
    block = Block(path=Path("leak.md"), line=1, language="python", code=LEAKY_BLOCK)
    with _isolated():
        _run_as_script([block])
        assert rs.registry.get("leak", "timeout") is not None and _sleeping.instant()
    assert rs.registry.get("leak", "timeout") is None
    assert "RESILIENT__LEAK__TIMEOUT__SECONDS" not in os.environ
    assert os.environ.get("HOME") == home
    assert not _sleeping.instant()
    hub = sys.modules["resilient.telemetry._hub"]
    assert hub.STATE.listeners == () and hub.STATE.registry is None  # the global REGISTRY


def test_a_block_runs_as_a_fresh_main_module() -> None:
    code = "import sys\nassert __name__ == '__main__' and sys.modules['__main__'].answer == 42\n"
    block = Block(path=Path("m.md"), line=3, language="python", code="answer = 42\n" + code)
    main = sys.modules["__main__"]
    _run_as_script([block])
    assert sys.modules["__main__"] is main and not hasattr(main, "answer")


def test_tracebacks_point_at_the_markdown_line() -> None:
    block = Block(path=Path("docs/x.md"), line=10, language="python", code="x = 1\n1 / 0\n")
    with pytest.raises(ZeroDivisionError) as info:
        _run_as_script([block])
    frame = info.traceback[-1]
    assert (Path(str(frame.path)), frame.lineno + 1) == (ROOT / "docs/x.md", 12)


def test_fake_services_answer_their_hosts_only(sandbox: Path) -> None:
    assert httpx.get("http://inventory/stock/X1").json() == {"sku": "X1", "level": 7}
    assert httpx.post("http://payments/charge", json={"cents": 5}).status_code == 400  # no key
    charged = httpx.post(
        "http://payments/charge", json={"cents": 5}, headers={"Idempotency-Key": "o-1:charge"}
    )
    assert charged.json() == {"key": "o-1:charge", "done": "charged", "cents": 5}
    with pytest.raises(httpx.ConnectError, match="no such host"):
        httpx.get("http://127.0.0.1:9/")
