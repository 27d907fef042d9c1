"""A private PostgreSQL server for tests and benchmarks: ``initdb`` in a temporary
directory, run as an unprivileged user, on a Unix socket and a free loopback port.

The server refuses to run as root, so it runs as ``postgres`` (Debian's package
makes that user) or ``nobody``, with a data directory that user owns. It trusts
local connections: it is reachable only from this machine, and it is gone
with the directory.
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

USER = "fleet"  # the database's superuser (no operating system account needed)
DATABASE = "fleet"


def bin_dir() -> Path | None:
    """Where the newest installed PostgreSQL's programs are (None: not installed)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Postgres:
    """One server: ``start`` (made at the first), ``stop`` (``immediate``: as if it
    crashed), ``remove``; ``dsn`` reaches its database over the Unix socket."""

    def __init__(self, *, run_as: str | None = None) -> None:
        bindir = bin_dir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        self.bin = bindir
        self.user = run_as or next((u for u in ("postgres", "nobody") if _has_user(u)), "nobody")
        account = pwd.getpwnam(self.user)
        self.uid, self.gid = account.pw_uid, account.pw_gid
        # Not under pytest's tmp_path: its parents are root's alone (0700).
        self.base = Path(tempfile.mkdtemp(prefix="fw-pg-"))
        os.chmod(self.base, 0o755)
        self.data = self.base / "data"
        self.sockets = self.base / "run"
        self.sockets.mkdir()
        os.chown(self.sockets, self.uid, self.gid)
        self.log = self.base / "server.log"
        self.port = _free_port()
        self._made = False

    def _as_user(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=self.base,
        )

    def _check(self, done: subprocess.CompletedProcess[str], what: str) -> None:
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{what} failed: {done.stdout}{done.stderr}{log}")

    def start(self) -> None:
        if not self._made:
            self.data.mkdir()
            os.chown(self.data, self.uid, self.gid)
            Path(self.log).touch()
            os.chown(self.log, self.uid, self.gid)
            self._check(
                self._as_user(
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    USER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "--no-sync",
                ),
                "initdb",
            )
        options = (
            f"-k {self.sockets} -p {self.port} -c listen_addresses=127.0.0.1"
            # No fsync: a test's server lives as long as its directory; commits
            # still reach the WAL before they return, so a stop of the server
            # (even `immediate`) loses none.
            " -c fsync=off -c full_page_writes=off"
        )
        self._check(
            self._as_user(
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
            ),
            "pg_ctl start",
        )
        if not self._made:
            import psycopg

            with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {DATABASE}")
            self._made = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server: ``fast`` (clean) or ``immediate`` (every process killed at once)."""
        self._check(
            self._as_user(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"),
            "pg_ctl stop",
        )

    def running(self) -> bool:
        done = self._as_user(str(self.bin / "pg_ctl"), "-D", str(self.data), "status")
        return done.returncode == 0

    def remove(self) -> None:
        if self._made and self.running():
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def dsn(self, database: str = DATABASE) -> str:
        return f"host={self.sockets} port={self.port} dbname={database} user={USER}"

    def tcp_dsn(self, database: str = DATABASE) -> str:
        return f"host=127.0.0.1 port={self.port} dbname={database} user={USER}"


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
