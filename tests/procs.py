"""Real processes for tests: the receiver (``posthog-receiver serve``) and Debian's Alertmanager.

Each process listens on a free loopback port, writes its output to a file in the test's
temporary directory (read it with ``logs()``; a pipe nobody drains would block the child), and
is stopped when the test ends. Tests that start several parts of the system reuse these:

    def test_x(receiver_proc, alertmanager): ...
        rx = receiver_proc(config_overrides)            # started, /healthz answered
        am = alertmanager(webhook_url=rx.url + "/webhook/alertmanager", token=rx.token)
        am.add_alert({"alertname": "PostHogErrorsHigh"}, end=...)

Helpers are synchronous on purpose: the processes are outside the test's event loop, exactly
as they are outside the service in production.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import TOKEN, settings_data

__all__ = [
    "Alertmanager",
    "HttpAnswer",
    "ReceiverProcess",
    "alertmanager",
    "free_port",
    "http",
    "receiver_proc",
    "wait_for",
]

ALERTMANAGER = "prometheus-alertmanager"
AMTOOL = "amtool"
START_DEADLINE = 20.0


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (other test runs share the machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpAnswer:
    """Status, headers and body of one HTTP exchange; ``json()`` decodes the body."""

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"HttpAnswer({self.status}, {self.body[:200]!r})"


def http(
    method: str,
    url: str,
    *,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> HttpAnswer:
    """One HTTP request; 4xx/5xx are answers, not exceptions. ``body`` is JSON-encoded."""
    data = None
    all_headers = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HttpAnswer(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as e:
        return HttpAnswer(e.code, dict(e.headers), e.read())


def wait_for(
    probe: Callable[[], Any], *, deadline: float = START_DEADLINE, what: str = "condition"
) -> Any:
    """Call ``probe`` until it returns something truthy; fail with ``what`` at the deadline."""
    end = time.monotonic() + deadline
    last: Any = None
    while time.monotonic() < end:
        with contextlib.suppress(OSError):
            last = probe()
            if last:
                return last
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {deadline}s; last: {last!r}")


class _Process:
    """A child process whose combined output goes to ``log_path``."""

    def __init__(self, argv: list[str], *, log_path: Path, env: dict[str, str], cwd: Path):
        self.argv = argv
        self.log_path = log_path
        self._env = env
        self._cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self._cwd,
            )

    def logs(self) -> str:
        """Everything the process wrote so far (all of its runs)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(
                f"{self.argv[0]} exited with {self.proc.returncode}:\n{self.logs()[-4000:]}"
            )

    def terminate(self, *, timeout: float = 15.0) -> int:
        """SIGTERM, then wait for the exit; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.argv[0]} did not stop on SIGTERM") from None

    def kill(self) -> None:
        """SIGKILL: no cleanup of any kind, as in a crash or an OOM kill."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        if self.running():
            with contextlib.suppress(AssertionError):
                self.terminate(timeout=10)
        if self.running():
            self.kill()


