"""The PostgreSQL store: the shared state of several replicas (``store.backend: postgres``).

Why psycopg 3's synchronous connections, used from the store's threads: a unit of work is a
synchronous domain function run whole inside one transaction (``await store.write(fn)``
returns after COMMIT), as with SQLite. A pool of connections (psycopg_pool) serves those
threads, so one set of domain SQL serves both backends, a transaction never hops between the
event loop and a thread per statement, and the event loop never blocks.

Domain SQL is written with SQLite's ``?`` placeholders; :class:`PgConnection` translates each
statement once (cached) to psycopg's ``%s``. Rows are :class:`PgRow`, addressable by column
name and by position, as ``sqlite3.Row`` is.

Isolation: every transaction is SERIALIZABLE. The domain functions were written for SQLite's
single writer (a check, then an insert, with nothing slipping in between); SERIALIZABLE keeps
that true with several writers on several replicas: PostgreSQL aborts one of two transactions
that would not have the same outcome one after the other, and the store runs the aborted one
again (``fn`` may run more than once before its commit, as with SQLite's batches).

Errors that a later attempt may not have (the database unreachable, restarting or shutting
down, a statement cancelled by ``statement_timeout``, serialization failures past the
retries, the pool exhausted) become :class:`StoreUnavailable`: a webhook is then answered 503
and Alertmanager sends it again. Any other database error is a bug and propagates as is.

Schema: :data:`MIGRATIONS`, PostgreSQL's own forward-only list (it starts from SQLite's
latest schema; SQLite keeps its own list). They are applied in one transaction that first
takes ``pg_advisory_xact_lock(MIGRATION_LOCK)``: replicas starting at once queue on the lock,
and each one after the first finds the versions already recorded in ``schema_migrations``.
"""

from __future__ import annotations

import asyncio
import functools
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import psycopg_pool
import structlog
from psycopg import errors as pg_errors
from psycopg.rows import RowMaker

from receiver.config import StoreSettings
from receiver.leadership import LEADERSHIP_DDL
from receiver.store.base import Connection, Store, StoreNotReadable, StoreUnavailable, nothing

__all__ = ["MIGRATIONS", "MIGRATION_LOCK", "PgConnection", "PgRow", "PostgresStore"]

T = TypeVar("T")
logger = structlog.get_logger(__name__)

# The advisory lock migrations are applied under: any constant of our own ("phrm" in ASCII).
MIGRATION_LOCK = 0x7068726D

# SQLite's json_extract(doc, '$.a.b') for the outbox's JSON payloads (TEXT), so the domain SQL
# is one for both: the value as text (callers CAST it where they compare it as a number).
_JSON_EXTRACT = """
CREATE FUNCTION json_extract(doc TEXT, path TEXT) RETURNS TEXT
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT doc::jsonb #>> string_to_array(substr(path, 3), '.') $$
"""

