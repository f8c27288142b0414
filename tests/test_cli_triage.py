"""``posthog-receiver triage``: the real command, in a subprocess, on a payload file."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from receiver.alertmanager import WebhookPayload
from receiver.cli import main
from receiver.config import load_settings
from receiver.explain import TriageReport, explain
from receiver.runbook import ErrorClass, Severity, Verdict
from tests.fakes.cluster import FakeCluster, key
from tests.fakes.health import FakeHealth
from tests.fakes.http import unused_port
from tests.fakes.status_page import FakeStatusPage


def alert(fp: str, status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "PostHogErrorRateHigh", "service": "posthog-integration", **labels},
        "annotations": {"summary": "PostHog error rate above 5%"},
        "startsAt": "2026-11-23T05:00:00.123Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=rate%28posthog_errors_total%5B5m%5D%29",
        "fingerprint": fp,
    }


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "4",
        "groupKey": '{}:{alertname="PostHogErrorRateHigh"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "posthog-receiver",
        "groupLabels": {"alertname": "PostHogErrorRateHigh"},
        "commonLabels": {"alertname": "PostHogErrorRateHigh"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
    }


def write_config(tmp_path: Path, status_url: str, health_url: str | None = None) -> Path:
    cfg = tmp_path / "receiver.yaml"
    health = f"\n    url: {health_url}" if health_url else ""
    cfg.write_text(
        "webhook: {allow_unauthenticated: true}\n"
        f"store: {{path: {tmp_path / 'state' / 'receiver.sqlite3'}}}\n"
        "triage:\n"
        f"  upstream: {{url: '{status_url}', timeout_seconds: 0.5}}\n"
        f"  health:\n    timeout_seconds: 0.5{health}\n"
    )
    return cfg


async def cli(*args: str | Path) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "receiver",
        "triage",
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.asyncio
async def test_json_output(tmp_path: Path, status_page: FakeStatusPage) -> None:
    """--json prints one object with class, severity, decision, steps, actions, notifications."""
    status_page.indicator = "major"
    body = payload(
        alert("a1", status_code="503", severity="warning"),
        alert("b2", status_code="502", severity="critical"),
        alert("c3", "resolved", status_code="401", priority="P1"),
    )
    (tmp_path / "payload.json").write_text(json.dumps(body))
    cfg = write_config(tmp_path, status_page.url())
    code, out, err = await cli("--config", cfg, tmp_path / "payload.json", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["error_class"] == "upstream_error"
    assert report["severity"] == "P1"  # highest of the firing alerts; the resolved one is out
    assert report["acknowledge_by"] == "2026-11-23T05:15:00.123000+00:00"
    assert report["decision"]["verdict"] == "vendor_incident"
    assert report["steps"] == report["decision"]["steps"]
    assert report["steps"][0]["answer"] == "yes"
    # What remediation and notification would do: see tests/test_responder.py.
    assert [(a["action"], a["status"]) for a in report["actions"]] == [
        ("enable_fallback", "dry_run")
    ]
    assert report["notifications"]
    assert [a["fingerprint"] for a in report["alerts"]] == ["a1", "b2"]
    assert status_page.requests == ["/api/v2/status.json"]
    # No side effects: the configured store was never created.
    assert not (tmp_path / "state").exists()


@pytest.mark.asyncio
async def test_human_output(tmp_path: Path, status_page: FakeStatusPage) -> None:
    """The readable form shows class, severity, verdict and the numbered decision path."""
    health = FakeHealth()
    await health.start()
    try:
        (tmp_path / "p.json").write_text(
            json.dumps(payload(alert("a1", error_type="ECONNRESET", severity="error")))
        )
        cfg = write_config(tmp_path, status_page.url(), health.url)
        code, out, err = await cli("--config", cfg, tmp_path / "p.json")
    finally:
        await health.stop()
    assert code == 0, err
    lines = out.splitlines()
    assert "Error class    network" in lines
    assert any(
        line.startswith("Severity       P2  (acknowledge by 2026-11-23 06:00") for line in lines
    )
    assert "Verdict        intermittent" in lines
    assert any(line.startswith("  1. Is PostHog itself having an incident") for line in lines)
    assert any(line.startswith("  2. Is our service healthy") for line in lines)
    assert "Actions        none (remediation planning supplied nothing)" in lines
    assert "Notifications" in lines  # listed below it, one per line


@pytest.mark.asyncio
async def test_offline_status_page_is_reported_not_fatal(tmp_path: Path) -> None:
    """With the status page unreachable (offline laptop) the command still answers: unknown."""
    (tmp_path / "p.json").write_text(json.dumps(payload(alert("a1", status_code="429"))))
    cfg = write_config(tmp_path, f"http://127.0.0.1:{unused_port()}/api/v2/status.json")
    code, out, err = await cli("--config", cfg, tmp_path / "p.json", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["verdict"] == "unknown"
    assert report["steps"][0]["answer"] == "unknown"
    assert "unreachable" in report["steps"][0]["finding"]


@pytest.mark.asyncio
async def test_bad_payload_is_one_line_error(tmp_path: Path) -> None:
    """A payload file that is not JSON gives one clear line on stderr and exit code 3."""
    path = tmp_path / "payload.json"
    path.write_text("{not json")
    cfg = write_config(tmp_path, f"http://127.0.0.1:{unused_port()}/")
    code, out, err = await cli("--config", cfg, path)
    assert (code, out) == (3, "")
    assert err.splitlines() == [f"posthog-receiver: bad payload {path}: (top level): Invalid JSON: "
                                "key must be a string at line 1 column 2"]  # fmt: skip


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No such file or directory"),
        (json.dumps({"version": "4", "status": "firing"}), "groupKey: Field required"),
        (json.dumps(payload()), "alerts: List should have at least 1 item"),
        (json.dumps({**payload(alert("a")), "version": "3"}), "version: Input should be '4'"),
    ],
)
def test_invalid_payload_names_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None, message: str
) -> None:
    """A missing or invalid payload names the first problem in one line, exit code 3."""
    path = tmp_path / "payload.json"
    if content is not None:
        path.write_text(content)
    cfg = write_config(tmp_path, f"http://127.0.0.1:{unused_port()}/")
    with pytest.raises(SystemExit) as exc:
        main(["triage", "--config", str(cfg), str(path)])
    assert exc.value.code == 3
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith(f"posthog-receiver: bad payload {path}: ")
    assert message in captured.err


@pytest.mark.asyncio
async def test_explain_uses_planners_and_cluster(
    tmp_path: Path, status_page: FakeStatusPage
) -> None:
    """Supplied planners (sync or async) fill actions and notifications from the report."""
    cfg = load_settings(write_config(tmp_path, status_page.url()))
    body = WebhookPayload.model_validate(payload(alert("a1", status_code="401")))
    seen: list[TriageReport] = []

    def plan_actions(report: TriageReport) -> list[dict[str, Any]]:
        seen.append(report)
        return [{"action": "restart_pods", "verdict": report.decision.verdict.value}]

    async def plan_notifications(report: TriageReport) -> list[dict[str, Any]]:
        return [{"channel": "pagerduty", "severity": report.severity.value}]

    got = await explain(
        body,
        cfg,
        cluster=FakeCluster(api_key_report=key(rotated=True)),
        plan_actions=plan_actions,
        plan_notifications=plan_notifications,
    )
    assert (got.error_class, got.severity) == (ErrorClass.AUTH, Severity.P1)
    assert got.decision.verdict is Verdict.OUR_INTEGRATION
    assert got.actions == [{"action": "restart_pods", "verdict": "our_integration"}]
    assert got.notifications == [{"channel": "pagerduty", "severity": "P1"}]
    assert seen[0].actions == []
    assert json.loads(json.dumps(got.as_dict()))["actions"] == got.actions