class ReceiverProcess(_Process):
    """``python -m receiver serve`` with a config file written for the test."""

    def __init__(self, workdir: Path, config: dict[str, Any], *, token: str = TOKEN) -> None:
        self.workdir = workdir
        self.token = token
        self.port = free_port()
        self.config_path = workdir / "receiver.yaml"
        self.write_config(config)
        env = {
            **os.environ,
            "POSTHOG_RECEIVER_WEBHOOK_TOKEN": token,
            "PYTHONUNBUFFERED": "1",
        }
        argv = [sys.executable, "-m", "receiver", "serve", "--config", str(self.config_path)]
        argv += ["--port", str(self.port)]
        super().__init__(argv, log_path=workdir / "receiver.log", env=env, cwd=workdir)

    def write_config(self, config: dict[str, Any]) -> None:
        """(Re)write the config file; takes effect at the next ``start``."""
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ReceiverProcess:
        """Start and wait until ``/healthz`` answers."""
        self._spawn()

        def healthy() -> bool:
            self._check_alive()
            return http("GET", self.url + "/healthz", timeout=1).status == 200

        wait_for(healthy, what="receiver /healthz")
        return self

    def get(self, path: str, **kw: Any) -> HttpAnswer:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        return http("GET", self.url + path, headers=headers, **kw)

    def post_webhook(self, body: Any, **kw: Any) -> HttpAnswer:
        headers = {"Authorization": f"Bearer {self.token}", **kw.pop("headers", {})}
        return http("POST", self.url + "/webhook/alertmanager", body=body, headers=headers, **kw)

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (other lines, if any, are skipped)."""
        events = []
        for line in self.logs().splitlines():
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    events.append(event)
        return events


def receiver_config(tmp_path: Path, **groups: Any) -> dict[str, Any]:
    """A receiver config for a subprocess: the bearer token from the environment, JSON logs."""
    data = settings_data(tmp_path, **groups)
    data["webhook"]["bearer_token"] = {"env": "POSTHOG_RECEIVER_WEBHOOK_TOKEN"}
    data.setdefault("logging", {}).setdefault("format", "json")
    return data


@pytest.fixture
def receiver_proc(tmp_path: Path) -> Iterator[Callable[..., ReceiverProcess]]:
    """Factory: ``receiver_proc(**config_groups)`` starts a receiver; all stop at test end."""
    started: list[ReceiverProcess] = []

    def start(**groups: Any) -> ReceiverProcess:
        workdir = tmp_path / f"receiver-{len(started)}"
        workdir.mkdir()
        rx = ReceiverProcess(workdir, receiver_config(workdir, **groups))
        started.append(rx)
        return rx.start()

    yield start
    for rx in started:
        rx.close()


class Alertmanager(_Process):
    """Debian's Alertmanager on loopback, one route to one webhook with bearer auth.

    Timing is shrunk for tests: the first notification of a group goes out after
    ``group_wait``, changes (such as a resolution) after ``group_interval``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        webhook_url: str,
        token: str,
        group_wait: str = "200ms",
        group_interval: str = "1s",
        group_by: tuple[str, ...] = ("alertname",),
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        token_file = workdir / "webhook-token"
        token_file.write_text(token, encoding="utf-8")
        token_file.chmod(0o600)
        config = self.build_config(
            webhook_url=webhook_url,
            token_file=token_file,
            group_wait=group_wait,
            group_interval=group_interval,
            group_by=group_by,
        )
        self.config = config
        config_path = workdir / "alertmanager.yml"
        config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
        storage = workdir / "data"
        storage.mkdir()
        argv = [
            ALERTMANAGER,
            f"--config.file={config_path}",
            f"--storage.path={storage}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            f"--web.external-url={self.url}",
            "--cluster.listen-address=",
            "--log.level=debug",
        ]
        super().__init__(
            argv, log_path=workdir / "alertmanager.log", env=dict(os.environ), cwd=workdir
        )

    def build_config(
        self,
        *,
        webhook_url: str,
        token_file: Path,
        group_wait: str,
        group_interval: str,
        group_by: tuple[str, ...],
    ) -> dict[str, Any]:
        """The configuration written for Alertmanager: one route to one bearer-auth webhook."""
        return {
            "global": {"resolve_timeout": "5m"},
            "route": {
                "receiver": "posthog-receiver",
                "group_by": list(group_by),
                "group_wait": group_wait,
                "group_interval": group_interval,
                "repeat_interval": "1h",
            },
            "receivers": [
                {
                    "name": "posthog-receiver",
                    "webhook_configs": [
                        {
                            "url": webhook_url,
                            "send_resolved": True,
                            "http_config": {
                                "authorization": {
                                    "type": "Bearer",
                                    "credentials_file": str(token_file),
                                }
                            },
                        }
                    ],
                }
            ],
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Alertmanager:
        """Start and wait until ``/-/ready`` answers."""
        self._spawn()

        def ready() -> bool:
            self._check_alive()
            return http("GET", self.url + "/-/ready", timeout=1).status == 200

        wait_for(ready, what="alertmanager /-/ready")
        return self

    def add_alert(
        self,
        labels: dict[str, str],
        *,
        annotations: dict[str, str] | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> None:
        """Post an alert with ``amtool alert add``; an ``end`` in the past resolves it."""
        argv = [AMTOOL, f"--alertmanager.url={self.url}", "alert", "add"]
        argv += [f"{k}={v}" for k, v in labels.items()]
        argv += [f"--annotation={k}={v}" for k, v in (annotations or {}).items()]
        if start is not None:
            argv.append(f"--start={start.isoformat()}")
        if end is not None:
            argv.append(f"--end={end.isoformat()}")
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise AssertionError(f"amtool failed ({done.returncode}): {done.stderr.strip()}")


def have_alertmanager() -> bool:
    return shutil.which(ALERTMANAGER) is not None and shutil.which(AMTOOL) is not None


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Callable[..., Alertmanager]]:
    """Factory: ``alertmanager(webhook_url=..., token=...)`` starts one; all stop at test end."""
    if not have_alertmanager():
        pytest.fail(f"{ALERTMANAGER} and {AMTOOL} are required (Debian prometheus-alertmanager)")
    started: list[Alertmanager] = []

    def start(**kw: Any) -> Alertmanager:
        workdir = tmp_path / f"alertmanager-{len(started)}"
        workdir.mkdir()
        am = Alertmanager(workdir, **kw)
        started.append(am)
        return am.start()

    yield start
    for am in started:
        am.close()
