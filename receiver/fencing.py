"""Fencing: the acting side commits nothing, and calls no one, unless it leads in the current term.

Only the leader acts (remediation, reverts, notification delivery, evidence), but a leader can
be paused or cut off and wake up after its successor started (``receiver.leadership``). Two
checks, one mechanism each, keep such a replica from acting:

- every write of the acting side runs inside a transaction that first checks the lease row
  (:meth:`~receiver.leadership.Leader.check_term`, ``FOR SHARE``): an action's intent, a revert's
  intent, an outbox message's outcome, an incident event marked done, evidence recorded. A
  successor bumped the term, so the check fails, the transaction raises
  :class:`~receiver.leadership.NotLeader` and nothing of it commits. :class:`FencedStore` is the
  store the acting side is given: its ``write`` is fenced, its ``read`` is the store's;
- every outside call that changes something (a Kubernetes write, a notification sent) is
  preceded by :meth:`~receiver.leadership.Leader.require_leader`, a local check that this
  replica renewed its lease within the renew deadline, right before the request. That narrows
  the window left between an intent's commit and its call to the time one request takes to
  leave; a pause inside that window is what the renew deadline (shorter than the lease)
  absorbs, and the successor reconciles what it finds (the journal reads the Deployment back
  before acting again; PagerDuty's dedup key makes a resend a no-op).

With SQLite there is one replica and :class:`~receiver.leadership.AlwaysLeader`: the same code
runs, and its checks pass from start to stop.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from receiver.leadership import Leader
from receiver.store import Connection, Store
from receiver.store.base import nothing

__all__ = ["FencedStore", "confirm_leading", "fenced"]

T = TypeVar("T")


def fenced(leader: Leader, fn: Callable[[Connection], T]) -> Callable[[Connection], T]:
    """``fn`` run after the term check, in the same transaction: a deposed leader's ``fn``
    commits nothing (``NotLeader`` is raised before it runs)."""

    def run(conn: Connection) -> T:
        leader.check_term(conn)
        return fn(conn)

    return run


class FencedStore(Store):
    """``store`` whose every write is fenced by ``leader``'s term; reads are the store's own.

    What the acting side (worker, remediation, reverts, outbox, evidence) is given instead of
    the store, so that no write of it can be left unfenced by a call site that forgot.
    """

    def __new__(cls, store: Store, leader: Leader) -> FencedStore:
        # Store.__new__ picks a backend from settings; this wraps an open one instead.
        return object.__new__(cls)

    def __init__(self, store: Store, leader: Leader) -> None:
        self._store = store
        self._leader = leader

    @property
    def leader(self) -> Leader:
        """Whose term the writes are fenced by."""
        return self._leader

    @property
    def inner(self) -> Store:
        """The store itself, for writes every replica makes (intake, API)."""
        return self._store

    @property
    def lost(self) -> str | None:  # type: ignore[override]
        return self._store.lost

    @property
    def path(self) -> Path:
        return self._store.path

    @property
    def read_only(self) -> bool:
        return self._store.read_only

    @property
    def backend(self) -> str:
        return self._store.backend

    async def open(self) -> None:
        raise RuntimeError("a fenced store wraps an open store; open that one")

    async def open_read_only(self) -> None:
        raise RuntimeError("a fenced store wraps an open store; open that one")

    async def close(self) -> None:
        """Nothing: the store is closed by whoever opened it."""

    async def write(self, fn: Callable[[Connection], T]) -> T:
        return await self._store.write(fenced(self._leader, fn))

    async def read(self, fn: Callable[[Connection], T]) -> T:
        return await self._store.read(fn)

    async def ping(self) -> bool:
        return await self._store.ping()


async def confirm_leading(store: Store, leader: Leader) -> None:
    """Confirm that this replica leads, in the database and then locally, right before an
    outside call that has no intent row of its own (a notification sent): an empty fenced
    transaction, then the renew-deadline check. Raises ``NotLeader`` otherwise."""
    await store.write(fenced(leader, nothing))
    leader.require_leader()
