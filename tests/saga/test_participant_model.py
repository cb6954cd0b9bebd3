"""A Hypothesis state machine for ``ParticipantLedger`` (SQLite) against a reference model of
its per-key states (absent, applied, rejected, undone, tombstone) and epochs.

Rules: forward calls whose effect succeeds, says a definitive "no" or fails, undo calls whose
effect succeeds or fails, each with or without an epoch. After every rule the outcome matches
the model and the participant's own rows (written through ``call.conn`` in the ledger's
transaction) agree with the ledger: per key, charged minus refunded is 1 exactly when the
model says "applied" and 0 otherwise; nothing is charged after its key was compensated.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

import resilient as rs
from resilient.saga import LedgerCall, ParticipantLedger

KEYS = ("a:pay", "b:pay", "c:pay")
epochs = st.none() | st.integers(min_value=1, max_value=4)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ledger-model-"))
        self.ledger = ParticipantLedger(self.dir / "p.db")
        with self.ledger.transaction() as conn:
            conn.execute("CREATE TABLE moves (key TEXT, delta INTEGER)")
        self.state: dict[str, str] = {}  # key -> applied | rejected | undone | tombstone
        self.epoch: dict[str, int] = {}
        self.result: dict[str, Any] = {}
        self.n = 0

    def _fenced(self, key: str, epoch: int | None) -> bool:
        return epoch is not None and key in self.epoch and epoch < self.epoch[key]

    def _saw(self, key: str, epoch: int | None) -> None:
        if epoch is not None:
            self.epoch[key] = max(self.epoch.get(key, epoch), epoch)

    @rule(key=st.sampled_from(KEYS), epoch=epochs, how=st.sampled_from(["ok", "no", "fail"]))
    def forward(self, key: str, epoch: int | None, how: str) -> None:
        self.n += 1
        value = {"n": self.n}

        def effect(call: LedgerCall) -> Any:
            call.conn.execute("INSERT INTO moves VALUES (?, 1)", (call.key,))
            if how == "no":
                raise rs.Rejected("no")
            if how == "fail":
                raise ConnectionError("boom")
            return value

        state = self.state.get(key)
        if state in ("undone", "tombstone"):
            expected = "late"
        elif self._fenced(key, epoch):
            expected = "stale"
        elif state == "applied":
            expected = "repeat"
        elif state == "rejected":
            expected = "rejected"
        else:
            expected = {"ok": "applied", "no": "rejected", "fail": "raises"}[how]
        if expected == "raises":
            try:
                self.ledger.forward(key, effect, epoch=epoch)
            except ConnectionError:
                return
            raise AssertionError("the failing effect's error must propagate")
        done = self.ledger.forward(key, effect, epoch=epoch)
        assert done.kind == expected, (key, state, epoch, self.epoch.get(key), done)
        if expected == "applied":
            self.state[key] = "applied"
            self.result[key] = value
            assert done.result == value
        elif expected == "repeat":
            assert done.result == self.result[key]
        elif expected == "rejected":
            self.state[key] = "rejected"
            assert done.result == {"error": "no"}
        if expected != "stale" and not (expected == "late" and self._fenced(key, epoch)):
            self._saw(key, epoch)

    @rule(key=st.sampled_from(KEYS), epoch=epochs, fail=st.booleans())
    def undo(self, key: str, epoch: int | None, fail: bool) -> None:
        def effect(call: LedgerCall) -> Any:
            assert call.done == self.result[key]
            call.conn.execute("INSERT INTO moves VALUES (?, -1)", (call.key,))
            if fail:
                raise ConnectionError("boom")
            return {"undid": call.done}

        state = self.state.get(key)
        if self._fenced(key, epoch):
            expected = "stale"
        elif state in ("undone", "tombstone"):
            expected = "repeat"
        elif state == "applied":
            expected = "raises" if fail else "applied"
        else:
            expected = "null_undo"
        if expected == "raises":
            try:
                self.ledger.undo(f"{key}:undo", effect, epoch=epoch)
            except ConnectionError:
                return
            raise AssertionError("the failing undo's error must propagate")
        done = self.ledger.undo(f"{key}:undo", effect, epoch=epoch)
        assert done.kind == expected, (key, state, epoch, self.epoch.get(key), done)
        if expected == "applied":
            self.state[key] = "undone"
        elif expected == "null_undo":
            self.state[key] = "tombstone"
        if expected != "stale":
            self._saw(key, epoch)

    @invariant()
    def rows_agree_with_the_model(self) -> None:
        with self.ledger.transaction() as conn:
            net = dict(conn.execute("SELECT key, SUM(delta) FROM moves GROUP BY key").fetchall())
        for key in KEYS:
            assert net.get(key, 0) == (1 if self.state.get(key) == "applied" else 0), key
            entry = self.ledger.entry(key)
            state = self.state.get(key)
            expected = {"applied": "done"}.get(state or "", state)
            assert (entry.state if entry else None) == expected, key
            if entry is not None and key in self.epoch:
                assert entry.epoch == self.epoch[key]

    def teardown(self) -> None:
        self.ledger.close()
        shutil.rmtree(self.dir, ignore_errors=True)


LedgerMachine.TestCase.settings = settings(
    LedgerMachine.TestCase.settings, max_examples=60, stateful_step_count=12
)
test_ledger_model = LedgerMachine.TestCase