# Forward-only: each entry is applied once, in order, and recorded in schema_migrations.
MIGRATIONS: list[str] = [
    # 1: SQLite's schema at its migration 7, in PostgreSQL's types, and the leadership lease.
    """
    CREATE TABLE inbox (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        dedup_hash BIGINT,
        dedup_key TEXT NOT NULL,
        group_key TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL,
        payload BYTEA NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        processed_at DOUBLE PRECISION,
        error TEXT
    );
    CREATE INDEX inbox_pending ON inbox (state, id);
    CREATE INDEX inbox_dedup ON inbox (dedup_hash);
    CREATE TABLE incidents (
        id TEXT PRIMARY KEY,
        group_key TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
        title TEXT NOT NULL,
        group_labels TEXT NOT NULL,
        external_url TEXT NOT NULL DEFAULT '',
        opened_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        resolved_at DOUBLE PRECISION,
        error_class TEXT,
        severity TEXT,
        acknowledge_by DOUBLE PRECISION,
        decision TEXT
    );
    CREATE UNIQUE INDEX incidents_one_open_per_group ON incidents (group_key)
        WHERE status = 'open';
    CREATE INDEX incidents_resolved ON incidents (resolved_at) WHERE status = 'resolved';
    CREATE TABLE alerts (
        incident_id TEXT NOT NULL REFERENCES incidents (id),
        fingerprint TEXT NOT NULL,
        status TEXT NOT NULL,
        labels TEXT NOT NULL,
        annotations TEXT NOT NULL,
        starts_at TEXT NOT NULL,
        ends_at TEXT,
        generator_url TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (incident_id, fingerprint)
    );
    CREATE TABLE timeline (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        incident_id TEXT NOT NULL REFERENCES incidents (id),
        at DOUBLE PRECISION NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX timeline_incident ON timeline (incident_id, id);
    CREATE TABLE incident_events (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        incident_id TEXT NOT NULL REFERENCES incidents (id),
        kind TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}',
        created_at DOUBLE PRECISION NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0,
        error TEXT
    );
    CREATE INDEX incident_events_pending ON incident_events (state, id);
    CREATE INDEX incident_events_incident ON incident_events (incident_id);
    CREATE TABLE outbox (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        idempotency_key TEXT NOT NULL UNIQUE,
        destination TEXT NOT NULL,
        incident_id TEXT NOT NULL,
        ordering_key TEXT NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'sent', 'failed', 'skipped')),
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before DOUBLE PRECISION NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        sent_at DOUBLE PRECISION,
        priority INTEGER NOT NULL DEFAULT 1,
        superseded_by BIGINT
    );
    CREATE INDEX outbox_pending ON outbox (state, ordering_key, id);
    CREATE INDEX outbox_incident ON outbox (incident_id, id);
    CREATE TABLE notify_state (
        destination TEXT NOT NULL,
        incident_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (destination, incident_id, key)
    );
    CREATE TABLE evidence_bundles (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        incident_id TEXT NOT NULL REFERENCES incidents (id),
        phase TEXT NOT NULL CHECK (phase IN ('opened', 'resolved')),
        path TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        size_bytes BIGINT NOT NULL,
        sha256 TEXT NOT NULL,
        failed_sources TEXT NOT NULL DEFAULT '[]'
    );
    CREATE UNIQUE INDEX evidence_bundles_one_per_phase ON evidence_bundles (incident_id, phase);
    CREATE TABLE remediation_actions (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        incident_id TEXT NOT NULL,
        action TEXT NOT NULL,
        kind TEXT NOT NULL,
        target TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN (
            'intent', 'done', 'held', 'failed', 'dry_run',
            'reverting', 'reverted', 'revert_skipped', 'handed_over'
        )),
        before TEXT,
        after TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        UNIQUE (incident_id, action)
    );
    CREATE INDEX remediation_actions_target ON remediation_actions (target, state);
    CREATE TABLE remediation_cooldowns (
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        applied_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (action, target)
    );
    CREATE TABLE remediation_reverts (
        incident_id TEXT PRIMARY KEY,
        due_at DOUBLE PRECISION NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done'))
    );
    CREATE INDEX remediation_reverts_due ON remediation_reverts (state, due_at);
    """
    + _JSON_EXTRACT
    + ";\n"
    + LEADERSHIP_DDL
    + ";\n",
    # 2: SQLite's 8: runtime switches (the kill switch from the operations page) and the audit
    # log of who changed what, when and from where.
    """
    CREATE TABLE runtime_switches (
        name TEXT PRIMARY KEY,
        is_on INTEGER NOT NULL,
        changed_by TEXT NOT NULL,
        changed_from TEXT NOT NULL,
        changed_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE audit_log (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        actor TEXT NOT NULL,
        origin TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    """,
    # 3: SQLite's 9: response times (first acknowledgement and mitigation), PagerDuty webhook
    # events already recorded, and which PagerDuty incident is ours.
    """
    ALTER TABLE incidents ADD COLUMN acknowledged_at DOUBLE PRECISION;
    ALTER TABLE incidents ADD COLUMN acknowledged_by TEXT;
    ALTER TABLE incidents ADD COLUMN acknowledged_via TEXT;
    ALTER TABLE incidents ADD COLUMN mitigated_at DOUBLE PRECISION;
    ALTER TABLE incidents ADD COLUMN mitigated_by TEXT;
    CREATE INDEX incidents_opened ON incidents (opened_at);
    CREATE TABLE pagerduty_events (
        event_id TEXT PRIMARY KEY,
        incident_id TEXT NOT NULL REFERENCES incidents (id),
        event_type TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX pagerduty_events_incident ON pagerduty_events (incident_id);
    CREATE TABLE pagerduty_incidents (
        pagerduty_id TEXT PRIMARY KEY,
        incident_id TEXT NOT NULL REFERENCES incidents (id)
    );
    CREATE INDEX pagerduty_incidents_incident ON pagerduty_incidents (incident_id);
    """,
    # 4: SQLite's 10: runbook actions waiting for a person (approval: required).
    """
    CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        incident_id TEXT NOT NULL REFERENCES incidents (id),
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'awaiting'
            CHECK (state IN ('awaiting', 'approved', 'denied', 'expired')),
        requested_at DOUBLE PRECISION NOT NULL,
        expires_at DOUBLE PRECISION NOT NULL,
        decided_at DOUBLE PRECISION,
        decided_by TEXT,
        decided_via TEXT,
        UNIQUE (incident_id, action)
    );
    CREATE INDEX approvals_awaiting ON approvals (state, expires_at);
    """,
]

_VERSIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
)

# A write whose transaction PostgreSQL aborted to keep it serializable is run again, up to
# this many times in all, after a short random pause (the other transaction finishes).
SERIALIZATION_ATTEMPTS = 8

# Errors a later attempt may not have: the server unreachable, restarting, shutting down,
# a statement cancelled by statement_timeout, no pooled connection in time.
_TRANSIENT: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    psycopg_pool.PoolTimeout,
    psycopg_pool.PoolClosed,
)


class PgRow:
    """A result row by column name or position, like ``sqlite3.Row``."""

    __slots__ = ("_names", "_values")

    def __init__(self, names: dict[str, int], values: Sequence[Any]) -> None:
        self._names = names
        self._values = values

    def __getitem__(self, key: int | str) -> Any:
        if isinstance(key, str):
            return self._values[self._names[key]]
        return self._values[key]

    def keys(self) -> list[str]:
        return list(self._names)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PgRow) and tuple(self._values) == tuple(other._values)

    def __hash__(self) -> int:
        return hash(tuple(self._values))

    def __repr__(self) -> str:
        return f"PgRow({dict(zip(self._names, self._values, strict=True))})"


def _pg_row(cursor: psycopg.Cursor[Any]) -> RowMaker[PgRow]:
    names = {column.name: i for i, column in enumerate(cursor.description or ())}

    def make(values: Sequence[Any]) -> PgRow:
        return PgRow(names, values)

    return make


@functools.lru_cache(maxsize=1024)
def translate(sql: str) -> str:
    """``?`` placeholders to psycopg's ``%s`` (a literal ``%`` doubled). Domain SQL has no
    ``?`` in a string literal or operator (the store's rule for portable SQL)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PgConnection:
    """The :class:`~receiver.store.base.Connection` of PostgreSQL: a psycopg connection inside
    the unit of work's transaction, with ``?`` placeholders and :class:`PgRow` rows."""

    __slots__ = ("raw",)

    def __init__(self, raw: psycopg.Connection[PgRow]) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[PgRow]:
        return self.raw.execute(translate(sql), parameters, prepare=False)


