"""Leadership: which replica acts now, and the term every side effect is fenced by.

Several replicas share one PostgreSQL store; any of them takes webhooks, but only one, the
leader, acts (remediation, reverts, notification delivery, evidence). The leader holds a lease:
one row of the ``leadership`` table (holder, term, expires_at). Why a row and not a Kubernetes
Lease or a session-level advisory lock: the store is already the shared truth, a row carries a
term that every side effect can be checked against in the same transaction as its intent, and
an advisory lock has no term and ends only when the database notices the session is gone.

Time: the lease's expiry is always computed by the DATABASE's clock (``now()``), never a
replica's, so replicas with skewed clocks agree on when a lease ends. Each replica measures its
own side with its monotonic clock only, as client-go's leader election does:

- a contender takes the lease when it has expired (or was its own), bumping the term; it
  tries every ``retry_seconds``, and right when the lease it saw expires if that is sooner,
  so a crashed leader is replaced within ``lease_seconds`` of its last renewal;
- the leader renews it every ``retry_seconds``;
- a leader that has not renewed successfully for ``renew_deadline_seconds`` (counted from the
  moment its last successful renewal was *sent*, so never later than the database's own
  renewal time) stops acting, before its lease can expire (``lease_seconds`` after that
  renewal, by the database's clock), so no two replicas act at the same moment unless a clock
  runs more than (lease - renew deadline) fast over one lease;
- a leader that stops on purpose releases the lease, so the next one takes over at once.

Fencing: a leader can be paused (a stopped process, a long GC, a node frozen) between deciding
to act and acting, and wake after its successor started. So every side effect first commits
its intent in a transaction that also runs :func:`check_term` (``Leadership.check_term``): it
reads the lease row ``FOR SHARE`` and requires this holder, this term and an unexpired lease.
A successor bumps the term with an UPDATE of that row, which waits for every transaction
holding it ``FOR SHARE``: either the intent commits first (and the successor, which reads
after its own take-over, sees it), or the check fails and the transaction raises
:class:`NotLeader`. The outside call (Kubernetes, PagerDuty) happens only after the intent
commit; the window left between that commit and the call is narrowed by
:meth:`Leadership.require_leader` right before it, a local check of the renew deadline.

Store connections that run the check must have ``idle_in_transaction_session_timeout`` set
(shorter than the lease): a leader paused inside a transaction holds the row ``FOR SHARE``,
and the successor's take-over waits until PostgreSQL ends that transaction.

Driver: psycopg 3's async connection, one of its own, kept open for the renew loop. A lease is
a long-lived session with one short statement every retry period: async keeps it off the store
threads and the event loop alike, and a connection of its own means renewals never queue behind
store work in the pool. The fencing check, by contrast, runs on the store's connection inside
the store's transaction (synchronous, on a store thread): that is where the intent commits.

With SQLite there is one replica: :class:`AlwaysLeader` leads with term 1 from start to stop,
with the same interface, so the code that acts is the same in both modes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import psycopg
import structlog

from receiver.background import BackgroundTask
from receiver.config import LeadershipSettings
from receiver.metrics import Metrics

__all__ = [
    "FENCE_SQL",
    "LEADERSHIP_DDL",
    "LEASE_NAME",
    "AlwaysLeader",
    "FenceConnection",
    "FenceCursor",
    "Leader",
    "LeaderInfo",
    "Leadership",
    "LeadershipChange",
    "Listener",
    "NotLeader",
    "check_term",
]

logger = structlog.get_logger(__name__)

# The one lease of a store: the responder side (remediation, reverts, outbox, evidence).
LEASE_NAME = "responder"

# For the PostgreSQL migrations. expires_at and renewed_at come from the database's clock.
LEADERSHIP_DDL = """\
CREATE TABLE leadership (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    term BIGINT NOT NULL,
    renewed_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
)"""

# Run inside the transaction that commits an intent, with the store's portable placeholders.
# clock_timestamp(), not now(): now() is when the transaction began, and the check is about
# the moment of the check. FOR SHARE makes a successor's take-over (an UPDATE bumping the term)
# wait until this transaction has ended.
FENCE_SQL = (
    "SELECT term FROM leadership WHERE name = ? AND holder = ? AND term = ?"
    " AND expires_at > clock_timestamp() FOR SHARE"
)

_ENSURE_ROW = (
    "INSERT INTO leadership (name, holder, term, renewed_at, expires_at)"
    " VALUES (%s, '', 0, now(), now()) ON CONFLICT (name) DO NOTHING"
)
# Taken when expired (or released), or when it is this holder's already (a restart under the
# same name, or a leader that gave up by its deadline): always with a new term.
_ACQUIRE = (
    "UPDATE leadership SET holder = %(holder)s, term = term + 1, renewed_at = now(),"
    " expires_at = now() + make_interval(secs => %(lease)s)"
    " WHERE name = %(name)s AND (expires_at <= now() OR holder = %(holder)s) RETURNING term"
)
_RENEW = (
    "UPDATE leadership SET renewed_at = now(), expires_at = now() + make_interval(secs => %s)"
    " WHERE name = %s AND holder = %s AND term = %s RETURNING term"
)
_RELEASE = "UPDATE leadership SET expires_at = now() WHERE name = %s AND holder = %s AND term = %s"
# With the seconds the lease has left (by the database's clock), so a follower tries again
# right when it expires rather than up to a retry period later.
_CURRENT = (
    "SELECT holder, term, extract(epoch FROM expires_at - now()) FROM leadership"
    " WHERE name = %s AND expires_at > now()"
)
# How long after a lease's expiry a follower tries to take it: the database's clock decides,
# and this keeps the try from landing a hair before the expiry.
_AFTER_EXPIRY = 0.05

# Errors of one attempt that the next attempt may not have: the database unreachable,
# restarting, or refusing for a moment.
_TEMPORARY = (psycopg.OperationalError, psycopg.InterfaceError, OSError)


class NotLeader(Exception):
    """This replica does not hold the current term: it must not act."""


@dataclass(frozen=True)
class LeaderInfo:
    """Who leads, as this replica last saw it: the holder's name and its term."""

    holder: str
    term: int


