"""Alert-to-action benchmark: how long from a webhook to the Kubernetes change, and a storm.

Runs ``posthog-receiver serve`` against the Kubernetes emulator and the fake PagerDuty,
Statuspage and Slack of the end-to-end tests (all on loopback, this machine), acting for real
(no dry run), and measures:

1. alert-to-action latency, over ``--runs`` incidents one after another: from the moment the
   webhook of a new rate-limited incident is sent to the moment the emulated API server
   accepted the Deployment patch setting ``RATE_LIMIT_MODE=queue`` (both timestamps taken in
   this process, on the same clock). Each incident is then resolved and its change reverted,
   and the receiver left idle for ``--pause`` seconds, before the next (cooldown 0, hold-down
   0, so every run acts);
2. a storm: ``--rate`` Alertmanager-shaped webhooks per second for ``--storm-seconds`` about
   one incident (one group, many fingerprints, endless resends), with production's cooldown:
   requests answered per second, the receiver's resident memory, pages sent and actions taken.

    .venv/bin/python bench/alert_to_action.py                     # 20 runs, a 60 s storm
    .venv/bin/python bench/alert_to_action.py --runs 5 --storm-seconds 5   # a quick look

Prints the figures; ``--json FILE`` writes them as well. Paste them into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' harness

from tests.e2e.stack import Stack, eventually, running_stack
from tests.e2e.storm import (
    GROUP_KEY,
    run_storm,
    storm_alerts,
    storm_bodies,
    storm_notification,
)


def _incident_body(n: int, status: str) -> dict[str, Any]:
    """The ``n``-th incident: its own group (so its own incident), one alert."""
    (alert,) = storm_alerts(1)
    alert = {**alert, "fingerprint": f"{0xBE4C0000 + n:016x}", "status": status}
    alert["labels"] = {**alert["labels"], "bench_run": str(n)}
    if status == "resolved":
        alert["endsAt"] = "2026-11-23T06:00:00Z"
    body = storm_notification([alert])
    body["groupKey"] = GROUP_KEY.replace("}:{", f'}}:{{bench_run="{n}", ', 1)
    body["groupLabels"] = {**body["groupLabels"], "bench_run": str(n)}
    return body


def _queue_writes(stack: Stack) -> list[float]:
    return [w.at for w in stack.cluster.deployment_writes()]


async def alert_to_action(workdir: Path, *, runs: int, pause: float) -> dict[str, Any]:
    latencies: list[float] = []
    async with running_stack(
        workdir,
        alerting=False,
        remediation={"cooldown_seconds": 0, "revert_hold_down_seconds": 0},
    ) as stack:
        for n in range(runs):
            before = len(stack.cluster.deployment_writes())
            sent_at = time.time()
            assert await stack.post_webhook(_incident_body(n, "firing")) == 200
            await eventually(
                lambda b=before: (
                    stack.cluster.env().get("RATE_LIMIT_MODE") == "queue"
                    and len(stack.cluster.deployment_writes()) > b
                ),
                what=f"run {n}: queue mode set",
            )
            applied = stack.cluster.deployment_writes()[before]
            latencies.append(applied.at - sent_at)
            assert await stack.post_webhook(_incident_body(n, "resolved")) == 200
            await eventually(
                lambda: "RATE_LIMIT_MODE" not in stack.cluster.env(),
                what=f"run {n}: reverted",
            )
            # Let the resolution's own work (notifications, evidence, postmortem) finish, so
            # the next run measures one incident, not the tail of the previous one.
            await asyncio.sleep(pause)
    ms = sorted(x * 1000 for x in latencies)
    return {
        "runs": runs,
        "p50_ms": round(statistics.median(ms), 1),
        "p90_ms": round(statistics.quantiles(ms, n=10)[-1], 1) if len(ms) > 1 else ms[0],
        "max_ms": round(ms[-1], 1),
        "mean_ms": round(statistics.fmean(ms), 1),
    }


async def storm(workdir: Path, *, rate: float, seconds: float) -> dict[str, Any]:
    bodies, alerts = storm_bodies()
    async with running_stack(workdir, alerting=False) as stack:
        assert stack.receiver.proc is not None
        figures = await run_storm(
            stack.receiver.url + "/webhook/alertmanager",
            stack.receiver.token,
            pid=stack.receiver.proc.pid,
            rate=rate,
            seconds=seconds,
            bodies=bodies,
        )
        done_sending = time.monotonic()

        async def drained() -> bool:
            found = await stack.incidents()
            if len(found) != 1:
                return False
            incident = await stack.incident(found[0]["id"])
            return len(incident["alerts"]) == len(alerts) and bool(stack.pages("trigger"))

        await eventually(drained, what="storm processed", timeout=300)
        result = figures.as_dict()
        alerts_sent = sum(len(json.loads(b)["alerts"]) for b in bodies) / len(bodies)
        result.update(
            alerts_per_second=round(figures.achieved_rate * alerts_sent, 0),
            distinct_fingerprints=len(alerts),
            processed_seconds_after_last_request=round(time.monotonic() - done_sending, 2),
            incidents=len(await stack.incidents()),
            pagerduty_incidents=len(stack.dedup_keys()),
            pagerduty_events=len(stack.pagerduty.alerts),
            deployment_changes=len(stack.cluster.deployment_writes()),
        )
        return result


def _print(title: str, figures: dict[str, Any]) -> None:
    print(f"\n{title}")
    for key, value in figures.items():
        print(f"  {key:<38} {value}")


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="alert-to-action-") as tmp:
        latency = await alert_to_action(Path(tmp) / "latency", runs=args.runs, pause=args.pause)
        _print("alert-to-action (webhook sent -> Deployment patch accepted)", latency)
        stormed = await storm(Path(tmp) / "storm", rate=args.rate, seconds=args.storm_seconds)
        _print("storm", stormed)
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "alert_to_action": latency,
        "storm": stormed,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="incidents for the latency")
    parser.add_argument("--pause", type=float, default=1.0, help="seconds idle between incidents")
    parser.add_argument("--rate", type=float, default=1000.0, help="storm webhooks per second")
    parser.add_argument("--storm-seconds", type=float, default=60.0, help="storm duration")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    arguments = parser.parse_args()
    results = asyncio.run(main(arguments))
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
