"""Property-based conformance: schemathesis against a real ``posthog-receiver serve``.

Schemathesis reads the description the service serves at ``/openapi.json`` and generates
requests for every operation from it, valid and invalid ones; every response must be no 5xx,
carry a documented status, media type and headers, and match its schema, and authentication
must not be ignored. The number of examples per operation is bounded so the run stays short.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.specs.openapi.schemas import OpenApiSchema

from receiver.openapi import load_spec
from tests.alertmanager_payloads import BASIC_PASSWORD, BASIC_USER, BEARER, TOKEN

pytestmark = pytest.mark.slow

# FUZZ_SCALE (as in the webhook fuzz suite) raises it for a longer search.
EXAMPLES_PER_OPERATION = max(1, round(60 * float(os.environ.get("FUZZ_SCALE", "1"))))
STARTUP_SECONDS = 20.0

CONFIG = """
server:
  host: 127.0.0.1
  port: {port}
webhook:
  bearer_token: {{env: POSTHOG_RECEIVER_WEBHOOK_TOKEN}}
  basic_auth:
    username: {user}
    password: {{value: {password}}}
store:
  path: {store}
logging:
  level: warning
  format: json
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_healthy(base_url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"receiver exited early with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("receiver did not become healthy")


@pytest.fixture(scope="module")
def served_receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real receiver process on a free loopback port; its base URL."""
    workdir = tmp_path_factory.mktemp("schemathesis")
    port = _free_port()
    config = workdir / "receiver.yaml"
    config.write_text(
        CONFIG.format(
            port=port, user=BASIC_USER, password=BASIC_PASSWORD, store=workdir / "r.sqlite3"
        )
    )
    env = {**os.environ, "POSTHOG_RECEIVER_WEBHOOK_TOKEN": TOKEN}
    log = (workdir / "receiver.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "receiver", "serve", "--config", str(config)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base_url, proc)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
    output = Path(log.name).read_text(errors="replace")
    assert "unhandled error" not in output, output[-4000:]


@pytest.fixture(scope="module")
def served_schema(served_receiver: str) -> OpenApiSchema:
    """The description as the running service serves it."""
    schema = schemathesis.openapi.from_url(f"{served_receiver}/openapi.json")
    schema.config.update(base_url=served_receiver)
    return schema


def _cases() -> list[Any]:
    """(method, path, mode) for every operation; negative data only where there are inputs."""
    cases = []
    for path, item in load_spec()["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            has_inputs = "requestBody" in operation or operation.get("parameters")
            has_inputs = has_inputs or item.get("parameters")
            modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if has_inputs else [])
            cases += [
                pytest.param(method.upper(), path, mode, id=f"{method.upper()} {path} {mode}")
                for mode in modes
            ]
    return cases


@pytest.mark.parametrize(("method", "path", "mode"), _cases())
def test_service_conforms_to_its_description(
    served_schema: OpenApiSchema, method: str, path: str, mode: GenerationMode
) -> None:
    """No generated request, valid or not, gets a 5xx or a response the description lacks."""
    operation = served_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def conforms(case: Case) -> None:
        case.call_and_validate(headers=BEARER)

    conforms()
