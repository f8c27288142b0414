"""The Alertmanager webhook payload (version 4), as a strict pydantic model.

Alertmanager posts the whole alert group on every notification, so the model keeps every
field needed to recognise a repeat (group key, fingerprint, status, startsAt, endsAt) and to
explain an incident later (labels, annotations, generatorURL).
See https://prometheus.io/docs/alerting/latest/configuration/#webhook_config.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, cast

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

__all__ = ["Alert", "AlertStatus", "JsonInteger", "Rfc3339Time", "WebhookPayload"]

AlertStatus = Literal["firing", "resolved"]

# Alertmanager sends "0001-01-01T00:00:00Z" for an alert that has not ended.
ZERO_TIME_YEAR = 1


NOT_A_TIME = "expected an RFC 3339 time, not a number"
NOT_AN_INTEGER = "expected an integer"


def _not_a_number(value: object) -> object:
    if isinstance(value, int | float):  # bool included
        raise ValueError(NOT_A_TIME)
    return value


# From 2**52 on, a double has no room for a fraction: 4503599627370496.5 parses as an integer.
# A count written as a float is taken only below that, where a fraction would still show.
FLOAT_EXACT_LIMIT = 2.0**52


def _json_integer(value: object) -> object:
    # JSON's integers include 5.0 and 5.0E3; a string or a boolean is not one.
    if isinstance(value, float) and value.is_integer() and abs(value) < FLOAT_EXACT_LIMIT:
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(NOT_AN_INTEGER)
    return value


class _JsonGuard:
    """A check run before a type's own validation: natively for JSON, in Python otherwise.

    Every webhook is validated from JSON, so there the check is a pydantic-core schema (Python
    functions called per field cost about a tenth of a webhook's validation). It accepts what
    ``check`` passes through unchanged and answers what ``check`` refuses with the same error
    (type ``value_error``, the same message). Python objects (``model_validate``) can be of any
    type, so they still go through ``check`` itself. The JSON schema is the type's own.
    """

    def __init__(self, check: Callable[[Any], object], passes: CoreSchema, refusal: str) -> None:
        self._check = check
        self._passes = passes
        self._refusal = refusal

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        inner = handler(source)  # the type with its constraints (``ge``)
        guard = core_schema.custom_error_schema(
            self._passes,
            custom_error_type="value_error",
            custom_error_context={"error": self._refusal},
        )
        return core_schema.json_or_python_schema(
            json_schema=core_schema.chain_schema([guard, inner]),
            python_schema=core_schema.no_info_before_validator_function(self._check, inner),
        )

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # The JSON check is an implementation detail: describe the type as before.
        return handler(cast(core_schema.JsonOrPythonSchema, schema)["python_schema"])


# What JSON calls an integer (see _json_integer): an integer, or a float with no fraction that
# is below 2**52 either way (int() of the float then turns it into that integer).
_JSON_INTEGER = core_schema.union_schema(
    [
        core_schema.int_schema(strict=True),
        core_schema.chain_schema(
            [
                core_schema.float_schema(strict=True, gt=-FLOAT_EXACT_LIMIT, lt=FLOAT_EXACT_LIMIT),
                core_schema.int_schema(),
            ]
        ),
    ],
    mode="left_to_right",
)
JsonInteger = Annotated[int, _JsonGuard(_json_integer, _JSON_INTEGER, NOT_AN_INTEGER)]

# A time as Alertmanager sends it (RFC 3339): with an offset, so that times compare (a naive one
# could not be compared with the others), and never a number taken for a Unix timestamp.
# From JSON, anything but a number or a boolean goes on to the time's own validation (which
# refuses null, arrays and objects as before).
_NOT_A_NUMBER = core_schema.union_schema(
    [
        core_schema.str_schema(strict=True),
        core_schema.none_schema(),
        core_schema.list_schema(),
        core_schema.dict_schema(),
    ],
    mode="left_to_right",
)
Rfc3339Time = Annotated[AwareDatetime, _JsonGuard(_not_a_number, _NOT_A_NUMBER, NOT_A_TIME)]

# Times an alert can really carry, by the year as written: 1970 to 2199. A start in the year
# 9999 is a broken clock or a hostile sender, and date arithmetic on it fails later
# (acknowledge-by, charts), where nobody would hear of the alert any more. Checked on the text,
# so that the rule is exactly what the API description's pattern says, whatever the offset.
REAL_YEARS = r"(19[7-9][0-9]|2[01][0-9][0-9])-"
NOT_A_REAL_TIME = "expected an RFC 3339 time from the year 1970 to 2199"
# Alertmanager writes its zero time for an alert that has not ended.
_ZERO_TIME = r"0001-01-01T"


def _real_time(pattern: str) -> Callable[[object], object]:
    compiled = re.compile(pattern)

    def check(value: object) -> object:
        if isinstance(value, str) and not compiled.match(value):
            raise ValueError(NOT_A_REAL_TIME)
        return value

    return check


def _written_as(pattern: str) -> CoreSchema:
    return core_schema.union_schema(
        [
            core_schema.str_schema(strict=True, pattern=pattern),
            core_schema.none_schema(),
            core_schema.list_schema(),
            core_schema.dict_schema(),
        ],
        mode="left_to_right",
    )


_START = "^" + REAL_YEARS
_END = f"^({_ZERO_TIME}|{REAL_YEARS})"
# The last annotation runs first: a number is refused as one before its year is looked at.
StartTime = Annotated[
    AwareDatetime,
    _JsonGuard(_real_time(_START), _written_as(_START), NOT_A_REAL_TIME),
    _JsonGuard(_not_a_number, _NOT_A_NUMBER, NOT_A_TIME),
]
EndTime = Annotated[
    AwareDatetime,
    _JsonGuard(_real_time(_END), _written_as(_END), NOT_A_REAL_TIME),
    _JsonGuard(_not_a_number, _NOT_A_NUMBER, NOT_A_TIME),
]


# What an alert can carry, at most. Real ones are far smaller; the bounds keep one
# notification from making every message, page and file built from it unboundedly large.
MAX_LABELS = 64  # labels (or annotations) per alert, or per group's label sets
MAX_LABEL_NAME_CHARS = 256
MAX_LABEL_VALUE_CHARS = 4096
MAX_ANNOTATION_VALUE_CHARS = 16384  # descriptions are prose
MAX_GROUP_KEY_CHARS = 4096

_LabelName = Annotated[str, StringConstraints(max_length=MAX_LABEL_NAME_CHARS)]
Labels = Annotated[
    dict[_LabelName, Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE_CHARS)]],
    Field(max_length=MAX_LABELS),
]
Annotations = Annotated[
    dict[_LabelName, Annotated[str, StringConstraints(max_length=MAX_ANNOTATION_VALUE_CHARS)]],
    Field(max_length=MAX_LABELS),
]


class _Model(BaseModel):
    # Unknown fields are tolerated: newer Alertmanager versions may add some.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class Alert(_Model):
    """One alert of the group."""

    status: AlertStatus
    labels: Labels
    annotations: Annotations = Field(default_factory=dict)
    starts_at: StartTime = Field(alias="startsAt")
    ends_at: EndTime | None = Field(default=None, alias="endsAt")
    generator_url: str = Field(default="", alias="generatorURL", max_length=MAX_LABEL_VALUE_CHARS)
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
        """What identifies this alert's state: a resend with the same key is a repeat.

        :meth:`WebhookPayload.dedup_key` writes the same text out for speed: change neither.
        """
        ended = self.ended_at
        ends = ended.isoformat() if ended is not None else ""
        return f"{self.fingerprint}|{self.status}|{self.starts_at.isoformat()}|{ends}"


class WebhookPayload(_Model):
    """A notification: one alert group, version 4."""

    version: Literal["4"]
    group_key: str = Field(alias="groupKey", min_length=1, max_length=MAX_GROUP_KEY_CHARS)
    truncated_alerts: JsonInteger = Field(default=0, alias="truncatedAlerts", ge=0)
    status: AlertStatus
    receiver: str = Field(max_length=MAX_LABEL_VALUE_CHARS)
    group_labels: Labels = Field(default_factory=dict, alias="groupLabels")
    common_labels: Labels = Field(default_factory=dict, alias="commonLabels")
    common_annotations: Annotations = Field(default_factory=dict, alias="commonAnnotations")
    external_url: str = Field(default="", alias="externalURL", max_length=MAX_LABEL_VALUE_CHARS)
    alerts: list[Alert] = Field(min_length=1)

    def dedup_key(self) -> str:
        """A digest of the group key and every alert's state.

        Two notifications with the same digest carry the same news: the second is a resend
        (``group_interval``, or an HA peer) and must not be processed again. Request bytes are
        not used: annotations, URLs and ``truncatedAlerts`` may differ between resends.
        """
        # Each key is the alert's state_key() written out: this runs for every webhook, and the
        # method and property calls cost a sixth of it. A test holds the two (and the digest of a
        # fixed payload) together.
        keys = []
        for alert in self.alerts:
            ends = alert.ends_at
            ended = "" if ends is None or ends.year == ZERO_TIME_YEAR else ends.isoformat()
            keys.append(f"{alert.fingerprint}|{alert.status}|{alert.starts_at.isoformat()}|{ended}")
        keys.sort()
        return hashlib.sha256("\n".join([self.group_key, *keys]).encode()).hexdigest()
