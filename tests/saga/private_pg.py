"""A private PostgreSQL server for tests that kill and restart it: ``initdb`` + ``pg_ctl`` in a
temporary directory, on a free port of 127.0.0.1, never the shared server on 5432.

The binaries are looked up on ``PATH`` and in ``/usr/lib/postgresql/*/bin`` (Debian's
layout). PostgreSQL refuses to run as root, so as root the server runs as the ``postgres``
user (its data directory is made theirs). :func:`problem` says why a server cannot be made
here, for ``pytest.mark.skipif``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any


def _bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(f"{candidate}/initdb", os.X_OK) and os.access(f"{candidate}/pg_ctl", os.X_OK):
            return Path(candidate)
    return None


def _run_as() -> pwd.struct_passwd | None:
    """The user the server runs as when we are root (``None``: as ourselves)."""
    if os.geteuid() != 0:
        return None
    return pwd.getpwnam("postgres")


def problem() -> str | None:
    """Why no private server can be started here, or ``None``."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'resilient-patterns[postgres]')"
    if _bin_dir() is None:
        return "initdb/pg_ctl not found (looked on PATH and in /usr/lib/postgresql/*/bin)"
    if os.geteuid() == 0:
        try:
            _run_as()
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateServer:
    """One throw-away server: :meth:`start`, :meth:`kill` (immediate shutdown: what a crash
    leaves behind, recovered from WAL at the next start), :meth:`stop`, :meth:`remove`."""

    def __init__(self) -> None:
        self.bin = _bin_dir()
        assert self.bin is not None, problem()
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="resilient-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self._pg("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
                 "-E", "UTF8", "--locale=C")  # fmt: skip

    def _pg(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        kw: dict[str, Any] = {}
        if self.user is not None:
            kw = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        return subprocess.run(
            [str(self.bin / tool), *args],  # type: ignore[operator]
            capture_output=True,
            text=True,
            timeout=120,
            check=check,
            cwd=self.root,
            **kw,
        )

    def start(self, *settings: str) -> None:
        """Start (and wait until it accepts connections), with ``-c`` ``settings``."""
        options = [
            f"-p {self.port}",
            f"-k {self.data}",
            "-c listen_addresses=127.0.0.1",
            "-c max_connections=60",
            *(f"-c {s}" for s in settings),
        ]
        self._pg("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "90",
                 "-o", " ".join(options), "start")  # fmt: skip

    def kill(self) -> None:
        """Immediate shutdown: every backend quits at once, no checkpoint (crash recovery at
        the next start), like ``kill -9`` of the server without its stale shared memory."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
