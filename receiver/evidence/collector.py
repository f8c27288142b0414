"""Collecting evidence for an incident, once when it opens and again when it resolves.

The runbook's "Evidence Collection" done by the service: logs of the integration's pods (the
last hour's error lines and a tail), Kubernetes events of the deployment and its pods,
Prometheus range queries over the incident window with a margin, the upstream status snapshot
triage saw, and the incident's full timeline. Every source is collected on its own: one that
fails (Prometheus down, logs forbidden) is recorded as a note in the bundle and the rest is
still collected. The bundle also carries the postmortem draft and the error-rate chart.

The responder calls :meth:`EvidenceCollector.collect` for ``opened`` and ``resolved`` events;
the HTTP API and the CLI call :meth:`EvidenceCollector.bundle` and
:meth:`EvidenceCollector.postmortem`, which collect on demand when no bundle exists yet.
Collecting is idempotent per incident and phase: a second call returns the bundle already
written, so a responder event handled twice writes one bundle.
"""

from __future__ import annotations

import asyncio
import json
import math
import tarfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog

from receiver.cluster import ClusterEvent, PodLogs
from receiver.config import EvidenceSettings, Settings
from receiver.evidence.bundle import BundleBuilder, safe_name
from receiver.evidence.chart import ChartMarker, ChartSeries, render_error_rate_chart
from receiver.evidence.postmortem import (
    ImpactFigures,
    is_response_entry,
    parse_time,
    render_postmortem,
)
from receiver.kube.client import KubeConnection
from receiver.kube.errors import KubeError
from receiver.kube.logs import PodLogReader
from receiver.metrics import Metrics
from receiver.prometheus import PrometheusClient, PrometheusError, Series
from receiver.redaction import Redactor
from receiver.store import Store, now
from receiver.store.evidence import BundleRecord, Phase, bundles_for, record_bundle
from receiver.store.incidents import get_incident

__all__ = [
    "BundleRecord",
    "EvidenceCollector",
    "IncidentNotFound",
    "LogSource",
    "Phase",
    "bundles_for",
]

logger = structlog.get_logger(__name__)

SUMMARY = "metrics/summary.json"
CHART = "chart.svg"
POSTMORTEM = "postmortem.md"


class IncidentNotFound(LookupError):
    """No incident with that id in the store."""


class LogSource(Protocol):
    """Where pod logs and cluster events come from (the Kubernetes adapter in production)."""

    async def pod_logs(
        self, *, since_seconds: int, limit_bytes: int, tail_lines: int | None
    ) -> list[PodLogs]: ...

    async def events(self, *, limit: int) -> list[ClusterEvent]: ...

    @property
    def selection(self) -> str:
        """Which pods are read, for notes in the bundle (e.g. 'app=x in namespace ns')."""
        ...


