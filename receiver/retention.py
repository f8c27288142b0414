"""Retention: resolved incidents and their evidence are kept for a while, then pruned.

Why: every incident leaves rows (alerts, timeline, events, notifications, journal) and up to
two evidence bundles of up to ``evidence.max_bundle_bytes`` each; kept for ever they fill the
state volume, and a full volume stops the store from committing webhooks. So:

- a resolved incident is deleted, with every row and bundle that belongs to it,
  ``store.incident_retention_days`` after it resolved;
- the bundles of a resolved incident are deleted ``evidence.retention_days`` after it
  resolved (they are large; its record stays), and sooner, oldest first, while the evidence
  directory holds more than ``evidence.max_total_mib``.

Never pruned: an open incident or its bundles, and a resolved incident that still has work to
do (an event not handled, a notification not delivered, a change of ours still to revert).

Runs in the worker's background passes, in bounded batches: each batch is one short write
transaction, and a pass does at most one batch of each kind, so webhooks and incidents are
never held up behind a large backlog (after an upgrade, say); the worker comes back for the
rest at its next pass. Files are deleted after the commit that forgets them: a crash in
between leaves files no row names, which are recognised by their names (only names the
collector writes are ever touched) and pruned like any bundle, by their modification time.
"""

from __future__ import annotations

import asyncio
import functools
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from receiver.config import EvidenceSettings, StoreSettings
from receiver.metrics import Metrics
from receiver.store import Store, now
from receiver.store.retention import (
    StoredBundle,
    forget_bundles,
    incidents_kept,
    prune_incidents,
    stored_bundles,
)

__all__ = ["Retention"]

logger = structlog.get_logger(__name__)

DAY = 86400.0
INCIDENT_BATCH = 50  # incidents deleted per write transaction
BUNDLE_BATCH = 100  # evidence files deleted per pass
# A bundle is renamed into place a moment before its row is committed, and an unfinished one
# is being written for as long as collecting takes: files younger than this that no row names
# are left alone.
UNRECORDED_GRACE_SECONDS = 3600.0

# What the collector names its files (receiver.evidence.collector, receiver.evidence.bundle):
# ``<incident>-<phase>-<UTC time>.tar.gz``, and ``.<that stem>.<random>.tmp`` while writing.
_STEM = r"[A-Za-z0-9._-]+-(?:opened|resolved)-\d{8}T\d{6}Z"
_BUNDLE_NAME = re.compile(rf"{_STEM}\.tar\.gz")
_UNFINISHED_NAME = re.compile(rf"\.{_STEM}\.[A-Za-z0-9_]+\.tmp")


@dataclass(frozen=True)
class _File:
    """A file of ours in the evidence directory."""

    path: Path
    bytes: int
    mtime: float
    unfinished: bool


@dataclass(frozen=True)
class _Candidate:
    """Evidence that may be deleted: a recorded bundle of a resolved incident (``bundle``),
    or a file no row names; ``since`` orders them (resolution time, or modification time)."""

    since: float
    path: Path
    bytes: int
    bundle: StoredBundle | None


