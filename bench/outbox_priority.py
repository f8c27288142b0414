"""Outbox priority benchmark: how late is a P1 page queued behind a storm of P2 pages?

Runs the real notifier and outbox worker (in the background, as the service runs it, with the
default poll interval and concurrency) on a SQLite store in a temporary directory, against the
fake PagerDuty of the tests on loopback (this machine), which answers 429 past the same rate
limit the receiver keeps (``--rate-limit``, PagerDuty's 120 events a minute by default):

1. ``--storm`` P2 incidents are opened: their pages are queued and start draining at the rate
   limit; after ``--settle`` seconds the burst is spent and the queue drains at its steady
   rate;
2. one more P2 incident (the reference: it waits for the whole backlog, which is what every
   page did when the outbox delivered oldest first) and then one P1 incident are opened;
3. measured, each from the moment its incident was handed to the notifier to the moment the
   fake PagerDuty accepted its trigger (both on this process's clock): the P1's delay, and the
   reference's, waited for up to ``--reference-wait`` seconds (if it is not sent by then, the
   figure is a lower bound, with the wait projected from its place in the queue and the
   measured drain rate).

    .venv/bin/python bench/outbox_priority.py                        # 1,000 P2, 120 a minute
    .venv/bin/python bench/outbox_priority.py --rate-limit 6000      # the reference measured

Prints the figures; ``--json FILE`` writes them as well. Paste them into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' fakes

from receiver.config import NotifySettings, StoreSettings
from receiver.metrics import Metrics
from receiver.notify import IncidentSnapshot, build_notifier
from receiver.notify.outbox import queue_depth
from receiver.notify.pagerduty import dedup_key
from receiver.redaction import Redactor
from receiver.runbook import ErrorClass, Severity
from receiver.store import Store
from tests.fakes.pagerduty import FakePagerDuty

ROUTING_KEY = "B3nchR0ut1ngK3y0123456789abcdef0"


def _incident(incident_id: str, severity: Severity) -> IncidentSnapshot:
    return IncidentSnapshot(
        id=incident_id,
        title=f"PostHogErrorsHigh (service=posthog-integration, group={incident_id})",
        status="open",
        severity=severity,
        opened_at=time.time(),
        error_class=ErrorClass.UPSTREAM_ERROR,
        decision_summary="PostHog API returning errors; status page not checked yet",
        decision_steps=("PostHog API returning errors? yes",),
        labels={"alertname": "PostHogErrorsHigh", "group": incident_id},
    )


def _accepted_at(pagerduty: FakePagerDuty, incident_id: str) -> float | None:
    key = dedup_key(incident_id)
    for r in pagerduty.received:
        if r.path == "/v2/enqueue" and r.body.get("dedup_key") == key:
            return r.at
    return None


async def _wait_for(
    pagerduty: FakePagerDuty, incident_id: str, *, since: float, seconds: float
) -> float | None:
    """Seconds from ``since`` until PagerDuty accepted the incident's trigger (None: not yet)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        at = _accepted_at(pagerduty, incident_id)
        if at is not None:
            return at - since
        await asyncio.sleep(0.01)
    return None


async def run(
    workdir: Path, *, storm: int, rate_limit: int, settle: float, reference_wait: float
) -> dict[str, Any]:
    pagerduty = FakePagerDuty(ROUTING_KEY, rate_limit_per_minute=rate_limit)
    await pagerduty.start()
    settings = NotifySettings.model_validate(
        {
            "pagerduty": {
                "routing_key": {"value": ROUTING_KEY},
                "events_url": pagerduty.url,
                "rate_limit_per_minute": rate_limit,
            }
        }
    )
    store = Store(StoreSettings(path=workdir / "receiver.sqlite3"))
    await store.open()
    notifier, worker = build_notifier(
        settings,
        store=store,
        metrics=Metrics(),
        public_url="https://receiver.example.com",
        redactor=Redactor.from_settings(settings),
    )
    worker.start()
    try:
        started = time.time()
        for n in range(storm):
            await notifier.incident_opened(_incident(f"p2-{n}", Severity.P2))
        queued_seconds = time.time() - started
        await asyncio.sleep(settle)
        sent_before = len(pagerduty.alerts)

        reference_at = time.time()
        await notifier.incident_opened(_incident("p2-reference", Severity.P2))
        p1_at = time.time()
        await notifier.incident_opened(_incident("p1", Severity.P1))
        ahead = (await store.read(queue_depth)).get("pagerduty", 0) - 2
        p1 = await _wait_for(pagerduty, "p1", since=p1_at, seconds=max(reference_wait, 60.0))
        sent_after_p1 = len(pagerduty.alerts)
        waited = time.time() - reference_at
        reference = await _wait_for(
            pagerduty, "p2-reference", since=reference_at, seconds=max(0.0, reference_wait - waited)
        )
        drained = len(pagerduty.alerts) - sent_before
        rate = drained / (time.time() - reference_at)
    finally:
        await worker.stop()
        await store.close()
        await pagerduty.stop()
    figures: dict[str, Any] = {
        "storm_p2_pages": storm,
        "rate_limit_per_minute": rate_limit,
        "storm_queued_in_s": round(queued_seconds, 2),
        "p2_pages_waiting_ahead": ahead,
        "p1_delay_s": round(p1, 3) if p1 is not None else None,
        "p2_pages_sent_before_the_p1": sent_after_p1 - sent_before - 1,
        "drain_rate_per_s": round(rate, 2),
        "pagerduty_429": pagerduty.throttled,
    }
    if reference is not None:
        figures["reference_p2_delay_s"] = round(reference, 3)
    else:
        figures["reference_p2_delay_s"] = f"> {reference_wait:g} (not sent yet)"
        figures["reference_p2_projected_s"] = round(ahead / rate, 1) if rate else None
    return figures


async def main(args: argparse.Namespace) -> dict[str, Any]:
    # The worker logs every page at info: thousands of lines that would time the terminal.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with tempfile.TemporaryDirectory(prefix="outbox-priority-") as tmp:
        figures = await run(
            Path(tmp),
            storm=args.storm,
            rate_limit=args.rate_limit,
            settle=args.settle,
            reference_wait=args.reference_wait,
        )
    print("\nP1 behind a storm of P2 pages (queued -> accepted by PagerDuty)")
    for key, value in figures.items():
        print(f"  {key:<38} {value}")
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "p1_behind_a_storm": figures,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storm", type=int, default=1000, help="P2 pages queued first")
    parser.add_argument(
        "--rate-limit", type=int, default=120, help="PagerDuty events per minute (both sides)"
    )
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds the storm drains before the P1"
    )
    parser.add_argument(
        "--reference-wait",
        type=float,
        default=20.0,
        help="seconds to wait for the reference P2 (queued just before the P1)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    arguments = parser.parse_args()
    results = asyncio.run(main(arguments))
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
