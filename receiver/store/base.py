"""The store's interface, shared by both backends, and the connection domain SQL is given.

Two backends implement :class:`Store`: SQLite (``receiver.store.sqlite``, the embedded default:
one replica, a file on its volume) and PostgreSQL (``receiver.store.postgres``: the shared
store of several replicas). Both run a unit of work the same way: ``await store.write(fn)``
runs ``fn(conn)`` whole inside one transaction on a store thread and returns after COMMIT;
``await store.read(fn)`` runs ``fn(conn)`` on a reading thread. So one set of domain SQL
functions (``receiver.store.incidents``, ``.outbox``, ``.journal``) serves both: they take a
:class:`Connection`, write ``?`` placeholders, and address rows by column name.

``Store(settings)`` gives the backend ``settings.backend`` names (as ``pathlib.Path()`` gives
the path class of the platform): every caller constructs and types a store the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

from receiver.config import StoreSettings

__all__ = [
    "Connection",
    "Cursor",
    "Row",
    "Store",
    "StoreNotReadable",
    "StoreUnavailable",
    "now",
]

T = TypeVar("T")


class StoreUnavailable(Exception):
    """The store could not complete an operation (disk full, locked, closed, database gone):
    transient."""


class StoreNotReadable(Exception):
    """No database to read: none at the path, or one at another schema version."""


class Row(Protocol):
    """One result row: by column name (what domain code uses) or by position."""

    def __getitem__(self, key: Any, /) -> Any: ...
    def keys(self) -> list[str]: ...


class Cursor(Protocol):
    """The result of one statement."""

    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """A connection inside the unit of work's transaction: ``?`` placeholders, named rows.

    ``sqlite3.Connection`` (with ``sqlite3.Row`` rows) and the PostgreSQL adapter both
    satisfy it. Domain functions never begin, commit or roll back: the store does.
    """

    def execute(self, sql: str, parameters: Sequence[Any] = ..., /) -> Cursor: ...


class Store:
    """Durable state: ``write`` runs a function in a committed transaction; ``read`` reads.

    Each backend implements every method (not an ``abc.ABC``: ``Store(settings)`` constructs
    the backend, which type checkers would refuse on an abstract class).
    """

    def __new__(cls, settings: StoreSettings) -> Store:
        if cls is not Store:
            return super().__new__(cls)
        # Imported here: each backend module imports this one.
        if settings.backend == "postgres":
            from receiver.store.postgres import PostgresStore

            return super().__new__(PostgresStore)
        from receiver.store.sqlite import SqliteStore

        return super().__new__(SqliteStore)

    lost: str | None
    """Why this store refuses every write until a restart (its database file was deleted or
    replaced), or None."""

    @property
    def path(self) -> Path:
        """Where local files beside the store live (the spool directory's parent)."""
        raise NotImplementedError

    @property
    def read_only(self) -> bool:
        """Opened with :meth:`open_read_only`: reads only, every write is refused."""
        raise NotImplementedError

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgres``."""
        raise NotImplementedError

    async def open(self) -> None:
        """Connect, migrate the schema to this version's, and start the store's threads."""
        raise NotImplementedError

    async def open_read_only(self) -> None:
        """Open an existing database at this version's schema for reading only.

        Raises :class:`StoreNotReadable` when there is none, or it has another schema version.
        """
        raise NotImplementedError

    async def close(self) -> None:
        """Finish the writes asked for, then stop; later writes raise StoreUnavailable."""
        raise NotImplementedError

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in a transaction; return its result once committed.

        ``fn`` may run more than once before its commit (a batch retried, a serialization
        failure retried): it must keep its effects in the database it is given.
        """
        raise NotImplementedError

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` against a read-only view, off the event loop."""
        raise NotImplementedError

    async def ping(self) -> bool:
        """Whether the store can commit right now (for /readyz)."""
        raise NotImplementedError


def nothing(conn: Connection) -> None:
    """A write that changes nothing: commits an empty transaction."""


def now() -> float:
    """Wall-clock seconds; one place so tests and records agree on the clock."""
    return time.time()


def placeholders(count: int) -> str:
    """``?, ?, ?`` for an ``IN (...)`` of ``count`` values."""
    return ", ".join("?" * count)
