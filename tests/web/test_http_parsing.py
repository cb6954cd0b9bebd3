"""Properties of the HTTP helpers: Retry-After parsing never raises and means what RFC 9110
says; failure_statuses accepts exactly the status codes and classes there are."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resilient._http import failure_statuses, parse_retry_after, retry_after_header

NOW = 1_700_000_000.0


@given(st.text())
def test_any_text_parses_to_a_wait_or_none(text: str) -> None:
    seconds = parse_retry_after(text, NOW)
    assert seconds is None or seconds >= 0.0


@given(st.integers(min_value=0, max_value=10**12))
def test_delta_seconds(n: int) -> None:
    assert parse_retry_after(f" {n} ", NOW) == float(n)
    assert parse_retry_after(f"-{n + 1}", NOW) is None
    assert parse_retry_after(f"{n}.5", NOW) is None


def test_absurd_delta_seconds_is_an_infinite_wait() -> None:
    assert parse_retry_after("9" * 400, NOW) == float("inf")


@given(st.integers(min_value=-(10**6), max_value=10**8))
def test_http_dates_are_seconds_from_now(offset: int) -> None:
    moment = datetime.fromtimestamp(NOW + offset, tz=timezone.utc)
    text = format_datetime(moment, usegmt=True)  # IMF-fixdate, RFC 9110's preferred form
    assert parse_retry_after(text, NOW) == pytest.approx(max(0.0, float(offset)))


def test_obsolete_date_forms() -> None:
    # RFC 850 and asctime, which RFC 9110 says recipients must accept
    assert parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", 784111777.0 - 5) == 5.0
    assert parse_retry_after("Sun Nov  6 08:49:37 1994", 784111777.0 - 5) == 5.0


@given(st.integers(min_value=-1000, max_value=2000))
def test_status_codes(code: int) -> None:
    if 100 <= code <= 599:
        assert failure_statuses([code]) == {code}
    else:
        with pytest.raises(ValueError, match="failure_statuses"):
            failure_statuses([code])


def test_status_classes() -> None:
    assert failure_statuses(["5xx", 429]) == set(range(500, 600)) | {429}
    assert failure_statuses([" 4XX "]) == set(range(400, 500))
    assert failure_statuses([]) == frozenset()


@given(st.floats(allow_nan=True, allow_infinity=True) | st.none() | st.integers())
def test_retry_after_header_is_whole_positive_seconds(hint: float | int | None) -> None:
    class Rejection(Exception):
        retry_after = hint

    value = int(retry_after_header(Rejection(), 4))
    try:
        seconds = float(hint) if hint is not None else math.nan
    except OverflowError:  # an int beyond a float's range
        seconds = math.nan
    if math.isfinite(seconds) and seconds > 0:
        assert value == max(1, math.ceil(seconds))  # whole seconds, rounded up, at least 1
    else:
        assert value == 4  # no usable hint: the default
