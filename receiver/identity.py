"""Incident identity: derived from the alert group and when its episode started, not random.

An incident is one *episode* of one Alertmanager alert group: it opens when the group fires and
ends when every alert it has seen is resolved. Its id is computed from the two things that name
that episode in Alertmanager's own data, so the same notification always yields the same id,
whatever the receiver remembers: after the state directory is lost, a resend of a group that is
still firing maps to the same incident id, hence to the same PagerDuty alert (its ``dedup_key``
is built from the id), and the group's resolve resolves that alert.

The derivation, kept stable across versions (ids appear in PagerDuty, URLs and file names):

- ``group_key``: Alertmanager's ``groupKey``, exactly as received;
- the episode start: the earliest ``startsAt`` among the group's *firing* alerts in the
  notification that opens the incident, as whole microseconds since the Unix epoch (UTC);
- ``digest = sha256(group_key + "\\n" + str(microseconds))``, in lowercase hex;
- the id: ``inc-YYYYMMDD-XXXXXXXXXXXX``, the UTC date of the episode start and the digest's
  first 12 hex digits. Only ``[a-z0-9-]``: safe in URLs, file names and PagerDuty keys.

A new episode of the same group (it fired again after resolving) starts later, so it gets a new
id. The same episode can open a second incident only when it fires again after its incident
resolved with an unchanged ``startsAt`` (Alertmanager's ``resolve_timeout`` passed while
Prometheus was unreachable, or a late resend of an old notification). That is a second
incident, never a merge into the resolved one: the first free id of ``<id>-2``, ``<id>-3``, …
(in the order they open), with a PagerDuty alert of its own. The same suffix separates two
different groups whose ids would coincide (48 bits of digest within one day: not expected).
A suffix exists only in the store: after the state is lost, the next incident of that episode
takes the plain id again.

Limitation: if the alert that started the episode resolves while others keep firing and the
state is then lost, a resend starts from the earliest alert still firing: a new id and a new
PagerDuty alert; the old one is left to be resolved by hand.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from receiver.alertmanager import WebhookPayload

__all__ = ["ID_PREFIX", "Episode", "incident_id_for"]

ID_PREFIX = "inc-"
DIGEST_DIGITS = 12
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Episode:
    """One firing episode of one alert group: what an incident's identity is derived from."""

    group_key: str
    started_at: datetime

    @classmethod
    def of(cls, payload: WebhookPayload) -> Episode | None:
        """The episode a notification opens: ``None`` when none of its alerts is firing."""
        starts = [a.starts_at for a in payload.alerts if a.status == "firing"]
        return cls(payload.group_key, min(starts)) if starts else None

    @property
    def start_micros(self) -> int:
        """The start as whole microseconds since the epoch: one spelling per instant, whatever
        offset Alertmanager wrote it with (``+02:00`` and ``Z`` name the same time)."""
        return (self.started_at - _EPOCH) // _MICROSECOND

    @property
    def digest(self) -> str:
        text = f"{self.group_key}\n{self.start_micros}"
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def day(self) -> str:
        """The start's UTC date as ``YYYYMMDD`` (``00000000`` outside datetime's range)."""
        try:
            day = _EPOCH + self.start_micros * _MICROSECOND
        except OverflowError:
            return "00000000"
        return f"{day.year:04d}{day.month:02d}{day.day:02d}"

    def incident_id(self, ordinal: int = 1) -> str:
        """The id of this episode's ``ordinal``-th incident (1: the plain id; 2: ``…-2``)."""
        base = f"{ID_PREFIX}{self.day}-{self.digest[:DIGEST_DIGITS]}"
        return base if ordinal == 1 else f"{base}-{ordinal}"


def incident_id_for(episode: Episode, *, taken: Callable[[str], bool]) -> str:
    """The episode's first id that ``taken`` says no incident has yet."""
    ordinal = 1
    while taken(candidate := episode.incident_id(ordinal)):
        ordinal += 1
    return candidate
