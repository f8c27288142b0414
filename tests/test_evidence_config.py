"""The ``evidence`` settings group: documented defaults and readable errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from receiver.config import (
    ConfigError,
    EvidenceLogsSettings,
    EvidenceSettings,
    example_config_path,
    load_settings,
)


def _write(tmp_path: Path, evidence: dict[str, object]) -> Path:
    path = tmp_path / "receiver.yaml"
    config = {"webhook": {"allow_unauthenticated": True}, "evidence": evidence}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_the_example_documents_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded example's evidence section is exactly the built-in defaults."""
    monkeypatch.setenv("POSTHOG_RECEIVER_WEBHOOK_TOKEN", "example-token")
    assert load_settings(example_config_path()).evidence == EvidenceSettings()


def test_a_config_without_evidence_still_loads(tmp_path: Path) -> None:
    """Existing configurations without an evidence group load with the defaults."""
    path = tmp_path / "old.yaml"
    path.write_text("webhook: {allow_unauthenticated: true}\n", encoding="utf-8")
    settings = load_settings(path)
    assert settings.prometheus.url is None
    assert settings.kubernetes.mode == "none"  # so no logs are read, whatever logs.enabled says


def test_a_bad_error_pattern_names_the_field(tmp_path: Path) -> None:
    """An error_pattern that does not compile is refused, naming the field."""
    with pytest.raises(ConfigError, match=r"evidence\.logs: .*error_pattern"):
        load_settings(_write(tmp_path, {"logs": {"error_pattern": "(unclosed"}}))


def test_query_names_must_be_unique_and_file_safe(tmp_path: Path) -> None:
    """Query names become file names: duplicates and path characters are refused."""
    twice = [{"name": "a", "query": "up"}, {"name": "a", "query": "up"}]
    with pytest.raises(ConfigError, match="unique"):
        load_settings(_write(tmp_path, {"prometheus": {"queries": twice}}))
    with pytest.raises(ConfigError, match=r"evidence\.prometheus\.queries\.0\.name"):
        load_settings(
            _write(tmp_path, {"prometheus": {"queries": [{"name": "../x", "query": "up"}]}})
        )


@pytest.mark.parametrize(
    ("pattern", "what"),
    [(r"(error)\s+\1", "a backreference"), (r"error(?!: retried)", "a lookahead")],
)
def test_error_pattern_is_re2_and_refuses_what_would_backtrack(
    tmp_path: Path, pattern: str, what: str
) -> None:
    """Pod log lines are whatever the pod wrote: error_pattern is RE2, as triage rules are,
    so a pattern only a backtracking engine can run is refused at check time."""
    with pytest.raises(ConfigError, match=r"evidence\.logs: error_pattern .*RE2.*linear time"):
        load_settings(_write(tmp_path, {"logs": {"error_pattern": pattern}}))


def test_error_pattern_selects_lines_in_linear_time() -> None:
    """The compiled pattern finds error lines anywhere in a line, and a pattern that would
    backtrack for ages in Python's engine answers at once on a long hostile line."""
    logs = EvidenceLogsSettings()
    assert logs.error_regex.search("2026-01-01 ERROR PostHog answered 503")
    assert logs.error_regex.search("status=429 retrying")
    assert not logs.error_regex.search("2026-01-01 INFO sent batch; errors=0")
    hostile = EvidenceLogsSettings(error_pattern=r"(x+x+)+y").error_regex
    started = time.monotonic()
    assert not hostile.search("x" * 50_000)
    assert time.monotonic() - started < 1.0
