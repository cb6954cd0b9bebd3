"""The OpenTelemetry API, used only once something else brought it in.

Spans need an OpenTelemetry SDK, and installing one means importing the API first
(``opentelemetry.trace``). So ``resilient`` never imports the API itself to find out whether
spans are wanted: :func:`api` answers with the module when it is loaded, and with a stand-in
whose global provider is ``None`` (no SDK, no spans) when it is not. :func:`watch_import`
installs a one-shot import hook that reports the API's arrival, so policies built before it
re-read the telemetry configuration on their next call; from then on they compare the API's
global provider on every counted call (there is no notification when an SDK is installed).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import importlib.machinery

__all__ = ["ABSENT", "api", "watch_import"]

_MODULE = "opentelemetry.trace"


class _Absent:
    """Stands in for ``opentelemetry.trace`` while nothing has imported it."""

    def __init__(self) -> None:
        # an instance attribute: read on every counted call, where a class attribute read
        # through an instance is the interpreter's slow path
        self._TRACER_PROVIDER = None

    def __repr__(self) -> str:
        return "<opentelemetry.trace not imported>"


ABSENT: Any = _Absent()


class _ProviderProbe:
    """Stands in for the API module should its private global ever disappear: reads the public
    ``get_tracer_provider()`` instead (slower, same answer)."""

    def __init__(self, module: ModuleType) -> None:
        self._module = module

    @property
    def _TRACER_PROVIDER(self) -> object:  # the API module's name for it
        trace: Any = self._module
        provider = trace.get_tracer_provider()
        return None if isinstance(provider, trace.ProxyTracerProvider) else provider

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def api() -> Any:
    """``opentelemetry.trace`` if it is imported (or a probe with the same answers), else
    :data:`ABSENT`. Its ``_TRACER_PROVIDER`` is the global SDK provider, ``None`` until one
    is installed: one attribute read, where ``get_tracer_provider()`` reads ``os.environ``."""
    module = sys.modules.get(_MODULE)
    if module is None:
        return ABSENT
    if hasattr(module, "_TRACER_PROVIDER"):
        return module
    if hasattr(module, "get_tracer_provider"):
        return _ProviderProbe(module)
    return ABSENT  # still being imported (another thread): ask again on the next refresh


class _ImportWatch:
    """Calls ``callback`` once ``opentelemetry.trace`` has been imported, then retires.

    It finds the module the way the import system would (asking the finders after it) and
    wraps the loader, so the callback runs when the module is complete. (A meta path finder
    is anything with ``find_spec``: not subclassing ``importlib.abc`` keeps that module, and
    the ``importlib.resources`` it loads, out of ``import resilient``.)"""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != _MODULE:
            return None
        _retire(self)
        for finder in list(sys.meta_path):
            find = getattr(finder, "find_spec", None)
            spec: importlib.machinery.ModuleSpec | None = (
                find(fullname, path, target) if find is not None else None
            )
            if spec is not None and spec.loader is not None:
                spec.loader = cast(Any, _NotifyingLoader(spec.loader, self._callback))
                return spec
        return None


class _NotifyingLoader:
    def __init__(self, loader: Any, callback: Callable[[], None]) -> None:
        self._loader = loader
        self._callback = callback

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        module: ModuleType | None = self._loader.create_module(spec)
        return module

    def exec_module(self, module: ModuleType) -> None:
        try:
            self._loader.exec_module(module)
        finally:
            self._callback()


_watch_lock = threading.Lock()
_watch: _ImportWatch | None = None


def _retire(watch: _ImportWatch) -> None:
    global _watch
    with _watch_lock:
        if watch in sys.meta_path:
            sys.meta_path.remove(watch)
        if _watch is watch:
            _watch = None


def watch_import(callback: Callable[[], None]) -> None:
    """Call ``callback`` once ``opentelemetry.trace`` has been imported (never if it already
    is: then :func:`api` answers with it)."""
    global _watch
    if _MODULE in sys.modules:
        return
    with _watch_lock:
        if _watch is None:
            _watch = _ImportWatch(callback)
            sys.meta_path.insert(0, _watch)


def drops_unsampled_children(provider: object) -> bool:
    """Whether ``provider``'s sampler drops every span whose parent was not sampled.

    That is the production set-up (``ParentBased(TraceIdRatioBased(r))``, the SDK's default
    shape): a request the server's instrumentation did not sample is not sampled anywhere
    below it. A policy running inside such a request may then skip opening its own span: the
    span would not be recorded, and the context downstream calls propagate (trace id, the
    not-sampled flag) is the parent's either way. Asked of the sampler itself through its
    public ``should_sample``, for local and remote parents and trace ids across the range, so
    a sampler that would record such a child (``ALWAYS_ON``, a bare ratio sampler) keeps
    every span. Anything unexpected answers ``False``: spans are kept."""
    should_sample = getattr(getattr(provider, "sampler", None), "should_sample", None)
    trace = api()
    if should_sample is None or trace is ABSENT:
        return False
    try:
        for remote in (False, True):
            for trace_id in (1, 1 << 64, (1 << 128) - 1):
                parent = trace.NonRecordingSpan(
                    trace.SpanContext(
                        trace_id, 1, is_remote=remote, trace_flags=trace.TraceFlags(0)
                    )
                )
                context = trace.set_span_in_context(parent)
                decision = should_sample(context, trace_id, "resilient.probe").decision
                if decision.is_recording() or decision.is_sampled():
                    return False
    except Exception:  # a sampler we do not understand: keep its spans
        return False
    return True


def inside_unsampled_span(trace: Any) -> bool:
    """True when the current span belongs to a trace that is not being sampled (a remote
    parent that was sampled is not recording here, but its flag says sampled)."""
    context = trace.get_current_span().get_span_context()
    return context.is_valid and not context.trace_flags.sampled
