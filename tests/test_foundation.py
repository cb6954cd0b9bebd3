"""The shared front end: naming, decorator validation, errors, deadlines, fake clock."""

from __future__ import annotations

import pickle

import pytest

import resilient as rs
from resilient import _deadline
from resilient.testing import FakeClock


def test_pipeline_rejects_non_policies_naming_the_argument() -> None:
    with pytest.raises(TypeError, match="argument 0"):
        rs.pipeline(lambda: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one"):
        rs.pipeline()


def test_errors_pickle_and_keep_attributes() -> None:
    err = rs.CircuitOpenError("payments", 1.5)
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, rs.CircuitOpenError)
    assert back.name == "payments" and back.retry_after == 1.5
    assert "payments" in str(back) and "1.500" in str(back)
    assert isinstance(rs.TimeoutExceeded("t", 2), TimeoutError)
    assert isinstance(rs.ConfigError("x"), ValueError)


def test_nested_deadlines_only_shrink() -> None:
    assert rs.remaining() is None
    outer, t1 = _deadline.enter_deadline(10.0)
    inner, t2 = _deadline.enter_deadline(100.0)
    assert inner == outer
    remaining = rs.remaining()
    assert remaining is not None and remaining <= 10.0
    _deadline.leave_deadline(t2)
    _deadline.leave_deadline(t1)
    assert rs.remaining() is None


def test_fake_clock_advances_only_when_told() -> None:
    clock = FakeClock(5.0)
    assert clock() == 5.0
    clock.advance(2.5)
    clock.sleep(1.0)
    assert clock() == 8.5
    assert clock.sleeps == [1.0]
    with pytest.raises(ValueError, match="-1"):
        clock.advance(-1)
