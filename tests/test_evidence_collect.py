"""Evidence collection end to end: real Prometheus, kmock's Kubernetes, a real store."""

from __future__ import annotations

import asyncio
import json
import re
import tarfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from kmock import KubernetesEmulator

from receiver.config import (
    EvidenceLogsSettings,
    EvidencePrometheusSettings,
    EvidenceSettings,
    KubernetesSettings,
    PrometheusSettings,
    RemediationSettings,
    RemediationTarget,
    SecretSource,
    Settings,
    StoreSettings,
    WebhookSettings,
)
from receiver.evidence import EvidenceCollector, IncidentNotFound, bundles_for
from receiver.kube.client import open_cluster
from receiver.metrics import Metrics
from receiver.redaction import Redactor
from receiver.runbook import ErrorClass, Severity
from receiver.store import Store
from receiver.store.incidents import get_incident
from tests.fakes.errors_exporter import ErrorsExporter, running_exporter
from tests.fakes.kube import add_event, add_pod, serve_logs, write_kubeconfig
from tests.fakes.prometheus_server import free_port, running_prometheus
from tests.incident_payloads import open_incident, record, resolve_incident

NS = "posthog"
APP = {"app": "posthog-integration"}
POD = "posthog-integration-5f7-abc"
LOG = (
    "2026-01-01T10:00:00Z INFO sent batch of 50 events\n"
    "2026-01-01T10:00:01Z ERROR PostHog answered 503 Service Unavailable\n"
    "2026-01-01T10:00:02Z INFO retrying\n"
    "2026-01-01T10:00:03Z WARN PostHog answered 429, backing off\n"
    "2026-01-01T10:00:04Z INFO sent batch of 50 events\n"
)
UPSTREAM = {"indicator": "major", "description": "Partial outage: ingestion"}


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(StoreSettings(path=tmp_path / "state" / "receiver.sqlite3"))
    await s.open()
    yield s
    await s.close()


@pytest_asyncio.fixture
async def metrics(tmp_path: Path) -> AsyncIterator[tuple[ErrorsExporter, str]]:
    """The integration's error counters, scraped every second by a real Prometheus."""
    exporter = ErrorsExporter()
    exporter.add("503", 0)
    exporter.add("429", 0)
    async with (
        running_exporter(exporter),
        running_prometheus(tmp_path / "prometheus", targets=[exporter.address]) as url,
    ):
        yield exporter, url


@pytest.fixture
def cluster(kmock: KubernetesEmulator, tmp_path: Path) -> Path:
    """One integration pod with a log, and events about it; returns the kubeconfig."""
    add_pod(kmock, NS, POD, labels=APP)
    serve_logs(kmock, {(POD, "app"): LOG})
    add_event(
        kmock,
        NS,
        "ev-1",
        kind="Pod",
        object_name=POD,
        reason="Unhealthy",
        message="Readiness probe failed",
        type_="Warning",
        at="2026-01-01T10:00:05Z",
    )
    return write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url))


def _settings(
    tmp_path: Path,
    *,
    prometheus_url: str | None,
    kubeconfig: Path | None,
    log_options: dict[str, Any] | None = None,
    **overrides: Any,
) -> Settings:
    logs = EvidenceLogsSettings(tail_lines=3, **(log_options or {}))
    prom = EvidencePrometheusSettings(margin_minutes=1)
    evidence = EvidenceSettings(
        directory=tmp_path / "evidence", logs=logs, prometheus=prom, **overrides
    )
    cluster = (
        KubernetesSettings(mode="kubeconfig", kubeconfig=kubeconfig)
        if kubeconfig is not None
        else KubernetesSettings()
    )
    return Settings(
        webhook=WebhookSettings(allow_unauthenticated=True),
        kubernetes=cluster,
        remediation=RemediationSettings(
            target=RemediationTarget(namespace=NS, pod_selector="app=posthog-integration")
        ),
        evidence=evidence,
        prometheus=PrometheusSettings(url=prometheus_url, timeout_seconds=2),
    )


@asynccontextmanager
async def collecting(
    settings: Settings, *, store: Store, metrics: Metrics | None = None
) -> AsyncIterator[EvidenceCollector]:
    """A collector as the application builds it: through one cluster connection."""
    async with open_cluster(settings.kubernetes) as cluster:
        collector = EvidenceCollector.from_settings(
            settings,
            store=store,
            cluster=cluster.connection,
            redactor=Redactor.from_settings(settings),
            metrics=metrics,
        )
        try:
            yield collector
        finally:
            await collector.close()


