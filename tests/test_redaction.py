"""Redaction: every form in which a configured secret may be echoed back becomes [redacted]."""

from __future__ import annotations

import base64
import io
import json
import logging
from urllib.parse import quote, quote_plus

import pytest
import structlog

from receiver.config import LoggingSettings, NotifySettings, Settings, WebhookSettings
from receiver.logs import configure_logging
from receiver.redaction import Redactor, configured_secrets

SLACK_URL = "https://hooks.slack.com/services/T0SECRET/B0SECRET/sl4ckS3cr3tT0k3nXYZ"
SLACK_PATH = "/services/T0SECRET/B0SECRET/sl4ckS3cr3tT0k3nXYZ"
TOKEN = "bearer+token/with=odd chars"


def _settings() -> Settings:
    return Settings(
        webhook=WebhookSettings.model_validate(
            {
                "bearer_token": {"value": TOKEN},
                "basic_auth": {"username": "alertmanager", "password": {"value": "p4ss:word"}},
            }
        ),
        notify=NotifySettings.model_validate(
            {"slack": {"webhook_url": {"value": SLACK_URL}, "incident_commander": "<@U0ALICE>"}}
        ),
    )


@pytest.mark.parametrize(
    "echo",
    [
        pytest.param(SLACK_URL, id="raw"),
        pytest.param(SLACK_PATH, id="path"),
        pytest.param(SLACK_PATH.replace("/", "\\/"), id="json-escaped slashes"),
        pytest.param(SLACK_URL.replace("/", "\\/"), id="json-escaped url"),
        pytest.param(quote(SLACK_PATH, safe=""), id="percent-encoded path"),
        pytest.param(quote(SLACK_PATH, safe="").replace("%2F", "%2f"), id="lower-case hex"),
        pytest.param(quote(SLACK_URL, safe=""), id="percent-encoded url"),
        pytest.param(quote_plus(TOKEN), id="form-encoded token"),
        pytest.param(quote(TOKEN, safe=""), id="percent-encoded token"),
        pytest.param(json.dumps(TOKEN)[1:-1].replace("/", "\\/"), id="json token"),
        pytest.param(base64.b64encode(b"alertmanager:p4ss:word").decode(), id="basic auth"),
        pytest.param("p4ss:word", id="basic auth password"),
    ],
)
def test_every_echoed_form_of_a_secret_is_redacted(echo: str) -> None:
    """A secret echoed raw, JSON-escaped, percent- or form-encoded or as basic credentials
    is replaced, and the text around it is kept."""
    redactor = Redactor.from_settings(_settings())
    assert redactor.text(f'{{"error": "no_service", "path": "{echo}"}}') == (
        '{"error": "no_service", "path": "[redacted]"}'
    )


def test_a_redactor_never_shows_its_secrets_and_cannot_change() -> None:
    """Printing a redactor names no secret; it cannot be given others after it was built."""
    redactor = Redactor.from_settings(_settings())
    assert SLACK_PATH not in repr(redactor)
    assert TOKEN not in str(redactor)
    with pytest.raises(AttributeError):
        redactor._pattern = None
    assert redactor.text(SLACK_URL) == "[redacted]"


def test_no_secret_configured_leaves_text_alone() -> None:
    """Without secrets (the embedded default), text passes unchanged."""
    settings = Settings(webhook=WebhookSettings(allow_unauthenticated=True))
    assert configured_secrets(settings) == []
    assert Redactor.from_settings(settings).text("a/b %2F c") == "a/b %2F c"


def test_bytes_that_are_not_utf8_are_kept() -> None:
    """Redacting a file's bytes replaces the secret and keeps undecodable bytes as they were."""
    redactor = Redactor([TOKEN])
    data = b"\xff\xfe log " + TOKEN.encode() + b" \x80"
    assert redactor.data(data) == b"\xff\xfe log [redacted] \x80"


def test_configured_logging_redacts_structlog_and_stdlib_lines() -> None:
    """Logging configured with a redactor writes no secret, from our loggers (nested fields
    too) or from libraries logging through the standard library."""
    out = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging(
        LoggingSettings(format="json"), redactor=Redactor.from_settings(_settings()), stream=out
    )
    try:
        structlog.get_logger("redaction-test").error(
            f"refused at {SLACK_PATH}", detail={"body": [quote(SLACK_PATH, safe="")]}
        )
        logging.getLogger("aiohttp.client").warning("POST %s failed", SLACK_URL)
    finally:
        structlog.reset_defaults()
        root.handlers[:], root.level = saved[0], saved[1]
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["event"], line.get("detail")) for line in lines] == [
        ("refused at [redacted]", {"body": ["[redacted]"]}),
        ("POST [redacted] failed", None),
    ]
