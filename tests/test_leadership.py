"""Leadership against a real PostgreSQL: one leader among contenders, hand-over on stop, crash,
pause and network cut within the lease, and the term fence that keeps a replica which lost the
lease from committing anything more.

Leases are short (1.5 s) so the tests are quick; every bound is stated in the configured
lease, renew deadline and retry period, with a little slack for a busy machine. Crashes and
pauses are real: the contender runs in a process of its own (``tests.leadership_contender``),
killed with SIGKILL or stopped with SIGSTOP. A cut network is a TCP link the test stops
forwarding, sockets left open, as a partition looks to both ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio

from receiver.config import ConfigError, LeadershipSettings, load_settings
from receiver.leadership import (
    LEADERSHIP_DDL,
    LEASE_NAME,
    AlwaysLeader,
    Leadership,
    LeadershipChange,
    NotLeader,
    check_term,
)
from receiver.metrics import Metrics
from tests.leadership_contender import QmarkConnection
from tests.postgres import postgres_cluster, postgres_dsn

__all__ = ["postgres_cluster", "postgres_dsn"]

LEASE = 1.5
DEADLINE = 1.0
RETRY = 0.25
# Scheduling on a shared, busy machine: added to bounds, never the bound itself.
SLACK = 1.0


def lease_settings(identity: str) -> LeadershipSettings:
    return LeadershipSettings(
        identity=identity,
        lease_seconds=LEASE,
        renew_deadline_seconds=DEADLINE,
        retry_seconds=RETRY,
    )


@pytest.fixture
def lease_dsn(postgres_dsn: str) -> str:
    """A fresh database with the leadership table, as the store's migrations create it."""
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(LEADERSHIP_DDL)
    return postgres_dsn


