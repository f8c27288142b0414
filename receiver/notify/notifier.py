"""The notifier: what the responder calls when an incident opens, changes, acts or resolves.

Each call renders the messages for every destination (PagerDuty, the status page, Slack; the
log for any that is not configured) from one :class:`IncidentSnapshot` and stores them in one
write, for the outbox to deliver. Calls are idempotent: each message has an idempotency key
(incident, event, destination, kind) that is unique in the table, so a responder that calls
twice for the same event after a crash stores nothing new. The event id defaults to one
derived from the snapshot (or the action), so an identical repeat is recognised without help.

What goes where:

==============  =====================  ==========================  ===========================
call            PagerDuty              status page                 Slack
==============  =====================  ==========================  ===========================
opened          trigger                news for the one public     message
                                       incident (severities, after
                                       the hold-off)
changed         trigger (update); once  news on a state change     -
                acknowledged, a change
                event (no new page)
action_taken    change event (applied  news on a state change      message
                or reverted), once an
                acknowledge (optional);
                awaiting approval: a
                trigger (update) linking
                the page's Approve/Deny
resolved        resolve                news (if it was there)      message
triage_failed   minimal trigger, once  -                           message
                if no page was stored
                before
==============  =====================  ==========================  ===========================

Every message carries the incident's severity: the outbox delivers the most severe first.

The status page tells customers one story: every incident's news goes to the one public
incident of the configured component (``receiver.notify.public_incident``), which follows the
highest severity open and resolves with the last incident.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from receiver import links
from receiver.config import NotifySettings, StatuspageTemplates, UiSettings
from receiver.notify import pagerduty, slack, statuspage
from receiver.notify.outbox import Draft, enqueue, get_state, list_messages, set_state
from receiver.notify.snapshot import IncidentSnapshot, action_summary
from receiver.runbook import Severity
from receiver.store import Connection, Store

__all__ = ["Notifier"]

# A decision on an approval is a change people make: PagerDuty's change events show it too.
CHANGE_OUTCOMES = {"applied", "reverted", "approved", "denied"}
# How an expired approval's escalation begins (``Remediator.expire_due``).
APPROVAL_EXPIRED = "approval expired"
TRIGGER = "pagerduty.trigger"
# The event id of the minimal page sent when automatic triage fails: one per incident.
TRIAGE_FAILED_EVENT = "triage-failed"
DEFAULT_STATUSPAGE_SEVERITIES = (Severity.P1, Severity.P2)


def _digest(data: Any) -> str:
    raw = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


class Notifier:
    """Turns incident events into stored notifications for every destination."""

    def __init__(
        self,
        *,
        store: Store,
        settings: NotifySettings,
        public_url: str,
        prometheus_urls: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        wake: Callable[[], None] | None = None,
        ui: UiSettings | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._public_url = public_url
        # The incident's page, signed with ``ui.link_key`` if set (a plain page by default).
        self._ui = ui if ui is not None else UiSettings()
        self._prometheus_urls = tuple(prometheus_urls)
        self._clock = clock
        self._wake = wake

    def _where(self, system: str) -> str:
        """The destination for a system: itself when configured, the log otherwise."""
        return system if getattr(self._settings, system) is not None else "log"

    # -- the four events ------------------------------------------------------------------

    async def incident_opened(
        self, snapshot: IncidentSnapshot, *, event_id: str | None = None
    ) -> int:
        """A new incident: page, prepare the status page, tell the team."""
        event = event_id or "opened"
        drafts = [
            self._pagerduty(snapshot, event, "trigger"),
            self._slack(snapshot, event, opening=True),
        ]
        return await self._store_drafts(snapshot, drafts, self._statuspage(snapshot, event))

    async def incident_changed(
        self, snapshot: IncidentSnapshot, *, event_id: str | None = None
    ) -> int:
        """Severity, class, verdict or decision changed: update the page and the status page."""
        event = event_id or "changed-" + _digest(
            [
                snapshot.severity,
                snapshot.phase,
                snapshot.title,
                snapshot.error_class,
                snapshot.verdict,
                snapshot.decision_summary,
                list(snapshot.decision_steps),
                len(snapshot.actions),
            ]
        )
        # Once a person acknowledged it, an update must not page again: it goes as a change
        # event beside the incident, and the status page (and Slack) carry on as before.
        drafts = [
            self._pagerduty_update(snapshot, event)
            if snapshot.acknowledged
            else self._pagerduty(snapshot, event, "trigger")
        ]
        return await self._store_drafts(snapshot, drafts, self._statuspage(snapshot, event))

    async def action_taken(
        self,
        snapshot: IncidentSnapshot,
        action: Mapping[str, Any],
        *,
        event_id: str | None = None,
    ) -> int:
        """A remediation step was applied, reverted, dry-run or refused: record it everywhere."""
        event = event_id or "action-" + str(action.get("id") or _digest(dict(action)))
        drafts: list[Draft] = []
        outcome = action.get("outcome")
        if outcome in CHANGE_OUTCOMES:
            drafts.append(self._pagerduty_change(snapshot, action, event))
        pd = self._settings.pagerduty
        if (
            outcome == "applied"
            and snapshot.status == "open"
            and not snapshot.acknowledged
            and pd is not None
            and pd.acknowledge_on_action
        ):
            drafts.append(self._pagerduty(snapshot, "acknowledge", "acknowledge"))
        if outcome == "awaiting_approval":
            # A person is needed: PagerDuty's alert is updated to link where to approve (as
            # a change event once acknowledged, which pages nobody again).
            drafts.append(
                self._pagerduty_update(snapshot, event)
                if snapshot.acknowledged
                else self._pagerduty(snapshot, event, "trigger")
            )
        if outcome == "escalated" and str(action.get("detail", "")).startswith(APPROVAL_EXPIRED):
            # Nobody decided in time: page again, saying what is to be done by hand.
            drafts.append(self._pagerduty(snapshot, event, "trigger"))
        approval_id = action.get("approval_id") if outcome == "awaiting_approval" else None
        drafts.append(
            self._slack(
                snapshot,
                event,
                current_action=action_summary(action),
                approval_id=str(approval_id) if approval_id else None,
            )
        )
        return await self._store_drafts(snapshot, drafts, self._statuspage(snapshot, event))

    async def incident_resolved(
        self, snapshot: IncidentSnapshot, *, event_id: str | None = None
    ) -> int:
        """Every alert resolved: resolve the page and the status page, tell the team."""
        event = event_id or "resolved"
        drafts = [
            self._pagerduty(snapshot, event, "resolve"),
            self._slack(snapshot, event),
        ]
        return await self._store_drafts(snapshot, drafts, self._statuspage(snapshot, event))

    async def triage_failed(self, snapshot: IncidentSnapshot, *, error: str) -> int:
        """Automatic triage failed: page a minimal alert (a PagerDuty trigger with the
        incident's usual ``dedup_key``, a Slack message), unless the incident has a page
        already. Stored once per incident; the full triage, once it succeeds, updates the
        same PagerDuty alert. Nothing goes to the status page: customers are told what is
        known, and nothing is."""
        event = TRIAGE_FAILED_EVENT
        pd_destination = self._where("pagerduty")
        page = pagerduty.triage_failed_event(
            snapshot,
            error=error,
            settings=self._settings.pagerduty,
            incident_url=self._incident_url(snapshot),
            prometheus_urls=self._prometheus_urls,
        )
        slack_destination = self._where("slack")
        message = slack.triage_failed_message(
            snapshot,
            error=error,
            settings=self._settings.slack,
            incident_url=self._incident_url(snapshot),
        )
        drafts = [
            Draft(
                pd_destination,
                TRIGGER,
                page,
                self._key(snapshot, event, pd_destination, TRIGGER),
            ),
            Draft(
                slack_destination,
                "slack.message",
                message,
                self._key(snapshot, event, slack_destination, "slack.message"),
            ),
        ]
        now = self._clock()

        def write(conn: Connection) -> int:
            # A trigger stored already (the full triage's, or this one) has paged, or will:
            # a minimal one now would only replace what people see with less.
            if any(m["kind"] == TRIGGER for m in list_messages(conn, snapshot.id)):
                return 0
            return enqueue(conn, snapshot.id, drafts, now=now)

        stored = await self._store.write(write)
        if stored and self._wake is not None:
            self._wake()
        return stored

    # -- rendering ------------------------------------------------------------------------

    def _incident_url(self, snapshot: IncidentSnapshot) -> str:
        """The link a message carries: the incident's page (signed, expiring), rendered when
        the message is stored."""
        return links.incident_url(self._ui, self._public_url, snapshot.id, now=self._clock())

    def _key(self, snapshot: IncidentSnapshot, event: str, destination: str, kind: str) -> str:
        return f"{snapshot.id}|{event}|{destination}|{kind}"

    def _pagerduty(
        self,
        snapshot: IncidentSnapshot,
        event: str,
        action: Literal["trigger", "acknowledge", "resolve"],
    ) -> Draft:
        destination = self._where("pagerduty")
        kind = f"pagerduty.{action}"
        payload = pagerduty.alert_event(
            snapshot,
            action=action,
            settings=self._settings.pagerduty,
            incident_url=self._incident_url(snapshot),
            prometheus_urls=self._prometheus_urls,
        )
        return Draft(
            destination,
            kind,
            payload,
            self._key(snapshot, event, destination, kind),
            severity=snapshot.severity,
        )

    def _pagerduty_change(
        self, snapshot: IncidentSnapshot, action: Mapping[str, Any], event: str
    ) -> Draft:
        destination = self._where("pagerduty")
        kind = "pagerduty.change"
        payload = pagerduty.change_event(
            snapshot,
            action,
            settings=self._settings.pagerduty,
            incident_url=self._incident_url(snapshot),
            at=self._clock(),
        )
        return Draft(
            destination,
            kind,
            payload,
            self._key(snapshot, event, destination, kind),
            severity=snapshot.severity,
        )

    def _pagerduty_update(self, snapshot: IncidentSnapshot, event: str) -> Draft:
        destination = self._where("pagerduty")
        kind = "pagerduty.change"
        payload = pagerduty.update_event(
            snapshot,
            settings=self._settings.pagerduty,
            incident_url=self._incident_url(snapshot),
            at=self._clock(),
        )
        return Draft(destination, kind, payload, self._key(snapshot, event, destination, kind))

    def _slack(
        self,
        snapshot: IncidentSnapshot,
        event: str,
        *,
        current_action: str | None = None,
        opening: bool = False,
        approval_id: str | None = None,
    ) -> Draft:
        destination = self._where("slack")
        kind = "slack.message"
        payload = slack.incident_message(
            snapshot,
            settings=self._settings.slack,
            at=self._clock(),
            incident_url=self._incident_url(snapshot),
            current_action=current_action,
            opening=opening,
            approval_id=approval_id,
        )
        return Draft(
            destination,
            kind,
            payload,
            self._key(snapshot, event, destination, kind),
            severity=snapshot.severity,
        )

    def _statuspage(self, snapshot: IncidentSnapshot, event: str) -> Draft:
        sp = self._settings.statuspage
        destination = self._where("statuspage")
        kind = "statuspage.update"
        templates = sp.templates if sp is not None else StatuspageTemplates()
        hold_off = sp.hold_off_seconds if sp is not None else 0.0
        timestamp = datetime.fromtimestamp(self._clock(), UTC).strftime("%Y-%m-%d %H:%M UTC")
        payload = statuspage.incident_update(snapshot, templates=templates, timestamp=timestamp)
        return Draft(
            destination,
            kind,
            payload,
            self._key(snapshot, event, destination, kind),
            not_before=snapshot.opened_at + hold_off,
            # One public incident for all: every incident's news joins one queue and memory.
            scope=statuspage.story_scope(sp) if destination == "statuspage" and sp else None,
            severity=snapshot.severity,
        )

    # -- storing --------------------------------------------------------------------------

    async def _store_drafts(
        self, snapshot: IncidentSnapshot, drafts: list[Draft], status_page: Draft
    ) -> int:
        severities = (
            self._settings.statuspage.severities
            if self._settings.statuspage is not None
            else DEFAULT_STATUSPAGE_SEVERITIES
        )
        now = self._clock()

        def write(conn: Connection) -> int:
            all_drafts = list(drafts)
            if _status_page_changed(conn, snapshot, status_page, severities, now=now):
                all_drafts.append(status_page)
            return enqueue(conn, snapshot.id, all_drafts, now=now)

        stored = await self._store.write(write)
        if stored and self._wake is not None:
            self._wake()
        return stored


def _status_page_changed(
    conn: Connection,
    snapshot: IncidentSnapshot,
    draft: Draft,
    severities: tuple[Severity, ...],
    *,
    now: float,
) -> bool:
    """Whether the status page needs this update: the incident qualifies (or is already on
    its way there) and what customers would see differs from the last update stored."""
    state = get_state(conn, draft.destination, snapshot.id)
    last = state.get("last_update")
    if last is None and (snapshot.severity not in severities or snapshot.status == "resolved"):
        return False
    seen = f"{draft.payload['status']}/{draft.payload['component_status']}"
    if seen == last:
        return False
    set_state(conn, draft.destination, snapshot.id, {"last_update": seen}, now=now)
    return True
