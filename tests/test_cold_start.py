"""``import resilient`` stays cheap (issue 17): nothing heavy is imported until it is needed,
every public name still resolves, and telemetry still works once it is needed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import resilient as rs

HEAVY = ("prometheus_client", "opentelemetry", "sqlite3", "psycopg", "httpx", "redis")


def _fresh(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.strip()


def test_import_resilient_pulls_in_nothing_heavy() -> None:
    loaded = json.loads(
        _fresh(
            f"""
            import json, sys
            import resilient
            print(json.dumps([m for m in {HEAVY!r} + ("tenacity", "anyio", "asyncio")
                              if any(k == m or k.startswith(m + ".") for k in sys.modules)]))
            """
        )
    )
    assert loaded == []


def test_building_policies_still_pulls_in_nothing_heavy() -> None:
    loaded = json.loads(
        _fresh(
            f"""
            import json, sys
            import resilient as rs
            rs.CircuitBreaker("cold"), rs.Retry(), rs.Timeout(1), rs.Bulkhead(max_concurrent=1)
            rs.Fallback(0), rs.pipeline(rs.Retry(), rs.Timeout(2))
            print(json.dumps([m for m in {HEAVY!r} + ("tenacity", "anyio", "asyncio")
                              if any(k == m or k.startswith(m + ".") for k in sys.modules)]))
            """
        )
    )
    assert loaded == []


def test_every_public_name_resolves_and_is_listed() -> None:
    for name in rs.__all__:
        assert getattr(rs, name) is not None, name
    assert set(rs.__all__) <= set(dir(rs))
    assert callable(rs.pipeline) and not isinstance(rs.pipeline, type(rs))

    assert callable(rs.pipeline) and rs.pipeline(rs.Retry()).policies


def test_metrics_are_exported_on_the_first_scrape_after_the_first_call() -> None:
    out = _fresh(
        """
        import resilient as rs

        @rs.CircuitBreaker("first-scrape")
        def work():
            return 1

        work()
        from prometheus_client import REGISTRY, generate_latest
        print(generate_latest(REGISTRY).decode())
        """
    )
    assert (
        'resilient_calls_total{name="first-scrape",outcome="success",policy="breaker"} 1.0' in out
    )
    assert 'resilient_breaker_state{name="first-scrape",state="closed"} 1.0' in out


def test_an_sdk_installed_after_the_policy_gets_spans_from_the_first_call() -> None:
    out = _fresh(
        """
        import sys
        import resilient as rs

        @rs.Retry(name="late-sdk")
        def work():
            return 1

        work()  # no OpenTelemetry imported yet: nothing to trace
        assert "opentelemetry" not in sys.modules
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        work()
        print([s.name for s in exporter.get_finished_spans()])
        """
    )
    assert out == "['retry late-sdk']"
