"""Remediation and Kubernetes settings: safe defaults and refused misconfigurations."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from receiver.config import ConfigError, RemediationSettings, load_settings


def test_embedded_default_is_dry_run_without_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded example configures remediation in dry-run and no cluster."""
    monkeypatch.setenv("POSTHOG_RECEIVER_WEBHOOK_TOKEN", "t0ken-for-tests")
    settings = load_settings(None)
    assert settings.remediation.dry_run is True
    assert settings.kubernetes.mode == "none"
    assert [a.name for a in settings.remediation.actions] == [
        "enable_request_queuing",
        "enable_fallback",
        "restart_for_rotated_key",
        "escalate_infrastructure",
    ]


def test_dry_run_is_the_default() -> None:
    """Without configuration remediation only reports what it would do."""
    assert RemediationSettings().dry_run is True


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (
            {
                "name": "set_path",
                "kind": "set_env",
                "error_classes": ["auth"],
                "env": "PATH",
                "value": "/x",
            },
            "PATH is not in env_allowlist",
        ),
        (
            {
                "name": "drop",
                "kind": "set_env",
                "error_classes": ["rate_limited"],
                "env": "RATE_LIMIT_MODE",
                "value": "drop",
            },
            'value "drop" not allowed for RATE_LIMIT_MODE',
        ),
        (
            {"name": "copy", "kind": "copy_api_key", "error_classes": ["auth"]},
            "copy_api_key needs target.source_secret",
        ),
        ({"name": "never", "kind": "escalate_infrastructure"}, "the entry never applies"),
        (
            {
                "name": "bad",
                "kind": "set_env",
                "error_classes": ["teapot"],
                "env": "A",
                "value": "b",
            },
            "error_classes",
        ),
    ],
)
def test_unsafe_actions_are_refused_at_load(action: dict[str, object], message: str) -> None:
    """Variables and values outside the allowlist, and incomplete entries, fail validation."""
    with pytest.raises(ValidationError, match=message):
        RemediationSettings.model_validate({"actions": [action]})


def test_config_error_names_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad remediation setting in YAML gives a one-line error naming the field."""
    monkeypatch.setenv("POSTHOG_RECEIVER_WEBHOOK_TOKEN", "t0ken-for-tests")
    path = tmp_path / "c.yaml"
    path.write_text(
        "webhook: {bearer_token: {env: POSTHOG_RECEIVER_WEBHOOK_TOKEN}}\n"
        "remediation: {budget_per_incident: -1}\n"
    )
    with pytest.raises(ConfigError, match=r"remediation\.budget_per_incident"):
        load_settings(path)


def test_restarts_and_key_copies_wait_for_approval_by_default_env_toggles_do_not() -> None:
    """Unset ``approval``: required for restart_if_key_rotated and copy_api_key only; an
    explicit setting wins either way."""
    settings = RemediationSettings.model_validate(
        {
            "target": {"source_secret": "next"},
            "actions": [
                {
                    "name": "queue",
                    "kind": "set_env",
                    "error_classes": ["rate_limited"],
                    "env": "RATE_LIMIT_MODE",
                    "value": "queue",
                },
                {"name": "restart", "kind": "restart_if_key_rotated", "error_classes": ["auth"]},
                {"name": "copy", "kind": "copy_api_key", "error_classes": ["auth"]},
                {
                    "name": "copy_unattended",
                    "kind": "copy_api_key",
                    "error_classes": ["auth"],
                    "approval": "none",
                },
                {
                    "name": "queue_asked",
                    "kind": "set_env",
                    "error_classes": ["rate_limited"],
                    "env": "RATE_LIMIT_MODE",
                    "value": "queue",
                    "approval": "required",
                },
            ],
        }
    )
    assert {a.name: a.approval_required for a in settings.actions} == {
        "queue": False,
        "restart": True,
        "copy": True,
        "copy_unattended": False,
        "queue_asked": True,
    }
    assert settings.approval_timeout_seconds == 900
