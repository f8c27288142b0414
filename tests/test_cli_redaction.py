"""The command line's postmortem and evidence bundle are redacted as the service's are."""

from __future__ import annotations

import asyncio
import sys
import tarfile
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml
from kmock import KubernetesEmulator

from receiver.config import load_settings
from receiver.store import Store
from tests.fakes.kube import add_event, add_pod, serve_logs, write_kubeconfig
from tests.incident_payloads import open_incident, record

NS = "posthog"
POD = "posthog-integration-5f7-abc"
SLACK_PATH = "/services/T0CLI/B0CLI/cl1W3bh00kT0k3nSecret"
SLACK_URL = "https://hooks.slack.com" + SLACK_PATH


def _config(tmp_path: Path, kubeconfig: Path) -> Path:
    """A config whose Slack webhook comes from a file, as a mounted Secret gives it."""
    secret = tmp_path / "slack-webhook-url"
    secret.write_text(SLACK_URL + "\n", encoding="utf-8")
    config = {
        "webhook": {"bearer_token": {"value": "cli-test-token"}},
        "store": {"path": str(tmp_path / "receiver.sqlite3")},
        "evidence": {"directory": str(tmp_path / "evidence")},
        "kubernetes": {"mode": "kubeconfig", "kubeconfig": str(kubeconfig)},
        "remediation": {"target": {"namespace": NS, "pod_selector": "app=posthog-integration"}},
        "notify": {"slack": {"webhook_url": {"file": str(secret)}}},
    }
    path = tmp_path / "receiver.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


async def _cli(*args: str) -> tuple[int, str, str]:
    """The command line in a process of its own; this loop keeps serving the fake cluster."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "receiver",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _contents(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        found = {}
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            assert handle is not None
            found[member.name.split("/", 1)[1]] = handle.read()
        return found


@pytest.mark.asyncio
async def test_cli_evidence_and_postmortem_redact_the_configured_secrets(
    tmp_path: Path, kmock: KubernetesEmulator
) -> None:
    """A secret that a pod logged, an event quoted (JSON-escaped) and the timeline holds
    (percent-encoded) is [redacted] in the CLI's bundle and postmortem draft."""
    add_pod(kmock, NS, POD, labels={"app": "posthog-integration"})
    serve_logs(kmock, {(POD, "app"): f"ERROR 401 posting to {SLACK_URL}\nINFO ok\n"})
    escaped = SLACK_PATH.replace("/", "\\/")
    add_event(kmock, NS, "ev-1", kind="Pod", object_name=POD, reason="BackOff", message=escaped)
    config = _config(tmp_path, write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url)))
    store = Store(load_settings(config).store)
    await store.open()
    try:
        incident_id = await open_incident(store)
        await record(store, incident_id, "action", f"saw {quote(SLACK_PATH, safe='')} in a log")
    finally:
        await store.close()

    output = tmp_path / "bundle.tar.gz"
    code, _, err = await _cli("evidence", "--config", str(config), incident_id, "-o", str(output))
    assert code == 0, err
    code, draft, err = await _cli("postmortem", "--config", str(config), incident_id)
    assert code == 0, err

    files = _contents(output)
    assert b"ERROR 401 posting to [redacted]\n" in files[f"logs/{POD}/app.errors.log"]
    assert b'"message": "[redacted]"' in files["events.json"]
    assert "saw [redacted] in a log" in draft
    for text in [draft, err, *(c.decode("utf-8", "replace") for c in files.values())]:
        assert "cl1W3bh00kT0k3nSecret" not in text
