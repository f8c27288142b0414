"""Settings: one validated model, grouped by concern, loaded from YAML with environment overrides.

Why a single model: every component receives exactly the group it needs, passed explicitly,
and ``check-config`` can validate everything up front, before anything is started. Secrets
are never written in the YAML itself in production: a :class:`SecretSource` points at an
environment variable or a file (a mounted Kubernetes Secret). Loading checks only where each
secret comes from; reading them is a separate step (:func:`require_secrets`) that ``serve``
takes at start, so the read-only commands work where the secrets are not available. A read
secret is a :class:`pydantic.SecretStr`, which never prints its value.

Environment overrides use the prefix ``POSTHOG_RECEIVER__`` and ``__`` between levels, e.g.
``POSTHOG_RECEIVER__SERVER__PORT=9000`` or ``POSTHOG_RECEIVER__REMEDIATION__DRY_RUN=false``.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Protocol

import re2
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from receiver.runbook import ErrorClass, Severity, Verdict
from receiver.wording import quoted

__all__ = [
    "ActionKind",
    "ApprovalMode",
    "ClassRule",
    "ConfigError",
    "EvidenceLogsSettings",
    "EvidencePrometheusSettings",
    "EvidenceQuery",
    "EvidenceSettings",
    "HealthCheckSettings",
    "KubernetesSettings",
    "LeadershipSettings",
    "LoggingSettings",
    "NotifySettings",
    "OutboxSettings",
    "PagerDutySettings",
    "PagerDutyWebhookSettings",
    "PrometheusSettings",
    "RemediationSettings",
    "RemediationTarget",
    "ResponderSettings",
    "RoutingKeySource",
    "RunbookActionSettings",
    "SecretProblem",
    "SecretSource",
    "SecretUnavailable",
    "SecretUrlSource",
    "ServerSettings",
    "Settings",
    "SlackBotTokenSource",
    "SlackSettings",
    "StatuspageSettings",
    "StatuspageTemplates",
    "StoreSettings",
    "TriageSettings",
    "UiSettings",
    "UpstreamStatusSettings",
    "VerifySettings",
    "WebhookSettings",
    "WorkerSettings",
    "example_config_path",
    "load_settings",
    "require_secrets",
    "secret_problems",
]

ENV_PREFIX = "POSTHOG_RECEIVER__"


class ConfigError(Exception):
    """A configuration that cannot be used: every problem found, each naming its field."""

    def __init__(self, source: str, problems: Sequence[str]) -> None:
        self.source = source
        self.problems = tuple(problems)
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """One line per problem, each starting with the file it is about."""
        return [f"{self.source}: {problem}" for problem in self.problems]


class _Group(BaseModel):
    """Base for settings groups: unknown keys are errors, so typos do not pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretUnavailable(Exception):
    """A secret that cannot be read now; the message names its source, never a value."""


class SecretSource(_Group):
    """Where a secret comes from: exactly one of ``env``, ``file`` or (for local use) ``value``.

    Validation checks only the shape, so that commands which never use a secret (``triage``,
    ``postmortem``, ``evidence``, ``check-config``) work where it is not available, e.g. on a
    laptop. The secret is read by :meth:`resolve`; ``serve`` resolves every secret at start
    (:func:`require_secrets`) and fails there, naming the field, if one cannot be read.
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
    def _shape(self) -> SecretSource:
        given = [name for name in ("env", "file", "value") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("set exactly one of 'env', 'file' or 'value'")
        if self.value is not None:
            # Written in the file itself: nothing to resolve later, so check it now.
            raw = self.value.get_secret_value()
            if not raw:
                raise ValueError("inline secret value is empty")
            self.check(raw)
        return self

    def check(self, raw: str) -> None:
        """Raise :class:`ValueError` if ``raw`` cannot be this secret (subclasses say why)."""

    def describe(self) -> str:
        """Where the secret comes from, for people (never its value)."""
        if self.env is not None:
            return f"environment variable {self.env}"
        if self.file is not None:
            return f"file {self.file}"
        return "inline value"

    def resolve(self) -> SecretStr:
        """Read the secret now (and remember it); :class:`SecretUnavailable` if it cannot be."""
        if self.env is not None:
            raw = os.environ.get(self.env)
            if not raw:
                raise SecretUnavailable(f"environment variable {self.env} is not set or empty")
        elif self.file is not None:
            try:
                raw = self.file.read_text(encoding="utf-8").strip()
            except OSError as e:
                raise SecretUnavailable(
                    f"cannot read secret file {self.file}: {e.strerror}"
                ) from None
            if not raw:
                raise SecretUnavailable(f"secret file {self.file} is empty")
        else:
            assert self.value is not None  # the shape was validated
            raw = self.value.get_secret_value()
        try:
            self.check(raw)
        except ValueError as e:
            raise SecretUnavailable(f"{self.describe()}: {e}") from None
        self._resolved = SecretStr(raw)
        return self._resolved

    @property
    def secret(self) -> SecretStr:
        """The secret, read on first use (``serve`` reads every one at start)."""
        if self._resolved is None:
            return self.resolve()
        return self._resolved

    def resolved(self) -> SecretStr | None:
        """The secret if it could be resolved, else ``None``: redaction covers every secret
        that exists, and needs none of them to."""
        if self._resolved is None:
            try:
                return self.resolve()
            except SecretUnavailable:
                return None
        return self._resolved


class RoutingKeySource(SecretSource):
    """A PagerDuty routing key: the 32-character integration key."""

    def check(self, raw: str) -> None:
        if len(raw) != 32:
            raise ValueError("must be the 32-character integration key")


class SecretUrlSource(SecretSource):
    """A URL that is itself the credential (a Slack incoming webhook)."""

    def check(self, raw: str) -> None:
        if not raw.startswith(("https://", "http://")):
            raise ValueError("must hold an http(s) URL")


class SlackBotTokenSource(SecretSource):
    """A Slack app's bot token (``xoxb-…``)."""

    def check(self, raw: str) -> None:
        if not raw.startswith("xoxb-"):
            raise ValueError("must hold a bot token, which starts with 'xoxb-'")


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
    idle_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "A connection is closed when it has not sent a whole request for this long: idle "
            "between requests, or sending its headers slowly."
        ),
    )
    max_connections: int = Field(
        default=512,
        ge=8,
        description="Connections open at once, at most; past it new ones are closed at once.",
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


class UiSettings(_Group):
    """The web pages (incident list, incident page, operations view) and who may see them.

    A person is known by a basic-auth user, or by the identity header of an authenticating
    proxy in front of the receiver; a signed link (``link_key``) shows one incident to whoever
    holds it until it expires.
    """

    enabled: bool = Field(default=True, description="Off: the pages answer 404.")
    users: list[BasicAuth] = Field(
        default=[], description="People who may sign in with HTTP basic auth."
    )
    proxy_user_header: str | None = Field(
        default=None,
        description=(
            "Header in which an authenticating proxy (e.g. oauth2-proxy's X-Auth-Request-User)"
            " names the signed-in person; trusted only when set, and the proxy must remove it"
            " from clients' requests."
        ),
    )
    link_key: SecretSource | None = Field(
        default=None,
        description="HMAC key that signs incident links sent to Slack and PagerDuty (unset: "
        "links are not signed and need a sign-in).",
    )
    link_ttl_hours: float = Field(
        default=72.0, gt=0, le=24 * 90, description="How long a signed link stays valid, in hours."
    )
    refresh_seconds: float = Field(
        default=5.0,
        ge=1,
        le=300,
        description="How often an open page asks for what changed, in seconds.",
    )
    allow_kill_switch_off: bool = Field(
        default=True,
        description=(
            "Whether the operations page may also switch the runtime kill switch off again "
            "(switching it on is always allowed)."
        ),
    )

    @model_validator(mode="after")
    def _unique_users(self) -> UiSettings:
        names = [user.username for user in self.users]
        if len(names) != len(set(names)):
            raise ValueError("ui user names must be unique")
        return self


class PostgresDsnSource(SecretSource):
    """A libpq connection string or URI (``postgresql://user@host:5432/db``); it may hold a
    password, so it is a secret."""

    def check(self, raw: str) -> None:
        text = raw.strip()
        if not text.startswith(("postgresql://", "postgres://")) and "=" not in text:
            raise ValueError(
                "must be a PostgreSQL URI (postgresql://...) or key=value connection string"
            )


class PostgresSettings(_Group):
    """The shared PostgreSQL store of several replicas (``store.backend: postgres``)."""

    dsn: PostgresDsnSource | None = Field(
        default=None,
        description=(
            "Connection string of the database (PostgreSQL 13 or newer), from a secret source; "
            "required with store.backend postgres."
        ),
    )
    pool_size: int = Field(
        default=10,
        ge=1,
        le=200,
        description=(
            "Connections this replica keeps open to the database; each write or read holds "
            "one for its transaction."
        ),
    )
    statement_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description=(
            "Longest a statement may run before the database cancels it (the webhook is then "
            "answered 503 and sent again by Alertmanager); also how long a transaction left "
            "idle may hold the lease row: shorter than leadership.lease_seconds."
        ),
    )


