"""Evidence bundles as the store records them: which bundle was written for which incident.

The bundle files themselves are written by :mod:`receiver.evidence.collector`; a record names
one, with its size, digest and the sources that failed, once per incident and phase.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from receiver.store.base import Connection
from receiver.store.incidents import add_timeline

__all__ = ["BundleRecord", "Phase", "bundles_for", "record_bundle"]

Phase = Literal["opened", "resolved"]


@dataclass(frozen=True)
class BundleRecord:
    """A bundle written for an incident, as recorded in the store."""

    incident_id: str
    phase: Phase
    path: Path
    created_at: float
    size_bytes: int
    sha256: str
    failed_sources: list[str]


def bundles_for(conn: Connection, incident_id: str) -> list[BundleRecord]:
    """The incident's bundles, oldest first."""
    rows = conn.execute(
        "SELECT * FROM evidence_bundles WHERE incident_id = ? ORDER BY created_at, id",
        (incident_id,),
    ).fetchall()
    return [
        BundleRecord(
            incident_id=r["incident_id"],
            phase=r["phase"],
            path=Path(r["path"]),
            created_at=r["created_at"],
            size_bytes=r["size_bytes"],
            sha256=r["sha256"],
            failed_sources=json.loads(r["failed_sources"]),
        )
        for r in rows
    ]


def record_bundle(conn: Connection, record: BundleRecord, files: int) -> None:
    conn.execute(
        "INSERT INTO evidence_bundles (incident_id, phase, path, created_at,"
        " size_bytes, sha256, failed_sources) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (incident_id, phase) DO UPDATE SET path = excluded.path,"
        " created_at = excluded.created_at, size_bytes = excluded.size_bytes,"
        " sha256 = excluded.sha256, failed_sources = excluded.failed_sources",
        (
            record.incident_id,
            record.phase,
            str(record.path),
            record.created_at,
            record.size_bytes,
            record.sha256,
            json.dumps(record.failed_sources),
        ),
    )
    failed = f"; failed: {', '.join(record.failed_sources)}" if record.failed_sources else ""
    add_timeline(
        conn,
        record.incident_id,
        "evidence",
        f"evidence collected ({record.phase}): {files} files{failed}",
        {"path": str(record.path), "sha256": record.sha256, "bytes": record.size_bytes},
    )
