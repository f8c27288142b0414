"""``posthog-receiver postmortem ID`` and ``posthog-receiver evidence ID -o FILE``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import yaml

from receiver.config import load_settings
from receiver.store import Store
from tests.incident_payloads import open_incident


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
    """The evidence command collects a bundle when missing and copies it to the output file."""
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
    assert len(list((tmp_path / "evidence").glob("*.tar.gz"))) == 1


def test_an_unknown_incident_exits_non_zero(tmp_path: Path) -> None:
    """Asking for an incident that does not exist exits 1 with a readable message."""
    done = _cli("postmortem", "--config", str(_config(tmp_path)), "inc-nope")
    assert done.returncode == 1
    assert "no incident inc-nope" in done.stderr
    assert done.stdout == ""