@dataclass
class Contender:
    """One replica's leadership in this process, with its metrics and what it was told."""

    leadership: Leadership
    metrics: Metrics
    changes: list[tuple[float, LeadershipChange]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.leadership.holder

    def metric(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        assert value is not None, name
        return value

    def changed_at(self, *, leading: bool) -> float:
        """When this contender first gained (or lost) the lead; fails if it never did."""
        at = next((at for at, c in self.changes if c.leading is leading), None)
        assert at is not None, f"{self.name} never {'gained' if leading else 'lost'} the lead"
        return at


@pytest_asyncio.fixture
async def contend(lease_dsn: str) -> AsyncIterator[Any]:
    """Factory: ``await contend("a", dsn=...)`` starts a contender, stopped at the end."""
    started: list[Contender] = []

    async def start(identity: str, *, dsn: str = lease_dsn) -> Contender:
        metrics = Metrics()
        contender = Contender(
            Leadership(dsn=dsn, settings=lease_settings(identity), metrics=metrics), metrics
        )
        contender.leadership.add_listener(
            lambda change: contender.changes.append((time.monotonic(), change))
        )
        await contender.leadership.start()
        started.append(contender)
        return contender

    yield start
    for contender in started:
        await contender.leadership.stop()


async def first_leader(contenders: list[Contender], *, within: float) -> Contender:
    """The contender that leads first, within ``within`` seconds."""
    waits = {asyncio.ensure_future(c.leadership.wait_until_leader()): c for c in contenders}
    done, pending = await asyncio.wait(waits, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    assert done, f"no leader within {within}s"
    return waits[done.pop()]


@contextlib.contextmanager
def transaction(dsn: str) -> Iterator[QmarkConnection]:
    """A store-like transaction on a connection of its own, with the portable placeholders."""
    with psycopg.connect(dsn) as conn, conn.transaction():
        yield QmarkConnection(conn)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_one_of_three_contenders_leads(contend: Any) -> None:
    """Of three contenders exactly one leads, in term 1, and keeps leading; all agree who."""
    contenders = [await contend(name) for name in ("a", "b", "c")]
    leader = await first_leader(contenders, within=RETRY + SLACK)
    followers = [c for c in contenders if c is not leader]
    # Over two whole leases: the leader renews, nobody else ever leads.
    end = time.monotonic() + 2 * LEASE
    while time.monotonic() < end:
        assert [c.leadership.is_leader for c in contenders].count(True) == 1
        assert leader.leadership.is_leader
        await asyncio.sleep(RETRY / 2)
    assert leader.leadership.term == 1
    for follower in followers:
        assert follower.leadership.term is None
        assert follower.leadership.leader is not None
        assert (follower.leadership.leader.holder, follower.leadership.leader.term) == (
            leader.name,
            1,
        )
        with pytest.raises(NotLeader):
            follower.leadership.require_leader()
        assert follower.metric("posthog_receiver_leader") == 0
        assert follower.metric("posthog_receiver_leadership_changes_total", change="gained") == 0
    assert leader.metric("posthog_receiver_leader") == 1
    assert leader.metric("posthog_receiver_leadership_changes_total", change="gained") == 1
    assert leader.metric("posthog_receiver_leadership_changes_total", change="lost") == 0
    assert [c.leading for _, c in leader.changes] == [True]


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_stopped_leader_hands_over_at_once(contend: Any) -> None:
    """stop() releases the lease: another contender leads well within one lease, term + 1,
    and the old leader's gauge falls to 0 with one loss counted."""
    contenders = [await contend(name) for name in ("a", "b", "c")]
    old = await first_leader(contenders, within=RETRY + SLACK)
    old_term = old.leadership.term
    assert old_term is not None
    stopped_at = time.monotonic()
    await old.leadership.stop()
    assert not old.leadership.is_leader
    new = await first_leader([c for c in contenders if c is not old], within=LEASE)
    assert time.monotonic() - stopped_at < LEASE
    assert new.leadership.term == old_term + 1
    assert old.metric("posthog_receiver_leader") == 0
    assert old.metric("posthog_receiver_leadership_changes_total", change="lost") == 1
    assert new.metric("posthog_receiver_leader") == 1


class ContenderProcess:
    """``tests.leadership_contender`` in a process of its own; its JSON lines, parsed."""

    def __init__(self, dsn: str, identity: str, log_path: Path) -> None:
        self.identity = identity
        self.log_path = log_path
        argv = [sys.executable, "-m", "tests.leadership_contender", dsn, identity]
        argv += [str(LEASE), str(DEADLINE), str(RETRY)]
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                cwd=Path(__file__).resolve().parents[1],
            )

    def events(self, kind: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict) and event.get("event") == kind:
                    found.append(event)
        return found

    async def wait_for(self, kind: str, *, within: float, after: float = 0.0) -> dict[str, Any]:
        end = time.monotonic() + within
        while time.monotonic() < end:
            assert self.proc.poll() is None, self.log_path.read_text(encoding="utf-8")[-3000:]
            for event in self.events(kind):
                if event.get("at", event.get("started", 0.0)) > after:
                    return event
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {kind} within {within}s:\n{self.log_path.read_text()[-3000:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def contender_process(lease_dsn: str, tmp_path: Path) -> Iterator[Any]:
    """Factory: ``contender_process("p")`` starts a contender process, killed at the end."""
    procs: list[ContenderProcess] = []

    def start(identity: str) -> ContenderProcess:
        procs.append(ContenderProcess(lease_dsn, identity, tmp_path / f"{identity}.log"))
        return procs[-1]

    yield start
    for proc in procs:
        proc.close()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_crashed_leader_is_replaced_within_the_lease(
    contend: Any, contender_process: Any
) -> None:
    """A leader killed with SIGKILL never releases its lease: another contender takes over
    once the lease has expired, within a lease (and one retry) of the crash, in a newer term."""
    crashed = contender_process("crashing")
    gained = await crashed.wait_for("gained", within=10 + SLACK)
    others = [await contend("b"), await contend("c")]
    await asyncio.sleep(LEASE)  # they try, and find the lease held
    assert not any(c.leadership.is_leader for c in others)
    crashed.proc.kill()
    killed_at = time.monotonic()
    new = await first_leader(others, within=LEASE + RETRY + SLACK)
    assert time.monotonic() - killed_at <= LEASE + RETRY + SLACK
    assert new.leadership.term == gained["term"] + 1


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_follower_tries_again_when_the_lease_expires_not_a_retry_later(
    lease_dsn: str, contender_process: Any
) -> None:
    """A follower whose retry period is long (8 s) still takes over a crashed leader's lease
    right when it expires: it asks the database how long the lease has left and tries then."""
    crashed = contender_process("crashing")
    await crashed.wait_for("gained", within=10 + SLACK)
    slow = LeadershipSettings(
        identity="slow", lease_seconds=10, renew_deadline_seconds=9, retry_seconds=8
    )
    follower = Leadership(dsn=lease_dsn, settings=slow)
    await follower.start()
    try:
        await asyncio.sleep(0.5)  # its first try found the lease held
        assert not follower.is_leader
        crashed.proc.kill()
        killed_at = time.monotonic()
        async with asyncio.timeout(LEASE + SLACK):
            await follower.wait_until_leader()
        assert time.monotonic() - killed_at <= LEASE + SLACK
    finally:
        await follower.stop()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_paused_leader_is_fenced_and_knows_it(
    contend: Any, contender_process: Any, lease_dsn: str
) -> None:
    """A leader paused (SIGSTOP) past its lease is replaced; from then on its old term fails
    the fence in a transaction, and once resumed (SIGCONT) it has stopped leading: its own
    fenced intents all fail and it reports the loss."""
    paused = contender_process("paused")
    gained = await paused.wait_for("gained", within=10 + SLACK)
    old_term = gained["term"]
    await paused.wait_for("fence", within=SLACK, after=gained["at"])
    assert any(e["ok"] for e in paused.events("fence")), "the leader's intents commit"
    with transaction(lease_dsn) as conn:
        check_term(conn, name=LEASE_NAME, holder="paused", term=old_term)

    successor = await contend("successor")
    paused.proc.send_signal(signal.SIGSTOP)
    stopped_at = time.monotonic()
    await first_leader([successor], within=LEASE + RETRY + SLACK)
    assert time.monotonic() - stopped_at <= LEASE + RETRY + SLACK
    new_term = successor.leadership.term
    assert new_term is not None
    assert new_term > old_term

    # What the paused process would run on waking, with what it knew: refused.
    with pytest.raises(NotLeader), transaction(lease_dsn) as conn:
        check_term(conn, name=LEASE_NAME, holder="paused", term=old_term)
    with transaction(lease_dsn) as conn:
        assert successor.leadership.check_term(conn) == new_term

    paused.proc.send_signal(signal.SIGCONT)
    resumed_at = time.monotonic()
    lost = await paused.wait_for("lost", within=SLACK, after=0.0)
    assert lost["term"] == old_term
    await paused.wait_for("fence", within=SLACK, after=resumed_at)
    await asyncio.sleep(3 * RETRY)
    after_resume = [e for e in paused.events("fence") if e["started"] > stopped_at]
    assert after_resume
    assert not any(e["ok"] for e in after_resume), after_resume
    assert successor.leadership.is_leader
    assert successor.leadership.term == new_term
    assert not [e for e in paused.events("gained") if e["term"] != old_term]


class Link:
    """A TCP link to PostgreSQL that the test can cut: after ``cut()`` nothing more passes
    either way and new connections hang, but no socket is closed (a partition, not a reset)."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._cut = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def cut(self) -> None:
        self._cut.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut.is_set():
            await self._drain(reader)
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._port)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while chunk := await source.read(65536):
            if not self._cut.is_set():
                sink.write(chunk)
                await sink.drain()
        sink.close()

    async def _drain(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(65536):
            pass

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_leader_cut_off_stops_acting_before_anyone_else_starts(
    contend: Any, postgres_cluster: Any, lease_dsn: str
) -> None:
    """A leader that can no longer reach the database gives up by its renew deadline (gauge 0,
    loss reported, fence refused at once), before its lease expires and a successor leads."""
    link = Link(postgres_cluster.port)
    port = await link.start()
    try:
        through_link = lease_dsn.replace(f":{postgres_cluster.port}/", f":{port}/")
        cut_off = await contend("cut-off", dsn=through_link)
        await first_leader([cut_off], within=RETRY + SLACK)
        successor = await contend("successor")
        await asyncio.sleep(2 * RETRY)
        link.cut()
        cut_at = time.monotonic()
        await first_leader([successor], within=LEASE + RETRY + SLACK)
        # The deadline runs from the last renewal sent, at most one retry before the cut.
        lost_at = cut_off.changed_at(leading=False)
        assert lost_at - cut_at <= DEADLINE + SLACK / 2
        assert lost_at < successor.changed_at(leading=True)
        assert cut_off.metric("posthog_receiver_leader") == 0
        assert cut_off.metric("posthog_receiver_leadership_changes_total", change="lost") == 1
        assert not cut_off.leadership.is_leader
        with pytest.raises(NotLeader), transaction(lease_dsn) as conn:
            cut_off.leadership.check_term(conn)
        assert successor.leadership.term == 2
    finally:
        await link.close()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_terms_strictly_increase_over_hand_overs(contend: Any) -> None:
    """Each hand-over starts a newer term; no term is ever led twice."""
    contenders = [await contend(name) for name in ("a", "b", "c")]
    terms = []
    running = list(contenders)
    while running:
        leader = await first_leader(running, within=LEASE + SLACK)
        assert leader.leadership.term is not None
        terms.append(leader.leadership.term)
        await leader.leadership.stop()
        running.remove(leader)
    assert terms == sorted(set(terms))
    assert terms == [1, 2, 3]


@pytest.mark.asyncio
async def test_always_leader_leads_in_term_one_from_start_to_stop() -> None:
    """The single replica of the SQLite mode leads in term 1 while it runs, through the same
    interface: listeners, metrics, check_term."""
    metrics = Metrics()
    changes: list[LeadershipChange] = []
    leader = AlwaysLeader(holder="only", metrics=metrics)
    leader.add_listener(changes.append)
    with pytest.raises(NotLeader):
        leader.require_leader()
    await leader.start()
    assert await leader.wait_until_leader() == 1
    assert (leader.is_leader, leader.term, leader.leader) == (True, 1, leader.leader)
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        assert leader.check_term(conn) == 1
    assert metrics.registry.get_sample_value("posthog_receiver_leader") == 1
    await leader.stop()
    assert not leader.is_leader
    assert [(c.leading, c.term, c.holder) for c in changes] == [
        (True, 1, "only"),
        (False, 1, "only"),
    ]
    assert metrics.registry.get_sample_value("posthog_receiver_leader") == 0
    assert (
        metrics.registry.get_sample_value(
            "posthog_receiver_leadership_changes_total", {"change": "lost"}
        )
        == 1
    )


@pytest.mark.parametrize(
    ("group", "problem"),
    [
        (
            {"lease_seconds": 10, "renew_deadline_seconds": 10},
            "'renew_deadline_seconds' must be shorter than 'lease_seconds'",
        ),
        (
            {"renew_deadline_seconds": 2, "retry_seconds": 2},
            "'retry_seconds' must be shorter than 'renew_deadline_seconds'",
        ),
        ({"identity": "has space"}, "leadership.identity"),
    ],
)
def test_leadership_settings_are_checked(
    tmp_path: Path, group: dict[str, Any], problem: str
) -> None:
    """A renew deadline not shorter than the lease, or a retry period not shorter than the
    deadline, is refused with the field named."""
    path = tmp_path / "receiver.yaml"
    path.write_text(
        json.dumps({"webhook": {"allow_unauthenticated": True}, "leadership": group}),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    assert problem in str(refused.value)


def test_identity_defaults_to_the_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset, the identity is POD_NAME (set from the downward API), else hostname-pid."""
    monkeypatch.setenv("POD_NAME", "receiver-7d9f-abcde")
    assert LeadershipSettings().identity == "receiver-7d9f-abcde"
    monkeypatch.delenv("POD_NAME")
    assert LeadershipSettings().identity.endswith(f"-{os.getpid()}")
