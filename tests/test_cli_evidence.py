"""``posthog-receiver postmortem ID`` and ``posthog-receiver evidence ID -o FILE``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from receiver.config import load_settings
from receiver.store import Store
from tests.incident_payloads import open_incident
from tests.store_outsider import schema_version, write_old_schema


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed command line in a process of its own, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "receiver", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _config(tmp_path: Path) -> Path:
    config = {
        "webhook": {"bearer_token": {"value": "cli-test-token"}},
        "store": {"path": str(tmp_path / "receiver.sqlite3")},
        "evidence": {"directory": str(tmp_path / "evidence")},
    }
    path = tmp_path / "receiver.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _incident(config: Path) -> str:
    async def run() -> str:
        store = Store(load_settings(config).store)
        await store.open()
        try:
            return await open_incident(store, status_code="429")
        finally:
            await store.close()

    return asyncio.run(run())


def test_postmortem_prints_the_draft(tmp_path: Path) -> None:
    """The postmortem command prints the draft alone on stdout (logs go to stderr)."""
    config = _config(tmp_path)
    incident_id = _incident(config)
    done = _cli("postmortem", "--config", str(config), incident_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("## Incident: PostHog Errors (unclassified)")
    assert "### Root Cause" in done.stdout
    assert "evidence bundle written" in done.stderr


def test_evidence_writes_the_bundle(tmp_path: Path) -> None:
    """The evidence command collects a bundle when missing and writes it to the output file."""
    config = _config(tmp_path)
    incident_id = _incident(config)
    output = tmp_path / "out" / "bundle.tar.gz"
    output.parent.mkdir()
    done = _cli("evidence", "--config", str(config), incident_id, "-o", str(output))
    assert done.returncode == 0, done.stderr
    with tarfile.open(output, "r:gz") as tar:
        manifest = next(m for m in tar.getmembers() if m.name.endswith("/manifest.json"))
        handle = tar.extractfile(manifest)
        assert handle is not None
        assert json.loads(handle.read())["incident_id"] == incident_id
    # A read-only command: the bundle is not added to the receiver's state.
    assert not (tmp_path / "evidence").exists()


def test_an_unknown_incident_exits_non_zero(tmp_path: Path) -> None:
    """Asking for an incident that does not exist exits 1 with a readable message."""
    config = _config(tmp_path)
    _incident(config)  # the store exists, with another incident
    done = _cli("postmortem", "--config", str(config), "inc-nope")
    assert done.returncode == 1
    assert "no incident inc-nope" in done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("command", ["postmortem", "evidence"])
def test_without_a_state_database_nothing_is_created(tmp_path: Path, command: str) -> None:
    """With no state database, postmortem and evidence say so and exit non-zero; they create
    no database, no state directory and no bundle."""
    config = _config(tmp_path)
    output = tmp_path / "bundle.tar.gz"
    extra = ["-o", str(output)] if command == "evidence" else []
    done = _cli(command, "--config", str(config), "inc-any", *extra)
    assert done.returncode == 4
    assert f"no state database at {tmp_path / 'receiver.sqlite3'}" in done.stderr
    assert "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["receiver.yaml"]


def test_an_older_schema_is_not_migrated(tmp_path: Path) -> None:
    """A database at an older schema version is reported, not migrated by a read-only command."""
    config = _config(tmp_path)
    database = tmp_path / "receiver.sqlite3"
    write_old_schema(database, 1)
    done = _cli("postmortem", "--config", str(config), "inc-any")
    assert done.returncode == 4
    assert "schema version 1, older than" in done.stderr
    assert schema_version(database) == 1