class StoreSettings(_Group):
    """Durable state: the inbox of received webhooks, incidents, journals and the outbox."""

    backend: Literal["sqlite", "postgres"] = Field(
        default="sqlite",
        description=(
            "'sqlite': one replica, a database file at store.path (the default, needs no "
            "server). 'postgres': the shared store of several replicas (store.postgres)."
        ),
    )
    postgres: PostgresSettings = Field(
        default_factory=PostgresSettings,
        description="The PostgreSQL database, used with store.backend postgres.",
    )
    path: Path = Field(default=Path("state/receiver.sqlite3"), description="SQLite database file.")
    synchronous: Literal["normal", "full"] = Field(
        default="normal",
        description=(
            "Durability of the spool and of SQLite (WAL mode). 'normal': an acknowledged webhook "
            "survives a crash of this process; 'full': it also survives power loss (an fsync "
            "per write)."
        ),
    )
    inbox_retention_hours: float = Field(
        default=72.0, gt=0, description="How long processed webhooks are kept for inspection."
    )
    incident_retention_days: float = Field(
        default=90.0,
        gt=0,
        description=(
            "How long a resolved incident is kept (days after it resolved), with its alerts, "
            "timeline, events, notifications, remediation journal and evidence bundles. An "
            "incident still open, or with a change still to revert or a notification still "
            "to deliver, is always kept."
        ),
    )
    busy_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description=(
            "How long a commit waits for a database locked by another process before it is "
            "given up and tried again later."
        ),
    )
    spool_max_mib: int = Field(
        default=256,
        ge=1,
        description=(
            "Webhooks acknowledged but not yet moved into the inbox, at most (MiB, in the "
            "spool directory beside the database). Past it webhooks are answered 503 and "
            "Alertmanager sends them again later."
        ),
    )
    spool_segment_mib: int = Field(
        default=16,
        ge=1,
        description="Size of one spool file; a file is deleted once all of it is in the inbox.",
    )
    recent_keys: int = Field(
        default=65536,
        ge=0,
        description=(
            "How many of the newest notifications' repeat keys the intake remembers (about 150 "
            "bytes each), to answer a resend 'duplicate' at once. An older resend is answered "
            "'stored' and recognised as a repeat when it is moved into the inbox."
        ),
    )

    @model_validator(mode="after")
    def _postgres_needs_dsn(self) -> StoreSettings:
        if self.backend == "postgres" and self.postgres.dsn is None:
            raise ValueError("store.postgres.dsn is required with store.backend postgres")
        return self


