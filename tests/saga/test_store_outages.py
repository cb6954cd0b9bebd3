"""Store outages (issue 18, items 2 and 3): what ``run()`` callers and the recovery loop see while
the saga store's database is down, restarting or not answering, and what the stores report
about their durability settings.

* A private PostgreSQL server (``private_pg.py``: ``initdb`` + ``pg_ctl`` on a free port) is
  killed and restarted while sagas run: no exception reaches a caller, every saga finishes,
  and every log holds exactly what was committed, once.
* A store URL whose server never answers raises ``SagaStoreUnavailable`` within
  ``outage_timeout``, password masked; so does a run whose database goes silent mid-way (a
  proxy in front of the shared server), and calling ``run(data, saga_id)`` again finishes it.
* SQLite: a locked file is waited out; past the bound the caller gets
  ``SagaStoreUnavailable``; a driver error that is not an outage is wrapped at once; a write
  whose COMMIT went through before its error is not applied twice (also on PostgreSQL).
* The recovery loops log one line when an outage starts and one when it is over.
* ``store.durability``: PostgreSQL's ``synchronous_commit`` / ``fsync`` and SQLite's mode.

Bounds here are generous guards against hanging; the only time assertions are "within the
configured bound" (plus slack for a loaded machine).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from private_pg import PrivateServer, problem

import resilient as rs
from resilient.saga import LogKind, SagaStatus, store_from_url, store_health
from resilient.saga.testing import Ledger
from resilient.testing import FakeClock, fake_clock

DSN = os.environ.get("RESILIENT_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
SLACK = 3.0  # scheduling on a loaded 2-core machine; the bound itself is the guard's promise
STEPS = ("reserve", "charge", "ship")
EXPECTED_LOG = [
    (LogKind.SAGA_CREATED, None, None),
    *[(kind, step, 1) for step in STEPS for kind in (LogKind.STEP_STARTED, LogKind.STEP_SUCCEEDED)],
    (LogKind.SAGA_COMPLETED, None, None),
]


def _shared_problem() -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'resilient-patterns[postgres]')"
    try:
        psycopg.connect(DSN, connect_timeout=2).close()
    except psycopg.Error as err:
        return f"PostgreSQL not reachable at {DSN}: {str(err).strip()[:200]}"
    return None


_SHARED = _shared_problem()
_PRIVATE = problem()
needs_pg = pytest.mark.skipif(_SHARED is not None, reason=_SHARED or "")
needs_private_pg = pytest.mark.skipif(_PRIVATE is not None, reason=_PRIVATE or "")
needs_psycopg = pytest.mark.skipif(
    _PRIVATE is not None and _PRIVATE.startswith("psycopg"), reason=_PRIVATE or ""
)


def _log_of(store: Any, saga_id: str) -> list[tuple[str, str | None, int | None]]:
    rec = store.load_sync(saga_id)
    assert rec is not None
    return [(e.kind, e.step, e.attempt) for e in rec.events]


def three_steps(store: Any, ledger: Ledger | None = None, **kw: Any) -> rs.Saga:
    saga = rs.Saga(f"outage-{uuid.uuid4().hex[:6]}", store=store, **kw)
    for name in STEPS:

        def step(ctx: rs.SagaContext, name: str = name) -> str:
            if ledger is not None:
                ledger.apply(ctx.idempotency_key, name)
            return name

        saga.add_step(name, step)
    return saga


def _messages(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger]


# -- PostgreSQL killed and restarted mid-run ------------------------------------------------------
@pytest.fixture(scope="module")
def private() -> Iterator[PrivateServer]:
    if _PRIVATE is not None:
        pytest.skip(_PRIVATE)
    server = PrivateServer()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@needs_private_pg
@pytest.mark.slow
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_server_killed_and_restarted_mid_run_is_invisible_to_callers(
    private: PrivateServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    schema = f"rs_kill_{uuid.uuid4().hex[:8]}"
    store = rs.PostgresSagaStore(private.dsn, schema=schema, outage_timeout=120)
    ledger = Ledger(tmp_path / "ledger.db")
    saga = three_steps(store, ledger)
    ids = [f"k{i:03d}" for i in range(48)]
    done: list[str] = []
    errors: list[BaseException] = []
    at_kill: list[int] = []
    some_done = anyio.Event()

    async def worker(mine: list[str]) -> None:
        for sid in mine:
            try:
                result = await saga.run({"order": sid}, saga_id=sid)
            except Exception as exc:  # any exception at all fails the test below
                errors.append(exc)
            else:
                assert result.status is SagaStatus.COMPLETED
                done.append(sid)
                if len(done) >= 8:
                    some_done.set()

    async def chaos() -> None:
        with anyio.fail_after(120):  # a guard against hanging, not a timing assertion
            await some_done.wait()
        at_kill.append(len(done))
        await anyio.to_thread.run_sync(private.kill)  # every backend dies at once
        await anyio.sleep(1.0)  # stay down a moment (the restart adds ~1 s more)
        await anyio.to_thread.run_sync(private.start)

    with anyio.fail_after(300):
        async with anyio.create_task_group() as tg:
            tg.start_soon(chaos)
            for w in range(8):
                tg.start_soon(worker, ids[w::8])

    assert errors == [], [f"{type(e).__module__}.{type(e).__name__}: {e}" for e in errors]
    assert sorted(done) == ids and at_kill[0] < len(ids)  # killed mid-run, all finished
    store_logs = [r.getMessage() for r in _messages(caplog, "resilient.saga.store")]
    assert any("reachable again" in m for m in store_logs), store_logs  # the outage was met
    fresh = rs.PostgresSagaStore(private.dsn, schema=schema)  # what the server kept
    for sid in ids:
        assert _log_of(fresh, sid) == EXPECTED_LOG, sid  # nothing lost, nothing twice
        for step in STEPS:
            assert ledger.deliveries(f"{sid}:{step}") == 1  # each step invoked once
    fresh.close()
    store.close()


@needs_private_pg
@pytest.mark.slow
def test_fsync_off_is_reported_and_warned_about_once(
    private: PrivateServer, caplog: pytest.LogCaptureFixture
) -> None:
    private.stop()
    private.start("fsync=off")
    try:
        store = rs.PostgresSagaStore(private.dsn, schema="rs_fsync")
        again = rs.PostgresSagaStore(private.dsn, schema="rs_fsync")
        durability = store.durability
        assert durability.mode == "weakened" and durability.weakened
        assert durability.settings["fsync"] == "off"
        assert durability.server_crash and not durability.power_loss  # the OS cache survives
        warned = [r for r in caplog.records if "fsync=off" in r.getMessage()]
        assert len(warned) == 2  # once per store object, when it connected
        assert all(r.levelno == logging.WARNING for r in warned)
        store.load_sync("nothing")  # more operations: no more warnings
        assert len([r for r in caplog.records if "fsync=off" in r.getMessage()]) == 2
        store.close()
        again.close()
    finally:
        private.stop()
        private.start()


# -- a server that never answers -------------------------------------------------------------------
@needs_psycopg
@pytest.mark.slow
def test_store_url_whose_server_never_answers_is_unavailable_within_the_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as hole:  # the kernel accepts connections; nobody ever answers
        hole.bind(("127.0.0.1", 0))
        hole.listen(64)
        port = hole.getsockname()[1]
        url = f"postgresql://bob:s3cret@127.0.0.1:{port}/orders?outage_timeout=3"
        started = time.monotonic()
        with pytest.raises(rs.SagaStoreUnavailable) as info:
            store_from_url(url)
        elapsed = time.monotonic() - started
    error = info.value
    assert elapsed < 3.0 + SLACK and error.waited <= 3.0 + 1.0
    assert isinstance(error, rs.ResilienceError) and error.saga_id is None
    assert error.operation == "connect" and "timeout" in error.reason.lower()
    assert "s3cret" not in str(error) and "s3cret" not in repr(error)
    assert not any("s3cret" in r.getMessage() for r in caplog.records)


class _Proxy:
    """A TCP proxy to the shared server that can go silent: ``blackhole()`` cuts every
    connection and accepts new ones without ever answering, ``forward()`` heals it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.silent = False
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self._open.append(client)
                if self.silent:
                    continue
                upstream = socket.create_connection(self.target)
                self._open.append(upstream)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def _cut(self) -> None:
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def blackhole(self) -> None:
        self.silent = True
        self._cut()

    def forward(self) -> None:
        self.silent = False
        self._cut()

    def close(self) -> None:
        self.sock.close()
        self._cut()


