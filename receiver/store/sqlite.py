"""The SQLite store: the embedded default, one replica with its database file on its volume.

Why a writer thread with group commit: sqlite3 calls block, so they must stay off the event
loop, and SQLite allows one writer at a time anyway. Every write is a function run on the
single writer thread; whatever has queued up while the previous commit ran is committed
together in one transaction. A caller's ``await store.write(...)`` returns only after the
commit, which is what lets the webhook answer 200 only for what is durably stored.

One failing function must not spoil the others in its batch. Savepoints around each one would
say so directly, but every sqlite3 call hands the GIL to the event loop and back, and under
load that hand-over, not SQLite, is what the writer waits on. So a batch first runs without
savepoints; only if a function raises is the batch rolled back and run again, each function
in its own savepoint. A function may therefore run more than once before its commit: it must
keep its effects in the database it is given.

Durability (``store.synchronous``) in WAL mode: ``normal`` survives a crash or kill of this
process (the WAL is written before the commit returns) but not a power loss before the next
checkpoint; ``full`` fsyncs on every commit and survives power loss. docs/benchmarks.md
records the cost of each.

Reads run on a separate thread with their own connection; WAL lets them proceed while the
writer commits.

The command line's read-only commands (``postmortem``, ``evidence``) open the store with
:meth:`Store.open_read_only`: an existing database at the current schema, opened by SQLite
read-only, so that pointing one at the wrong place or at a database of another version never
creates or migrates a database beside the one serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import structlog

from receiver.config import StoreSettings
from receiver.store.base import (
    Connection,
    Store,
    StoreNotReadable,
    StoreUnavailable,
    nothing,
)

__all__ = ["MIGRATIONS", "SqliteStore"]

T = TypeVar("T")
logger = structlog.get_logger(__name__)

MAX_BATCH = 512

# The inbox's integer key of a dedup digest in SQL, for rows stored before migration 5: the
# first 16 hex digits with the top bit cleared (63 bits, a positive SQLite integer). Must agree
# with ``receiver.store.inbox.dedup_hash``; a key that is not a digest gets NULL (never a repeat).
_SQL_HEX_DIGITS = " | ".join(
    # Each term in parentheses: SQLite's <<, & and | share one precedence, left to right.
    f"(((instr('0123456789abcdef', substr(dedup_key, {i + 1}, 1)) - 1)"
    f"{' & 7' if i == 0 else ''}) << {60 - 4 * i})"
    for i in range(16)
)
_SQL_DEDUP_HASH = (
    "CASE WHEN length(dedup_key) = 64 AND dedup_key NOT GLOB '*[^0-9a-f]*'"
    f" THEN ({_SQL_HEX_DIGITS}) END"
)

# Append-only: each entry is applied once, in order, and recorded in PRAGMA user_version.
MIGRATIONS: list[str] = [
    # 1: received webhooks, kept until processed (and a while after, for inspection).
    """
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY,
        dedup_key TEXT NOT NULL UNIQUE,
        group_key TEXT NOT NULL,
        received_at REAL NOT NULL,
        payload BLOB NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        processed_at REAL,
        error TEXT
    );
    CREATE INDEX inbox_pending ON inbox (state, id);
    CREATE TABLE incidents (
        id TEXT PRIMARY KEY,
        group_key TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
        title TEXT NOT NULL,
        group_labels TEXT NOT NULL,
        external_url TEXT NOT NULL DEFAULT '',
        opened_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        resolved_at REAL,
        error_class TEXT,
        severity TEXT,
        acknowledge_by REAL,
        decision TEXT
    );
    CREATE UNIQUE INDEX incidents_one_open_per_group ON incidents (group_key)
        WHERE status = 'open';
    CREATE TABLE alerts (
        incident_id TEXT NOT NULL REFERENCES incidents (id),
        fingerprint TEXT NOT NULL,
        status TEXT NOT NULL,
        labels TEXT NOT NULL,
        annotations TEXT NOT NULL,
        starts_at TEXT NOT NULL,
        ends_at TEXT,
        generator_url TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (incident_id, fingerprint)
    );
    CREATE TABLE timeline (
        id INTEGER PRIMARY KEY,
        incident_id TEXT NOT NULL REFERENCES incidents (id),
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX timeline_incident ON timeline (incident_id, id);
    CREATE TABLE incident_events (
        id INTEGER PRIMARY KEY,
        incident_id TEXT NOT NULL REFERENCES incidents (id),
        kind TEXT NOT NULL,
        data TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        error TEXT
    );
    CREATE INDEX incident_events_pending ON incident_events (state, id);
    """,
    # 2: the notification outbox (PagerDuty, Statuspage, Slack, log) and what each destination
    # remembers per incident (e.g. the status-page incident id that later updates need).
    """
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        idempotency_key TEXT NOT NULL UNIQUE,
        destination TEXT NOT NULL,
        incident_id TEXT NOT NULL,
        ordering_key TEXT NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'sent', 'failed', 'skipped')),
        attempts INTEGER NOT NULL DEFAULT 0,
        not_before REAL NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        last_error TEXT,
        created_at REAL NOT NULL,
        sent_at REAL
    );
    CREATE INDEX outbox_pending ON outbox (state, ordering_key, id);
    CREATE INDEX outbox_incident ON outbox (incident_id, id);
    CREATE TABLE notify_state (
        destination TEXT NOT NULL,
        incident_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (destination, incident_id, key)
    );
    """,
    # 3: evidence bundles written for an incident (when it opened, when it resolved).
    """
    CREATE TABLE evidence_bundles (
        id INTEGER PRIMARY KEY,
        incident_id TEXT NOT NULL REFERENCES incidents (id),
        phase TEXT NOT NULL CHECK (phase IN ('opened', 'resolved')),
        path TEXT NOT NULL,
        created_at REAL NOT NULL,
        size_bytes INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        failed_sources TEXT NOT NULL DEFAULT '[]'
    );
    CREATE UNIQUE INDEX evidence_bundles_one_per_phase ON evidence_bundles (incident_id, phase);
    """,
    # 4: the remediation journal (intent before applying, outcome after), cooldowns, and
    # reverts scheduled after resolve.
    """
    CREATE TABLE remediation_actions (
        id INTEGER PRIMARY KEY,
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
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        UNIQUE (incident_id, action)
    );
    CREATE INDEX remediation_actions_target ON remediation_actions (target, state);
    CREATE TABLE remediation_cooldowns (
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        applied_at REAL NOT NULL,
        PRIMARY KEY (action, target)
    );
    CREATE TABLE remediation_reverts (
        incident_id TEXT PRIMARY KEY,
        due_at REAL NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done'))
    );
    CREATE INDEX remediation_reverts_due ON remediation_reverts (state, due_at);
    """,
    # 5: repeats are recognised by a 63-bit integer taken from the dedup digest (its first 16
    # hex digits), not by a UNIQUE index over the 64-character text: the random-order text
    # index was half of SQLite's cost per stored webhook (docs/benchmarks.md). The index is not
    # UNIQUE: the full digest stays in the row and is compared on a hit, so two different
    # notifications whose integers collide are both stored. The table is rebuilt because a
    # column's UNIQUE constraint cannot be dropped in place; existing rows keep their ids.
    f"""
    CREATE TABLE inbox_v5 (
        id INTEGER PRIMARY KEY,
        dedup_hash INTEGER,
        dedup_key TEXT NOT NULL,
        group_key TEXT NOT NULL,
        received_at REAL NOT NULL,
        payload BLOB NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        processed_at REAL,
        error TEXT
    );
    INSERT INTO inbox_v5 (id, dedup_hash, dedup_key, group_key, received_at, payload, state,
                          attempts, processed_at, error)
        SELECT id, {_SQL_DEDUP_HASH}, dedup_key, group_key, received_at, payload, state,
               attempts, processed_at, error
        FROM inbox;
    DROP TABLE inbox;
    ALTER TABLE inbox_v5 RENAME TO inbox;
    CREATE INDEX inbox_pending ON inbox (state, id);
    CREATE INDEX inbox_dedup ON inbox (dedup_hash);
    """,
    # 6: retention (receiver.retention) finds resolved incidents by when they resolved, and
    # deletes an incident's events by its id, without reading either table whole.
    """
    CREATE INDEX incidents_resolved ON incidents (resolved_at) WHERE status = 'resolved';
    CREATE INDEX incident_events_incident ON incident_events (incident_id);
    """,
    # 7: the outbox delivers by severity first (``priority``: 1 for a P1 to 4 for a P4), so a
    # page is never stuck behind a storm of lesser news; messages stored before are treated as
    # P1, never held back. ``superseded_by``: the newer queued message that made a skipped one
    # unnecessary (only its latest state needed to go).
    """
    ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE outbox ADD COLUMN superseded_by INTEGER;
    """,
    # 8: switches a person flips at runtime (the kill switch from the operations page), kept
    # across restarts, and the audit log of who changed what, when and from where.
    """
    CREATE TABLE runtime_switches (
        name TEXT PRIMARY KEY,
        is_on INTEGER NOT NULL,
        changed_by TEXT NOT NULL,
        changed_from TEXT NOT NULL,
        changed_at REAL NOT NULL
    );
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        origin TEXT NOT NULL,
        action TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    """,
    # 9: response times (receiver.response_times): when an incident was first acknowledged
    # (by whom, through what) and first mitigated; PagerDuty webhook events already recorded
    # (by PagerDuty's event id, so a redelivery changes nothing); and which PagerDuty incident
    # is ours, for events whose data names only the PagerDuty incident (annotations).
    """
    ALTER TABLE incidents ADD COLUMN acknowledged_at REAL;
    ALTER TABLE incidents ADD COLUMN acknowledged_by TEXT;
    ALTER TABLE incidents ADD COLUMN acknowledged_via TEXT;
    ALTER TABLE incidents ADD COLUMN mitigated_at REAL;
    ALTER TABLE incidents ADD COLUMN mitigated_by TEXT;
    CREATE INDEX incidents_opened ON incidents (opened_at);
    CREATE TABLE pagerduty_events (
        event_id TEXT PRIMARY KEY,
        incident_id TEXT NOT NULL REFERENCES incidents (id),
        event_type TEXT NOT NULL,
        received_at REAL NOT NULL
    );
    CREATE INDEX pagerduty_events_incident ON pagerduty_events (incident_id);
    CREATE TABLE pagerduty_incidents (
        pagerduty_id TEXT PRIMARY KEY,
        incident_id TEXT NOT NULL REFERENCES incidents (id)
    );
    CREATE INDEX pagerduty_incidents_incident ON pagerduty_incidents (incident_id);
    """,
    # 10: runbook actions waiting for a person (approval: required): one row per incident and
    # action; ``awaiting`` moves once, in one conditional update, to ``approved``, ``denied``
    # or ``expired``, with who decided, when and from where.
    """
    CREATE TABLE approvals (
        id TEXT PRIMARY KEY,
        incident_id TEXT NOT NULL REFERENCES incidents (id),
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'awaiting'
            CHECK (state IN ('awaiting', 'approved', 'denied', 'expired')),
        requested_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        decided_at REAL,
        decided_by TEXT,
        decided_via TEXT,
        UNIQUE (incident_id, action)
    );
    CREATE INDEX approvals_awaiting ON approvals (state, expires_at);
    """,
]


class _JobFailed(Exception):
    """A job raised in a batch run without savepoints; the batch is run again isolated."""


_Job = tuple[Callable[[Connection], Any], asyncio.Future[Any], asyncio.AbstractEventLoop]


def _connect(
    path: Path, synchronous: str, busy_timeout: float, *, read_only: bool = False
) -> sqlite3.Connection:
    if read_only:
        # SQLite's own read-only mode: it neither creates the file nor writes to it.
        conn = sqlite3.connect(
            f"{path.absolute().as_uri()}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=busy_timeout,
        )
    else:
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=busy_timeout
        )
    conn.row_factory = sqlite3.Row
    if not read_only:  # the database is WAL already; only its writer may change that
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    return conn


def _settle_all(outcomes: Sequence[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for fut, result, error in outcomes:
        if fut.done():  # the caller gave up waiting (a timeout); nothing to tell it
            continue
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)


class SqliteStore(Store):
    """SQLite state: ``write`` runs a function in a committed transaction; ``read`` reads."""

    def __init__(self, settings: StoreSettings) -> None:
        self._settings = settings
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._readers: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._read_only = False
        self.commits = 0
        self.committed_jobs = 0
        self._identity: tuple[int, int] | None = None  # (device, inode) of the file opened
        self.lost: str | None = None  # why the file at the path is no longer ours

    @property
    def path(self) -> Path:
        return self._settings.path

    @property
    def backend(self) -> str:
        return "sqlite"

    @property
    def read_only(self) -> bool:
        """Opened with :meth:`open_read_only`: reads only, every write is refused."""
        return self._read_only

    async def open(self) -> None:
        """Create the database if needed, migrate it, and start the writer thread."""
        await asyncio.to_thread(self._migrate)
        self._identity = _identity(self._settings.path)
        self._writer = threading.Thread(target=self._write_loop, name="store-writer", daemon=True)
        self._writer.start()
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="store-reader")

    async def open_read_only(self) -> None:
        """Open an existing database for reading only; nothing is created or migrated.

        Raises :class:`StoreNotReadable` when there is no database at the path, or when its
        schema is not the one this version reads (``serve`` migrates an older one).
        """
        await asyncio.to_thread(self._check_readable)
        self._read_only = True
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="store-reader")

    def _check_readable(self) -> None:
        path = self._settings.path
        if not path.is_file():
            raise StoreNotReadable(
                f"no state database at {path}: nothing to read (the receiver creates it "
                "when it serves; check store.path)"
            )
        try:
            conn = self._connect(read_only=True)
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
            finally:
                conn.close()
        except sqlite3.Error as e:
            raise StoreNotReadable(f"cannot read the state database at {path}: {e}") from None
        if version < len(MIGRATIONS):
            raise StoreNotReadable(
                f"the state database at {path} has schema version {version}, older than this "
                f"version's {len(MIGRATIONS)}: serving with this version migrates it"
            )
        if version > len(MIGRATIONS):
            raise StoreNotReadable(
                f"the state database at {path} has schema version {version}, written by a "
                f"newer receiver (this one reads {len(MIGRATIONS)})"
            )

    async def close(self) -> None:
        """Finish queued writes, then stop the threads. A write asked for meanwhile (queued
        behind the stop) is refused with :class:`StoreUnavailable`, never left waiting."""
        if self._writer is not None:
            writer, self._writer = self._writer, None  # writes asked for from now on: refused
            self._jobs.put(None)
            await asyncio.to_thread(writer.join)
            self._refuse_queued()  # asked for just before, queued behind the stop
        if self._readers is not None:
            self._readers.shutdown(wait=True)
            self._readers = None
        logger.info(
            "store closed",
            commits=self.commits,
            writes=self.committed_jobs,
            path=str(self._settings.path),
        )

    def _refuse_queued(self) -> None:
        refused = StoreUnavailable("store is closed")
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                _, fut, loop = job
                with contextlib.suppress(RuntimeError):  # that loop is closed
                    loop.call_soon_threadsafe(_settle_all, [(fut, None, refused)])

    def _migrate(self) -> None:
        self._settings.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                conn.executescript(
                    f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={number};\nCOMMIT;"
                )
                logger.info("store migrated", version=number, path=str(self._settings.path))
        finally:
            conn.close()

    def _connect(self, *, read_only: bool = False) -> sqlite3.Connection:
        s = self._settings
        return _connect(s.path, s.synchronous, s.busy_timeout_seconds, read_only=read_only)

    def _write_loop(self) -> None:
        conn = self._connect()
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                batch = [job]
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        nxt = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    batch.append(nxt)
                self._commit_batch(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _check_file(self) -> str | None:
        """Why the database file at the path is not the one this store opened, if it is not.

        A file deleted or replaced under a running store still takes commits through the
        handle already open, and they vanish at the next start, with everything moved out of
        the spool into it meanwhile. So from then on nothing commits (webhooks wait in the
        spool, or are answered 503) until a restart opens the file at the path.
        """
        if self.lost is None:
            try:
                current: tuple[int, int] | None = _identity(self._settings.path)
            except FileNotFoundError:
                current = None
            if current != self._identity:
                self.lost = (
                    "the database file was deleted"
                    if current is None
                    else "the database file was replaced by another file"
                )
                logger.error(
                    "store lost its database file: refusing every write until a restart",
                    reason=self.lost,
                    path=str(self._settings.path),
                )
        return self.lost

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[_Job]) -> None:
        outcomes: list[tuple[_Job, Any, BaseException | None]]
        lost = self._check_file()
        if lost is not None:
            refused = StoreUnavailable(f"store refuses writes: {lost}")
            outcomes = [(job, None, refused) for job in batch]
        else:
            outcomes = self._commit(conn, batch)
        # One wake-up per event loop for the whole batch, not one per job: under load this
        # is most of the cost of handing results back across threads.
        by_loop: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for (_, fut, loop), result, error in outcomes:
            by_loop.setdefault(loop, []).append((fut, result, error))
        for loop, settled in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle_all, settled)
            except RuntimeError:  # that loop is closed: nobody is waiting any more
                continue

    def _commit(
        self, conn: sqlite3.Connection, batch: list[_Job]
    ) -> list[tuple[_Job, Any, BaseException | None]]:
        try:
            try:
                outcomes = self._run_batch(conn, batch, isolate=False)
            except _JobFailed:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                outcomes = self._run_batch(conn, batch, isolate=True)
            conn.execute("COMMIT")
            self.commits += 1
            self.committed_jobs += len(batch)
        except sqlite3.Error as e:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            logger.error("store commit failed", error=str(e), batch=len(batch))
            failure = StoreUnavailable(f"store commit failed: {e}")
            outcomes = [(job, None, failure) for job in batch]
        return outcomes

    @staticmethod
    def _run_batch(
        conn: sqlite3.Connection, batch: list[_Job], *, isolate: bool
    ) -> list[tuple[_Job, Any, BaseException | None]]:
        """Run every job in one open transaction; ``isolate`` gives each its own savepoint.

        Without ``isolate`` the first failing job raises :class:`_JobFailed` (the caller rolls
        back and runs the batch again isolated).
        """
        outcomes: list[tuple[_Job, Any, BaseException | None]] = []
        conn.execute("BEGIN IMMEDIATE")
        for job in batch:
            if not isolate:
                try:
                    outcomes.append((job, job[0](conn), None))
                except Exception as e:
                    raise _JobFailed from e
                continue
            conn.execute("SAVEPOINT job")
            try:
                result = job[0](conn)
            except Exception as e:  # the caller gets its own error; the others still commit
                conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
                outcomes.append((job, None, e))
            else:
                conn.execute("RELEASE job")
                outcomes.append((job, result, None))
        return outcomes

    async def write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` on the writer thread; return once its transaction is committed."""
        if self._read_only:
            raise StoreUnavailable("store is open read-only")
        if self._writer is None or not self._writer.is_alive():
            raise StoreUnavailable("store is not open")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, fut, loop))
        try:
            return await fut
        except sqlite3.OperationalError as e:
            # Raised inside the job (disk full, I/O error, locked): transient, not the job's bug.
            raise StoreUnavailable(f"store write failed: {e}") from e

    def _reader_conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(read_only=self._read_only)
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
        return conn

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` against a read-only connection, off the event loop."""
        if self._readers is None:
            raise StoreUnavailable("store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._readers, lambda: fn(self._reader_conn()))
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(f"store read failed: {e}") from e

    async def ping(self) -> bool:
        """Whether the store can commit right now (for /readyz).

        An empty write transaction takes the database's write lock, so a store that answers
        reads but cannot commit (locked by another process, disk gone) is reported as down:
        webhooks would be answered 503. Callers bound the wait with ``asyncio.timeout``.
        """
        if self._writer is None or not self._writer.is_alive():
            return False
        try:
            await self.write(nothing)
        except StoreUnavailable:
            return False
        return True


def _identity(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino
