"""HTTP pieces that need no HTTP library: statuses, ``Retry-After``, "transient", idempotency.

``resilient.httpx`` (the transport), ``resilient.presets`` (the standard pipeline) and
``resilient.asgi`` (load shedding) share them. Nothing here imports httpx: ``import resilient``
and ``resilient.presets.http()`` must work without the optional extra installed, so httpx's
exception types are looked up in ``sys.modules`` (an httpx error can only exist once httpx has
been imported).
"""

from __future__ import annotations

import email.utils
import math
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from .errors import PolicyRejectedError, ResilienceError

__all__ = [
    "DEFAULT_FAILURE_STATUSES",
    "IDEMPOTENT",
    "StatusFailure",
    "failure_statuses",
    "is_transient",
    "parse_retry_after",
    "retry_after_header",
]

IDEMPOTENT: frozenset[str] = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
"""Methods retried by default: repeating them has the same effect as sending them once
(RFC 9110, 9.2.2). ``POST`` and ``PATCH`` are retried only with an ``Idempotency-Key``."""

DEFAULT_FAILURE_STATUSES: tuple[int, ...] = (429, 500, 502, 503, 504)
"""Statuses that say "try again later": too many requests, server errors, bad gateway,
unavailable, gateway timeout. Other 4xx are the caller's fault and repeating them is useless."""

_STATUS_CLASSES = {f"{n}xx": range(n * 100, n * 100 + 100) for n in range(1, 6)}


def failure_statuses(value: object) -> frozenset[int]:
    """Validate the ``failure_statuses`` option: status codes 100-599 and/or classes such as
    ``"5xx"``. Raises ``TypeError``/``ValueError`` naming the option and the bad value."""
    if isinstance(value, (str, bytes, int)) or not isinstance(value, Iterable):
        raise TypeError(
            f"failure_statuses must be a collection of status codes (ints 100-599) or classes "
            f"such as '5xx', got {value!r}; e.g. failure_statuses=(429, 503)"
        )
    codes: set[int] = set()
    for item in value:
        if isinstance(item, str):
            klass = _STATUS_CLASSES.get(item.strip().lower())
            if klass is None:
                raise ValueError(
                    f"failure_statuses: unknown status class {item!r} (in {value!r}); "
                    f"expected one of {', '.join(_STATUS_CLASSES)} or a status code 100-599"
                )
            codes.update(klass)
        elif isinstance(item, int) and not isinstance(item, bool):
            if not 100 <= item <= 599:
                raise ValueError(
                    f"failure_statuses: {item!r} (in {value!r}) is not an HTTP status; "
                    f"expected a status code 100-599 or a class such as '5xx'"
                )
            codes.add(item)
        else:
            raise TypeError(
                f"failure_statuses: {item!r} (in {value!r}) is neither a status code "
                f"(int 100-599) nor a status class such as '5xx'"
            )
    return frozenset(codes)


def parse_retry_after(value: str, now: float) -> float | None:
    """Seconds to wait according to a ``Retry-After`` header value (RFC 9110, 10.2.3).

    ``value`` is delta-seconds (``"120"``) or an HTTP-date (``"Wed, 21 Oct 2015 07:28:00
    GMT"``, also the obsolete RFC 850 and asctime forms); ``now`` is the wall clock
    (``time.time()``) an HTTP-date is compared with. Returns the seconds (``0.0`` for a date in
    the past: "now"), or ``None`` for anything else (a negative number, a fraction, a
    garbage date), which callers ignore.
    """
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)  # absurdly many digits give inf: a retry then gives up at once
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    try:
        # An HTTP-date is always UTC; a "-0000" zone parses as a naive datetime.
        seconds = moment.timestamp() if moment.tzinfo else _utc_timestamp(moment)
    except (OverflowError, OSError, ValueError):
        return None
    delta = seconds - now
    return delta if delta > 0.0 else 0.0


def _utc_timestamp(moment: datetime) -> float:
    return moment.replace(tzinfo=timezone.utc).timestamp()


def retry_after_header(error: BaseException, default: int) -> str:
    """The ``Retry-After`` value (whole seconds, rounded up, at least 1) to answer a rejection
    with: the error's ``retry_after`` hint when it has a usable one, else ``default``."""
    hint = getattr(error, "retry_after", None)
    if isinstance(hint, (int, float)) and not isinstance(hint, bool):
        try:
            seconds = float(hint)
        except OverflowError:  # an int too large for a float: no usable hint
            return str(default)
        if math.isfinite(seconds) and seconds > 0:
            return str(max(1, math.ceil(seconds)))
    return str(default)


class StatusFailure(ResilienceError):
    """Inside a policy run by the HTTP transport: the response had a failure status.

    Raising it is what makes Retry, the breaker and a Fallback see the status as a failure;
    the transport catches it outside the policy and returns ``response`` (the last one) to the
    caller, as httpx would. ``retry_after`` holds the server's ``Retry-After`` in seconds
    (``None`` without a usable one): ``Retry`` waits at least that long. A ``Fallback``
    handler receives this error and can read ``error.response``.
    """

    def __init__(self, response: Any, retry_after: float | None, owner: object) -> None:
        super().__init__(response, retry_after)
        self.response = response
        self.retry_after = retry_after
        self._owner = owner

    def _describe(self) -> str:
        request = getattr(self.response, "request", None)
        what = f" to {request.method} {request.url}" if request is not None else ""
        return f"HTTP {self.response.status_code}{what} counts as a failure (failure_statuses)" + (
            "" if self.retry_after is None else f"; Retry-After {self.retry_after:g}s"
        )


def _httpx_transient() -> tuple[type[BaseException], ...]:
    httpx = sys.modules.get("httpx")
    if httpx is None:
        return ()
    return (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)


def is_transient(error: BaseException) -> bool:
    """True for failures worth another try: a failure status (429/5xx, see
    ``failure_statuses``), a timeout (:class:`resilient.TimeoutExceeded`, any
    ``TimeoutError``, httpx's connect/read/write/pool timeouts), a network error (connection
    refused or reset, httpx's ``NetworkError``) or a server closing the connection mid-answer
    (``httpx.RemoteProtocolError``).

    False for everything else, in particular policy rejections (an open breaker answers
    fast on purpose: retrying it defeats it) and mistakes that would fail the same way again
    (an unsupported URL scheme, a malformed request, a bug in the calling code).
    """
    if isinstance(error, PolicyRejectedError):
        return False
    if isinstance(error, (StatusFailure, TimeoutError, ConnectionError)):
        return True
    transient = _httpx_transient()
    return bool(transient) and isinstance(error, transient)
