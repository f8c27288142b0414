"""Failover benchmark: from the leader's SIGKILL to the first action by its successor.

Three ``posthog-receiver serve`` replicas on one throwaway PostgreSQL (Debian's
``postgresql``, started on loopback as the tests do), the Kubernetes emulator and the fake
PagerDuty, Statuspage and Slack of the end-to-end tests, acting for real. Each of ``--runs``
runs:

1. finds the leader (``/api/leadership``) and SIGKILLs it (no lease release: a crash);
2. at once sends a new rate-limited incident's webhook to a surviving replica (answered 200
   once it is in the shared inbox, whoever leads);
3. measures the time from the kill to the moment the emulated API server accepted the
   Deployment patch setting ``RATE_LIMIT_MODE=queue``: the new leader's first action (and,
   polled every 0.1 s, to the moment a survivor says it leads);
4. resolves the incident, waits for the revert, and starts the killed replica again.

The leader is killed at a random point of its renew period, so a run takes between
``lease - retry`` and ``lease + retry`` plus the action itself. Production timings by default
(lease 15 s, renew deadline 10 s, retry 2 s): ten runs take about four minutes.

    .venv/bin/python bench/failover.py                   # 10 runs, production lease
    .venv/bin/python bench/failover.py --runs 3 --lease 2 --renew-deadline 1.4 --retry 0.3

Prints p50 and max (and every run); ``--json FILE`` writes them as well. Paste them into
docs/benchmarks.md.
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

from tests.e2e.replicas import Replicas, running_replicas
from tests.e2e.stack import eventually
from tests.e2e.storm import GROUP_KEY, storm_alerts, storm_notification
from tests.postgres import PostgresCluster


def _incident_body(n: int, status: str) -> dict[str, Any]:
    """The ``n``-th incident: its own group (so its own incident), one alert."""
    (alert,) = storm_alerts(1)
    alert = {**alert, "fingerprint": f"{0xFA110000 + n:016x}", "status": status}
    alert["labels"] = {**alert["labels"], "bench_run": str(n)}
    if status == "resolved":
        alert["endsAt"] = "2026-11-23T06:00:00Z"
    body = storm_notification([alert])
    body["groupKey"] = GROUP_KEY.replace("}:{", f'}}:{{bench_run="{n}", ', 1)
    body["groupLabels"] = {**body["groupLabels"], "bench_run": str(n)}
    return body


async def _one_run(rs: Replicas, n: int, *, settle: float) -> tuple[float, float]:
    """One failover: (seconds to the new leader's lease, seconds to its first action)."""
    leader = await rs.leader()
    survivors = [r for r in rs.running() if r is not leader]
    survivor = survivors[0]
    before = len(rs.cluster.deployment_writes())
    killed_at = time.time()
    await rs.kill(leader)
    assert await rs.post_webhook(survivor, _incident_body(n, "firing")) == 200
    await rs.leader(among=survivors)  # polled every 0.1 s
    took_over = time.time() - killed_at
    await eventually(
        lambda: len(rs.cluster.deployment_writes()) > before,
        what=f"run {n}: the new leader's action",
        timeout=settle,
    )
    acted = rs.cluster.deployment_writes()[before]
    assert await rs.post_webhook(survivor, _incident_body(n, "resolved")) == 200
    await eventually(
        lambda: "RATE_LIMIT_MODE" not in rs.cluster.env(),
        what=f"run {n}: reverted",
        timeout=settle,
    )
    await rs.start(leader)
    return took_over, acted.at - killed_at


async def failover(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    lease = {
        "lease_seconds": args.lease,
        "renew_deadline_seconds": args.renew_deadline,
        "retry_seconds": args.retry,
    }
    seconds: list[float] = []
    takeovers: list[float] = []
    cluster = PostgresCluster()
    cluster.start()
    try:
        async with running_replicas(
            workdir,
            cluster,
            lease=lease,
            remediation={"cooldown_seconds": 0, "revert_hold_down_seconds": 0},
        ) as rs:
            for n in range(args.runs):
                took_over, taken = await _one_run(rs, n, settle=args.lease * 2 + 30)
                print(f"  run {n}: lease taken {took_over:.2f} s, acted {taken:.2f} s", flush=True)
                takeovers.append(took_over)
                seconds.append(taken)
    finally:
        cluster.remove()
    return {
        "runs": args.runs,
        **lease,
        "lease_taken_p50_s": round(statistics.median(takeovers), 2),
        "lease_taken_max_s": round(max(takeovers), 2),
        "p50_s": round(statistics.median(seconds), 2),
        "max_s": round(max(seconds), 2),
        "min_s": round(min(seconds), 2),
        "each_s": [round(s, 2) for s in seconds],
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="failover-") as tmp:
        figures = await failover(Path(tmp), args)
    print("\nfailover (leader SIGKILLed -> Deployment patch by the new leader accepted)")
    for key, value in figures.items():
        print(f"  {key:<24} {value}")
    return {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "failover": figures,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="failovers to measure")
    parser.add_argument("--lease", type=float, default=15.0, help="leadership.lease_seconds")
    parser.add_argument(
        "--renew-deadline", type=float, default=10.0, help="leadership.renew_deadline_seconds"
    )
    parser.add_argument("--retry", type=float, default=2.0, help="leadership.retry_seconds")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    arguments = parser.parse_args()
    results = asyncio.run(main(arguments))
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
