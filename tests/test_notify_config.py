"""The ``notify`` settings group: optional destinations, secrets from outside, early errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from receiver.config import ConfigError, load_settings
from receiver.redaction import configured_secrets
from receiver.runbook import Severity

ROUTING_KEY = "0123456789abcdef0123456789abcdef"
BASE = """
webhook: {allow_unauthenticated: true}
notify:
"""


def write(tmp_path: Path, notify: str) -> Path:
    path = tmp_path / "receiver.yaml"
    path.write_text(BASE + notify, encoding="utf-8")
    return path


def test_embedded_default_configures_no_destination(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded default sends nothing anywhere: every notification goes to the log."""
    monkeypatch.setenv("POSTHOG_RECEIVER_WEBHOOK_TOKEN", "a-token-for-tests")
    notify = load_settings(None).notify
    assert (notify.pagerduty, notify.statuspage, notify.slack) == (None, None, None)
    assert configured_secrets(notify) == []


def test_all_destinations_load_with_secrets_from_env_and_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each destination loads, its secret read from the environment or a file."""
    monkeypatch.setenv("PD_KEY", ROUTING_KEY)
    monkeypatch.setenv("SLACK_URL", "https://hooks.slack.com/services/T0/B0/xyz")
    key_file = tmp_path / "statuspage-key"
    key_file.write_text("oauth-key-from-file\n", encoding="utf-8")
    settings = load_settings(
        write(
            tmp_path,
            f"""
  pagerduty:
    routing_key: {{env: PD_KEY}}
    events_url: https://events.eu.pagerduty.com/
  statuspage:
    page_id: p1
    component_id: c1
    api_key: {{file: {key_file}}}
    severities: [P1]
    templates:
      impact: {{P1: everything being down}}
  slack:
    webhook_url: {{env: SLACK_URL}}
    incident_commander: "<@U0ALICE01|alice>"
""",
        )
    )
    notify = settings.notify
    assert notify.pagerduty is not None
    assert notify.statuspage is not None
    assert notify.pagerduty.events_url == "https://events.eu.pagerduty.com"
    assert notify.statuspage.api_base == "https://api.statuspage.io/v1"
    assert notify.statuspage.severities == (Severity.P1,)
    assert notify.statuspage.templates.impact == {Severity.P1: "everything being down"}
    assert sorted(configured_secrets(notify)) == sorted(
        [
            ROUTING_KEY,
            "oauth-key-from-file",
            "https://hooks.slack.com/services/T0/B0/xyz",
            "/services/T0/B0/xyz",  # the webhook's path alone posts to it
        ]
    )


@pytest.mark.parametrize(
    ("notify", "message"),
    [
        (
            "  pagerduty: {routing_key: {value: too-short-a-key}}",
            "notify.pagerduty.routing_key: must be the 32-character integration key",
        ),
        (
            f"  pagerduty: {{routing_key: {{value: {ROUTING_KEY}}}, events_url: events.pd}}",
            "notify.pagerduty: events_url must be an http(s) URL",
        ),
        (
            "  slack: {webhook_url: {value: not-a-url-secret}}",
            "notify.slack.webhook_url: must hold an http(s) URL",
        ),
        (
            "  statuspage: {page_id: p, component_id: c, api_key: {value: k},"
            " templates: {resolved: 'Fixed at {when}'}}",
            "notify.statuspage.templates: resolved: only {impact} and {timestamp} may be used",
        ),
        (
            "  statuspage: {page_id: p, component_id: c, api_key: {value: k}, severities: [P5]}",
            "notify.statuspage.severities.0",
        ),
    ],
)
def test_bad_notify_settings_are_named(tmp_path: Path, notify: str, message: str) -> None:
    """A wrong notify setting fails loading with the field named and no secret shown."""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, notify))
    assert message in str(caught.value)
    assert "too-short-a-key" not in str(caught.value)
    assert "not-a-url-secret" not in str(caught.value)


SLACK = "  slack:\n    webhook_url: {value: 'https://hooks.slack.com/services/T0/B0/xyz'}\n"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ('incident_commander: "@on-call"', "'@on-call' is not a Slack mention"),
        ("incident_commander: on-call", "would ping nobody: write <@U…> for a person"),
        ('incident_commander: "<!here>"', "'<!here>' is not a Slack mention"),
        ('incident_commander: "<@U123><!channel>"', "is not a Slack mention"),
        ('incident_commander: "<@u0alice01>"', "is not a Slack mention"),
        ('mentions: ["<!everyone>"]', "'<!everyone>' is not a Slack mention"),
        ('mentions: ["@here"]', "<!here> or <!channel>"),
    ],
)
def test_slack_mentions_must_be_written_in_slack_syntax(
    tmp_path: Path, setting: str, message: str
) -> None:
    """A mention Slack would not recognise (and so would ping nobody) fails loading, named."""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, f"{SLACK}    {setting}\n"))
    assert "notify.slack." in str(caught.value)
    assert message in str(caught.value)


def test_slack_mentions_in_slack_syntax_load(tmp_path: Path) -> None:
    """A person, a user group (with a readable label) and broadcasts load as written."""
    settings = load_settings(
        write(
            tmp_path,
            f"{SLACK}    incident_commander: '<!subteam^S0123ABCDE|posthog-oncall>'\n"
            "    mentions: ['<@U0ALICE01>', '<@W0BOB0001|bob>', '<!here>', '<!channel>']\n",
        )
    )
    slack = settings.notify.slack
    assert slack is not None
    assert slack.incident_commander == "<!subteam^S0123ABCDE|posthog-oncall>"
    assert slack.mentions == ("<@U0ALICE01>", "<@W0BOB0001|bob>", "<!here>", "<!channel>")


@pytest.mark.parametrize(
    "host", ["https://prometheus.example.com", "prometheus.example.com:9090", "a/b", ""]
)
def test_link_hosts_are_host_names(tmp_path: Path, host: str) -> None:
    """``link_hosts`` takes host names only: a URL or a host with a port is refused, named."""
    notify = f"  pagerduty: {{routing_key: {{value: {ROUTING_KEY}}}, link_hosts: ['{host}']}}"
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, notify))
    assert "notify.pagerduty: link_hosts:" in str(caught.value)
    assert "is not a host name" in str(caught.value)