class WorkerSettings(_Group):
    """The background worker that turns stored webhooks into incidents.

    ``paused`` is maintenance mode: webhooks are still authenticated, validated and durably
    stored (so Alertmanager gets its 200 and nothing is lost), but nothing is processed until
    the receiver runs again unpaused. Use it to inspect or back up the store, or to hold
    processing during an upgrade of the responder; the backlog shows as
    ``posthog_receiver_inbox_depth``.
    """

    paused: bool = Field(
        default=False,
        description="Store webhooks but do not process them (maintenance mode).",
    )
    poll_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="How often the idle worker looks for due work it was not woken for.",
    )
    stall_after_seconds: float = Field(
        default=120.0,
        gt=0,
        description=(
            "/readyz fails when the worker has not completed a pass, or one incident's event "
            "has not been handled, for this long."
        ),
    )
    max_concurrent_incidents: int = Field(
        default=8,
        ge=1,
        le=256,
        description=(
            "Incidents whose events are handled at the same time; each incident's own events "
            "are always handled one at a time, in order."
        ),
    )
    defer_to_webhooks_seconds: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description=(
            "While webhooks are waiting for their commit, the worker waits up to this long "
            "before applying its next few stored notifications (acknowledgements first; 0: "
            "never waits). Bounded, so processing still advances during a long storm."
        ),
    )

    @model_validator(mode="after")
    def _stall_after_poll(self) -> WorkerSettings:
        if self.stall_after_seconds <= self.poll_interval_seconds:
            raise ValueError("'stall_after_seconds' must be longer than 'poll_interval_seconds'")
        return self


def _default_leader_identity() -> str:
    """The pod's name (``POD_NAME``, from the downward API), else ``<hostname>-<pid>``."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


class LeadershipSettings(_Group):
    """Who acts among several replicas (``store.backend: postgres``): one leader at a time.

    The leader holds a lease in the database and renews it every ``retry_seconds``. One that
    could not renew for ``renew_deadline_seconds`` stops acting before its lease
    (``lease_seconds``) can expire and another replica take over, as client-go's leader
    election does. Every side effect is fenced by the leader's term (see
    ``receiver.leadership``).
    """

    lease_seconds: float = Field(
        default=15.0,
        gt=0,
        le=300,
        description=(
            "How long a lease lasts after its last renewal: a replica takes over from a leader "
            "that stopped renewing (crashed, paused, cut off) after at most this long."
        ),
    )
    renew_deadline_seconds: float = Field(
        default=10.0,
        gt=0,
        description=(
            "A leader that has not renewed its lease for this long stops acting (shorter than "
            "lease_seconds, so it stops before anyone else can start)."
        ),
    )
    retry_seconds: float = Field(
        default=2.0,
        gt=0,
        description=(
            "How often the leader renews its lease and the other replicas try to take it; "
            "also the time one attempt may take."
        ),
    )
    identity: str = Field(
        default_factory=_default_leader_identity,
        min_length=1,
        max_length=253,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$",
        description=(
            "This replica's name in the lease, shown in the API; unique per replica. Default: "
            "the POD_NAME environment variable, else <hostname>-<pid>."
        ),
    )

    @model_validator(mode="after")
    def _deadline_within_lease(self) -> LeadershipSettings:
        # A leader must give up before its lease can expire, and get a few tries at renewing
        # before it gives up.
        if self.renew_deadline_seconds >= self.lease_seconds:
            raise ValueError("'renew_deadline_seconds' must be shorter than 'lease_seconds'")
        if self.retry_seconds >= self.renew_deadline_seconds:
            raise ValueError("'retry_seconds' must be shorter than 'renew_deadline_seconds'")
        return self


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
    service_account_dir: Path = Field(
        default=Path("/var/run/secrets/kubernetes.io/serviceaccount"),
        description=(
            "Mode in_cluster: the mounted service account (token, ca.crt, namespace); the API "
            "server's address comes from KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT."
        ),
    )
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
ApprovalMode = Literal["required", "none"]
# Actions that restart the integration or replace its key wait for a person unless configured
# otherwise; the env toggles (and the escalation, which changes nothing) do not.
APPROVAL_BY_DEFAULT: frozenset[str] = frozenset({"restart_if_key_rotated", "copy_api_key"})


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
    approval: ApprovalMode | None = Field(
        default=None,
        description=(
            "'required': the action waits for a person to approve it (page, Slack); 'none': it "
            "runs under its guards alone. Unset: required for restart_if_key_rotated and "
            "copy_api_key, none for the rest."
        ),
    )

    @property
    def approval_required(self) -> bool:
        """Whether the action waits for a person (``approval``, or its kind's default)."""
        if self.approval is None:
            return self.kind in APPROVAL_BY_DEFAULT
        return self.approval == "required"

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


def _moved(data: Any, moves: dict[str, str]) -> Any:
    """Refuse keys that moved elsewhere, naming where they are now (``extra="forbid"`` alone
    would only call them unknown)."""
    if isinstance(data, dict):
        for old, new in moves.items():
            if old in data:
                raise ValueError(f"'{old}' has moved: set '{new}' instead")
    return data


class PrometheusSettings(_Group):
    """The Prometheus that remediation's verify query and the evidence's metrics read."""

    url: str | None = Field(
        default=None,
        description=(
            "Prometheus base URL; unset: evidence has no metrics (a note says so) and "
            "remediation.verify cannot be used."
        ),
    )
    timeout_seconds: float = Field(default=10.0, gt=0, description="Timeout of each query.")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)


class VerifySettings(_Group):
    """Optional check after an action that the error rate falls (read from ``prometheus``)."""

    promql: str | None = Field(
        default=None,
        description="Query giving the error rate, e.g. sum(rate(posthog_errors_total[5m])).",
    )
    window_seconds: float = Field(
        default=300.0, gt=0, description="How long the rate has to start falling."
    )
    poll_seconds: float = Field(default=15.0, gt=0, description="Interval between queries.")

    @model_validator(mode="before")
    @classmethod
    def _one_prometheus(cls, data: Any) -> Any:
        return _moved(data, {"prometheus_url": "prometheus.url"})


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
    approval_timeout_seconds: float = Field(
        default=900.0,
        gt=0,
        description=(
            "How long an action waits for approval; then it is marked expired and escalated "
            "(a page and a Slack message: do it by hand)."
        ),
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
                        f"action {action.name}: value {quoted(action.value or '')} not allowed for "
                        f"{action.env}"
                    )
            if action.kind == "copy_api_key" and self.target.source_secret is None:
                raise ValueError(f"action {action.name}: copy_api_key needs target.source_secret")
        return self


