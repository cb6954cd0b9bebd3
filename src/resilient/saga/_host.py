"""What the engine's parts need from the :class:`~resilient.saga.Saga` that drives them.

``Saga`` (``_saga.py``) sits on top of the package: it builds runs (``_protocol.py``), drives
them (``_drivers.py``, ``_lease.py``), recovers them (``_recovery.py``) and hands out its admin
(``_admin.py``). Those modules need to read the saga's settings and call a few of its methods,
but must not import ``_saga.py`` (imports point one way, no circle): they are typed against
:class:`SagaHost`, which ``Saga`` satisfies structurally (mypy checks it wherever a ``Saga`` is
passed in).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from .._policy import Policy
from ._definition import _Definition
from ._model import SagaRecord
from ._store import SagaStore
from ._telemetry import SagaTelemetry

__all__ = ["SagaHost", "Stoppable"]


class Stoppable(Protocol):
    """A running async drive that :meth:`Saga.shutdown` can stop."""

    def stop(self) -> None: ...


class SagaHost(Protocol):
    """The saga as its runs, drivers, leases, recovery and admin see it."""

    # settings (see Saga.__init__)
    name: str
    store: SagaStore
    node_id: str
    lease: float
    on_recovery: str
    suspend_after: float
    max_recoveries: int
    continue_on_compensation_error: bool
    _blocking_store: Any  # the store's *_sync methods (the store itself, or a bridge)
    _clock: Callable[[], float]
    _real_clock: bool  # no injected clock: step deadlines can use the event loop's timer
    _tel: SagaTelemetry
    _compensation_policy: Policy

    # shutdown state
    _stopping: bool
    _drivers: set[Stoppable]

    @property
    def definition(self) -> str: ...

    @property
    def steps(self) -> tuple[str, ...]: ...

    def _definition(self) -> _Definition: ...

    def _forward_delay(self, rounds: int) -> float: ...

    def _count_stale(self) -> None: ...

    def _versions(self) -> Sequence[SagaHost]: ...

    def _check_driveable(self, rec: SagaRecord) -> SagaHost: ...

    def _require_sync(self, what: str, instead: str, *, all_versions: bool = False) -> None: ...
