"""A real Prometheus (the Debian ``prometheus`` binary) for tests, on a free loopback port.

It keeps its data in a temporary directory and scrapes the given targets every
``scrape_interval``; :func:`running_prometheus` waits until it is ready (and, if asked, until
every target has been scraped), and stops it when the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

__all__ = ["free_port", "prometheus_binary", "running_prometheus"]

STARTUP_TIMEOUT = 20.0


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def prometheus_binary() -> str:
    """The path of ``prometheus``; the test fails when it is not installed (CI installs it)."""
    found = shutil.which("prometheus")
    if found is None:
        pytest.fail("the prometheus binary is not installed (apt-get install prometheus)")
    return found


async def _get_ok(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url) as resp:
            return resp.status == 200
    except aiohttp.ClientError:
        return False


async def _all_targets_up(session: aiohttp.ClientSession, base: str, count: int) -> bool:
    try:
        async with session.get(f"{base}/api/v1/query", params={"query": "up == 1"}) as resp:
            body = await resp.json()
    except aiohttp.ClientError:
        return False
    return len(body.get("data", {}).get("result", [])) >= count


@asynccontextmanager
async def running_prometheus(
    workdir: Path,
    *,
    targets: list[str],
    scrape_interval: str = "1s",
    job: str = "posthog-integration",
    wait_for_targets: bool = True,
    more_jobs: Mapping[str, list[str]] | None = None,
    rule_files: Sequence[Path] = (),
    alertmanagers: Sequence[str] = (),
) -> AsyncIterator[str]:
    """Run Prometheus scraping ``targets`` (``host:port``); yields its base URL.

    ``more_jobs`` adds scrape jobs (name to targets); ``rule_files`` are evaluated every
    ``scrape_interval`` and their alerts sent to ``alertmanagers`` (``host:port``).
    """
    binary = prometheus_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {"job_name": name, "static_configs": [{"targets": hosts}]}
            for name, hosts in {job: targets, **(more_jobs or {})}.items()
        ],
    }
    if rule_files:
        config["rule_files"] = [str(f) for f in rule_files]
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": alertmanagers}]}]}
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (workdir / "prometheus.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
        stdout=log,
        stderr=log,
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STARTUP_TIMEOUT
            while not await _get_ok(session, f"{base}/-/ready"):
                if proc.returncode is not None or loop.time() > deadline:
                    log.flush()
                    output = (workdir / "prometheus.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"Prometheus did not start:\n{output}")
                await asyncio.sleep(0.1)
            while wait_for_targets and not await _all_targets_up(session, base, len(targets)):
                if loop.time() > deadline:
                    raise RuntimeError("Prometheus did not scrape its targets in time")
                await asyncio.sleep(0.2)
        yield base
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        log.close()
