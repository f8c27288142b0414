"""Settings: one validated model, grouped by concern, loaded from YAML with environment overrides.

Why a single model: every component receives exactly the group it needs, passed explicitly,
and ``check-config`` can validate everything up front, before anything is started. Secrets
are never written in the YAML itself in production: a :class:`SecretSource` points at an
environment variable or a file (a mounted Kubernetes Secret) and is resolved at load time
into a :class:`pydantic.SecretStr`, which never prints its value.

Environment overrides use the prefix ``POSTHOG_RECEIVER__`` and ``__`` between levels, e.g.
``POSTHOG_RECEIVER__SERVER__PORT=9000`` or ``POSTHOG_RECEIVER__REMEDIATION__DRY_RUN=false``.
"""

from __future__ import annotations

import os
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

__all__ = [
    "ConfigError",
    "EvidenceLogsSettings",
    "EvidencePrometheusSettings",
    "EvidenceQuery",
    "EvidenceSettings",
    "LoggingSettings",
    "SecretSource",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "WebhookSettings",
    "example_config_path",
    "load_settings",
]

ENV_PREFIX = "POSTHOG_RECEIVER__"


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the offending field."""


class _Group(BaseModel):
    """Base for settings groups: unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretSource(_Group):
    """Where a secret comes from: exactly one of ``env``, ``file`` or (for local use) ``value``.

    The secret is read once, when the configuration is loaded.
    """

    env: str | None = Field(default=None, description="Environment variable holding the secret.")
    file: Path | None = Field(
        default=None, description="File holding the secret (e.g. a mounted Kubernetes Secret)."
    )
    value: SecretStr | None = Field(
        default=None, description="Inline secret; for local experiments only."
    )
    _resolved: SecretStr | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _resolve(self) -> SecretSource:
        given = [name for name in ("env", "file", "value") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("set exactly one of 'env', 'file' or 'value'")
        if self.env is not None:
            raw = os.environ.get(self.env)
            if not raw:
                raise ValueError(f"environment variable {self.env} is not set or empty")
        elif self.file is not None:
            try:
                raw = self.file.read_text(encoding="utf-8").strip()
            except OSError as e:
                raise ValueError(f"cannot read secret file {self.file}: {e.strerror}") from None
            if not raw:
                raise ValueError(f"secret file {self.file} is empty")
        else:
            assert self.value is not None
            raw = self.value.get_secret_value()
            if not raw:
                raise ValueError("inline secret value is empty")
        self._resolved = SecretStr(raw)
        return self

    @property
    def secret(self) -> SecretStr:
        """The resolved secret."""
        assert self._resolved is not None
        return self._resolved


class ServerSettings(_Group):
    """The HTTP listener."""

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=9095, ge=1, le=65535, description="TCP port to listen on.")
    max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        le=64 * 1_048_576,
        description="Largest accepted webhook body; larger requests get 413.",
    )
    shutdown_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Grace period for in-flight requests on SIGTERM."
    )
    public_url: str = Field(
        default="http://127.0.0.1:9095",
        description="How people reach this service; used in links sent to PagerDuty and Slack.",
    )


class BasicAuth(_Group):
    """HTTP basic credentials, as Alertmanager's ``http_config.basic_auth`` sends them."""

    username: str = Field(min_length=1)
    password: SecretSource


class WebhookSettings(_Group):
    """Authentication of ``POST /webhook/alertmanager``.

    At least one of ``bearer_token`` and ``basic_auth`` must be set unless
    ``allow_unauthenticated`` is true; a request matching either is accepted.
    """

    bearer_token: SecretSource | None = Field(
        default=None, description="Token expected as 'Authorization: Bearer <token>'."
    )
    basic_auth: BasicAuth | None = Field(default=None, description="Expected basic credentials.")
    allow_unauthenticated: bool = Field(
        default=False, description="Accept webhooks without credentials (tests only)."
    )
    protect_api: bool = Field(
        default=True, description="Require the same credentials on /api/* (incident data)."
    )

    @model_validator(mode="after")
    def _some_auth(self) -> WebhookSettings:
        if self.bearer_token is None and self.basic_auth is None and not self.allow_unauthenticated:
            raise ValueError(
                "set 'bearer_token' or 'basic_auth' (or 'allow_unauthenticated: true')"
            )
        return self


class StoreSettings(_Group):
    """Durable state: the inbox of received webhooks, incidents, journals and the outbox."""

    path: Path = Field(default=Path("state/receiver.sqlite3"), description="SQLite database file.")
    synchronous: Literal["normal", "full"] = Field(
        default="normal",
        description=(
            "SQLite 'synchronous' in WAL mode. 'normal': an acknowledged webhook survives a "
            "crash of this process; 'full': it also survives power loss (an fsync per commit)."
        ),
    )
    inbox_retention_hours: float = Field(
        default=72.0, gt=0, description="How long processed webhooks are kept for inspection."
    )


