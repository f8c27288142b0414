"""What another process does to the SQLite database file, for tests of how the receiver copes.

The store's own SQL is the receiver's; these are an outsider's: a second writer holding the
write lock, or a database left at an older schema by an older version. They live beside the
store's tests, the only tests that speak SQL.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from receiver.store import MIGRATIONS

__all__ = ["holding_write_lock", "schema_version", "write_old_schema"]


@contextlib.contextmanager
def holding_write_lock(database: Path) -> Iterator[None]:
    """Hold the database's write lock, as a second writer would, until the block ends."""
    other = sqlite3.connect(database, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
    finally:
        other.close()


def write_old_schema(database: Path, version: int) -> None:
    """Create ``database`` at schema ``version`` (its first migrations only), as an older
    receiver left it."""
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        for number, script in enumerate(MIGRATIONS[:version], start=1):
            conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
    finally:
        conn.close()


def schema_version(database: Path) -> int:
    """The schema version recorded in ``database``."""
    conn = sqlite3.connect(database)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()