def _http_url(value: str) -> str:
    if not re.match(r"https?://[^/\s]+", value):
        raise ValueError("must be an http:// or https:// URL")
    return value


class ClassRule(_Group):
    """One error-class rule: if any of ``labels`` fully matches ``pattern``, the class is set.

    Rules are tried in order and the first match wins. Patterns are RE2 regular expressions
    (Python's syntax without backreferences and lookaround), matched against the whole label
    value, ignoring case and surrounding spaces. RE2 matches in time linear in the value, so
    no pattern, such as ``(a+)+$``, can freeze the service on a hostile label.
    """

    labels: list[str] = Field(min_length=1, description="Alert labels to look at.")
    pattern: str = Field(
        min_length=1, description="RE2 regex matched against each whole label value."
    )
    error_class: ErrorClass = Field(description="The class when the pattern matches.")
    _regex: LabelPattern | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _compile(self) -> ClassRule:
        try:
            self._regex = re2.compile(self.pattern, _RE2_OPTIONS)
        except re2.error as e:
            raise ValueError(
                f"pattern {quoted(self.pattern)} is not a valid regex for RE2"
                f" ({_re2_reason(e)}); RE2 matches in linear time, so backreferences and"
                " lookaround are refused"
            ) from None
        return self

    @property
    def regex(self) -> LabelPattern:
        assert self._regex is not None
        return self._regex


class LabelPattern(Protocol):
    """A compiled rule pattern, as triage uses it."""

    def fullmatch(self, text: str) -> object | None: ...


def _re2_options() -> Any:
    options = re2.Options()
    options.case_sensitive = False
    options.log_errors = False  # a refused pattern is reported once, in the config error
    return options


_RE2_OPTIONS = _re2_options()


class LinePattern(Protocol):
    """A compiled evidence pattern: found anywhere in a log line."""

    def search(self, text: str) -> object | None: ...


def _re2_log_options() -> Any:
    # Case as the pattern says (the default pattern asks for (?i) itself).
    options = re2.Options()
    options.log_errors = False  # a refused pattern is reported once, in the config error
    return options


_RE2_LOG_OPTIONS = _re2_log_options()


def _re2_reason(error: Exception) -> str:
    """RE2's reason for refusing a pattern, as text (it comes as bytes)."""
    first = error.args[0] if error.args else None
    return first.decode() if isinstance(first, bytes) else str(error)


# What a posthog_errors_total alert carries: an HTTP status in ``status_code`` (or ``code``),
# and for failures without one an error name in ``error_type``/``reason``/``code``. Status codes
# come first: they are exact. Words for 5xx come before the network rule, so that
# "gateway_timeout" (504, PostHog's side) is not taken for a network timeout (our side).
_NETWORK_WORDS = (
    r".*(time[ _-]?out|timed[ _-]?out|etimedout|dns|nxdomain|name[ _-]?resolution|getaddrinfo"
    r"|enotfound|eai_again|no[ _-]?such[ _-]?host|connection[ _-]?(refused|reset|error|aborted"
    r"|closed)|conn[ _-]?(refused|reset)|econnrefused|econnreset|econnaborted|ehostunreach"
    r"|enetunreach|host[ _-]?unreachable|network[ _-]?unreachable|broken[ _-]?pipe|epipe|tls"
    r"|ssl|certificate|x509|handshake|socket|network).*"
)
DEFAULT_CLASS_RULES: tuple[ClassRule, ...] = (
    ClassRule(labels=["status_code", "code"], pattern=r"40[13]", error_class=ErrorClass.AUTH),
    ClassRule(labels=["status_code", "code"], pattern=r"429", error_class=ErrorClass.RATE_LIMITED),
    ClassRule(
        labels=["status_code", "code"], pattern=r"50[0234]", error_class=ErrorClass.UPSTREAM_ERROR
    ),
    # The error class named outright, as the chart's alert rules label it.
    *(
        ClassRule(labels=["error_type"], pattern=cls.value, error_class=cls)
        for cls in (
            ErrorClass.AUTH,
            ErrorClass.RATE_LIMITED,
            ErrorClass.UPSTREAM_ERROR,
            ErrorClass.NETWORK,
        )
    ),
    ClassRule(
        labels=["error_type", "reason", "code"],
        pattern=r".*(unauthori[sz]ed|forbidden|invalid[ _-]?(api[ _-]?)?(key|token)"
        r"|auth(entication|orization)?[ _-]?(error|failed|failure)).*",
        error_class=ErrorClass.AUTH,
    ),
    ClassRule(
        labels=["error_type", "reason", "code"],
        pattern=r".*(rate[ _-]?limit(ed)?|too[ _-]?many[ _-]?requests|throttl(ed|ing)).*",
        error_class=ErrorClass.RATE_LIMITED,
    ),
    ClassRule(
        labels=["error_type", "reason", "code"],
        pattern=r".*(internal[ _-]?server[ _-]?error|server[ _-]?error|bad[ _-]?gateway"
        r"|service[ _-]?unavailable|gateway[ _-]?time[ _-]?out|5xx|upstream[ _-]?error).*",
        error_class=ErrorClass.UPSTREAM_ERROR,
    ),
    ClassRule(
        labels=["error_type", "reason", "code"],
        pattern=_NETWORK_WORDS,
        error_class=ErrorClass.NETWORK,
    ),
    ClassRule(
        labels=["alertname"],
        pattern=r".*(auth|unauthori[sz]ed|forbidden|credential).*",
        error_class=ErrorClass.AUTH,
    ),
    ClassRule(
        labels=["alertname"],
        pattern=r".*(rate[ _-]?limit|throttl|429).*",
        error_class=ErrorClass.RATE_LIMITED,
    ),
    ClassRule(
        labels=["alertname"],
        pattern=r".*(5xx|server[ _-]?error|unavailable|upstream).*",
        error_class=ErrorClass.UPSTREAM_ERROR,
    ),
    ClassRule(
        labels=["alertname"],
        pattern=r".*(network|timeout|unreachable|dns|connection).*",
        error_class=ErrorClass.NETWORK,
    ),
)