@needs_pg
@pytest.mark.slow
@pytest.mark.anyio
async def test_database_gone_mid_run_is_unavailable_then_running_again_finishes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    host, _, port = DSN.split("@", 1)[1].split("/", 1)[0].partition(":")
    proxy = _Proxy((host, int(port or 5432)))
    schema = f"rs_cut_{uuid.uuid4().hex[:8]}"
    dbname = DSN.rsplit("/", 1)[1]
    url = f"postgresql://postgres:s3cret@127.0.0.1:{proxy.port}/{dbname}?schema={schema}"
    store = store_from_url(url + "&outage_timeout=3")  # trust auth: the password is unused
    saga = rs.Saga("cut", store=store, lease=1.0)
    calls: list[int] = []

    @saga.step
    def first(ctx: rs.SagaContext) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            proxy.blackhole()  # the database goes silent while the step runs
        return "one"

    @saga.step
    def second(ctx: rs.SagaContext) -> str:
        return "two"

    try:
        started = time.monotonic()
        with pytest.raises(rs.SagaStoreUnavailable) as info:
            await saga.run({"order": 1}, saga_id="cut-1")
        elapsed = time.monotonic() - started
        error = info.value
        assert error.saga_id == "cut-1" and error.operation == "append"
        assert error.waited <= 3.0 + 1.0 and elapsed < 3.0 + SLACK
        text = str(error)
        assert "durable up to its last record" in text and "run(data, saga_id='cut-1')" in text
        assert "s3cret" not in text
        assert not any("s3cret" in r.getMessage() for r in caplog.records)
        assert not store.health()["available"]

        proxy.forward()
        with anyio.fail_after(60):  # waits out the lost run's 1 s lease, then takes it over
            result = await saga.run({"order": 1}, saga_id="cut-1")
        assert result.status is SagaStatus.COMPLETED and result.results["second"] == "two"
        assert calls == [1, 2]  # first was in doubt (never recorded): invoked again
        assert store.health()["available"]
    finally:
        proxy.close()
        store.close()
        import psycopg

        with psycopg.connect(DSN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- PostgreSQL durability settings on the shared server -------------------------------------------
@needs_pg
def test_synchronous_commit_off_is_reported_and_warned_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import psycopg

    schema = f"rs_dur_{uuid.uuid4().hex[:8]}"
    try:
        weak = rs.PostgresSagaStore(f"{DSN}?options=-csynchronous_commit%3Doff", schema=schema)
        d = weak.durability
        assert d.mode == "weakened" and d.settings["synchronous_commit"] == "off"
        assert d.process_crash and not d.server_crash and not d.power_loss
        assert d.warning is not None and "synchronous_commit=off" in d.warning
        warned = [r for r in caplog.records if "synchronous_commit=off" in r.getMessage()]
        assert len(warned) == 1 and warned[0].levelno == logging.WARNING
        # a broken connection makes the store read the settings again: same text, no new line
        with weak._pool.connection() as conn:
            conn.close()  # the pool replaces it: the new connection reads the settings
        weak._check_settings = True
        weak.load_sync("missing")
        assert len([r for r in caplog.records if "synchronous_commit=off" in r.getMessage()]) == 1
        health = weak.health()
        assert health["durability"]["mode"] == "weakened" and health["available"] is True
        json.dumps(health)  # JSON-ready, for a health endpoint
        assert any(h["store"] == repr(weak) and h["kind"] == "postgres" for h in store_health())
        full = rs.PostgresSagaStore(DSN, schema=schema)
        assert full.durability.mode == "full" and full.durability.warning is None
        assert full.durability.power_loss and full.durability.server_crash
        weak.close()
        full.close()
    finally:
        with psycopg.connect(DSN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- SQLite ----------------------------------------------------------------------------------------
def _lock(path: Path) -> sqlite3.Connection:
    """Another process's long write transaction on the store's file."""
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def _when(condition: Callable[[], bool], then: Callable[[], None]) -> threading.Thread:
    """Run ``then`` in a thread once ``condition`` holds (polled; bounded by 60 s)."""

    def wait() -> None:
        deadline = time.monotonic() + 60
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.005)
        then()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("fake", [False, True], ids=["real-clock", "fake-default-clock"])
def test_sqlite_lock_outlasting_busy_timeout_is_waited_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, fake: bool
) -> None:
    # a test's fake default clock (resilient.testing.fake_clock) must not freeze the store's
    # own backoff and breaker: an outage happens in real time
    with fake_clock() if fake else contextlib.nullcontext():
        store = rs.SQLiteSagaStore(tmp_path / "s.db", busy_timeout=0.05, outage_timeout=20)
    saga = three_steps(store)
    holder = _lock(tmp_path / "s.db")
    # the lock is released only once it has opened the store's breaker (five operations
    # busy past busy_timeout): the breaker's trial call then finds the file free
    release = _when(lambda: store.health()["breaker"] == "open", lambda: holder.execute("COMMIT"))
    result = saga.run_sync({"order": 1}, saga_id="locked-1")
    release.join()
    assert result.status is SagaStatus.COMPLETED
    assert _log_of(store, "locked-1") == EXPECTED_LOG
    lines = [r.getMessage() for r in _messages(caplog, "resilient.saga.store")]
    assert len(lines) == 2 and "locked" in lines[0] and "reachable again" in lines[1], lines
    assert store.health()["available"] and store.health()["breaker"] == "closed"


