"""The saga engine's own errors (the rest of the tree, ``SagaFailed``, ``SagaStuck``,
``StaleEpoch``..., is in ``resilient.errors``)."""

from __future__ import annotations

from ..errors import ResilienceError, TimeoutExceeded

__all__ = ["DeadlineExceeded", "SagaInterrupted"]


class SagaInterrupted(ResilienceError):
    """The process stopped driving the saga (``saga.shutdown()``, a deploy) without rolling it
    back: its lease was released and it stays unfinished for ``recover()`` elsewhere."""

    def __init__(self, saga_id: str) -> None:
        self.saga_id = saga_id
        super().__init__(saga_id)
        self.args = (
            f"saga {saga_id!r} was interrupted by a shutdown; it was not rolled back and "
            "will be finished by recover()",
        )


class DeadlineExceeded(TimeoutExceeded):
    """The saga's deadline passed before its pivot: it was compensated. (After the pivot a
    passed deadline is only recorded; the saga still finishes forward.)"""
