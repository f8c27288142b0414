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

from receiver.runbook import ErrorClass, Verdict

__all__ = [
    "ActionKind",
    "ConfigError",
    "KubernetesSettings",
    "LoggingSettings",
    "RemediationSettings",
    "RemediationTarget",
    "RunbookActionSettings",
    "SecretSource",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "VerifySettings",
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


class KubernetesSettings(_Group):
    """How to reach the Kubernetes API server."""

    mode: Literal["none", "in_cluster", "kubeconfig"] = Field(
        default="none",
        description=(
            "'none': no cluster (remediation only reports what it would do); 'in_cluster': the "
            "pod's service account; 'kubeconfig': the file in 'kubeconfig' (or $KUBECONFIG, "
            "~/.kube/config when unset)."
        ),
    )
    kubeconfig: Path | None = Field(default=None, description="Kubeconfig file (mode kubeconfig).")
    context: str | None = Field(default=None, description="Kubeconfig context; default: current.")
    request_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of one API request."
    )
    retry_attempts: int = Field(
        default=3, ge=1, le=10, description="Attempts for a request failing with 5xx or timeout."
    )
    retry_backoff_seconds: float = Field(
        default=0.5, ge=0, description="First wait between attempts; doubles each time."
    )


class RemediationTarget(_Group):
    """The one workload remediation may touch. Alert labels can never change these."""

    namespace: str = Field(default="default", min_length=1, description="Namespace of the app.")
    deployment: str = Field(
        default="posthog-integration", min_length=1, description="The integration Deployment."
    )
    container: str = Field(
        default="posthog-integration", min_length=1, description="Container whose env is set."
    )
    pod_selector: str = Field(
        default="app=posthog-integration", min_length=1, description="Label selector of its pods."
    )
    api_key_secret: str = Field(
        default="posthog-secrets", min_length=1, description="Secret holding the PostHog API key."
    )
    api_key_key: str = Field(default="api-key", min_length=1, description="Key in that Secret.")
    source_secret: str | None = Field(
        default=None,
        description="Secret holding a new key, copied by the opt-in 'copy_api_key' action.",
    )
    source_key: str = Field(default="api-key", min_length=1, description="Key in source_secret.")


ActionKind = Literal["set_env", "restart_if_key_rotated", "copy_api_key", "escalate_infrastructure"]


class RunbookActionSettings(_Group):
    """One runbook entry: when it applies and what it does.

    An entry applies when the incident's error class is in ``error_classes`` or its verdict is
    in ``verdicts``. ``set_env`` entries name a variable and value from ``env_allowlist``.
    """

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="Name in the runbook's words.")
    kind: ActionKind = Field(description="What the entry does.")
    error_classes: list[ErrorClass] = Field(default=[], description="Error classes it answers.")
    verdicts: list[Verdict] = Field(default=[], description="Decision-tree verdicts it answers.")
    env: str | None = Field(default=None, description="Variable to set (set_env).")
    value: str | None = Field(default=None, description="Value to set (set_env).")
    enabled: bool = Field(default=True, description="Off: the entry is never planned.")

    @model_validator(mode="after")
    def _shape(self) -> RunbookActionSettings:
        if (self.kind == "set_env") != (self.env is not None and self.value is not None):
            raise ValueError("'env' and 'value' are required for set_env, and only for set_env")
        if not self.error_classes and not self.verdicts:
            raise ValueError("set 'error_classes' or 'verdicts', or the entry never applies")
        return self


def _default_actions() -> list[RunbookActionSettings]:
    return [
        RunbookActionSettings(
            name="enable_request_queuing",
            kind="set_env",
            error_classes=[ErrorClass.RATE_LIMITED],
            env="RATE_LIMIT_MODE",
            value="queue",
        ),
        RunbookActionSettings(
            name="enable_fallback",
            kind="set_env",
            error_classes=[ErrorClass.UPSTREAM_ERROR],
            verdicts=[Verdict.VENDOR_INCIDENT],
            env="POSTHOG_FALLBACK",
            value="true",
        ),
        RunbookActionSettings(
            name="restart_for_rotated_key",
            kind="restart_if_key_rotated",
            error_classes=[ErrorClass.AUTH],
        ),
        RunbookActionSettings(
            name="escalate_infrastructure",
            kind="escalate_infrastructure",
            verdicts=[Verdict.OUR_INFRASTRUCTURE],
        ),
    ]


class VerifySettings(_Group):
    """Optional check after an action that the error rate falls."""

    promql: str | None = Field(
        default=None,
        description="Query giving the error rate, e.g. sum(rate(posthog_errors_total[5m])).",
    )
    prometheus_url: str = Field(
        default="http://127.0.0.1:9090", description="Prometheus base URL for that query."
    )
    window_seconds: float = Field(
        default=300.0, gt=0, description="How long the rate has to start falling."
    )
    poll_seconds: float = Field(default=15.0, gt=0, description="Interval between queries.")


class RemediationSettings(_Group):
    """Guarded runbook actions on the integration's Deployment."""

    enabled: bool = Field(default=True, description="Off: no action is planned at all.")
    dry_run: bool = Field(
        default=True, description="Only report (and server-side dry-run) what would change."
    )
    kill_switch: bool = Field(default=False, description="On: every action is skipped.")
    kill_switch_file: Path | None = Field(
        default=None,
        description=(
            "While this file exists (e.g. a mounted ConfigMap key), every action is skipped."
        ),
    )
    target: RemediationTarget = RemediationTarget()
    env_allowlist: dict[str, list[str]] = Field(
        default={"RATE_LIMIT_MODE": ["queue"], "POSTHOG_FALLBACK": ["true"]},
        description="Environment variables actions may set, with the values allowed for each.",
    )
    actions: list[RunbookActionSettings] = Field(
        default_factory=_default_actions, description="The runbook entries."
    )
    select_label: str = Field(
        default="runbook_action",
        description="Alert label that may narrow the entries to some names (comma-separated).",
    )
    cooldown_seconds: float = Field(
        default=900.0, ge=0, description="Least time between two runs of an action on a target."
    )
    budget_per_incident: int = Field(
        default=3, ge=0, description="Most actions applied for one incident."
    )
    revert_hold_down_seconds: float = Field(
        default=600.0, ge=0, description="Wait after resolve before changes are reverted."
    )
    rollout_timeout_seconds: float = Field(
        default=300.0, gt=0, description="How long a rollout may take before escalating."
    )
    rollout_poll_seconds: float = Field(
        default=2.0, gt=0, description="Interval between rollout status reads."
    )
    conflict_attempts: int = Field(
        default=5, ge=1, le=20, description="Re-read and retry this often on 409 Conflict."
    )
    verify: VerifySettings = VerifySettings()

    @model_validator(mode="after")
    def _allowlisted(self) -> RemediationSettings:
        names = [a.name for a in self.actions]
        if len(names) != len(set(names)):
            raise ValueError("action names must be unique")
        for action in self.actions:
            if action.kind == "set_env":
                allowed = self.env_allowlist.get(action.env or "")
                if allowed is None:
                    raise ValueError(f"action {action.name}: {action.env} is not in env_allowlist")
                if action.value not in allowed:
                    raise ValueError(
                        f"action {action.name}: value {action.value!r} not allowed for {action.env}"
                    )
            if action.kind == "copy_api_key" and self.target.source_secret is None:
                raise ValueError(f"action {action.name}: copy_api_key needs target.source_secret")
        return self


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
    kubernetes: KubernetesSettings = KubernetesSettings()
    remediation: RemediationSettings = RemediationSettings()

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