DEFAULT_SEVERITY_LABELS: dict[str, Severity] = {
    "critical": Severity.P1,
    "error": Severity.P2,
    "warning": Severity.P3,
    "info": Severity.P4,
}

# Without a priority or severity label: auth fails every call (a complete outage of the
# integration); 429 and 5xx fail some calls (degraded); network errors degrade too; an
# unrecognised error is a minor impact until someone looks.
DEFAULT_CLASS_SEVERITY: dict[ErrorClass, Severity] = {
    ErrorClass.AUTH: Severity.P1,
    ErrorClass.RATE_LIMITED: Severity.P2,
    ErrorClass.UPSTREAM_ERROR: Severity.P2,
    ErrorClass.NETWORK: Severity.P2,
    ErrorClass.UNKNOWN: Severity.P3,
}

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DEFAULT_BUSINESS_DAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri")


class UpstreamStatusSettings(_Group):
    """PostHog's own status page, read in the Statuspage format (step 1 of the decision tree)."""

    url: str = Field(
        default="https://status.posthog.com/api/v2/status.json",
        description="Statuspage-format status.json or summary.json (summary lists incidents).",
    )
    timeout_seconds: float = Field(
        default=3.0, gt=0, le=60, description="Whole-request timeout; beyond it: 'unknown'."
    )
    cache_ttl_seconds: float = Field(
        default=30.0, ge=0, le=3600, description="How long an answer (or failure) is reused."
    )
    max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Larger answers are treated as malformed."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return _http_url(value)


class HealthCheckSettings(_Group):
    """Our integration's own health endpoint (the runbook's ``curl .../health | jq ...``)."""

    url: str | None = Field(
        default=None, description="Health URL answering JSON; unset: the step is skipped."
    )
    path: str = Field(
        default="services.posthog.status",
        pattern=r"^[^.\s]+(\.[^.\s]+)*$",
        description="Dotted path to the status value inside the JSON (list indexes allowed).",
    )
    healthy_values: list[str] = Field(
        default_factory=lambda: ["ok", "healthy", "up"],
        min_length=1,
        description="Values that mean healthy (compared ignoring case).",
    )
    timeout_seconds: float = Field(
        default=3.0, gt=0, le=60, description="Whole-request timeout; beyond it: unhealthy."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value)


class TriageSettings(_Group):
    """How alerts are classified, how severe they are, and where the decision tree looks."""

    rules: list[ClassRule] = Field(
        default_factory=lambda: list(DEFAULT_CLASS_RULES),
        description="Error-class rules, first match wins; no match: 'unknown'.",
    )
    priority_label: str = Field(
        default="priority", description="Label holding an explicit P1..P4; it wins over all."
    )
    severity_label: str = Field(
        default="severity", description="Label holding Alertmanager's usual severity word."
    )
    severity_labels: dict[str, Severity] = Field(
        default_factory=lambda: dict(DEFAULT_SEVERITY_LABELS),
        description="Severity word (any case) to P1..P4.",
    )
    class_severity: dict[ErrorClass, Severity] = Field(
        default_factory=lambda: dict(DEFAULT_CLASS_SEVERITY),
        description="Severity when the alert has neither priority nor a known severity word.",
    )
    class_severity_overrides: dict[ErrorClass, Severity] = Field(
        default_factory=dict,
        description="Severity forced for a class, over the severity label (not over priority).",
    )
    business_day_start_hour: int = Field(
        default=9, ge=0, le=23, description="P4 is due at this hour (UTC) of the next business day."
    )
    business_days: list[Weekday] = Field(
        default_factory=lambda: list(DEFAULT_BUSINESS_DAYS),
        min_length=1,
        description="Days counted as business days for P4.",
    )
    cluster_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120, description="Timeout for each question asked of the cluster."
    )
    upstream: UpstreamStatusSettings = UpstreamStatusSettings()
    health: HealthCheckSettings = HealthCheckSettings()

    @field_validator("severity_labels")
    @classmethod
    def _lower_words(cls, value: dict[str, Severity]) -> dict[str, Severity]:
        return {word.strip().lower(): sev for word, sev in value.items()}

    @field_validator("class_severity")
    @classmethod
    def _every_class(cls, value: dict[ErrorClass, Severity]) -> dict[ErrorClass, Severity]:
        # Setting one class in YAML must not leave the others without a severity.
        return {**DEFAULT_CLASS_SEVERITY, **value}


def _base_url(value: str, field: str) -> str:
    if not re.match(r"https?://[^/\s]+", value):
        raise ValueError(f"{field} must be an http(s) URL")
    return value.rstrip("/")


# A DNS name, an IPv4 address or an IPv6 address without brackets (as urlsplit reports it).
HOST_NAME = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?|[0-9A-Fa-f.]*:[0-9A-Fa-f:.]*"
)


class PagerDutyWebhookSettings(_Group):
    """PagerDuty webhooks (v3) in: what people do in PagerDuty, on our incidents' timelines.

    Each request is signed with the subscription's secret (``X-PagerDuty-Signature``); while a
    secret rotates, both the old and the new one are listed here and either one verifies.
    """

    secrets: tuple[SecretSource, ...] = Field(
        min_length=1,
        description=(
            "Signing secrets of the webhook subscription; a request signed with any one of "
            "them is accepted (list the old and the new one while rotating)."
        ),
    )
    max_body_bytes: int = Field(
        default=65_536,
        ge=1024,
        le=1_048_576,
        description="Largest accepted webhook body; larger requests get 413.",
    )


