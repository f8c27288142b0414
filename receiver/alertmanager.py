"""The Alertmanager webhook payload (version 4), as a strict pydantic model.

Alertmanager posts the whole alert group on every notification, so the model keeps every
field needed to recognise a repeat (group key, fingerprint, status, startsAt, endsAt) and to
explain an incident later (labels, annotations, generatorURL).
See https://prometheus.io/docs/alerting/latest/configuration/#webhook_config.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

__all__ = ["Alert", "AlertStatus", "JsonInteger", "Rfc3339Time", "WebhookPayload"]

AlertStatus = Literal["firing", "resolved"]

# Alertmanager sends "0001-01-01T00:00:00Z" for an alert that has not ended.
ZERO_TIME_YEAR = 1


def _not_a_number(value: object) -> object:
    if isinstance(value, int | float):  # bool included
        raise ValueError("expected an RFC 3339 time, not a number")
    return value


# From 2**52 on, a double has no room for a fraction: 4503599627370496.5 parses as an integer.
# A count written as a float is taken only below that, where a fraction would still show.
FLOAT_EXACT_LIMIT = 2.0**52


def _json_integer(value: object) -> object:
    # JSON's integers include 5.0 and 5.0E3; a string or a boolean is not one.
    if isinstance(value, float) and value.is_integer() and abs(value) < FLOAT_EXACT_LIMIT:
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("expected an integer")
    return value


JsonInteger = Annotated[int, BeforeValidator(_json_integer)]

# A time as Alertmanager sends it (RFC 3339): with an offset, so that times compare (a naive one
# could not be compared with the others), and never a number taken for a Unix timestamp.
Rfc3339Time = Annotated[AwareDatetime, BeforeValidator(_not_a_number)]


class _Model(BaseModel):
    # Unknown fields are tolerated: newer Alertmanager versions may add some.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Alert(_Model):
    """One alert of the group."""

    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: Rfc3339Time = Field(alias="startsAt")
    ends_at: Rfc3339Time | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL")
    fingerprint: str = Field(min_length=1, max_length=128)

    @property
    def ended_at(self) -> datetime | None:
        """``endsAt``, or ``None`` where Alertmanager sent its zero time."""
        if self.ends_at is None or self.ends_at.year == ZERO_TIME_YEAR:
            return None
        return self.ends_at

    @property
    def alertname(self) -> str:
        return self.labels.get("alertname", "")

    def state_key(self) -> str:
        """What identifies this alert's state: a resend with the same key is a repeat."""
        ended = self.ended_at
        ends = ended.isoformat() if ended is not None else ""
        return f"{self.fingerprint}|{self.status}|{self.starts_at.isoformat()}|{ends}"


class WebhookPayload(_Model):
    """A notification: one alert group, version 4."""

    version: Literal["4"]
    group_key: str = Field(alias="groupKey", min_length=1)
    truncated_alerts: JsonInteger = Field(default=0, alias="truncatedAlerts", ge=0)
    status: AlertStatus
    receiver: str
    group_labels: dict[str, str] = Field(default_factory=dict, alias="groupLabels")
    common_labels: dict[str, str] = Field(default_factory=dict, alias="commonLabels")
    common_annotations: dict[str, str] = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL")
    alerts: list[Alert] = Field(min_length=1)

    def dedup_key(self) -> str:
        """A digest of the group key and every alert's state.

        Two notifications with the same digest carry the same news: the second is a resend
        (``group_interval``, or an HA peer) and must not be processed again. Request bytes are
        not used: annotations, URLs and ``truncatedAlerts`` may differ between resends.
        """
        keys = sorted([alert.state_key() for alert in self.alerts])
        text = "\n".join([self.group_key, *keys])
        return hashlib.sha256(text.encode()).hexdigest()