def _read(path: Path) -> dict[str, bytes]:
    stem = path.name.removesuffix(".tar.gz")
    with tarfile.open(path, "r:gz") as tar:
        return {
            m.name.removeprefix(f"{stem}/"): tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
        }


async def _wait_scraped(url: str, total: float) -> None:
    """Until Prometheus has scraped the counters at ``total``."""
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            params = {"query": "sum(posthog_errors_total)"}
            async with session.get(f"{url}/api/v1/query", params=params) as resp:
                result = (await resp.json())["data"]["result"]
            if result and float(result[0]["value"][1]) >= total:
                return
            await asyncio.sleep(0.2)
    raise AssertionError("Prometheus never scraped the errors")


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_resolved_incident_bundle_holds_every_source(
    tmp_path: Path, store: Store, metrics: tuple[ErrorsExporter, str], cluster: Path
) -> None:
    """Logs, events, metrics, upstream status, timeline, chart and draft are all bundled."""
    exporter, prom_url = metrics
    incident_id = await open_incident(store, status_code="503")
    await record(
        store,
        incident_id,
        "decision",
        "decision: vendor incident",
        error_class=ErrorClass.UPSTREAM_ERROR,
        severity=Severity.P2,
        decision={"verdict": "vendor_incident", "summary": "PostHog reports a major outage"},
    )
    for _ in range(6):
        exporter.add("503", 25)
        await asyncio.sleep(0.5)
    await _wait_scraped(prom_url, 150)
    await record(store, incident_id, "action", "set POSTHOG_FALLBACK=true")
    await resolve_incident(store, status_code="503")

    async with collecting(
        _settings(tmp_path, prometheus_url=prom_url, kubeconfig=cluster), store=store
    ) as collector:
        path = await collector.collect(incident_id=incident_id, phase="resolved", upstream=UPSTREAM)
        again = await collector.collect(incident_id=incident_id, phase="resolved", upstream=None)

    assert again == path
    files = _read(path)
    manifest = json.loads(files["manifest.json"])
    assert manifest["incident_id"] == incident_id
    assert manifest["phase"] == "resolved"
    assert manifest["failed_sources"] == []
    assert {s["source"] for s in manifest["sources"] if s["status"] == "collected"} >= {
        "timeline",
        "upstream_status",
        "prometheus:error_rate_by_status",
        "prometheus:error_count",
        "pod_logs",
        "events",
    }
    assert {f["path"] for f in manifest["files"]} == set(files) - {"manifest.json", "NOTES.md"}

    # The timeline, and the status snapshot as given.
    incident = json.loads(files["incident.json"])
    assert [t["kind"] for t in incident["timeline"]][:2] == ["incident", "alert_firing"]
    assert json.loads(files["upstream-status.json"]) == UPSTREAM

    # Metrics from Prometheus: the 503 rate over the window, and the error count.
    rate = json.loads(files["metrics/error_rate_by_status.json"])
    assert rate["query"] == "sum by (status_code) (rate(posthog_errors_total[5m]))"
    by_code = {s["labels"].get("status_code"): s["points"] for s in rate["series"]}
    assert max(v for _, v in by_code["503"]) > 0
    assert max(v for _, v in by_code["429"]) == 0
    summary = json.loads(files["metrics/summary.json"])
    assert summary["error_count"] > 0

    # Logs: the error lines of the hour, and a tail.
    errors = files[f"logs/{POD}/app.errors.log"].decode()
    assert "503 Service Unavailable" in errors
    assert "429" in errors
    assert "sent batch" not in errors
    tail = files[f"logs/{POD}/app.tail.log"].decode().splitlines()
    assert len(tail) == 3
    assert tail[-1].endswith("sent batch of 50 events")
    events = json.loads(files["events.json"])
    assert [(e["object"], e["reason"]) for e in events] == [(f"Pod/{POD}", "Unhealthy")]

    # The chart with the action marked, and the draft that references it.
    svg = files["chart.svg"].decode()
    assert "<polyline" in svg
    assert "set POSTHOG_FALLBACK=true" in svg
    draft = files["postmortem.md"].decode()
    assert draft.startswith("## Incident: PostHog Errors (500/503)")
    assert "](chart.svg)" in draft
    assert "PostHog itself had an incident" in draft
    assert "Triage said: PostHog reports a major outage" in draft
    assert "**Severity:** P2" in draft

    # Recorded in the store, and on the incident's timeline.
    records = await store.read(lambda c: bundles_for(c, incident_id))
    assert [(r.phase, r.path, r.failed_sources) for r in records] == [("resolved", path, [])]
    timeline = (await store.read(lambda c: get_incident(c, incident_id)))["timeline"]  # type: ignore[index]
    assert [t["kind"] for t in timeline].count("evidence") == 1