class PagerDutySettings(_Group):
    """PagerDuty Events API v2: alerts (trigger, acknowledge, resolve) and change events."""

    routing_key: RoutingKeySource = Field(
        description="The 32-character integration key of an Events API v2 integration."
    )
    events_url: str = Field(
        default="https://events.pagerduty.com",
        description=(
            "Events API base URL, without /v2: https://events.pagerduty.com (US) or "
            "https://events.eu.pagerduty.com (EU)."
        ),
    )
    acknowledge_on_action: bool = Field(
        default=False,
        description="Send 'acknowledge' once a remediation has been applied to the incident.",
    )
    source: str = Field(
        default="posthog-integration",
        min_length=1,
        description="payload.source: the affected system, as responders know it.",
    )
    component: str = Field(default="posthog", description="payload.component.")
    group: str = Field(default="posthog-integration", description="payload.group.")
    dashboard_url: str | None = Field(
        default=None, description="A dashboard linked from every alert (e.g. Grafana)."
    )
    runbook_url: str | None = Field(
        default=None, description="The runbook linked from every alert."
    )
    rate_limit_per_minute: int = Field(
        default=120,
        ge=1,
        description="Events sent per minute per routing key at most (PagerDuty allows ~120).",
    )
    link_hosts: tuple[str, ...] | None = Field(
        default=None,
        description=(
            "Host names that links taken from alerts (an alert's generatorURL, Alertmanager's "
            "externalURL) may point to; other links are left out. Unset: the host of the "
            "configured Prometheus URL and the host of Alertmanager's externalURL."
        ),
    )
    timeout_seconds: float = Field(default=10.0, gt=0, description="Per-request timeout.")
    webhook: PagerDutyWebhookSettings | None = Field(
        default=None,
        description=(
            "Accept PagerDuty webhooks (v3) on POST /webhook/pagerduty: acknowledgements and "
            "other changes recorded on the incident. Unset: every request there gets 401."
        ),
    )

    @model_validator(mode="after")
    def _urls(self) -> PagerDutySettings:
        object.__setattr__(self, "events_url", _base_url(self.events_url, "events_url"))
        if self.link_hosts is not None:
            for host in self.link_hosts:
                if not HOST_NAME.fullmatch(host):
                    raise ValueError(
                        f"link_hosts: '{host}' is not a host name (no scheme, port or path)"
                    )
            object.__setattr__(self, "link_hosts", tuple(h.lower() for h in self.link_hosts))
        return self


class StatuspageTemplates(_Group):
    """Customer-facing text, from the runbook's external (status page) template.

    ``{impact}`` is replaced by the impact text for the incident's severity and
    ``{timestamp}`` by the time of the update (UTC).
    """

    name: str = Field(
        default="PostHog Integration Issue", max_length=255, description="Incident name."
    )
    investigating: str = Field(
        default=(
            "We're experiencing issues with our PostHog integration.\n"
            "Some users may experience {impact}.\n"
            "We're actively investigating and will provide updates.\n"
            "Last updated: {timestamp}"
        ),
        description="Body while the cause is being investigated.",
    )
    identified: str = Field(
        default=(
            "We have identified the cause of the issues with our PostHog integration.\n"
            "Some users may experience {impact}.\n"
            "We're working on a fix and will provide updates.\n"
            "Last updated: {timestamp}"
        ),
        description="Body once the cause is known.",
    )
    monitoring: str = Field(
        default=(
            "A fix for the issues with our PostHog integration has been applied.\n"
            "We're monitoring the results.\n"
            "Last updated: {timestamp}"
        ),
        description="Body once a remediation has been applied.",
    )
    resolved: str = Field(
        default=(
            "The issues with our PostHog integration have been resolved.\nLast updated: {timestamp}"
        ),
        description="Body when the incident is resolved.",
    )
    impact: dict[Severity, str] = Field(
        default={
            Severity.P1: "analytics features being unavailable",
            Severity.P2: "delays or errors in analytics features",
            Severity.P3: "delays in analytics data",
            Severity.P4: "no noticeable impact",
        },
        description="The '[specific impact]' of the template, per severity.",
    )

    @model_validator(mode="after")
    def _placeholders(self) -> StatuspageTemplates:
        for field in ("investigating", "identified", "monitoring", "resolved"):
            text: str = getattr(self, field)
            try:
                text.format(impact="", timestamp="")
            except (KeyError, IndexError, ValueError) as e:
                raise ValueError(
                    f"{field}: only {{impact}} and {{timestamp}} may be used "
                    f"({type(e).__name__}: {e})"
                ) from None
        return self


class StatuspageSettings(_Group):
    """Atlassian Statuspage (manage API v1): customer-facing incidents and component status."""

    api_base: str = Field(
        default="https://api.statuspage.io/v1", description="Manage API base URL."
    )
    page_id: str = Field(min_length=1, description="The page's id.")
    component_id: str = Field(
        min_length=1, description="The component that stands for the PostHog integration."
    )
    api_key: SecretSource = Field(description="API key, sent as 'Authorization: OAuth <key>'.")
    severities: tuple[Severity, ...] = Field(
        default=(Severity.P1, Severity.P2),
        description="Severities that reach the status page; others stay internal.",
    )
    hold_off_seconds: float = Field(
        default=300.0,
        ge=0,
        description=(
            "How long an incident must last before customers see it: one resolved sooner "
            "(a flapping alert) never reaches the status page."
        ),
    )
    deliver_notifications: bool = Field(
        default=True, description="Let Statuspage notify the page's subscribers."
    )
    templates: StatuspageTemplates = StatuspageTemplates()
    timeout_seconds: float = Field(default=10.0, gt=0, description="Per-request timeout.")

    @model_validator(mode="after")
    def _urls(self) -> StatuspageSettings:
        object.__setattr__(self, "api_base", _base_url(self.api_base, "api_base"))
        return self


# Slack's mention syntax: a member (U… or, on Enterprise Grid, W…) or a user group (S…), with
# an optional label; anything else in a message is escaped and pings nobody.
_SLACK_LABEL = r"(\|[^<>|&\x00-\x1f]{1,64})?"
SLACK_PERSON_OR_GROUP = re.compile(
    rf"<@[UW][A-Z0-9]{{2,20}}{_SLACK_LABEL}>|<!subteam\^S[A-Z0-9]{{2,20}}{_SLACK_LABEL}>"
)
SLACK_SPECIAL = re.compile(r"<!(here|channel)>")
# A public (C…) or private (G…, older private channels) channel's ID; a name would not do.
SLACK_CHANNEL_ID = re.compile(r"[CG][A-Z0-9]{2,20}")