def test_sqlite_outage_past_the_bound_then_running_again_finishes(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = rs.SQLiteSagaStore(tmp_path / "s.db", busy_timeout=0.05, outage_timeout=1.0)
    saga = rs.Saga("bounded", store=store, clock=clock)
    holder: list[sqlite3.Connection] = []
    calls: list[int] = []

    @saga.step
    def first(ctx: rs.SagaContext) -> str:
        calls.append(ctx.attempt)
        if ctx.attempt == 1:
            holder.append(_lock(tmp_path / "s.db"))  # the file stays locked from here on
        return "one"

    started = time.monotonic()
    with pytest.raises(rs.SagaStoreUnavailable) as info:
        saga.run_sync({"order": 1}, saga_id="b-1")
    assert time.monotonic() - started < 1.0 + SLACK and info.value.waited <= 1.5
    error = info.value
    assert error.saga_id == "b-1" and isinstance(error.__cause__, sqlite3.OperationalError)
    assert "database is locked" in str(error) and "saga_id='b-1'" in str(error)
    holder[0].execute("COMMIT")
    clock.advance(saga.lease + 1)  # the lost run's lease expires
    result = saga.run_sync({"order": 1}, saga_id="b-1")
    assert result.status is SagaStatus.COMPLETED and calls == [1, 2]


def test_sqlite_error_that_is_not_an_outage_is_wrapped_at_once(tmp_path: Path) -> None:
    store = rs.SQLiteSagaStore(tmp_path / "s.db", outage_timeout=60)
    saga = three_steps(store)
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.execute("DROP TABLE saga_events")  # an operator's mistake, not an outage
    with pytest.raises(rs.SagaStoreUnavailable) as info:
        saga.run_sync({}, saga_id="x-1")
    assert info.value.waited < 30 and "no such table" in info.value.reason
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    assert store.health()["available"]  # not an outage


class _CommitThenFail(rs.SQLiteSagaStore):
    """COMMIT goes through, then the connection "breaks": the ambiguous failure."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.fail = {"create", "append"}

    def _create(self, retried: bool, rec: Any) -> Any:
        result = super()._create(retried, rec)
        if "create" in self.fail:
            self.fail = self.fail - {"create"}
            raise sqlite3.OperationalError("disk I/O error")
        return result

    def _append(self, retried: bool, *args: Any) -> None:
        super()._append(retried, *args)
        if "append" in self.fail:
            self.fail = self.fail - {"append"}
            raise sqlite3.OperationalError("disk I/O error")


def test_sqlite_write_committed_before_its_error_is_not_applied_twice(tmp_path: Path) -> None:
    store = _CommitThenFail(tmp_path / "s.db")
    result = three_steps(store).run_sync({}, saga_id="twice-1")
    assert result.status is SagaStatus.COMPLETED and not result.replayed
    assert store.fail == set()  # both failures happened
    assert _log_of(store, "twice-1") == EXPECTED_LOG


@needs_pg
def test_postgres_write_committed_before_its_error_is_not_applied_twice() -> None:
    import psycopg

    class CommitThenFail(rs.PostgresSagaStore):
        def __init__(self, *args: Any, **kw: Any) -> None:
            super().__init__(*args, **kw)
            self.fail = {"create", "append"}

        def _create(self, retried: bool, rec: Any) -> Any:
            result = super()._create(retried, rec)
            if "create" in self.fail:
                self.fail = self.fail - {"create"}
                raise psycopg.OperationalError("server closed the connection unexpectedly")
            return result

        def _append(self, retried: bool, *args: Any) -> None:
            super()._append(retried, *args)
            if "append" in self.fail:
                self.fail = self.fail - {"append"}
                raise psycopg.OperationalError("server closed the connection unexpectedly")

    schema = f"rs_twice_{uuid.uuid4().hex[:8]}"
    store = CommitThenFail(DSN, schema=schema)
    try:
        result = three_steps(store).run_sync({}, saga_id="twice-1")
        assert result.status is SagaStatus.COMPLETED and store.fail == set()
        assert _log_of(store, "twice-1") == EXPECTED_LOG
    finally:
        store.close()
        with psycopg.connect(DSN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- the recovery loops' log -----------------------------------------------------------------------
class _FlakyQueries(rs.SQLiteSagaStore):
    """Queries fail like a locked database while ``down`` is set."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.down = True
        self.failed_passes = 0
        self.good_passes = 0
        self.back = threading.Event()  # two passes succeeded after the outage

    def _query(self, retried: bool, filt: Any) -> Any:
        if self.down:
            raise sqlite3.OperationalError("database is locked")
        return super()._query(retried, filt)

    def query_sync(self, filt: Any) -> Any:
        try:
            result = super().query_sync(filt)
        except rs.SagaStoreUnavailable:
            self.failed_passes += 1
            if self.failed_passes >= 3:
                self.down = False  # the store comes back after three failed passes
            raise
        self.good_passes += 1
        if self.good_passes >= 2:
            self.back.set()
        return result


def _assert_one_line_per_outage(caplog: pytest.LogCaptureFixture) -> None:
    loop = _messages(caplog, "resilient.saga")
    assert [
        ("unavailable" in r.getMessage(), "available again" in r.getMessage()) for r in loop
    ] == [
        (True, False),
        (False, True),
    ], [r.getMessage() for r in loop]
    assert "failed recovery pass(es)" in loop[1].getMessage()
    store = _messages(caplog, "resilient.saga.store")
    assert len(store) == 2 and "reachable again" in store[1].getMessage()
    assert not any(r.exc_info for r in caplog.records)  # no traceback per pass


def test_sync_recovery_loop_logs_an_outage_once(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = _FlakyQueries(tmp_path / "s.db", outage_timeout=0.2)
    saga = three_steps(store, clock=clock)
    stop = threading.Event()
    loop = threading.Thread(target=saga.run_recovery_loop_sync, kwargs={"stop": stop})
    loop.start()
    assert store.back.wait(60)
    stop.set()
    loop.join(timeout=60)
    assert not loop.is_alive()
    _assert_one_line_per_outage(caplog)


@pytest.mark.anyio
async def test_async_recovery_loop_logs_an_outage_once(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = _FlakyQueries(tmp_path / "s.db", outage_timeout=0.2)
    saga = three_steps(store, clock=clock)
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            tg.start_soon(saga.run_recovery_loop)
            assert await anyio.to_thread.run_sync(store.back.wait, 60)
            tg.cancel_scope.cancel()
    _assert_one_line_per_outage(caplog)


# -- durability reports ----------------------------------------------------------------------------
def test_sqlite_and_memory_durability(tmp_path: Path) -> None:
    normal = rs.SQLiteSagaStore(tmp_path / "n.db")
    power = rs.SQLiteSagaStore(tmp_path / "p.db", durability="power")
    memory = rs.InMemorySagaStore()
    assert (normal.durability.mode, normal.durability.power_loss) == ("normal", False)
    assert normal.durability.process_crash and normal.durability.warning is None
    assert (power.durability.mode, power.durability.power_loss) == ("power", True)
    assert power.durability.settings == {"journal_mode": "wal", "synchronous": "FULL"}
    assert memory.durability.mode == "none" and not memory.durability.process_crash
    health = {h["store"]: h for h in store_health()}
    assert health[repr(power)]["durability"]["mode"] == "power"
    assert health[repr(memory)]["available"] is True
    json.dumps(list(health.values()))


def test_postgres_durability_from_settings() -> None:
    from resilient.saga._durability import postgres_durability

    for value in ("on", "local", "remote_write", "remote_apply"):
        assert postgres_durability(value, "on").mode == "full"
    off = postgres_durability("off", "on")
    assert (off.process_crash, off.server_crash, off.power_loss) == (True, False, False)
    nofsync = postgres_durability("on", "off")
    assert (nofsync.server_crash, nofsync.power_loss) == (True, False)
    both = postgres_durability("off", "off")
    assert both.warning is not None and "synchronous_commit=off" in both.warning
    assert "fsync=off" in both.warning and both.as_dict()["settings"]["fsync"] == "off"


def test_outage_timeout_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outage_timeout"):
        rs.SQLiteSagaStore(tmp_path / "x.db", outage_timeout=0)
    with pytest.raises(TypeError, match="outage_timeout"):
        rs.SQLiteSagaStore(tmp_path / "x.db", outage_timeout="5s")  # type: ignore[arg-type]
    with pytest.raises(rs.ConfigError, match="outage_timeout"):
        store_from_url(f"sqlite:///{tmp_path}/x.db?outage_timeout=-1")
    store = store_from_url(f"sqlite:///{tmp_path}/x.db?outage_timeout=2s&durability=power")
    assert isinstance(store, rs.SQLiteSagaStore) and store.outage_timeout == 2.0


def test_store_unavailable_error() -> None:
    error = rs.SagaStoreUnavailable(
        "o-1", "<store postgresql://u:pw@h/db>", "append", 30.04, "OperationalError: password=pw"
    )
    assert isinstance(error, rs.ResilienceError) and rs.saga.SagaStoreUnavailable is type(error)
    text = str(error)
    assert "pw" not in text.replace("password", "") and "u:***@h" in text
    assert "30.0s" in text and "run(data, saga_id='o-1') again" in text
    import pickle

    copy = pickle.loads(pickle.dumps(error))
    assert (copy.saga_id, copy.operation, str(copy)) == ("o-1", "append", text)
    unsure = str(rs.SagaStoreUnavailable("o-2", "<store>", "create", 1.0, "refused"))
    assert "may or may not have been started" in unsure and "saga_id='o-2'" in unsure