@pytest.mark.asyncio
async def test_prometheus_down_and_logs_forbidden_leave_notes(
    tmp_path: Path, store: Store, kmock: KubernetesEmulator
) -> None:
    """With Prometheus unreachable and logs forbidden, the bundle notes both and keeps the rest."""
    add_pod(kmock, NS, POD, labels=APP)
    serve_logs(kmock, {(POD, "app"): LOG}, forbidden={POD})
    add_event(kmock, NS, "ev-1", kind="Pod", object_name=POD, reason="BackOff", message="x")
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url))
    incident_id = await open_incident(store)
    metrics = Metrics()
    async with collecting(
        _settings(
            tmp_path, prometheus_url=f"http://127.0.0.1:{free_port()}", kubeconfig=kubeconfig
        ),
        store=store,
        metrics=metrics,
    ) as collector:
        path = await collector.collect(incident_id=incident_id, phase="opened", upstream=None)
    files = _read(path)
    manifest = json.loads(files["manifest.json"])
    failed = {f["source"]: f["reason"] for f in manifest["failed_sources"]}
    assert set(failed) == {"prometheus:error_rate_by_status", "prometheus:error_count", "pod_logs"}
    assert "cannot reach Prometheus" in failed["prometheus:error_rate_by_status"]
    assert "403" in failed["pod_logs"]
    notes = files["NOTES.md"].decode()
    assert "**pod_logs**: failed:" in notes
    assert "cannot reach Prometheus" in notes
    assert "**upstream_status**: not configured" in notes
    # What could be collected still is.
    assert json.loads(files["incident.json"])["id"] == incident_id
    assert [e["reason"] for e in json.loads(files["events.json"])] == ["BackOff"]
    assert "Errors during the incident: unknown" in files["postmortem.md"].decode()
    assert not any(name.startswith("logs/") for name in files)
    records = await store.read(lambda c: bundles_for(c, incident_id))
    assert set(records[0].failed_sources) == set(failed)
    failures = metrics.registry.get_sample_value(
        "posthog_receiver_evidence_source_failures_total", {"source": "pod_logs"}
    )
    assert failures == 1


@pytest.mark.asyncio
async def test_without_prometheus_or_cluster_the_bundle_says_not_configured(
    tmp_path: Path, store: Store
) -> None:
    """The laptop default (no Prometheus URL, no cluster) still bundles timeline and draft."""
    incident_id = await open_incident(store)
    async with collecting(
        _settings(tmp_path, prometheus_url=None, kubeconfig=None), store=store
    ) as collector:
        path = await collector.collect(incident_id=incident_id, phase="opened", upstream=None)
    files = _read(path)
    manifest = json.loads(files["manifest.json"])
    statuses = {s["source"]: s["status"] for s in manifest["sources"]}
    assert statuses == {
        "timeline": "collected",
        "upstream_status": "not_configured",
        "prometheus": "not_configured",
        "pod_logs": "not_configured",
        "events": "not_configured",
    }
    assert manifest["failed_sources"] == []
    assert "prometheus.url is not set" in files["NOTES.md"].decode()
    assert {"incident.json", "chart.svg", "postmortem.md", "metrics/summary.json"} <= set(files)


@pytest.mark.asyncio
async def test_a_noisy_pod_cannot_exceed_the_size_limits(
    tmp_path: Path, store: Store, kmock: KubernetesEmulator
) -> None:
    """Megabytes of logs are cut per file and per bundle; the manifest says what was cut."""
    noisy = "".join(f"2026-01-01T10:00:00Z ERROR failure number {n}\n" for n in range(40_000))
    for n in range(4):
        add_pod(kmock, NS, f"posthog-integration-5f7-{n}", labels=APP)
    serve_logs(kmock, {(f"posthog-integration-5f7-{n}", "app"): noisy for n in range(4)})
    add_event(
        kmock,
        NS,
        "ev-1",
        kind="Pod",
        object_name="posthog-integration-5f7-0",
        reason="BackOff",
        message="x",
    )
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url))
    incident_id = await open_incident(store)
    settings = _settings(
        tmp_path,
        prometheus_url=None,
        kubeconfig=kubeconfig,
        log_options={"max_error_lines": 100_000},
        max_file_bytes=64 * 1024,
        max_bundle_bytes=200 * 1024,
    )
    async with collecting(settings, store=store) as collector:
        path = await collector.collect(incident_id=incident_id, phase="opened", upstream=None)
    files = _read(path)
    manifest = json.loads(files["manifest.json"])
    assert manifest["content_bytes"] <= 200 * 1024
    assert all(f["bytes"] <= 64 * 1024 for f in manifest["files"])
    cut = [f for f in manifest["files"] if f["truncated"]]
    assert cut
    assert all(f["path"].endswith(".errors.log") for f in cut)
    assert manifest["failed_sources"] == []
    assert manifest["omitted"], "some logs must have been left out at the bundle limit"
    assert {"incident.json", "postmortem.md", "chart.svg"} <= set(files)
    # The newest error lines are the ones kept.
    kept = files[cut[0]["path"]].decode().splitlines()
    assert kept[-1].endswith("failure number 39999")
    assert path.stat().st_size < 200 * 1024