class Retention:
    """Prunes what is past its retention and counts what is kept (the ``*_kept`` metrics)."""

    def __init__(
        self,
        *,
        store: Store,
        metrics: Metrics,
        store_settings: StoreSettings,
        evidence: EvidenceSettings,
        clock: Callable[[], float] = now,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._incident_days = store_settings.incident_retention_days
        self._evidence = evidence
        self._clock = clock

    async def run_once(self) -> bool:
        """One bounded pass; ``True`` when nothing past retention is left."""
        at = self._clock()
        incidents_done = await self._prune_incidents(at)
        evidence_done = await self._prune_evidence(at)
        kept = await self._store.read(incidents_kept)
        for status, count in kept.items():
            self._metrics.incidents_kept.labels(status).set(count)
        return incidents_done and evidence_done

    async def _prune_incidents(self, at: float) -> bool:
        cutoff = at - self._incident_days * DAY
        pruned = await self._store.write(
            functools.partial(prune_incidents, resolved_before=cutoff, limit=INCIDENT_BATCH)
        )
        if not pruned.ids:
            return True
        await asyncio.to_thread(_unlink, [Path(p) for p in pruned.bundle_paths])
        self._metrics.incidents_pruned.inc(len(pruned.ids))
        self._metrics.evidence_bundles_pruned.labels("incident").inc(len(pruned.bundle_paths))
        logger.info(
            "pruned resolved incidents",
            count=len(pruned.ids),
            bundles=len(pruned.bundle_paths),
            retention_days=self._incident_days,
        )
        return len(pruned.ids) < INCIDENT_BATCH

    async def _prune_evidence(self, at: float) -> bool:
        recorded = await self._store.read(stored_bundles)
        plan = await asyncio.to_thread(_plan, self._evidence, recorded, at=at)
        if plan.over_cap:
            logger.warning(
                "evidence is over evidence.max_total_mib, and only open incidents' bundles"
                " are left",
                bytes=plan.bytes_left,
                max_total_mib=self._evidence.max_total_mib,
            )
        await self._delete(plan.by_age, "age", f"kept {self._evidence.retention_days:g} days")
        await self._delete(
            plan.by_size,
            "size",
            f"evidence over {self._evidence.max_total_mib} MiB, oldest deleted first",
        )
        if plan.unfinished:
            await asyncio.to_thread(_unlink, [f.path for f in plan.unfinished])
            self._metrics.evidence_bundles_pruned.labels("unfinished").inc(len(plan.unfinished))
        remaining = await asyncio.to_thread(_scan, self._evidence.directory)
        self._metrics.evidence_bundles_kept.set(
            sum(1 for f in remaining.values() if not f.unfinished)
        )
        self._metrics.evidence_bytes.set(sum(f.bytes for f in remaining.values()))
        return plan.done

    async def _delete(self, chosen: list[_Candidate], reason: str, why: str) -> None:
        if not chosen:
            return
        recorded = [c.bundle for c in chosen if c.bundle is not None]
        if recorded:
            await self._store.write(functools.partial(forget_bundles, bundles=recorded, why=why))
        await asyncio.to_thread(_unlink, [c.path for c in chosen])
        self._metrics.evidence_bundles_pruned.labels(reason).inc(len(chosen))
        logger.info(
            "pruned evidence bundles",
            reason=reason,
            count=len(chosen),
            bytes=sum(c.bytes for c in chosen),
        )


@dataclass(frozen=True)
class _Plan:
    """What one pass deletes, at most ``BUNDLE_BATCH`` files in all."""

    unfinished: list[_File]
    by_age: list[_Candidate]
    by_size: list[_Candidate]
    bytes_left: int
    over_cap: bool  # still over the cap with nothing left that may be deleted
    done: bool  # nothing more to delete (the batch did not run out)


def _plan(settings: EvidenceSettings, recorded: list[StoredBundle], *, at: float) -> _Plan:
    """Choose what to delete: unfinished files past the grace period, then the bundles of
    resolved incidents (and files no row names) past ``retention_days``, then the oldest of
    them while the directory is over ``max_total_mib``."""
    on_disk = _scan(settings.directory)
    by_path = {os.path.abspath(b.path): b for b in recorded}
    unfinished: list[_File] = []
    candidates: list[_Candidate] = []
    for key, f in on_disk.items():
        if key in by_path or at - f.mtime < UNRECORDED_GRACE_SECONDS:
            continue  # recorded; or being written, or about to be recorded
        if f.unfinished:
            unfinished.append(f)
        else:
            candidates.append(_Candidate(f.mtime, f.path, f.bytes, None))
    for key, b in by_path.items():
        if b.resolved_at is None:
            continue  # an open incident's evidence is always kept
        found = on_disk.get(key)
        candidates.append(_Candidate(b.resolved_at, Path(b.path), found.bytes if found else 0, b))
    candidates.sort(key=lambda c: c.since)

    unfinished = unfinished[:BUNDLE_BATCH]
    budget = BUNDLE_BATCH - len(unfinished)
    total = sum(f.bytes for f in on_disk.values()) - sum(f.bytes for f in unfinished)
    cap = settings.max_total_mib * 1_048_576
    age_cutoff = at - settings.retention_days * DAY
    by_age: list[_Candidate] = []
    by_size: list[_Candidate] = []
    left = len(candidates)
    for c in candidates:
        if budget <= 0:
            break
        if c.since < age_cutoff:
            by_age.append(c)
        elif total > cap:
            by_size.append(c)
        else:
            break  # oldest first: the rest are younger still, and the cap is met
        total -= c.bytes
        budget -= 1
        left -= 1
    return _Plan(
        unfinished=unfinished,
        by_age=by_age,
        by_size=by_size,
        bytes_left=total,
        over_cap=total > cap and left == 0,
        done=budget > 0,
    )


def _scan(directory: Path) -> dict[str, _File]:
    """The files of ours in ``directory`` by absolute path (none if it does not exist yet)."""
    found: dict[str, _File] = {}
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return found
    for entry in entries:
        unfinished = _UNFINISHED_NAME.fullmatch(entry.name) is not None
        if not unfinished and _BUNDLE_NAME.fullmatch(entry.name) is None:
            continue  # not a name the collector writes: never ours to delete
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # deleted meanwhile
        path = os.path.abspath(entry.path)
        found[path] = _File(Path(path), stat.st_size, stat.st_mtime, unfinished)
    return found


def _unlink(paths: Iterable[Path]) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as e:  # left for the next pass, which finds it by its name
            logger.warning("could not delete an evidence file", path=str(path), error=str(e))