def _not_a_mention(value: str, expected: str) -> str:
    return (
        f"'{value}' is not a Slack mention and would ping nobody: write {expected} "
        "(the ID is on the member's profile or the group's page)"
    )


class SlackSettings(_Group):
    """Slack: the runbook's internal incident message, through an incoming webhook (one
    message each time) or a bot token (one thread per incident, its top message kept current).
    """

    webhook_url: SecretUrlSource | None = Field(
        default=None,
        description=(
            "The incoming webhook URL (it is the credential: keep it secret). Either this or "
            "bot_token and channel."
        ),
    )
    bot_token: SlackBotTokenSource | None = Field(
        default=None,
        description=(
            "A Slack app's bot token (xoxb-…, scope chat:write; the app is a member of the "
            "channel): one thread per incident instead of the webhook's separate messages."
        ),
    )
    channel: str | None = Field(
        default=None,
        description="The channel's ID (C… or G…, from its details), where the threads open.",
    )
    api_base: str = Field(
        default="https://slack.com/api", description="Web API base URL (with a bot token)."
    )
    incident_commander: str | None = Field(
        default=None,
        description=(
            "Who leads the response, pinged by every message, in Slack's own syntax: "
            "<@U…> for a person, <!subteam^S…> for a user group (an optional |label after "
            "the ID keeps it readable). Unset: 'not assigned'."
        ),
    )
    mentions: tuple[str, ...] = Field(
        default=(),
        max_length=10,
        description=(
            "Also pinged when an incident opens, in Slack's syntax: <@U…>, <!subteam^S…>, "
            "<!here> or <!channel>."
        ),
    )
    next_update_minutes: int = Field(
        default=30, ge=1, description="'Next update' is this many minutes after each message."
    )
    signing_secret: SecretSource | None = Field(
        default=None,
        description=(
            "The Slack app's signing secret: with it, approval messages carry Approve/Deny "
            "buttons, and their clicks (POST /slack/interactions) are checked against it. "
            "Unset: no buttons, approvals from the incident page only."
        ),
    )
    timeout_seconds: float = Field(default=10.0, gt=0, description="Per-request timeout.")

    @model_validator(mode="after")
    def _mode(self) -> SlackSettings:
        if self.webhook_url is not None and self.bot_token is not None:
            raise ValueError(
                "set either webhook_url (messages) or bot_token with channel (threads), not both"
            )
        if self.webhook_url is None and self.bot_token is None:
            raise ValueError("set webhook_url, or bot_token with channel")
        if self.bot_token is not None and self.channel is None:
            raise ValueError("bot_token needs channel: the ID of the channel to post in (C…)")
        if self.bot_token is None and self.channel is not None:
            raise ValueError("channel is used with bot_token only; a webhook has its own channel")
        object.__setattr__(self, "api_base", _base_url(self.api_base, "api_base"))
        return self

    @property
    def threads(self) -> bool:
        """Whether each incident is one thread (a bot token) rather than separate messages."""
        return self.bot_token is not None

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        if value is not None and not SLACK_CHANNEL_ID.fullmatch(value):
            raise ValueError(
                f"'{value}' is not a channel ID: write its ID (C… or G…, at the bottom of the "
                "channel's details), not its name"
            )
        return value

    @field_validator("incident_commander")
    @classmethod
    def _commander(cls, value: str | None) -> str | None:
        if value is not None and not SLACK_PERSON_OR_GROUP.fullmatch(value):
            raise ValueError(_not_a_mention(value, "<@U…> for a person, <!subteam^S…> for a group"))
        return value

    @field_validator("mentions")
    @classmethod
    def _mentions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for mention in value:
            if not (SLACK_PERSON_OR_GROUP.fullmatch(mention) or SLACK_SPECIAL.fullmatch(mention)):
                raise ValueError(
                    _not_a_mention(mention, "<@U…>, <!subteam^S…>, <!here> or <!channel>")
                )
        return value


class OutboxSettings(_Group):
    """Delivery of stored notifications: polling, retries and back-off."""

    poll_interval_seconds: float = Field(
        default=1.0, gt=0, description="How often waiting notifications are looked at."
    )
    initial_backoff_seconds: float = Field(
        default=1.0, gt=0, description="First wait after a temporary failure."
    )
    max_backoff_seconds: float = Field(
        default=300.0, gt=0, description="Longest wait between attempts (before jitter)."
    )
    jitter_seconds: float = Field(
        default=1.0, ge=0, description="Random extra wait, up to this much, per attempt."
    )
    max_retry_after_seconds: float = Field(
        default=3600.0, gt=0, description="A destination's Retry-After is honoured up to this."
    )
    retention_hours: float = Field(
        default=720.0,
        gt=0,
        description="How long delivered, failed and skipped notifications are kept.",
    )
    concurrency: int = Field(
        default=8,
        ge=1,
        description=(
            "Deliveries in flight at once (one per incident and destination), and how many one"
            " pass starts, the most severe first, before it looks at the queue again."
        ),
    )


class NotifySettings(_Group):
    """Who is told about incidents. A destination left out is written to the log instead."""

    pagerduty: PagerDutySettings | None = None
    statuspage: StatuspageSettings | None = None
    slack: SlackSettings | None = None
    outbox: OutboxSettings = OutboxSettings()


class EvidenceQuery(_Group):
    """One PromQL query captured over the incident window with ``query_range``."""

    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="File name in the bundle (metrics/<name>.json); lower case, digits, - and _.",
    )
    query: str = Field(min_length=1, description="PromQL expression evaluated over the window.")


