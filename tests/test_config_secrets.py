"""Secrets: loading checks where each comes from; reading them is the step ``serve`` takes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from receiver.config import (
    ConfigError,
    SecretProblem,
    example_config_path,
    load_settings,
    require_secrets,
    secret_problems,
)

TOKEN_ENV = "POSTHOG_RECEIVER_WEBHOOK_TOKEN"


def test_the_example_loads_without_its_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """With the token variable unset the example still loads; the missing secret is reported
    by secret_problems, naming the field, and refused by require_secrets."""
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    settings = load_settings(None)
    # The web UI's user signs in with the same token on a laptop.
    missing = f"environment variable {TOKEN_ENV} is not set or empty"
    assert secret_problems(settings) == [
        SecretProblem("webhook.bearer_token", missing),
        SecretProblem("ui.users.0.password", missing),
    ]
    with pytest.raises(ConfigError) as caught:
        require_secrets(settings, None)
    assert caught.value.lines() == [
        f"{example_config_path()}: webhook.bearer_token: {missing}",
        f"{example_config_path()}: ui.users.0.password: {missing}",
    ]


def test_required_secrets_are_read_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """require_secrets reads every secret (env and file, nested groups too); serving then uses
    what was read at start, whatever happens to the variable later."""
    routing_key = tmp_path / "routing-key"
    routing_key.write_text("0123456789abcdef0123456789abcdef\n")
    config = tmp_path / "receiver.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "webhook": {"bearer_token": {"env": TOKEN_ENV}},
                "notify": {"pagerduty": {"routing_key": {"file": str(routing_key)}}},
            }
        )
    )
    monkeypatch.setenv(TOKEN_ENV, "token-at-start")
    settings = load_settings(config)
    require_secrets(settings, config)
    monkeypatch.setenv(TOKEN_ENV, "token-changed-later")
    routing_key.write_text("changed\n")
    hook = settings.webhook.bearer_token
    assert hook is not None
    assert hook.secret.get_secret_value() == "token-at-start"
    assert settings.notify.pagerduty is not None
    assert (
        settings.notify.pagerduty.routing_key.secret.get_secret_value()
        == "0123456789abcdef0123456789abcdef"
    )


def test_a_secret_of_the_wrong_form_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A routing key read from the environment is checked when read, with the field named and
    the value never shown."""
    config = tmp_path / "receiver.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "webhook": {"allow_unauthenticated": True},
                "notify": {"pagerduty": {"routing_key": {"env": "PD_KEY"}}},
            }
        )
    )
    monkeypatch.setenv("PD_KEY", "short-secret-key")
    settings = load_settings(config)
    problems = [str(p) for p in secret_problems(settings)]
    assert problems == [
        "notify.pagerduty.routing_key: environment variable PD_KEY: must be the 32-character "
        "integration key"
    ]
    assert "short-secret-key" not in problems[0]
