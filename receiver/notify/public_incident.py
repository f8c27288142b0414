"""The public incident: the one story customers are told, whatever number of incidents we have.

Why one: customers feel one thing, the PostHog integration working or not. A storm of alert
groups is many incidents for us and one problem for them, so every qualifying incident (open,
severity among the status page's severities) feeds the same status-page incident of the
configured page and component. It opens with the first, follows the highest severity while
any is open, and resolves when the last one resolves.

Each incident contributes its latest news (severity and phase); newer news for an incident
replaces older (news carries the order the outbox stored it in). From the contributions that
count:

- the component status follows the highest severity open *now*, up and down (P2 to P1 raises
  it to major outage; when the P1 incident resolves and P2 ones remain it returns to partial
  outage), because the component says what customers feel at this moment;
- the impact only rises while the public incident is open (P2 then P1 makes it critical; it
  stays critical until resolved), because Statuspage keeps an incident's impact in the page's
  history: it says how bad the incident got, not how it is now;
- the phase is the least advanced one among the incidents of the highest severity
  (investigating before identified before monitoring): customers are not told "monitoring"
  while the worst part is still being investigated.

All of it is remembered as strings, in the outbox's memory for the status page (one key per
contributing incident), so it survives restarts; after the memory is lost, the status-page
incident itself is found again by our key in its metadata.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from receiver.runbook import Severity

__all__ = [
    "COMPONENT_STATUS",
    "IMPACT_OVERRIDE",
    "METADATA_NAMESPACE",
    "PHASES",
    "Contribution",
    "Phase",
    "PublicIncident",
    "Told",
    "changes",
    "higher_impact",
    "story_key",
]

Phase = Literal["investigating", "identified", "monitoring", "resolved"]
PHASES: tuple[Phase, ...] = ("investigating", "identified", "monitoring", "resolved")

COMPONENT_STATUS: dict[Severity, str] = {
    Severity.P1: "major_outage",
    Severity.P2: "partial_outage",
    Severity.P3: "degraded_performance",
    Severity.P4: "operational",
}
IMPACT_OVERRIDE: dict[Severity, str] = {
    Severity.P1: "critical",
    Severity.P2: "major",
    Severity.P3: "minor",
    Severity.P4: "none",
}
# Statuspage's impacts, least to most severe ("maintenance" is never ours).
IMPACT_ORDER = ("none", "minor", "major", "critical")

# The status-page incident's metadata: {METADATA_NAMESPACE: {"key": story_key(...)}}.
# Statuspage wants objects as its top-level values.
METADATA_NAMESPACE = "posthog_receiver"

ID_KEY = "incident_id"  # the status-page incident's id (the name earlier versions used too)
SHOWN_KEY = "shown"
CONTRIBUTION_PREFIX = "incident:"


def story_key(component_id: str) -> str:
    """Our key for the public incident of a component, as stored in its metadata."""
    return f"posthog-integration/{component_id}"


def higher_impact(a: str, b: str) -> str:
    """The more severe of two Statuspage impacts (an unknown one counts as none)."""
    rank = {impact: n for n, impact in enumerate(IMPACT_ORDER)}
    return a if rank.get(a, 0) >= rank.get(b, 0) else b


@dataclass(frozen=True)
class Contribution:
    """One incident's latest news for the status page."""

    severity: Severity
    phase: Phase
    seq: int  # the order the news was stored in: a higher seq is newer

    def counts(self, severities: Iterable[Severity]) -> bool:
        """Whether customers hear about it now: open, with a severity they are told of."""
        return self.phase != "resolved" and self.severity in tuple(severities)

    def encode(self) -> str:
        return f"{self.seq} {self.severity.value} {self.phase}"

    @classmethod
    def decode(cls, text: str) -> Contribution | None:
        parts = text.split(" ")
        if len(parts) != 3 or parts[1] not in Severity.__members__ or parts[2] not in PHASES:
            return None
        try:
            seq = int(parts[0])
        except ValueError:
            return None
        return cls(Severity(parts[1]), parts[2], seq)


@dataclass(frozen=True)
class Told:
    """What the status page shows: the incident's status, its impact, the component status."""

    status: Phase
    impact: str
    component_status: str
    severity: Severity  # whose impact text the update carries

    def encode(self) -> str:
        return f"{self.status} {self.impact} {self.component_status} {self.severity.value}"

    @classmethod
    def decode(cls, text: str) -> Told | None:
        parts = text.split(" ")
        if len(parts) != 4 or parts[0] not in PHASES or parts[3] not in Severity.__members__:
            return None
        return cls(parts[0], parts[1], parts[2], Severity(parts[3]))


@dataclass(frozen=True)
class PublicIncident:
    """The public incident as remembered: its status-page id, what it shows, its sources."""

    statuspage_id: str | None
    shown: Told | None
    contributions: Mapping[str, Contribution]

    @classmethod
    def from_state(cls, state: Mapping[str, str]) -> PublicIncident:
        contributions: dict[str, Contribution] = {}
        for key, value in state.items():
            if key.startswith(CONTRIBUTION_PREFIX):
                found = Contribution.decode(value)
                if found is not None:
                    contributions[key.removeprefix(CONTRIBUTION_PREFIX)] = found
        shown = Told.decode(state[SHOWN_KEY]) if state.get(SHOWN_KEY) else None
        return cls(state.get(ID_KEY) or None, shown, contributions)

    def with_news(self, incident_id: str, news: Contribution) -> PublicIncident | None:
        """This public incident with an incident's news; None if the news is older than what
        it already has for that incident (it was stored before, so it says nothing new)."""
        known = self.contributions.get(incident_id)
        if known is not None and known.seq > news.seq:
            return None
        return PublicIncident(
            self.statuspage_id, self.shown, {**self.contributions, incident_id: news}
        )

    def telling(self, severities: Iterable[Severity], *, shown_impact: str | None) -> Told:
        """What customers should see now; ``shown_impact`` is the impact the status-page
        incident already has (None when there is none open), which never goes down."""
        allowed = tuple(severities)
        counting = [c for c in self.contributions.values() if c.counts(allowed)]
        if not counting:
            # The resolve names the impact customers were last told of.
            told_of = [c.severity for c in self.contributions.values() if c.severity in allowed]
            if self.shown is not None:
                severity = self.shown.severity
            else:
                severity = Severity.highest(told_of) if told_of else Severity.P1
            return Told("resolved", shown_impact or "none", "operational", severity)
        severity = Severity.highest([c.severity for c in counting])
        phase = min((c.phase for c in counting if c.severity == severity), key=PHASES.index)
        impact = IMPACT_OVERRIDE[severity]
        if shown_impact is not None:
            impact = higher_impact(shown_impact, impact)
        return Told(phase, impact, COMPONENT_STATUS[severity], severity)

    def state(self, *, statuspage_id: str | None, shown: Told | None) -> dict[str, str]:
        """The memory to keep after showing ``shown`` on ``statuspage_id``: once the
        status-page incident is resolved, nothing (the next incident opens a new one)."""
        if statuspage_id is None or shown is None or shown.status == "resolved":
            return {}
        state = {ID_KEY: statuspage_id, SHOWN_KEY: shown.encode()}
        for incident_id, c in self.contributions.items():
            state[CONTRIBUTION_PREFIX + incident_id] = c.encode()
        return state


def changes(before: Mapping[str, str], after: Mapping[str, str]) -> dict[str, str]:
    """What to remember to go from ``before`` to ``after``: an empty value forgets a key."""
    found = {key: value for key, value in after.items() if before.get(key) != value}
    found.update({key: "" for key in before if key not in after})
    return found