@dataclass(frozen=True)
class LeadershipChange:
    """This replica became leader (``leading``) or stopped leading, in ``term``."""

    leading: bool
    term: int
    holder: str


Listener = Callable[[LeadershipChange], None]


class FenceCursor(Protocol):
    """The result of one statement."""

    def fetchone(self) -> Any: ...


class FenceConnection(Protocol):
    """The store's connection inside a transaction: ``?`` placeholders, one row at a time."""

    def execute(self, sql: str, params: Sequence[Any], /) -> FenceCursor: ...


def check_term(conn: FenceConnection, *, name: str, holder: str, term: int) -> None:
    """Raise :class:`NotLeader` unless ``holder`` holds lease ``name`` in ``term`` right now.

    Run inside the transaction that commits an intent: until it ends, no one else can take the
    lease, so the intent commits only while its term is current.
    """
    if conn.execute(FENCE_SQL, (name, holder, term)).fetchone() is None:
        raise NotLeader(f"{holder} does not hold term {term} of the lease any more")


class Leader(Protocol):
    """What the acting side needs of leadership, in either store mode."""

    @property
    def holder(self) -> str: ...
    @property
    def term(self) -> int | None: ...
    @property
    def is_leader(self) -> bool: ...
    @property
    def leader(self) -> LeaderInfo | None: ...
    def add_listener(self, listener: Listener) -> None: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    async def wait_until_leader(self) -> int: ...
    def require_leader(self) -> int: ...
    def check_term(self, conn: FenceConnection) -> int: ...


