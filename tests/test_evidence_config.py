"""The ``evidence`` settings group: documented defaults and readable errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from receiver.config import ConfigError, EvidenceSettings, example_config_path, load_settings


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
