"""The test PostgreSQL: a missing server skips with the reason, except in CI where it fails;
a test's database is its own."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.postgres import find_postgres_bin, postgres_cluster, postgres_dsn, running_cluster

__all__ = ["postgres_cluster", "postgres_dsn"]


def test_missing_postgres_skips_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the server binaries (and not in CI) the test is skipped, saying what to install."""
    monkeypatch.delenv("CI", raising=False)
    skipped = pytest.raises(pytest.skip.Exception, match="install the Debian package 'postgresql'")
    with skipped, running_cluster(root=tmp_path):
        pass


def test_missing_postgres_fails_in_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In CI (CI=true) a missing PostgreSQL fails the test: the suite cannot pass by skipping."""
    monkeypatch.setenv("CI", "true")
    failed = pytest.raises(pytest.fail.Exception, match="CI=true and PostgreSQL is unavailable")
    with failed, running_cluster(root=tmp_path):
        pass


def test_the_newest_installed_version_is_used(tmp_path: Path) -> None:
    """Debian installs one directory per major version; the newest one's binaries are used."""
    for version in ("13", "15", "9"):
        (tmp_path / version / "bin").mkdir(parents=True)
        (tmp_path / version / "bin" / "initdb").touch()
    (tmp_path / "16" / "bin").mkdir(parents=True)  # a client-only install: no initdb
    assert find_postgres_bin(tmp_path) == tmp_path / "15" / "bin"


@pytest.mark.slow
def test_each_test_gets_a_fresh_database_on_loopback(postgres_dsn: str) -> None:
    """The DSN names a database of this test's own, on 127.0.0.1, empty."""
    assert "@127.0.0.1:" in postgres_dsn
    with psycopg.connect(postgres_dsn) as conn:
        row = conn.execute(
            "SELECT current_database(), count(*) FROM information_schema.tables"
            " WHERE table_schema = 'public'"
        ).fetchone()
    assert row is not None
    assert row[0].startswith("test_")
    assert row[1] == 0