class _Listeners:
    """Listeners, the leader gauge and the changes counter, told of each change once."""

    def __init__(self, holder: str, metrics: Metrics | None) -> None:
        self._holder = holder
        self._metrics = metrics
        self._listeners: list[Listener] = []
        self.leading = asyncio.Event()

    def add(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def changed(self, *, leading: bool, term: int) -> None:
        if leading:
            self.leading.set()
        else:
            self.leading.clear()
        if self._metrics is not None:
            self._metrics.leader.set(1 if leading else 0)
            self._metrics.leadership_changes.labels("gained" if leading else "lost").inc()
        logger.info(
            "leadership gained" if leading else "leadership lost", holder=self._holder, term=term
        )
        change = LeadershipChange(leading=leading, term=term, holder=self._holder)
        for listener in self._listeners:
            # One failing listener must not keep the others (or the lease) from knowing.
            try:
                listener(change)
            except Exception:
                logger.exception("leadership listener failed", term=term)


class AlwaysLeader:
    """The one replica of the SQLite mode: leader with term 1 from :meth:`start` to :meth:`stop`."""

    TERM = 1

    def __init__(self, *, holder: str, metrics: Metrics | None = None) -> None:
        self._holder = holder
        self._listeners = _Listeners(holder, metrics)
        self._started = False

    @property
    def holder(self) -> str:
        return self._holder

    @property
    def term(self) -> int | None:
        return self.TERM if self._started else None

    @property
    def is_leader(self) -> bool:
        return self._started

    @property
    def leader(self) -> LeaderInfo | None:
        return LeaderInfo(self._holder, self.TERM) if self._started else None

    def add_listener(self, listener: Listener) -> None:
        self._listeners.add(listener)

    async def start(self) -> None:
        if not self._started:
            self._started = True
            self._listeners.changed(leading=True, term=self.TERM)

    async def stop(self) -> None:
        if self._started:
            self._started = False
            self._listeners.changed(leading=False, term=self.TERM)

    async def wait_until_leader(self) -> int:
        await self._listeners.leading.wait()
        return self.TERM

    def require_leader(self) -> int:
        if not self._started:
            raise NotLeader(f"{self._holder} is not running")
        return self.TERM

    def check_term(self, conn: FenceConnection) -> int:
        # One replica, one store file: there is no one to be fenced from.
        return self.require_leader()


@dataclass(frozen=True)
class _Held:
    """A term this replica holds, and until when (monotonic) it may act on it."""

    term: int
    acting_until: float


class Leadership:
    """The lease in PostgreSQL: contend, lead, renew, give up on time, release on stop."""

    def __init__(
        self,
        *,
        dsn: str,
        settings: LeadershipSettings,
        metrics: Metrics | None = None,
        name: str = LEASE_NAME,
    ) -> None:
        self._dsn = dsn
        self._settings = settings
        self._name = name
        self._listeners = _Listeners(settings.identity, metrics)
        # Read from store threads (check_term): replaced whole, never changed in place.
        self._held: _Held | None = None
        self._leader: LeaderInfo | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._deadline: asyncio.TimerHandle | None = None
        # A follower's next try, when the current lease expires before the retry period ends.
        self._next_try: float | None = None
        self._abandoned: set[asyncio.Future[Any]] = set()
        self._loop = BackgroundTask(f"leadership:{name}", self._run)

    @property
    def holder(self) -> str:
        return self._settings.identity

    @property
    def term(self) -> int | None:
        """The term this replica leads in, or ``None``."""
        held = self._held
        return held.term if held is not None and time.monotonic() < held.acting_until else None

    @property
    def is_leader(self) -> bool:
        """Leading now: holds a term, renewed within the renew deadline (monotonic clock)."""
        return self.term is not None

    @property
    def leader(self) -> LeaderInfo | None:
        """Who leads, as last seen by this replica (itself included); ``None``: no one."""
        term = self.term
        return LeaderInfo(self.holder, term) if term is not None else self._leader

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` (on the event loop) each time this replica gains or loses the lead."""
        self._listeners.add(listener)

    async def start(self) -> None:
        """Start contending (and, once leader, renewing) in the background."""
        self._loop.start()

    async def stop(self) -> None:
        """Stop contending; a leader stops acting and releases the lease for the next one."""
        await self._loop.stop()
        held = self._held
        if held is not None:
            self._lose(held.term)
            await self._release(held.term)
        await self._close()
        for task in list(self._abandoned):
            task.cancel()

    async def wait_until_leader(self) -> int:
        """Wait until this replica leads; returns its term."""
        while True:
            await self._listeners.leading.wait()
            term = self.term
            if term is not None:
                return term
            # Past the deadline, and the timer that reports it has not run yet.
            await asyncio.sleep(0)

    def require_leader(self) -> int:
        """The current term, or :class:`NotLeader`: checked right before each outside call."""
        term = self.term
        if term is None:
            raise NotLeader(f"{self.holder} is not the leader")
        return term

    def check_term(self, conn: FenceConnection) -> int:
        """Fence the transaction on ``conn`` by this replica's term (see :func:`check_term`);
        returns the term. Safe to call from a store thread."""
        term = self.require_leader()
        check_term(conn, name=self._name, holder=self.holder, term=term)
        return term

    # The loop: one attempt per retry period, each bounded by the retry period.

    async def _run(self) -> None:
        retry = self._settings.retry_seconds
        while True:
            started = time.monotonic()
            attempt = asyncio.ensure_future(self._attempt(started))
            try:
                done, _ = await asyncio.wait({attempt}, timeout=retry)
            except asyncio.CancelledError:
                self._abandon(attempt)
                raise
            if attempt in done:
                with contextlib.suppress(asyncio.CancelledError):
                    self._log_failure(attempt.exception())
            else:
                # A statement stuck on a lost network: do not wait for psycopg's cancel
                # request (which may hang as long); drop the connection and start afresh.
                self._abandon(attempt)
                logger.warning("leadership attempt timed out", seconds=retry)
            next_try = started + retry
            if attempt in done and self._next_try is not None:
                next_try = min(next_try, self._next_try)
            self._next_try = None
            await asyncio.sleep(max(0.0, next_try - time.monotonic()))

    def _log_failure(self, error: BaseException | None) -> None:
        if error is None:
            return
        if isinstance(error, _TEMPORARY):
            logger.warning(
                "leadership attempt failed", error=type(error).__name__, detail=str(error)[:200]
            )
            self._conn = None
        else:
            logger.error("leadership attempt failed", exc_info=error)

    def _abandon(self, attempt: asyncio.Future[None]) -> None:
        conn, self._conn = self._conn, None
        attempt.cancel()
        self._keep_until_done(attempt)
        if conn is not None:
            self._keep_until_done(asyncio.ensure_future(conn.close()))

    def _keep_until_done(self, task: asyncio.Future[Any]) -> None:
        # Referenced until done (the loop keeps only weak references), and its outcome taken,
        # as no one awaits it.
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = await psycopg.AsyncConnection.connect(
                self._dsn,
                autocommit=True,
                connect_timeout=max(1, int(self._settings.retry_seconds)),
                application_name=f"posthog-receiver leadership {self.holder}"[:63],
            )
            await self._conn.execute(_ENSURE_ROW, (self._name,))
        return self._conn

    async def _attempt(self, started: float) -> None:
        conn = await self._connection()
        held = self._held
        lease = self._settings.lease_seconds
        if held is None:
            cur = await conn.execute(
                _ACQUIRE, {"holder": self.holder, "lease": lease, "name": self._name}
            )
            row = await cur.fetchone()
            if row is not None:
                self._gain(int(row[0]), started)
                return
            cur = await conn.execute(_CURRENT, (self._name,))
            seen = await cur.fetchone()
            self._leader = LeaderInfo(str(seen[0]), int(seen[1])) if seen is not None else None
            if seen is not None:
                # From the answer: at most half a round trip after the database's expiry.
                self._next_try = time.monotonic() + float(seen[2]) + _AFTER_EXPIRY
            return
        cur = await conn.execute(_RENEW, (lease, self._name, self.holder, held.term))
        renewed = await cur.fetchone() is not None
        if self._held is not held:
            return  # given up by the deadline while the statement ran: that stands
        if renewed:
            self._hold(held.term, started)
        else:
            # Someone else took the lease (ours had expired): their term is newer.
            self._lose(held.term)

    def _gain(self, term: int, sent: float) -> None:
        self._hold(term, sent)
        self._leader = LeaderInfo(self.holder, term)
        self._listeners.changed(leading=True, term=term)

    def _hold(self, term: int, sent: float) -> None:
        # From when the statement was sent, not when its answer came: the database set the
        # expiry at or after that moment, so this deadline ends before the lease does.
        acting_until = sent + self._settings.renew_deadline_seconds
        self._held = _Held(term, acting_until)
        if self._deadline is not None:
            self._deadline.cancel()
        loop = asyncio.get_running_loop()
        self._deadline = loop.call_at(
            loop.time() + (acting_until - time.monotonic()), self._deadline_passed, term
        )

    def _deadline_passed(self, term: int) -> None:
        held = self._held
        if held is not None and held.term == term:
            logger.warning(
                "leadership not renewed within the renew deadline", holder=self.holder, term=term
            )
            self._lose(term)

    def _lose(self, term: int) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._held = None
        self._leader = None
        self._listeners.changed(leading=False, term=term)

    async def _release(self, term: int) -> None:
        # Best effort: if it fails, the next leader waits for the lease to expire instead.
        try:
            async with asyncio.timeout(self._settings.retry_seconds):
                conn = await self._connection()
                await conn.execute(_RELEASE, (self._name, self.holder, term))
        except (*_TEMPORARY, TimeoutError) as e:
            logger.warning("leadership not released", term=term, error=type(e).__name__)
            self._conn = None

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(*_TEMPORARY):
                await conn.close()
