"""The receiver's own metrics as a freshly started app serves them: the build's identity, and
histogram buckets that reach as far as the durations they measure can run."""

from __future__ import annotations

import platform
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from receiver import __version__
from receiver.config import OutboxSettings, StatuspageSettings, WorkerSettings
from receiver.notify.outbox import DESTINATIONS


async def scraped(client: TestClient[Any, Any]) -> dict[str, list[tuple[dict[str, str], float]]]:
    """``/metrics`` as Prometheus reads it: sample name -> [(labels, value)]."""
    answer = await client.get("/metrics")
    assert answer.status == 200
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(await answer.text()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def bucket_bounds(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> list[float]:
    bounds = [
        float(found["le"])
        for found, _ in samples[f"{name}_bucket"]
        if labels.items() <= found.items()
    ]
    assert bounds, f"{name} has no buckets for {labels}"
    return sorted(b for b in bounds if b != float("inf"))


@pytest.mark.asyncio
async def test_build_info_names_the_version_and_python(client: TestClient[Any, Any]) -> None:
    """posthog_receiver_build_info{version, python} is 1 from the start."""
    samples = await scraped(client)
    assert samples["posthog_receiver_build_info"] == [
        ({"version": __version__, "python": platform.python_version()}, 1.0)
    ]


@pytest.mark.asyncio
async def test_delivery_buckets_cover_the_status_page_hold_off_and_retries(
    client: TestClient[Any, Any],
) -> None:
    """Delivery time includes the status page's hold-off and retries honouring Retry-After: a
    bucket separates on-time from late just past the hold-off, and the largest finite bucket
    reaches the longest Retry-After honoured."""
    samples = await scraped(client)
    hold_off = StatuspageSettings.model_fields["hold_off_seconds"].default
    longest_wait = OutboxSettings.model_fields["max_retry_after_seconds"].default
    for destination in DESTINATIONS:
        bounds = bucket_bounds(
            samples, "posthog_receiver_notification_delivery_seconds", destination=destination
        )
        assert any(hold_off < b <= hold_off * 1.25 for b in bounds), bounds
        assert bounds[-1] >= longest_wait, bounds
        assert bounds[0] <= 0.1, bounds  # an immediate delivery is still resolved


@pytest.mark.asyncio
async def test_processing_buckets_reach_past_the_stall_threshold(
    client: TestClient[Any, Any],
) -> None:
    """A backlog that makes /readyz report a stall is still measured, not lumped into +Inf."""
    samples = await scraped(client)
    stall = WorkerSettings.model_fields["stall_after_seconds"].default
    bounds = bucket_bounds(samples, "posthog_receiver_processing_seconds")
    assert bounds[-1] > stall, bounds
    assert bounds[0] <= 0.01, bounds
