"""Ready-made pipelines: ``presets.http(name)``, the standard pipeline for calls over HTTP.

Every service calling another over HTTP needs the same four things, in the same order, and
most hand-wired versions get one of them wrong (a retry outside the total budget, a breaker
that counts 404s, a per-attempt timeout missing). ``http(name)`` builds them once:

- a total ``Timeout`` of 30 s: the caller's budget for the request, retries and waits
  included;
- a ``Retry`` of 3 attempts with exponential backoff and full jitter (0.1 s .. 10 s), for
  transient failures only (:func:`resilient.httpx.is_transient`), honouring ``Retry-After``;
  the transport never repeats a non-idempotent request;
- a ``CircuitBreaker`` opening at 10% failures over a 30 s time window once it saw 20 calls,
  counting transient failures only;
- an attempt ``Timeout`` of 10 s: one attempt's budget, so a stalled attempt leaves time to
  retry.

Every field can be tuned by the environment, named after ``name`` (env wins over the code's
overrides, which win over the preset's defaults, which win over the library's):

- ``RESILIENT__<NAME>__TIMEOUT__SECONDS``, the total timeout;
- ``RESILIENT__<NAME>__RETRY__<FIELD>``, ``RESILIENT__<NAME>__BREAKER__<FIELD>``;
- ``RESILIENT__<NAME>_ATTEMPT__TIMEOUT__SECONDS``, the attempt timeout, which is the policy
  named ``<name>.attempt`` (so its metrics and spans are told apart from the total's);
- ``..._<KIND>__ENABLED=false`` leaves that member out.

:func:`http_client` returns an ``httpx.Client`` (or ``AsyncClient``) using the pipeline
through :class:`resilient.httpx.ResilientTransport`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, overload

from . import config
from ._http import DEFAULT_FAILURE_STATUSES, IDEMPOTENT, is_transient
from ._policy import Policy
from .breaker import CircuitBreaker
from .pipeline import Pipeline
from .retry import DEFAULT_WAIT, Retry
from .timeout import Timeout

if TYPE_CHECKING:
    from collections.abc import Iterable

    import httpx

__all__ = ["HTTP_DEFAULTS", "attempt_name", "http", "http_client"]

HTTP_DEFAULTS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "timeout": MappingProxyType({"seconds": 30.0}),
        "retry": MappingProxyType({"attempts": 3, "wait": DEFAULT_WAIT, "on": is_transient}),
        "breaker": MappingProxyType(
            {
                "failure_rate_threshold": 0.1,
                "window_type": "time",
                "window_size": 30,
                "minimum_calls": 20,
                "record": is_transient,
            }
        ),
        "attempt_timeout": MappingProxyType({"seconds": 10.0}),
    }
)
"""The preset's code defaults per member (what :func:`http`'s overrides are merged into)."""

_MEMBERS: tuple[tuple[str, type[Policy]], ...] = (
    ("timeout", Timeout),
    ("retry", Retry),
    ("breaker", CircuitBreaker),
    ("attempt_timeout", Timeout),
)


def attempt_name(name: str) -> str:
    """The name of the attempt timeout in ``http(name)``: ``"<name>.attempt"``, configured by
    ``RESILIENT__<NAME>_ATTEMPT__TIMEOUT__SECONDS``."""
    return f"{name}.attempt"


def http(
    name: str,
    /,
    *,
    timeout: Mapping[str, Any] | None = None,
    retry: Mapping[str, Any] | None = None,
    breaker: Mapping[str, Any] | None = None,
    attempt_timeout: Mapping[str, Any] | None = None,
) -> Pipeline:
    """The standard HTTP pipeline named ``name``: total Timeout 30 s > Retry 3 > CircuitBreaker
    (10% over 30 s, 20 calls minimum) > attempt Timeout 10 s.

    Overrides are per field, one mapping per member, merged into the preset's defaults:
    ``http("payments", retry={"attempts": 5}, breaker={"open_duration": 10},
    attempt_timeout={"seconds": 2})``; any constructor parameter of that policy is accepted
    (``retry={"sleep": fake}`` in tests), and ``{"enabled": False}`` leaves a member out.
    The environment wins over both (see the module docstring for the variable names). Bad
    values raise :class:`resilient.ConfigError` (from the environment) or ``TypeError`` /
    ``ValueError`` (from code) here, not at call time.

    Each call builds new policies: build the pipeline (or the client) once per dependency and
    share it, so every request to that dependency passes the same breaker.
    """
    given = {
        "timeout": timeout,
        "retry": retry,
        "breaker": breaker,
        "attempt_timeout": attempt_timeout,
    }
    members: list[Policy] = []
    for member, cls in _MEMBERS:
        override = given[member]
        if override is not None and not isinstance(override, Mapping):
            raise TypeError(
                f"http({name!r}): {member}= must be a mapping of field -> value, got "
                f"{override!r}; e.g. {member}={{{next(iter(HTTP_DEFAULTS[member]))!r}: ...}}"
            )
        defaults = {**HTTP_DEFAULTS[member], **(override or {})}
        enabled = defaults.pop(config.ENABLED, True)
        policy_name = attempt_name(name) if member == "attempt_timeout" else name
        if not config.is_enabled(cls, policy_name, default=bool(enabled)):
            continue
        members.append(cls.from_env(policy_name, **defaults))
    if not members:
        return Pipeline(_passthrough(name), name=name)
    return Pipeline(*members, name=name)


def _passthrough(name: str) -> Policy:
    from ._registry import _Passthrough

    return _Passthrough(name)


_TRANSPORT_OPTIONS = ("verify", "cert", "http1", "http2", "limits", "proxy")
"""``httpx.Client`` options that only configure the transport it would have built."""


@overload
def http_client(
    name: str,
    /,
    *,
    async_: Literal[False] = False,
    policy: Policy | Callable[[httpx.Request], Policy | None] | None = None,
    per_host: Mapping[str, Policy | None] | None = None,
    transport: httpx.BaseTransport | None = None,
    retry_methods: Iterable[str] = IDEMPOTENT,
    failure_statuses: Iterable[int | str] = DEFAULT_FAILURE_STATUSES,
    **client_options: Any,
) -> httpx.Client: ...


@overload
def http_client(
    name: str,
    /,
    *,
    async_: Literal[True],
    policy: Policy | Callable[[httpx.Request], Policy | None] | None = None,
    per_host: Mapping[str, Policy | None] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    retry_methods: Iterable[str] = IDEMPOTENT,
    failure_statuses: Iterable[int | str] = DEFAULT_FAILURE_STATUSES,
    **client_options: Any,
) -> httpx.AsyncClient: ...


def http_client(
    name: str,
    /,
    *,
    async_: bool = False,
    policy: Policy | Callable[[httpx.Request], Policy | None] | None = None,
    per_host: Mapping[str, Policy | None] | None = None,
    transport: Any = None,
    retry_methods: Iterable[str] = IDEMPOTENT,
    failure_statuses: Iterable[int | str] = DEFAULT_FAILURE_STATUSES,
    **client_options: Any,
) -> httpx.Client | httpx.AsyncClient:
    """A ready ``httpx.Client`` (``async_=True``: ``httpx.AsyncClient``) whose requests run
    under ``http(name)`` through a :class:`~resilient.httpx.ResilientTransport`.

    ``policy`` replaces the preset (e.g. ``http(name, retry={"attempts": 5})``, or any policy);
    ``per_host``, ``retry_methods`` and ``failure_statuses`` go to the resilient transport and
    ``transport`` is the one it wraps. Every other keyword goes to the httpx client
    (``base_url=``, ``headers=``, ...); TLS, HTTP/2, proxy and pool options (``verify``,
    ``cert``, ``http1``, ``http2``, ``limits``, ``proxy``) configure the wrapped transport when
    the library builds it. httpx's own timeout defaults to none (``timeout=None``): the
    pipeline's timeouts govern, and each attempt's socket timeouts are capped by what is left
    of them; pass ``timeout=`` to add a tighter per-operation limit.

    Requires the ``httpx`` extra (``pip install 'resilient-patterns[httpx]'``).
    """
    import httpx

    from .httpx import AsyncResilientTransport, ResilientTransport

    chosen = http(name) if policy is None else policy
    built = {k: client_options.pop(k) for k in _TRANSPORT_OPTIONS if k in client_options}
    if transport is not None and built:
        raise TypeError(
            f"http_client({name!r}): {', '.join(sorted(built))} configure the transport the "
            f"library builds, but transport={transport!r} was given; configure that one instead"
        )
    if "trust_env" in client_options:
        built["trust_env"] = client_options["trust_env"]
    client_options.setdefault("timeout", None)
    # the resilient transport, the client and the default wrapped transport of that kind
    kind: tuple[Any, Any, Any] = (
        (AsyncResilientTransport, httpx.AsyncClient, httpx.AsyncHTTPTransport)
        if async_
        else (ResilientTransport, httpx.Client, httpx.HTTPTransport)
    )
    resilient_transport, client, default_inner = kind
    wrapping = resilient_transport(
        chosen,
        per_host=per_host,
        transport=transport if transport is not None else default_inner(**built),
        retry_methods=retry_methods,
        failure_statuses=failure_statuses,
    )
    made: httpx.Client | httpx.AsyncClient = client(transport=wrapping, **client_options)
    return made