class LoggingSettings(_Group):
    """Structured logs."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = Field(
        default="auto", description="'auto': console on a terminal, JSON otherwise."
    )


class EvidenceQuery(_Group):
    """One PromQL query captured over the incident window with ``query_range``."""

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="File name in the bundle (metrics/<name>.json); lower case, digits, - and _.",
    )
    query: str = Field(min_length=1, description="PromQL expression evaluated over the window.")


class EvidencePrometheusSettings(_Group):
    """Metrics captured for the evidence bundle and the postmortem's impact section."""

    url: str | None = Field(
        default=None,
        description="Prometheus base URL; unset: no metrics, the bundle says so in a note.",
    )
    timeout_seconds: float = Field(default=10.0, gt=0, description="Timeout of each query.")
    margin_minutes: float = Field(
        default=15.0,
        ge=0,
        description="Minutes captured before the incident opened and after it resolved.",
    )
    max_points: int = Field(
        default=240,
        ge=10,
        le=11_000,
        description="Points per series at most; the query step is the window divided by this.",
    )
    queries: list[EvidenceQuery] = Field(
        default_factory=lambda: [
            EvidenceQuery(
                name="error_rate_by_status",
                query="sum by (status_code) (rate(posthog_errors_total[5m]))",
            )
        ],
        description="Range queries captured; the first one is drawn on the postmortem's chart.",
    )
    error_count_query: str | None = Field(
        default="sum(increase(posthog_errors_total[{window}]))",
        description=(
            "Instant query for the number of errors during the incident, evaluated at its end; "
            "'{window}' becomes the incident's duration (e.g. '3600s'). Unset: not reported."
        ),
    )
    affected_users_query: str | None = Field(
        default=None,
        description=(
            "Instant query for the number of affected users, with '{window}' as above. "
            "Unset: the postmortem leaves the number to be filled in."
        ),
    )

    @model_validator(mode="after")
    def _unique_names(self) -> EvidencePrometheusSettings:
        names = [q.name for q in self.queries]
        if len(set(names)) != len(names):
            raise ValueError("queries: every name must be unique")
        return self


class EvidenceLogsSettings(_Group):
    """Logs and Kubernetes events of the integration's pods."""

    enabled: bool = Field(
        default=False, description="Read pod logs and events; false when there is no cluster."
    )
    kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig file; unset: in-cluster service account, else ~/.kube/config.",
    )
    context: str | None = Field(default=None, description="Kubeconfig context; unset: current.")
    namespace: str = Field(
        default="default", min_length=1, description="Namespace of the integration."
    )
    deployment: str = Field(
        default="posthog-integration",
        min_length=1,
        description="Deployment whose events (and whose pods' events) are collected.",
    )
    label_selector: str = Field(
        default="app=posthog-integration",
        min_length=1,
        description="Selects the integration's pods, as 'kubectl logs -l' does.",
    )
    container: str | None = Field(
        default=None, description="Only this container's logs; unset: every container."
    )
    since_seconds: int = Field(
        default=3600, ge=60, description="How far back logs are read (the runbook's --since=1h)."
    )
    tail_lines: int = Field(
        default=200, ge=0, le=100_000, description="Last lines kept from each container."
    )
    limit_bytes_per_container: int = Field(
        default=2 * 1_048_576,
        ge=1024,
        description="Most bytes read from one container's log per request (the API's limitBytes).",
    )
    error_pattern: str = Field(
        default=r"(?i)\b(error|exception|fatal|panic|traceback)\b|\b(401|403|429|50[0234])\b",
        description="Regular expression selecting error lines from the last hour of logs.",
    )
    max_error_lines: int = Field(
        default=1000, ge=1, description="Error lines kept per container at most (the newest)."
    )
    max_events: int = Field(default=500, ge=1, description="Kubernetes events listed at most.")

    @model_validator(mode="after")
    def _pattern_compiles(self) -> EvidenceLogsSettings:
        try:
            re.compile(self.error_pattern)
        except re.error as e:
            raise ValueError(f"error_pattern is not a valid regular expression: {e}") from None
        return self


class EvidenceSettings(_Group):
    """Post-incident evidence: bundles (.tar.gz with a manifest) and the postmortem draft."""

    directory: Path = Field(
        default=Path("state/evidence"), description="Where bundles are written."
    )
    max_file_bytes: int = Field(
        default=5 * 1_048_576,
        ge=1024,
        description="Largest file in a bundle; longer content is cut and marked truncated.",
    )
    max_bundle_bytes: int = Field(
        default=50 * 1_048_576,
        ge=4096,
        description="Most content bytes in one bundle; files past it are left out and listed.",
    )
    logs: EvidenceLogsSettings = EvidenceLogsSettings()
    prometheus: EvidencePrometheusSettings = EvidencePrometheusSettings()


class Settings(BaseSettings):
    """Everything the receiver needs to run."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    server: ServerSettings = ServerSettings()
    webhook: WebhookSettings
    store: StoreSettings = StoreSettings()
    logging: LoggingSettings = LoggingSettings()
    evidence: EvidenceSettings = EvidenceSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the YAML file (passed as init kwargs).
        return (env_settings, init_settings)


def example_config_path() -> Path:
    """The embedded default configuration, shipped inside the package."""
    return Path(str(resources.files("receiver").joinpath("receiver.example.yaml")))


def _format_error(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    more = len(err.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{where}: {msg}{suffix}"


def load_settings(path: Path | None) -> Settings:
    """Load and validate settings from ``path`` (the embedded default when ``None``).

    Raises :class:`ConfigError` with a one-line message naming the offending field.
    """
    source = path or example_config_path()
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {source}: {e.strerror}") from None
    try:
        data: Any = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{source}: not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of setting groups")
    try:
        return Settings(**data)
    except ValidationError as e:
        raise ConfigError(f"{source}: {_format_error(e)}") from None
