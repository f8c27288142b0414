"""The fence: a replica that does not lead commits nothing and changes nothing outside.

Each mechanism is checked on the real code path: the fenced store against a real SQLite and a
real PostgreSQL store (where the check reads the lease row), the Kubernetes fence against the
emulator over HTTP, the outbox's fence against the fake PagerDuty.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError

from receiver.config import (
    KubernetesSettings,
    LeadershipSettings,
    RemediationTarget,
    Settings,
)
from receiver.fencing import FencedStore, confirm_leading
from receiver.kube.client import KubeConnection
from receiver.kube.workload import IntegrationWorkload
from receiver.leadership import AlwaysLeader, Leadership, NotLeader
from receiver.store import Store
from receiver.store.incidents import list_incidents
from tests.conftest import open_incident
from tests.helpers import settings_data
from tests.kube_emulator import DEPLOYMENTS, ClusterEmulator, deployment
from tests.store_backends import postgres_cluster, postgres_dsn, store_settings

__all__ = ["postgres_cluster", "postgres_dsn"]


@pytest.mark.asyncio
async def test_a_stopped_leader_commits_nothing(store: Store) -> None:
    """SQLite's one replica: leader from start to stop; after stop, a fenced write is refused
    and nothing of it is stored."""
    leader = AlwaysLeader(holder="only")
    await leader.start()
    fenced = FencedStore(store, leader)
    await open_incident(fenced)
    await leader.stop()
    with pytest.raises(NotLeader):
        await open_incident(fenced, "second")
    assert len(await store.read(list_incidents)) == 1


@pytest.mark.asyncio
async def test_a_deposed_leader_commits_nothing_in_postgres(
    postgres_dsn: str, tmp_path: Path
) -> None:
    """Two replicas' leaderships on one PostgreSQL store: the leader's fenced writes commit;
    once it stopped (the lease handed over, the term bumped by the successor), its writes are
    refused in the database and nothing of them is stored; the successor's commit."""
    store = Store(store_settings("postgres", tmp_path, postgres_dsn))
    await store.open()
    timing = {"lease_seconds": 1.5, "renew_deadline_seconds": 1.0, "retry_seconds": 0.2}
    first = Leadership(dsn=postgres_dsn, settings=LeadershipSettings(identity="first", **timing))
    second = Leadership(dsn=postgres_dsn, settings=LeadershipSettings(identity="second", **timing))
    try:
        await first.start()
        async with asyncio.timeout(10):
            await first.wait_until_leader()
        await second.start()
        await open_incident(FencedStore(store, first))
        with pytest.raises(NotLeader):  # a follower is refused as well
            await open_incident(FencedStore(store, second), "follower")
        await first.stop()  # releases: the second takes over with a new term
        async with asyncio.timeout(10):
            assert await second.wait_until_leader() == 2
        with pytest.raises(NotLeader):
            await open_incident(FencedStore(store, first), "deposed")
        await open_incident(FencedStore(store, second), "successor")
        with pytest.raises(NotLeader):
            await confirm_leading(store, first)
        await confirm_leading(store, second)
        stored = await store.read(list_incidents)
        assert len(stored) == 2, "the two leaders' incidents, nothing of the others'"
    finally:
        await first.stop()
        await second.stop()
        await store.close()


@pytest.mark.asyncio
async def test_the_database_refuses_a_term_taken_over_before_the_leader_knows(
    postgres_dsn: str, tmp_path: Path
) -> None:
    """A leader that still believes it leads (renewed within its deadline) while a successor
    already took the lease with a newer term (here: a new process under the same name, which
    takes the lease at once): the check in the database refuses its write, nothing of it is
    stored. The local check alone would have let it through."""
    store = Store(store_settings("postgres", tmp_path, postgres_dsn))
    await store.open()
    # Renewing rarely: it keeps believing it leads for the whole test.
    slow = LeadershipSettings(
        identity="replica-0", lease_seconds=60, renew_deadline_seconds=40, retry_seconds=30
    )
    old = Leadership(dsn=postgres_dsn, settings=slow)
    new = Leadership(dsn=postgres_dsn, settings=slow)
    try:
        await old.start()
        async with asyncio.timeout(10):
            assert await old.wait_until_leader() == 1
        await new.start()
        async with asyncio.timeout(10):
            assert await new.wait_until_leader() == 2
        assert old.term == 1, "it does not know yet"
        with pytest.raises(NotLeader):
            await open_incident(FencedStore(store, old), "stale")
        with pytest.raises(NotLeader):
            await confirm_leading(store, old)
        await open_incident(FencedStore(store, new), "current")
        assert len(await store.read(list_incidents)) == 1, "nothing of the stale term's"
    finally:
        await old.stop()
        await new.stop()
        await store.close()


@pytest.mark.asyncio
async def test_a_replica_that_does_not_lead_writes_nothing_to_kubernetes(
    cluster: ClusterEmulator, kube_settings: KubernetesSettings
) -> None:
    """The connection's fence runs before every write: refused, no request reaches the API
    server but the server-side dry run, which changes nothing."""
    leader = AlwaysLeader(holder="only")
    connection = await KubeConnection.open(kube_settings, fence=leader.require_leader)
    assert connection is not None
    try:
        cluster.put_object(DEPLOYMENTS, "prod", "posthog-integration", deployment())
        workload = IntegrationWorkload(connection, target=RemediationTarget(namespace="prod"))
        with pytest.raises(NotLeader):
            await workload.set_env(
                env="RATE_LIMIT_MODE", value="queue", dry_run=False, conflict_attempts=3
            )
        assert cluster.writes("deployments") == []
        patches = [r for r in cluster if r.method.value == "PATCH"]
        assert [r.params.get("dryRun") for r in patches] == ["All"], "only the dry run"
        await leader.start()
        change = await workload.set_env(
            env="RATE_LIMIT_MODE", value="queue", dry_run=False, conflict_attempts=3
        )
        assert change.changed
        assert len(cluster.writes("deployments")) == 1
    finally:
        await connection.close()


def test_a_statement_timeout_as_long_as_the_lease_is_refused(tmp_path: Path) -> None:
    """A transaction left idle holds the lease row until the statement timeout ends it: a
    timeout as long as the lease would hold a successor back past it."""
    store = {
        "backend": "postgres",
        "path": str(tmp_path / "state.sqlite3"),
        "postgres": {"dsn": {"value": "postgresql://db/x"}, "statement_timeout_seconds": 15},
    }
    with pytest.raises(ValidationError, match=r"shorter than leadership\.lease_seconds"):
        Settings.model_validate(settings_data(tmp_path, store=store))
    store["postgres"] = {"dsn": {"value": "postgresql://db/x"}, "statement_timeout_seconds": 5}
    assert Settings.model_validate(settings_data(tmp_path, store=store)).store.backend == "postgres"
