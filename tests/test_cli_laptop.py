"""The command line on a laptop: the example config, no serving secrets, no state database.

Every command runs as a real process with a clean environment (none of the receiver's
variables, in particular no ``POSTHOG_RECEIVER_WEBHOOK_TOKEN``) in an empty working
directory, as a new user would run it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fakes.status_page import FakeStatusPage
from tests.incident_payloads import notification


def clean_env(cwd: Path, **extra: str) -> dict[str, str]:
    """Only what a shell gives any process: no receiver setting, no secret."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "LANG": "C.UTF-8"}
    if "PYTHONPATH" in os.environ:  # where this checkout's package is found
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return {**env, **extra}


async def run(cwd: Path, *args: str | Path, **env: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "receiver",
        *map(str, args),
        cwd=cwd,
        env=clean_env(cwd, **env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.asyncio
async def test_check_config_on_the_example_warns_about_the_missing_secret(tmp_path: Path) -> None:
    """Without the webhook token the example config is valid; the secret is a warning naming
    its field and variable, and nothing is created in the working directory."""
    code, out, err = await run(tmp_path, "check-config")
    assert code == 0, err
    assert out.startswith("config OK: embedded default")
    # The web UI's laptop user signs in with the same token: the same variable, twice.
    webhook, ui_user = err.splitlines()
    assert webhook.startswith("posthog-receiver: warning: webhook.bearer_token: ")
    assert ui_user.startswith("posthog-receiver: warning: ui.users.0.password: ")
    for warning in (webhook, ui_user):
        assert "environment variable POSTHOG_RECEIVER_WEBHOOK_TOKEN is not set or empty" in warning
    assert listing(tmp_path) == []


@pytest.mark.asyncio
async def test_require_secrets_makes_each_missing_secret_an_error(tmp_path: Path) -> None:
    """--require-secrets (a pod's start) exits non-zero, naming every secret that cannot be
    read with its field and where it was looked for."""
    config = tmp_path / "receiver.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "webhook": {"bearer_token": {"env": "POSTHOG_RECEIVER_WEBHOOK_TOKEN"}},
                "notify": {"slack": {"webhook_url": {"file": str(tmp_path / "absent")}}},
            }
        )
    )
    code, out, err = await run(tmp_path, "check-config", "--require-secrets", "--config", config)
    assert code == 2
    assert out == ""
    assert err.splitlines() == [
        f"posthog-receiver: config error: {config}: webhook.bearer_token: environment "
        "variable POSTHOG_RECEIVER_WEBHOOK_TOKEN is not set or empty",
        f"posthog-receiver: config error: {config}: notify.slack.webhook_url: cannot read "
        f"secret file {tmp_path / 'absent'}: No such file or directory",
    ]


@pytest.mark.asyncio
async def test_require_secrets_checks_what_it_reads(tmp_path: Path) -> None:
    """A secret that is there passes --require-secrets; one of the wrong form is named."""
    token = tmp_path / "token"
    token.write_text("a-webhook-token\n")
    slack = tmp_path / "slack"
    slack.write_text("not-a-url\n")
    config = tmp_path / "receiver.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "webhook": {"bearer_token": {"file": str(token)}},
                "notify": {"slack": {"webhook_url": {"file": str(slack)}}},
            }
        )
    )
    code, _, err = await run(tmp_path, "check-config", "--require-secrets", "--config", config)
    assert code == 2
    assert err.splitlines() == [
        f"posthog-receiver: config error: {config}: notify.slack.webhook_url: file {slack}: "
        "must hold an http(s) URL"
    ]
    slack.write_text("https://hooks.slack.example/services/T0/B0/x\n")
    code, out, err = await run(tmp_path, "check-config", "--require-secrets", "--config", config)
    assert code == 0, err
    assert err == ""
    assert out.startswith(f"config OK: {config}")


@pytest.mark.asyncio
async def test_check_config_lists_every_problem(tmp_path: Path) -> None:
    """Three broken fields: three lines, each naming its field; exit non-zero."""
    config = tmp_path / "receiver.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "webhook": {"allow_unauthenticated": True},
                "server": {"port": 70000},
                "store": {"synchronous": "sometimes"},
                "worker": {"prot": 1},
            }
        )
    )
    code, out, err = await run(tmp_path, "check-config", "--config", config)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 3, err
    assert all(line.startswith(f"posthog-receiver: config error: {config}: ") for line in lines)
    assert "server.port: Input should be less than or equal to 65535" in lines[0]
    assert "store.synchronous: Input should be 'normal' or 'full'" in lines[1]
    assert "worker.prot: Extra inputs are not permitted" in lines[2]


@pytest.mark.asyncio
async def test_serve_stops_at_start_naming_the_missing_secret(tmp_path: Path) -> None:
    """serve reads every secret before anything starts: it exits 2 naming the field and the
    variable, and has created no state."""
    code, out, err = await run(tmp_path, "serve", "--port", "1")
    assert code == 2
    assert out == ""
    missing = "environment variable POSTHOG_RECEIVER_WEBHOOK_TOKEN is not set or empty"
    assert err.splitlines() == [
        f"posthog-receiver: config error: {_example()}: webhook.bearer_token: {missing}",
        f"posthog-receiver: config error: {_example()}: ui.users.0.password: {missing}",
    ]
    assert listing(tmp_path) == []


def _example() -> Path:
    from receiver.config import example_config_path

    return example_config_path()


def _payload(tmp_path: Path, status_code: str) -> Path:
    body: dict[str, Any] = notification("firing", status_code=status_code)
    path = tmp_path / "payload.json"
    path.write_text(json.dumps(body))
    return path


@pytest.mark.asyncio
async def test_triage_of_a_401_tells_the_restart_is_conditional(
    tmp_path: Path, status_page: FakeStatusPage
) -> None:
    """On the example config with no secrets: the 401 preview says the restart happens only if
    the key was rotated after the pods started, that this was not checked, and that otherwise
    it escalates for a new key; never "would apply", and no Python repr anywhere."""
    payload = _payload(tmp_path, "401")
    code, out, err = await run(
        tmp_path,
        "triage",
        payload,
        POSTHOG_RECEIVER__TRIAGE__UPSTREAM__URL=status_page.url(),
    )
    assert code == 0, err
    assert "Error class    auth" in out
    actions = out.split("\nActions\n", 1)[1].split("\nNotifications", 1)[0]
    assert "  - restart_for_rotated_key on default/posthog-integration: dry run" in actions
    assert (
        "would restart the Deployment only if Secret posthog-secrets key api-key changed after "
        "its pods started" in actions
    )
    assert "escalates, asking for a new key" in actions
    assert "not checked: a preview never touches the cluster" in actions
    assert "would apply" not in out
    for repr_like in ("None", "'true'", "=-", "before=", "after="):
        assert repr_like not in out
    assert listing(tmp_path) == ["payload.json"]  # no state database, no state directory


@pytest.mark.asyncio
async def test_triage_shows_values_without_python_reprs(
    tmp_path: Path, status_page: FakeStatusPage
) -> None:
    """A set_env action reads as the value it would set, quoted, with the old value "not
    read" (no cluster): not ``None -> 'queue'``."""
    payload = _payload(tmp_path, "429")
    code, out, err = await run(
        tmp_path, "triage", payload, POSTHOG_RECEIVER__TRIAGE__UPSTREAM__URL=status_page.url()
    )
    assert code == 0, err
    assert '    change: not read → "queue"' in out.splitlines()
    assert 'would set RATE_LIMIT_MODE to "queue"' in out
    assert "'queue'" not in out
    assert "None" not in out
