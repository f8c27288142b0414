"""A real PostgreSQL for tests: a throwaway cluster from Debian's ``postgresql`` on loopback.

One cluster per test session (``postgres_cluster``: ``initdb`` takes about a second), one
fresh database per test (``postgres_dsn``: ``CREATE DATABASE`` from ``template0`` is fast and
nothing leaks between tests). PostgreSQL refuses to run as root, and CI runs as root: the
cluster is then created and run as the ``postgres`` system user (``runuser``), in a directory
that user owns. The cluster listens on 127.0.0.1 only, with its socket in its own directory.

Durability is switched off (``fsync=off``): the cluster is thrown away after the session, and
what the tests check is the database's semantics (transactions, locks, its clock), not the disk.

Without the binaries the tests that need PostgreSQL are skipped, with the reason; in CI
(``CI=true``) a missing PostgreSQL is a failure instead, so the suite cannot pass by skipping.

Tests use the fixtures by importing them (``from tests.postgres import postgres_dsn``), or start
a cluster of their own with :class:`PostgresCluster` when they need to stop and start it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.procs import free_port

__all__ = [
    "PostgresCluster",
    "PostgresUnavailable",
    "find_postgres_bin",
    "postgres_cluster",
    "postgres_dsn",
    "running_cluster",
]

DEBIAN_ROOT = Path("/usr/lib/postgresql")
SUPERUSER = "app"
RUN_AS = "postgres"
START_ATTEMPTS = 3


class PostgresUnavailable(Exception):
    """The PostgreSQL server binaries are not installed (Debian package ``postgresql``)."""


def find_postgres_bin(root: Path = DEBIAN_ROOT) -> Path:
    """The newest installed server's ``bin`` directory (Debian installs one per major version)."""
    versions = [
        d for d in root.glob("*/bin") if (d / "initdb").is_file() and d.parent.name.isdigit()
    ]
    if not versions:
        raise PostgresUnavailable(
            f"PostgreSQL server binaries not found under {root}/<version>/bin "
            "(install the Debian package 'postgresql')"
        )
    return max(versions, key=lambda d: int(d.parent.name))


@dataclass(frozen=True)
class _Owner:
    """Who runs the server: ``postgres`` when the tests run as root, else the current user."""

    prefix: tuple[str, ...]
    uid: int
    gid: int

    @classmethod
    def for_this_process(cls) -> _Owner:
        if os.geteuid() != 0:
            return cls((), os.getuid(), os.getgid())
        try:
            user = pwd.getpwnam(RUN_AS)
        except KeyError:
            raise PostgresUnavailable(f"running as root, but there is no '{RUN_AS}' user") from None
        return cls(("runuser", "-u", RUN_AS, "--"), user.pw_uid, user.pw_gid)


class PostgresCluster:
    """A PostgreSQL cluster in a fresh directory, listening on a free loopback port."""

    def __init__(self, *, root: Path = DEBIAN_ROOT) -> None:
        self.bin_dir = find_postgres_bin(root)
        self._owner = _Owner.for_this_process()
        # Not under pytest's tmp_path: its parents are private to root, and the server runs
        # as another user. A short path also keeps the socket path under its length limit.
        self.directory = Path(tempfile.mkdtemp(prefix="pgtest-"))
        os.chown(self.directory, self._owner.uid, self._owner.gid)
        self.data_dir = self.directory / "data"
        self.port = 0
        self._run("initdb", "-D", str(self.data_dir), "-A", "trust", "-U", SUPERUSER,
                  "-E", "UTF8", "--no-sync", "--no-instructions")  # fmt: skip

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [*self._owner.prefix, str(self.bin_dir / program), *args]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=self.directory, check=False)
        if done.returncode != 0:
            raise AssertionError(
                f"{program} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        return done

    @property
    def log_path(self) -> Path:
        return self.directory / "server.log"

    def start(self) -> None:
        """Start the server and wait until it accepts connections (a new port if taken)."""
        for attempt in range(START_ATTEMPTS):
            # Another test run on this machine may take the port between choosing and binding.
            self.port = self.port if attempt == 0 and self.port else free_port()
            options = (
                f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200"
            )
            try:
                self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path),
                          "-o", options, "-w", "-t", "30", "start")  # fmt: skip
                return
            except AssertionError:
                if attempt == START_ATTEMPTS - 1 or not self._port_was_taken():
                    raise AssertionError(
                        f"PostgreSQL did not start:\n{self.server_log()[-4000:]}"
                    ) from None

    def _port_was_taken(self) -> bool:
        return re.search(r"could not (bind|create listen socket)", self.server_log()) is not None

    def server_log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def stop(self, *, mode: str = "fast") -> None:
        """Stop the server; ``mode`` ``immediate`` is a crash (no shutdown checkpoint)."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        argv = [*self._owner.prefix, str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir)]
        return subprocess.run([*argv, "status"], capture_output=True, check=False).returncode == 0

    def remove(self) -> None:
        """Stop the server if it runs, and delete its directory."""
        if self.running():
            with contextlib.suppress(AssertionError):
                self.stop(mode="immediate")
        shutil.rmtree(self.directory, ignore_errors=True)

    def dsn(self, database: str = "postgres") -> str:
        """A libpq connection URI for ``database`` as the cluster's superuser, over TCP."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; returns its name."""
        name = f"test_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
            )
        return name

    def drop_database(self, name: str) -> None:
        """Drop ``name``, ending any session still connected to it (a test's leftovers)."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextlib.contextmanager
def running_cluster(*, root: Path = DEBIAN_ROOT) -> Iterator[PostgresCluster]:
    """A started cluster, removed at the end; skips (or, in CI, fails) without PostgreSQL."""
    try:
        cluster = PostgresCluster(root=root)
    except PostgresUnavailable as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and PostgreSQL is unavailable: {e}")
        pytest.skip(str(e))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.remove()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """The session's PostgreSQL cluster (started on first use, stopped at the end)."""
    with running_cluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_dsn(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """The DSN of a fresh database of the test's own, dropped when the test ends."""
    name = postgres_cluster.create_database()
    try:
        yield postgres_cluster.dsn(name)
    finally:
        postgres_cluster.drop_database(name)