@dataclass(frozen=True)
class _Window:
    start: float  # what is captured, with the margin
    end: float
    incident_start: float  # the incident itself
    incident_end: float
    resolved: bool

    def as_dict(self) -> dict[str, Any]:
        return {k: _iso(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _window(incident: dict[str, Any], *, margin: float, at: float) -> _Window:
    opened = parse_time(incident.get("openedAt"))
    resolved = parse_time(incident.get("resolvedAt"))
    opened_ts = opened.timestamp() if opened else at
    is_resolved = incident.get("status") == "resolved" and resolved is not None
    incident_end = resolved.timestamp() if is_resolved and resolved else at
    return _Window(
        start=opened_ts - margin,
        end=min(at, incident_end + margin),
        incident_start=opened_ts,
        incident_end=min(incident_end, at),
        resolved=is_resolved,
    )


def _series_label(labels: dict[str, str]) -> str:
    shown = {k: v for k, v in labels.items() if k != "__name__"}
    if not shown:
        return labels.get("__name__", "value")
    return ", ".join(f"{k}={v}" for k, v in sorted(shown.items()))


class EvidenceCollector:
    """Collects bundles and drafts postmortems for incidents in ``store``."""

    def __init__(
        self,
        *,
        settings: EvidenceSettings,
        store: Store,
        redactor: Redactor,
        logs: LogSource | None = None,
        prometheus: PrometheusClient | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = now,
    ) -> None:
        self._settings = settings
        self._redactor = redactor
        self._counters = metrics
        self._store = store
        self._logs = logs
        self._prometheus = prometheus
        self._clock = clock
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        store: Store,
        cluster: KubeConnection | None,
        redactor: Redactor,
        metrics: Metrics | None = None,
    ) -> EvidenceCollector:
        """A collector with the configured sources: the remediation target's logs and events
        through ``cluster`` (the process's connection, closed by its owner) when there is one,
        Prometheus when its URL is set; what it writes is redacted by ``redactor``."""
        evidence = settings.evidence
        target = settings.remediation.target
        source: LogSource | None = None
        if evidence.logs.enabled and cluster is not None:
            source = PodLogReader(
                cluster,
                namespace=target.namespace,
                deployment=target.deployment,
                label_selector=target.pod_selector,
                container=evidence.logs.container,
            )
        prom = settings.prometheus
        client = (
            PrometheusClient(prom.url, timeout_seconds=prom.timeout_seconds) if prom.url else None
        )
        return cls(
            settings=evidence,
            store=store,
            redactor=redactor,
            logs=source,
            prometheus=client,
            metrics=metrics,
        )

    async def close(self) -> None:
        if self._prometheus is not None:
            await self._prometheus.close()

    # -- the API the responder, HTTP and CLI use --------------------------------------------

    async def collect(
        self, *, incident_id: str, phase: Phase, upstream: dict[str, Any] | None
    ) -> Path:
        """Write (or find) the incident's bundle for ``phase``; return its path.

        ``upstream`` is the status-page snapshot triage read (``None``: noted as missing).
        Raises :class:`IncidentNotFound`; every other failure of a source is a note inside.
        """
        lock = self._locks.setdefault((incident_id, phase), asyncio.Lock())
        async with lock:
            existing = await self._existing(incident_id, phase)
            if existing is not None:
                return existing.path
            return await self._collect(incident_id=incident_id, phase=phase, upstream=upstream)

    async def bundle(self, incident_id: str) -> Path:
        """The incident's latest bundle: the resolved one for a resolved incident, collected
        now if it does not exist yet."""
        return await self._current(incident_id)

    async def postmortem(self, incident_id: str) -> str:
        """The postmortem draft (Markdown), from the current timeline and the bundle's metrics;
        the chart it references is :meth:`chart`, and ``chart.svg`` in the bundle."""
        incident, impact, _ = await self._draft_inputs(incident_id)
        draft = render_postmortem(incident, impact=impact, chart_path=CHART, now=self._now_dt())
        return self._redactor.text(draft)

    async def chart(self, incident_id: str) -> str:
        """The error-rate chart (SVG) with the incident's actions marked."""
        incident, _, summary = await self._draft_inputs(incident_id)
        return self._redactor.text(_chart(incident, summary, at=self._clock()))

    async def records(self, incident_id: str) -> list[BundleRecord]:
        return await self._store.read(lambda c: bundles_for(c, incident_id))

    # -- internals --------------------------------------------------------------------------

    def _now_dt(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def _incident(self, incident_id: str) -> dict[str, Any]:
        found = await self._store.read(lambda c: get_incident(c, incident_id))
        if found is None:
            raise IncidentNotFound(incident_id)
        return found

    async def _existing(self, incident_id: str, phase: Phase) -> BundleRecord | None:
        for record in reversed(await self.records(incident_id)):
            if record.phase == phase and record.path.is_file():
                return record
        return None

    async def _current(self, incident_id: str) -> Path:
        incident = await self._incident(incident_id)
        phase: Phase = "resolved" if incident.get("status") == "resolved" else "opened"
        return await self.collect(incident_id=incident_id, phase=phase, upstream=None)

    async def _draft_inputs(
        self, incident_id: str
    ) -> tuple[dict[str, Any], ImpactFigures, dict[str, Any]]:
        path = await self._current(incident_id)
        incident = await self._incident(incident_id)
        summary = await asyncio.to_thread(_read_summary, path)
        return incident, _impact(summary), summary

    async def _collect(
        self, *, incident_id: str, phase: Phase, upstream: dict[str, Any] | None
    ) -> Path:
        settings = self._settings
        incident = await self._incident(incident_id)
        at = self._clock()
        window = _window(incident, margin=settings.prometheus.margin_minutes * 60, at=at)
        builder = BundleBuilder(
            max_file_bytes=settings.max_file_bytes,
            max_bundle_bytes=settings.max_bundle_bytes,
            redactor=self._redactor,
        )
        # The summary is written after the queries, and a query may be named "summary".
        builder.reserve(SUMMARY)
        log = logger.bind(incident_id=incident_id, phase=phase)

        # Most useful first: what is left out at the size limit is the bulk (logs).
        builder.add_json("incident.json", incident, source="timeline")
        builder.report("timeline", "collected", f"{len(incident.get('timeline') or [])} entries")
        if upstream is None:
            builder.report("upstream_status", "not_configured", "no status snapshot was given")
        else:
            builder.add_json("upstream-status.json", upstream, source="upstream_status")
            builder.report("upstream_status", "collected")

        summary, ((pod_logs, tails), events) = await asyncio.gather(
            self._metrics(builder, window), self._cluster(builder)
        )
        builder.add_json(SUMMARY, summary, source="prometheus", reserved=True)
        if events is not None:
            builder.add_json("events.json", [_event_dict(e) for e in events], source="events")
        builder.add(CHART, _chart(incident, summary, at=at), source="chart")
        draft = render_postmortem(
            incident, impact=_impact(summary), chart_path=CHART, now=self._now_dt()
        )
        builder.add(POSTMORTEM, draft, source="postmortem")
        self._add_logs(builder, pod_logs, tails)

        stem = f"{safe_name(incident_id)}-{phase}-{datetime.fromtimestamp(at, UTC):%Y%m%dT%H%M%SZ}"
        meta = {
            "format": 1,
            "incident_id": incident_id,
            "phase": phase,
            "title": incident.get("title", ""),
            "window": window.as_dict(),
        }
        written = await asyncio.to_thread(
            builder.write, settings.directory, stem=stem, meta=meta, created_at=at
        )
        record = BundleRecord(
            incident_id=incident_id,
            phase=phase,
            path=written.path,
            created_at=at,
            size_bytes=written.bytes,
            sha256=written.sha256,
            failed_sources=written.failed_sources,
        )
        files = len(builder.files) + 2
        if not self._store.read_only:  # a read-only store (the command line's) only reads
            await self._store.write(lambda c: record_bundle(c, record, files))
        if self._counters is not None:
            self._counters.evidence_bundles.labels(phase).inc()
            for source in written.failed_sources:
                # Per query name at most: the label set stays bounded by the configuration.
                self._counters.evidence_source_failures.labels(source).inc()
        log.info(
            "evidence bundle written",
            path=str(written.path),
            bytes=written.bytes,
            failed_sources=written.failed_sources,
            omitted=len(builder.omitted),
        )
        return written.path

    async def _metrics(self, builder: BundleBuilder, window: _Window) -> dict[str, Any]:
        prom = self._settings.prometheus
        summary: dict[str, Any] = {
            "window": window.as_dict(),
            "chart": None,
            "error_count": None,
            "affected_users": None,
            "notes": [],
        }
        if self._prometheus is None:
            reason = "prometheus.url is not set: no metrics were captured"
            builder.report("prometheus", "not_configured", reason)
            summary["notes"].append(reason)
            return summary
        step = max(1.0, math.ceil((window.end - window.start) / prom.max_points))
        start = datetime.fromtimestamp(window.start, UTC)
        end = datetime.fromtimestamp(window.end, UTC)
        for n, q in enumerate(prom.queries):
            source = f"prometheus:{q.name}"
            try:
                series = await self._prometheus.query_range(
                    q.query, start=start, end=end, step_seconds=step
                )
            except PrometheusError as e:
                builder.report(source, "failed", str(e))
                summary["notes"].append(f"query {q.name} failed: {e}")
                continue
            data = {
                "query": q.query,
                "start": window.as_dict()["start"],
                "end": window.as_dict()["end"],
                "step_seconds": step,
                "series": [_series_dict(s) for s in series],
            }
            builder.add_json(f"metrics/{q.name}.json", data, source=source)
            builder.report(source, "collected", f"{len(series)} series")
            if n == 0:
                summary["chart"] = {"name": q.name, "query": q.query, "series": data["series"]}
        seconds = max(1, math.ceil(window.incident_end - window.incident_start))
        at = datetime.fromtimestamp(window.incident_end, UTC)
        for key, template in (
            ("error_count", prom.error_count_query),
            ("affected_users", prom.affected_users_query),
        ):
            if not template:
                continue
            query = template.replace("{window}", f"{seconds}s")
            summary[f"{key}_query"] = query
            try:
                samples = await self._prometheus.query(query, at=at)
            except PrometheusError as e:
                builder.report(f"prometheus:{key}", "failed", str(e))
                summary["notes"].append(f"{key.replace('_', ' ')} query failed: {e}")
                continue
            values = [s.value for s in samples if math.isfinite(s.value)]
            summary[key] = sum(values) if values else None
            builder.report(f"prometheus:{key}", "collected", f"{len(samples)} samples")
        return summary

    async def _cluster(
        self, builder: BundleBuilder
    ) -> tuple[tuple[list[PodLogs], list[PodLogs]], list[ClusterEvent] | None]:
        # Logs first: the events kept are those of the pods the logs were read from.
        logs = await self._pod_logs(builder)
        return logs, await self._events(builder)

    async def _pod_logs(self, builder: BundleBuilder) -> tuple[list[PodLogs], list[PodLogs]]:
        logs = self._settings.logs
        if self._logs is None:
            builder.report(
                "pod_logs",
                "not_configured",
                "no cluster connection (kubernetes.mode, or its configuration could not be"
                " loaded: see the log), or evidence.logs.enabled is false",
            )
            return [], []
        try:
            whole = await self._logs.pod_logs(
                since_seconds=logs.since_seconds,
                limit_bytes=logs.limit_bytes_per_container,
                tail_lines=None,
            )
            tails = (
                await self._logs.pod_logs(
                    since_seconds=logs.since_seconds,
                    limit_bytes=logs.limit_bytes_per_container,
                    tail_lines=logs.tail_lines,
                )
                if logs.tail_lines
                else []
            )
        except KubeError as e:
            builder.report("pod_logs", "failed", str(e))
            return [], []
        failed = [p for p in whole + tails if p.error is not None]
        if not whole:
            builder.report("pod_logs", "partial", f"no pods match {self._logs.selection}")
        elif failed:
            status: Literal["partial", "failed"] = (
                "failed" if len(failed) == len(whole) + len(tails) else "partial"
            )
            detail = "; ".join(f"{p.pod}/{p.container}: {p.error}" for p in failed[:10])
            builder.report("pod_logs", status, detail)
        else:
            builder.report("pod_logs", "collected", f"{len(whole)} containers")
        return whole, tails

    def _add_logs(self, builder: BundleBuilder, whole: list[PodLogs], tails: list[PodLogs]) -> None:
        logs = self._settings.logs
        pattern = logs.error_regex  # RE2: linear in each line, whatever the pod logged
        for p in whole:
            if p.error is not None:
                continue
            errors = [line for line in p.lines if pattern.search(line)]
            errors = errors[-logs.max_error_lines :]
            header = (
                f"# {p.pod}/{p.container}: {len(errors)} lines matching evidence.logs.error_pattern"
                f" ({logs.error_pattern})"
                f" in the last {logs.since_seconds}s"
                + (" (log read cut at limitBytes)" if p.truncated else "")
                + "\n"
            )
            body = "\n".join(errors) + ("\n" if errors else "")
            builder.add(
                f"logs/{safe_name(p.pod)}/{safe_name(p.container)}.errors.log",
                header + body,
                source="pod_logs",
                keep="tail",
            )
        for p in tails:
            if p.error is not None:
                continue
            builder.add(
                f"logs/{safe_name(p.pod)}/{safe_name(p.container)}.tail.log",
                "\n".join(p.lines) + ("\n" if p.lines else ""),
                source="pod_logs",
                keep="tail",
            )

    async def _events(self, builder: BundleBuilder) -> list[ClusterEvent] | None:
        if self._logs is None:
            builder.report(
                "events",
                "not_configured",
                "no cluster connection (kubernetes.mode, or its configuration could not be"
                " loaded: see the log), or evidence.logs.enabled is false",
            )
            return None
        try:
            events = await self._logs.events(limit=self._settings.logs.max_events)
        except KubeError as e:
            builder.report("events", "failed", str(e))
            return None
        builder.report("events", "collected", f"{len(events)} events")
        return events


def _series_dict(s: Series) -> dict[str, Any]:
    return {"labels": s.labels, "points": [[t, v] for t, v in s.points]}


def _event_dict(e: ClusterEvent) -> dict[str, Any]:
    return {
        "at": e.at.isoformat() if e.at else None,
        "type": e.type,
        "reason": e.reason,
        "message": e.message,
        "object": e.object,
        "count": e.count,
    }


def _impact(summary: dict[str, Any]) -> ImpactFigures:
    return ImpactFigures(
        error_count=summary.get("error_count"),
        error_count_query=summary.get("error_count_query"),
        affected_users=summary.get("affected_users"),
        affected_users_query=summary.get("affected_users_query"),
        notes=list(summary.get("notes") or []),
    )


def _chart(incident: dict[str, Any], summary: dict[str, Any], *, at: float) -> str:
    window = summary.get("window") or {}
    opened = parse_time(incident.get("openedAt"))
    resolved = parse_time(incident.get("resolvedAt"))
    start = parse_time(window.get("start"))
    end = parse_time(window.get("end"))
    chart = summary.get("chart") or {}
    series = [
        ChartSeries(_series_label(s.get("labels") or {}), [(p[0], p[1]) for p in s["points"]])
        for s in chart.get("series") or []
    ]
    markers = []
    for entry in incident.get("timeline") or []:
        when = parse_time(entry.get("at"))
        if when is not None and is_response_entry(str(entry.get("kind", ""))):
            markers.append(ChartMarker(when.timestamp(), str(entry.get("message", ""))))
    opened_ts = opened.timestamp() if opened else at
    start_ts = start.timestamp() if start else opened_ts
    # Later actions (a revert after the hold-down) widen the chart so they stay visible.
    end_ts = max([end.timestamp() if end else at, *(m.at for m in markers)])
    name = chart.get("name") or "error rate"
    return render_error_rate_chart(
        series=series,
        markers=markers,
        start=start_ts,
        end=end_ts,
        incident_start=opened_ts,
        incident_end=resolved.timestamp() if resolved else None,
        title=f"{incident.get('title') or 'Incident'}: {name}",
    )


def _read_summary(path: Path) -> dict[str, Any]:
    stem = path.name.removesuffix(".tar.gz")
    try:
        with tarfile.open(path, "r:gz") as tar:
            member = tar.extractfile(f"{stem}/{SUMMARY}")
            if member is None:
                return {"notes": ["the bundle holds no metrics summary"]}
            value: dict[str, Any] = json.loads(member.read())
            return value
    except (KeyError, OSError, tarfile.TarError, ValueError) as e:
        return {"notes": [f"the bundle's metrics summary cannot be read: {e}"]}
