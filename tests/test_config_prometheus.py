"""One Prometheus setting: ``prometheus.url`` serves remediation's verify query and the
evidence's metrics; the keys it replaced are refused with a message naming it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from receiver.config import ConfigError, example_config_path, load_settings


def write(tmp_path: Path, settings: dict[str, object]) -> Path:
    path = tmp_path / "receiver.yaml"
    path.write_text(
        yaml.safe_dump({"webhook": {"allow_unauthenticated": True}, **settings}), encoding="utf-8"
    )
    return path


def test_one_url_for_both(tmp_path: Path) -> None:
    """The top-level group holds the URL and timeout; the example leaves it unset."""
    settings = load_settings(
        write(
            tmp_path,
            {
                "prometheus": {"url": "http://prometheus.monitoring:9090", "timeout_seconds": 3},
                "remediation": {"verify": {"promql": "sum(rate(posthog_errors_total[5m]))"}},
            },
        )
    )
    assert settings.prometheus.url == "http://prometheus.monitoring:9090"
    assert settings.prometheus.timeout_seconds == 3
    assert load_settings(example_config_path()).prometheus.url is None


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"remediation": {"verify": {"prometheus_url": "http://p:9090"}}},
            "remediation.verify: 'prometheus_url' has moved: set 'prometheus.url' instead",
        ),
        (
            {"evidence": {"prometheus": {"url": "http://p:9090"}}},
            "evidence.prometheus: 'url' has moved: set 'prometheus.url' instead",
        ),
        (
            {"evidence": {"prometheus": {"timeout_seconds": 5}}},
            "evidence.prometheus: 'timeout_seconds' has moved: set 'prometheus.timeout_seconds' "
            "instead",
        ),
        (
            {"remediation": {"verify": {"promql": "up"}}},
            "remediation.verify.promql needs prometheus.url",
        ),
        ({"prometheus": {"url": "prometheus:9090"}}, "prometheus.url: must be an http"),
    ],
)
def test_old_keys_name_the_new_one(
    tmp_path: Path, settings: dict[str, object], message: str
) -> None:
    """A key that moved is refused with the key to use instead; verify needs the URL."""
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, settings))
    assert message in str(caught.value)