@pytest.mark.asyncio
async def test_postmortem_on_demand_collects_and_follows_resolution(
    tmp_path: Path, store: Store
) -> None:
    """Asking for a draft collects a bundle when none exists, and a resolved one after resolve."""
    incident_id = await open_incident(store)
    async with collecting(
        _settings(tmp_path, prometheus_url=None, kubeconfig=None), store=store
    ) as collector:
        draft = await collector.postmortem(incident_id)
        assert "so far (still open)" in draft
        assert [r.phase for r in await collector.records(incident_id)] == ["opened"]
        await resolve_incident(store)
        draft = await collector.postmortem(incident_id)
        assert "still open" not in draft
        assert "evidence collected" not in draft
        assert [r.phase for r in await collector.records(incident_id)] == ["opened", "resolved"]
        svg = await collector.chart(incident_id)
        assert svg.startswith("<svg")
        with pytest.raises(IncidentNotFound):
            await collector.postmortem("inc-nope")


@pytest.mark.asyncio
async def test_configured_secrets_are_scrubbed_from_collected_logs(
    tmp_path: Path, store: Store, kmock: KubernetesEmulator
) -> None:
    """A configured secret that a pod logged is replaced by [redacted] in the bundle."""
    secret = "phc_evidence_test_secret_value_1234"
    add_pod(kmock, NS, POD, labels=APP)
    serve_logs(kmock, {(POD, "app"): f"ERROR 401 with key {secret}\nINFO ok {secret}\n"})
    add_event(kmock, NS, "ev-1", kind="Pod", object_name=POD, reason="BackOff", message=secret)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url))
    incident_id = await open_incident(store)
    settings = _settings(tmp_path, prometheus_url=None, kubeconfig=kubeconfig)
    hook = WebhookSettings(bearer_token=SecretSource(value=secret))
    async with collecting(settings.model_copy(update={"webhook": hook}), store=store) as collector:
        path = await collector.collect(incident_id=incident_id, phase="opened", upstream=None)
    files = _read(path)
    assert b"ERROR 401 with key [redacted]" in files[f"logs/{POD}/app.errors.log"]
    assert all(secret.encode() not in content for content in files.values())


@pytest.mark.asyncio
async def test_names_from_the_cluster_become_safe_distinct_file_names(
    tmp_path: Path, store: Store, kmock: KubernetesEmulator
) -> None:
    """Containers named to climb out of the bundle, to hide, with control characters, too
    long, or two that differ only in a replaced character, each get their own safe file."""
    containers = ("../../../etc/x", "..", ".hidden", "a/b", "a:b", "a_b", "c\x1b[1m", "x" * 300)
    add_pod(kmock, NS, POD, labels=APP, containers=containers)
    serve_logs(kmock, {(POD, c): f"ERROR from {c}\n" for c in containers})
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(kmock.url))
    incident_id = await open_incident(store)
    async with collecting(
        _settings(tmp_path, prometheus_url=None, kubeconfig=kubeconfig), store=store
    ) as collector:
        path = await collector.collect(incident_id=incident_id, phase="opened", upstream=None)
    stem = path.name.removesuffix(".tar.gz")
    with tarfile.open(path, "r:gz") as tar:
        names = tar.getnames()
    assert len(names) == len(set(names))
    for name in names:
        top, _, rest = name.partition("/")
        assert top == stem
        for part in rest.split("/"):
            assert re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}", part), name
    files = _read(path)
    logs = {n: content for n, content in files.items() if n.endswith(".errors.log")}
    # One file per container, each holding its own container's lines, under its extensions.
    assert len(logs) == len(containers)
    assert len([n for n in files if n.endswith(".tail.log")]) == len(containers)
    for c in containers:
        assert sum(f"ERROR from {c}\n".encode() in content for content in logs.values()) == 1
