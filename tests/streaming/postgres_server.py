"""A real PostgreSQL server for the tests: ``initdb`` in a temp dir, ``pg_ctl`` on a free loopback port, trust auth,
one database; never the system service.

The binaries: ``FIRSTMILE_PG_BIN`` if set, else the directory of ``initdb`` on the PATH (followed through its
symlink: ``pg_ctl`` starts the ``postgres`` beside it), else the newest ``/usr/lib/postgresql/*/bin`` (Debian's
``postgresql-15`` package, which ``.ci/run`` installs, puts them there and not on the PATH). ``initdb`` refuses to
run as root: as root the server runs as the ``postgres`` user the package creates (else ``nobody``), in a temp dir
it owns (pytest's own temp dirs are root's, mode 700).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg2

from streaming.broker import free_port

DATABASE = "firstmile"
SUPERUSER = "postgres"


def bin_dir() -> Path | None:
    """Where ``initdb``, ``pg_ctl`` and ``postgres`` are, or None."""
    candidates: list[Path] = []
    if os.environ.get("FIRSTMILE_PG_BIN"):
        candidates.append(Path(os.environ["FIRSTMILE_PG_BIN"]))
    if on_path := shutil.which("initdb"):
        candidates.append(Path(on_path).resolve().parent)

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", p.parent.name)) or (0,)

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    for d in candidates:
        if all((d / exe).is_file() and os.access(d / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


SKIP_REASON = ("no PostgreSQL server binaries (initdb, pg_ctl, postgres) on the PATH, in FIRSTMILE_PG_BIN or in "
               "/usr/lib/postgresql/*/bin: install Debian's postgresql-15 (.ci/run does)")


def _run_as() -> pwd.struct_passwd | None:
    """The user the server runs as when we are root (initdb refuses root), else None (ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL as")


class PostgresServer:
    """One server: :meth:`start` it, :meth:`stop` / :meth:`restart` it (same port, same data), :meth:`close`."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="firstmile-pg-"))
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.running = False

    @classmethod
    def start(cls, bindir: Path | None = None) -> PostgresServer:
        found = bindir or bin_dir()
        if found is None:
            raise RuntimeError(SKIP_REASON)
        server = cls(found)
        try:
            server._run("initdb", "-D", str(server.data), "--auth=trust", f"--username={SUPERUSER}",
                        "--encoding=UTF8", "--locale=C", "--no-sync")
            server.restart()
            server.query(f"CREATE DATABASE {DATABASE}", database="postgres")
        except BaseException:
            server.close()
            raise
        atexit.register(server.close)
        return server

    def _run(self, exe: str, *args: str, timeout: float = 60.0) -> None:
        kwargs: dict[str, Any] = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        done = subprocess.run([str(self.bindir / exe), *args], cwd=self.root, capture_output=True, text=True,
                              timeout=timeout, check=False, **kwargs)
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{exe} {' '.join(args)} failed ({done.returncode}): {done.stdout}{done.stderr}{log}")

    @property
    def dsn(self) -> str:
        return self.dsn_for(DATABASE)

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = DATABASE) -> Any:
        return psycopg2.connect(self.dsn_for(database), connect_timeout=5)

    def query(self, statement: str, params: tuple[Any, ...] = (), *,
              database: str = DATABASE) -> list[tuple[Any, ...]]:
        """Runs one statement in its own connection (autocommit) and returns its rows ([] if it returns none)."""
        conn = self.connect(database)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def restart(self) -> None:
        """Starts the server (again, after :meth:`stop`) on the same port with the same data."""
        options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=30 "
                   "-c shared_buffers=16MB")
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log), "-o", options)
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self.running = False
            self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer.start()
    try:
        yield server
    finally:
        server.close()