class EvidencePrometheusSettings(_Group):
    """Metrics captured for the evidence bundle and the postmortem's impact section, from the
    Prometheus of the top-level ``prometheus`` group."""

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

    @model_validator(mode="before")
    @classmethod
    def _one_prometheus(cls, data: Any) -> Any:
        return _moved(
            data, {"url": "prometheus.url", "timeout_seconds": "prometheus.timeout_seconds"}
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
        default=True,
        description=(
            "Read pod logs and events when a cluster is configured ('kubernetes.mode'); the "
            "pods are those of 'remediation.target' (namespace, deployment, pod_selector)."
        ),
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
        description=(
            "RE2 regular expression selecting error lines from the last hour of logs (found "
            "anywhere in a line; backreferences and lookaround are refused)."
        ),
    )
    max_error_lines: int = Field(
        default=1000, ge=1, description="Error lines kept per container at most (the newest)."
    )
    max_events: int = Field(default=500, ge=1, description="Kubernetes events listed at most.")
    _error_regex: LinePattern | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _pattern_compiles(self) -> EvidenceLogsSettings:
        # RE2, as for triage rules: pod log lines are written by whatever runs in the pod, and
        # a backtracking engine could spend minutes on one line while evidence is collected.
        try:
            self._error_regex = re2.compile(self.error_pattern, _RE2_LOG_OPTIONS)
        except re2.error as e:
            raise ValueError(
                f"error_pattern is not a valid regex for RE2 ({_re2_reason(e)}); RE2 matches in"
                " linear time, so backreferences and lookaround are refused"
            ) from None
        return self

    @property
    def error_regex(self) -> LinePattern:
        """The compiled ``error_pattern``."""
        assert self._error_regex is not None
        return self._error_regex


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
    retention_days: float = Field(
        default=30.0,
        gt=0,
        description=(
            "How long the bundles of a resolved incident are kept (days after it resolved); "
            "the incident's record stays for store.incident_retention_days."
        ),
    )
    max_total_mib: int = Field(
        default=512,
        ge=1,
        description=(
            "Most MiB of bundles kept in 'directory': past it the bundles of resolved "
            "incidents are deleted, oldest first. An open incident's bundles are always kept."
        ),
    )
    logs: EvidenceLogsSettings = EvidenceLogsSettings()
    prometheus: EvidencePrometheusSettings = EvidencePrometheusSettings()


class ResponderSettings(_Group):
    """What ties triage, remediation, notifications and evidence together for each incident."""

    revert_check_seconds: float = Field(
        default=15.0,
        gt=0,
        le=3600,
        description="How often reverts whose hold-down has passed are looked for.",
    )
    collect_evidence: bool = Field(
        default=True,
        description="Collect an evidence bundle when an incident opens and when it resolves.",
    )


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
    worker: WorkerSettings = WorkerSettings()
    # Built when the settings are, not at import: its identity names this process.
    leadership: LeadershipSettings = Field(default_factory=LeadershipSettings)
    logging: LoggingSettings = LoggingSettings()
    kubernetes: KubernetesSettings = KubernetesSettings()
    prometheus: PrometheusSettings = PrometheusSettings()
    remediation: RemediationSettings = RemediationSettings()
    notify: NotifySettings = NotifySettings()
    triage: TriageSettings = TriageSettings()
    evidence: EvidenceSettings = EvidenceSettings()
    ui: UiSettings = UiSettings()

    responder: ResponderSettings = ResponderSettings()

    @model_validator(mode="after")
    def _verify_has_prometheus(self) -> Settings:
        if self.remediation.verify.promql is not None and self.prometheus.url is None:
            raise ValueError("remediation.verify.promql needs prometheus.url")
        return self

    @model_validator(mode="after")
    def _idle_transactions_end_within_the_lease(self) -> Settings:
        # The store ends a transaction left idle (a replica paused inside one) after the
        # statement timeout; until then it holds the lease row, and no successor can take over.
        timeout = self.store.postgres.statement_timeout_seconds
        if self.store.backend == "postgres" and timeout >= self.leadership.lease_seconds:
            raise ValueError(
                "store.postgres.statement_timeout_seconds must be shorter than "
                "leadership.lease_seconds"
            )
        return self

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


def _where(loc: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _problems(err: ValidationError) -> list[str]:
    """Every problem pydantic found, each as ``field.path: message``."""
    return [f"{_where(e['loc'])}: {e['msg'].removeprefix('Value error, ')}" for e in err.errors()]


def load_settings(path: Path | None) -> Settings:
    """Load and validate settings from ``path`` (the embedded default when ``None``).

    Raises :class:`ConfigError` listing every problem, each naming the offending field.
    Secrets are not read here: see :func:`require_secrets`.
    """
    source = path or example_config_path()
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(source), [f"cannot read config file: {e.strerror}"]) from None
    try:
        data: Any = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(str(source), [f"not valid YAML{where}"]) from None
    if not isinstance(data, dict):
        raise ConfigError(str(source), ["the top level must be a mapping of setting groups"])
    try:
        return Settings(**data)
    except ValidationError as e:
        raise ConfigError(str(source), _problems(e)) from None


@dataclass(frozen=True)
class SecretProblem:
    """A configured secret that cannot be read now."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}"


def _secret_sources(model: BaseModel, path: str) -> Iterator[tuple[str, SecretSource]]:
    """Every :class:`SecretSource` in ``model``, with its dotted field path."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        where = f"{path}.{name}" if path else name
        if isinstance(value, SecretSource):
            yield where, value
        elif isinstance(value, BaseModel):
            yield from _secret_sources(value, where)
        elif isinstance(value, list | tuple):  # e.g. UI users, or secrets while one rotates
            for index, item in enumerate(value):
                if isinstance(item, SecretSource):
                    yield f"{where}.{index}", item
                elif isinstance(item, BaseModel):
                    yield from _secret_sources(item, f"{where}.{index}")


def secret_problems(settings: Settings) -> list[SecretProblem]:
    """Read every configured secret; those that cannot be read, each with its field and why.

    Secrets that can be read are remembered, so that serving uses what was checked.
    """
    problems: list[SecretProblem] = []
    for field, source in _secret_sources(settings, ""):
        try:
            source.resolve()
        except SecretUnavailable as e:
            problems.append(SecretProblem(field, str(e)))
    return problems


def require_secrets(settings: Settings, source: Path | None) -> None:
    """Read every configured secret, as serving needs them; :class:`ConfigError` naming each
    one that cannot be read (``source`` is the config file named in the message)."""
    problems = secret_problems(settings)
    if problems:
        raise ConfigError(str(source or example_config_path()), [str(p) for p in problems])
