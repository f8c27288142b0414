"""The ingest benchmark script stays runnable (its figures are recorded in docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parent.parent / "bench" / "ingest.py"


def test_bench_help() -> None:
    """``bench/ingest.py --help`` exits 0 and documents its options."""
    done = subprocess.run(
        [sys.executable, str(BENCH), "--help"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0
    assert "--connections" in done.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk (Debian package) is not installed")
def test_bench_one_second_smoke_run(tmp_path: Path) -> None:
    """A one-second run against the bare handler, the floor and the receiver answers every
    request 2xx."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            "--duration",
            "1",
            "--connections",
            "4",
            "--threads",
            "1",
            "--modes",
            "bare,floor,normal",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(out.read_text())["results"]
    for mode in ("bare", "floor", "normal"):
        assert results[mode]["requests"] > 0
        assert results[mode]["non_2xx"] == 0
    assert results["normal"]["stored"] > 0
    assert results["normal"]["duplicate"] == 0


OUTBOX_BENCH = Path(__file__).parent.parent / "bench" / "outbox_priority.py"


@pytest.mark.slow
def test_outbox_priority_bench_smoke_run(tmp_path: Path) -> None:
    """A small storm: the P1 is measured, sent within the benchmark's 5 s target, and the fake
    PagerDuty never throttled the outbox."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            str(OUTBOX_BENCH),
            "--storm",
            "60",
            "--settle",
            "0.5",
            "--reference-wait",
            "0",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())["p1_behind_a_storm"]
    assert figures["p1_delay_s"] is not None
    assert figures["p1_delay_s"] < 5
    assert figures["pagerduty_429"] == 0
    assert figures["p2_pages_waiting_ahead"] > 0


def test_ui_render_bench_small_run() -> None:
    """``bench/ui_render.py`` on a small store: both pages answer, the big incident has its
    timeline, and the figures are reported."""
    script = Path(__file__).parent.parent / "bench" / "ui_render.py"
    done = subprocess.run(
        [sys.executable, str(script), "--incidents", "30", "--timeline", "60", "--requests", "5"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(script.parent.parent)},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["list_rows"] == 30
    assert result["list"]["p95_ms"] > 0
    assert result["incident"]["p95_ms"] > 0
