"""The command line, run as a real process: help, and check-config on good and bad files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import TOKEN


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "receiver", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "receiver.yaml"
    path.write_text(text, encoding="utf-8")
    return path


GOOD = {
    "webhook": {"bearer_token": {"env": "POSTHOG_RECEIVER_WEBHOOK_TOKEN"}},
    "store": {"path": "state/x.sqlite3"},
}


def test_help_lists_the_commands() -> None:
    """``python -m receiver --help`` exits 0 and names serve and check-config."""
    done = run("--help")
    assert done.returncode == 0
    assert "serve" in done.stdout
    assert "check-config" in done.stdout


def test_check_config_accepts_a_good_file(tmp_path: Path) -> None:
    """check-config exits 0 on a valid file."""
    path = write(tmp_path, yaml.safe_dump(GOOD))
    done = run("check-config", "--config", str(path), env={"POSTHOG_RECEIVER_WEBHOOK_TOKEN": TOKEN})
    assert done.returncode == 0, done.stderr
    assert "config OK" in done.stdout
    assert TOKEN not in done.stdout + done.stderr


def test_check_config_accepts_the_embedded_default() -> None:
    """check-config without --config validates the embedded default."""
    done = run("check-config", env={"POSTHOG_RECEIVER_WEBHOOK_TOKEN": TOKEN})
    assert done.returncode == 0, done.stderr
    assert "embedded default" in done.stdout


@pytest.mark.parametrize(
    ("config", "env", "expected"),
    [
        pytest.param(
            {**GOOD, "server": {"port": 70000}},
            {},
            "server.port: Input should be less than or equal to 65535",
            id="out-of-range",
        ),
        pytest.param(
            {**GOOD, "server": {"prot": 9000}},
            {},
            "server.prot: Extra inputs are not permitted",
            id="unknown-field",
        ),
        pytest.param(
            {**GOOD, "store": {"synchronous": "sometimes"}},
            {},
            "store.synchronous: Input should be 'normal' or 'full'",
            id="bad-enum",
        ),
        pytest.param(
            {**GOOD, "worker": {"poll_interval_seconds": 5, "stall_after_seconds": 1}},
            {},
            "worker: 'stall_after_seconds' must be longer than 'poll_interval_seconds'",
            id="cross-field",
        ),
        pytest.param(
            {"store": {"path": "x.sqlite3"}},
            {},
            "webhook: Field required",
            id="no-auth",
        ),
        pytest.param(
            GOOD,
            {"POSTHOG_RECEIVER__SERVER__PORT": "nine"},
            "server.port: Input should be a valid integer",
            id="bad-env-override",
        ),
    ],
)
def test_check_config_names_the_bad_field(
    tmp_path: Path, config: dict[str, object], env: dict[str, str], expected: str
) -> None:
    """A bad setting gives one line on stderr naming the field, a non-zero exit, no traceback."""
    path = write(tmp_path, yaml.safe_dump(config))
    done = run(
        "check-config",
        "--config",
        str(path),
        env={"POSTHOG_RECEIVER_WEBHOOK_TOKEN": TOKEN, **env},
    )
    assert done.returncode == 2
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith(f"posthog-receiver: config error: {path}: ")
    assert expected in line
    assert "Traceback" not in done.stderr


def test_check_config_reports_invalid_yaml_with_its_position(tmp_path: Path) -> None:
    """Invalid YAML gives one line with the line and column, exit non-zero."""
    path = write(tmp_path, "webhook:\n  bearer_token: {env: X\nserver: [\n")
    done = run("check-config", "--config", str(path))
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "not valid YAML at line" in line
    assert "Traceback" not in done.stderr


def test_check_config_reports_a_missing_file(tmp_path: Path) -> None:
    """A config path that does not exist gives one line and a non-zero exit."""
    done = run("check-config", "--config", str(tmp_path / "absent.yaml"))
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert "cannot read config file" in line