class PostgresStore(Store):
    """PostgreSQL state: ``write`` runs a function in a committed transaction; ``read`` reads."""

    def __init__(self, settings: StoreSettings) -> None:
        if settings.postgres.dsn is None:
            raise StoreUnavailable("store.postgres.dsn is not set")
        self._settings = settings
        self._pool: psycopg_pool.ConnectionPool[psycopg.Connection[PgRow]] | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._read_only = False
        self._closing = False
        self._lock = threading.Lock()
        self.lost: str | None = None
        self.commits = 0

    @property
    def path(self) -> Path:
        return self._settings.path

    @property
    def backend(self) -> str:
        return "postgres"

    @property
    def read_only(self) -> bool:
        return self._read_only

    def _dsn(self) -> str:
        source = self._settings.postgres.dsn
        assert source is not None  # checked in __init__
        return source.resolve().get_secret_value()

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        timeout_ms = int(self._settings.postgres.statement_timeout_seconds * 1000)
        # A transaction left idle (a replica paused mid-transaction) would hold its locks,
        # among them the lease row a successor must update: PostgreSQL ends it instead.
        conn.execute(f"SET statement_timeout = {timeout_ms}")
        conn.execute(f"SET idle_in_transaction_session_timeout = {max(timeout_ms, 1000)}")
        conn.execute("SET TIME ZONE 'UTC'")
        conn.commit()

    async def open(self) -> None:
        """Connect, migrate under the advisory lock, and start the store's threads."""
        self._closing = False
        await asyncio.to_thread(self._open_pool)
        try:
            await self._run(self._migrate_in, write=True, serializable=False)
        except BaseException:
            await self._close_pool()
            raise

    async def open_read_only(self) -> None:
        await asyncio.to_thread(self._open_pool)
        self._read_only = True
        try:
            version = await self._run(_schema_version, write=False, serializable=False)
        except StoreUnavailable as e:
            await self._close_pool()
            raise StoreNotReadable(f"cannot read the PostgreSQL store: {e}") from None
        if version != len(MIGRATIONS):
            await self._close_pool()
            raise StoreNotReadable(
                f"the PostgreSQL store has schema version {version}, this version reads "
                f"{len(MIGRATIONS)}"
                + (": serving migrates it" if version < len(MIGRATIONS) else "")
            )

    def _open_pool(self) -> None:
        size = self._settings.postgres.pool_size
        pool: psycopg_pool.ConnectionPool[psycopg.Connection[PgRow]] = psycopg_pool.ConnectionPool(
            self._dsn(),
            min_size=1,
            max_size=size,
            kwargs={"row_factory": _pg_row, "autocommit": False},
            configure=self._configure,
            # A checked-out connection the server closed meanwhile is replaced, not handed out.
            check=psycopg_pool.ConnectionPool.check_connection,
            timeout=self._settings.busy_timeout_seconds,
            open=False,
            name="store",
        )
        try:
            pool.open(wait=True, timeout=self._settings.busy_timeout_seconds)
        except psycopg_pool.PoolTimeout as e:
            pool.close()
            raise StoreUnavailable(f"cannot connect to the PostgreSQL store: {e}") from None
        self._pool = pool
        self._threads = ThreadPoolExecutor(max_workers=size, thread_name_prefix="store-pg")

    async def close(self) -> None:
        self._closing = True
        await self._close_pool()
        logger.info("store closed", commits=self.commits, backend="postgres")

    async def _close_pool(self) -> None:
        threads, self._threads = self._threads, None
        if threads is not None:
            await asyncio.to_thread(threads.shutdown, True)  # writes asked for finish first
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.close)

    async def write(self, fn: Callable[[Connection], T]) -> T:
        if self._read_only:
            raise StoreUnavailable("store is open read-only")
        return await self._run(fn, write=True, serializable=True)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        return await self._run(fn, write=False, serializable=False)

    async def ping(self) -> bool:
        try:
            await self.write(nothing)
        except StoreUnavailable:
            return False
        return True

    async def _run(self, fn: Callable[[Any], T], *, write: bool, serializable: bool) -> T:
        threads = self._threads
        if threads is None or self._closing:
            raise StoreUnavailable("store is not open")
        loop = asyncio.get_running_loop()
        work = functools.partial(self._transaction, fn, write=write, serializable=serializable)
        try:
            return await loop.run_in_executor(threads, work)
        except RuntimeError as e:  # the executor shut down meanwhile
            raise StoreUnavailable(f"store is closed: {e}") from None

    def _transaction(self, fn: Callable[[Any], T], *, write: bool, serializable: bool) -> T:
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("store is not open")
        for attempt in range(1, SERIALIZATION_ATTEMPTS + 1):
            try:
                with pool.connection() as raw:
                    if serializable:
                        raw.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
                    elif not write:
                        raw.execute("SET TRANSACTION READ ONLY")
                    # pool.connection() commits on leaving normally, rolls back on an error.
                    result = fn(PgConnection(raw))
                if write:
                    with self._lock:
                        self.commits += 1
                return result
            except (pg_errors.SerializationFailure, pg_errors.DeadlockDetected) as e:
                if attempt == SERIALIZATION_ATTEMPTS:
                    raise StoreUnavailable(f"store write kept conflicting: {e}") from e
                # Jitter, not security: two retried transactions should not collide again.
                time.sleep(random.uniform(0.001, 0.005 * attempt))  # noqa: S311
            except _TRANSIENT as e:
                raise StoreUnavailable(f"store {'write' if write else 'read'} failed: {e}") from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _migrate_in(self, conn: PgConnection) -> None:
        raw = conn.raw
        # Every replica starting at once queues here; each later one finds the work done.
        raw.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        raw.execute(_VERSIONS_DDL)
        version = _schema_version(conn)
        if version > len(MIGRATIONS):
            raise StoreNotReadable(
                f"the PostgreSQL store has schema version {version}, written by a newer "
                f"receiver (this one knows {len(MIGRATIONS)})"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            raw.execute(script.encode(), prepare=False)  # several statements: simple protocol
            raw.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (number,))
            logger.info("store migrated", version=number, backend="postgres")


def _schema_version(conn: PgConnection) -> int:
    row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL AS present").fetchone()
    if row is None or not row["present"]:
        return 0
    found = conn.execute("SELECT coalesce(max(version), 0) AS v FROM schema_migrations").fetchone()
    return int(found["v"]) if found is not None else 0
