"""Slack: the runbook's internal incident message, kept current.

Posted when an incident opens, on each remediation action and when it resolves, in the
runbook's own shape (severity, status, impact, current action, next update, incident
commander); when automatic triage fails before anyone was paged, a short message says
so. Two ways to post, one message:

- an incoming webhook (the zero-setup default): each message is a new message in the
  webhook's channel. The webhook URL is the credential: it comes from a secret and never
  appears in logs or errors.
- a bot token and a channel (:mod:`receiver.notify.slack_api`): one thread per incident. The
  first message opens it; each later one is posted into it (``thread_ts``) and the top message
  is edited to the incident as it is now, so the channel shows one line per incident, always
  current. Where the thread is (channel and ``ts``) is remembered per incident in the store,
  so it survives restarts; a top message someone deleted opens a new thread.

Slack reads ``<...>`` in a message as a mention, a broadcast or a link, and ``&`` as the start
of an entity, so every value from an alert (title, reason, action, label) is escaped
(``&amp;``, ``&lt;``, ``&gt;``): a label can never ping ``<!channel>`` or a person, nor hide a
link. Mentions come only from config, in Slack's own syntax, checked when it loads. The
message is one section block, bounded by Slack's limits: the values from alerts are cut to
what is left after the fixed lines, so the link to the incident is always there.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import aiohttp

from receiver.config import SlackSettings
from receiver.notify.delivery import Message, Sent, http_call
from receiver.notify.slack_api import MESSAGE_GONE, SlackApiFailure, SlackWebApi
from receiver.notify.snapshot import IMPACT, IncidentSnapshot, action_summary
from receiver.notify.untrusted import ELLIPSIS, one_line
from receiver.redaction import Redactor
from receiver.runbook import Severity

__all__ = ["SlackSender", "escape", "incident_message", "triage_failed_message"]

MARK: dict[Severity, str] = {
    Severity.P1: "🔴",
    Severity.P2: "🟠",
    Severity.P3: "🟡",
    Severity.P4: "🔵",
}
MAX_SECTION = 3_000  # Slack refuses a longer text in a section block
MAX_TITLE = 300
MAX_ACTION = 1_000
ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
# Characters a URL keeps as they are; the rest (among them < > | and spaces, which would end
# or split Slack's <url> link) are percent-encoded.
URL_SAFE = ":/?#[]@!$&'()*+,;=%~"
DEFAULTS = SlackSettings.model_fields
# What the destination remembers of an incident's thread: its channel and its top message.
CHANNEL = "channel"
THREAD = "thread_ts"


def escape(text: str) -> str:
    """``text`` shown literally by Slack: no mention, broadcast, link or entity."""
    return "".join(ESCAPES.get(char, char) for char in text)


def _shown(value: str, limit: int) -> str:
    """A value from an alert, on one line, escaped, at most ``limit`` characters once
    escaped (an entity is never split)."""
    pieces = [ESCAPES.get(char, char) for char in one_line(value)]
    if sum(len(p) for p in pieces) <= limit:
        return "".join(pieces)
    out: list[str] = []
    used = 0
    for piece in pieces:
        if used + len(piece) > limit - len(ELLIPSIS):
            break
        out.append(piece)
        used += len(piece)
    return "".join(out) + ELLIPSIS


def _link(url: str) -> str:
    return "<" + escape(quote(url, safe=URL_SAFE)) + ">"


def incident_message(
    snapshot: IncidentSnapshot,
    *,
    settings: SlackSettings | None,
    at: float,
    incident_url: str,
    current_action: str | None = None,
    opening: bool = False,
    approval_id: str | None = None,
) -> dict[str, Any]:
    """The internal message for the incident as it is now; ``opening`` pings the configured
    ``mentions`` too. ``approval_id``: an action awaits approval, and with a signing secret
    configured (the clicks come back to ``/slack/interactions``) the message carries
    Approve/Deny buttons whose value is that id."""
    commander = settings.incident_commander if settings else None
    mentions = settings.mentions if settings and opening else ()
    minutes = settings.next_update_minutes if settings else DEFAULTS["next_update_minutes"].default
    resolved = snapshot.status == "resolved"
    mark = "✅" if resolved else MARK[snapshot.severity]
    if current_action is None:
        if snapshot.actions:
            current_action = action_summary(snapshot.actions[-1])
        else:
            current_action = snapshot.decision_summary or "Triage in progress"
    next_update = (
        "none (resolved)"
        if resolved
        else datetime.fromtimestamp(at + minutes * 60, UTC).strftime("%H:%M UTC")
    )
    # Config's mentions are written in Slack's syntax (checked on load): they stay as they are.
    heading = " ".join([f"{mark} {snapshot.severity} INCIDENT: PostHog Integration", *mentions])

    def render(action: str, title: str) -> str:
        return "\n".join(
            [
                heading,
                f"Status: {snapshot.phase.upper()}",
                f"Impact: {IMPACT[snapshot.severity]}",
                f"Current action: {action}",
                f"Next update: {next_update}",
                f"Incident commander: {commander or 'not assigned'}",
                f"Incident: {title} {_link(incident_url)}",
            ]
        )

    # The same text is the notification's fallback (Slack allows 40,000 there). What the fixed
    # lines leave of a section's 3,000 characters goes to the values from the
    # alert, so however long they are, the link to the incident stays in the message.
    spare = max(MAX_SECTION - len(render("", "")), 0)
    title_limit = min(MAX_TITLE, spare // 4)
    action_limit = min(MAX_ACTION, spare - title_limit)
    text = render(_shown(current_action, action_limit), _shown(snapshot.title, title_limit))
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]
    if approval_id is not None and settings is not None and settings.signing_secret is not None:
        blocks.append(approval_buttons(approval_id))
    return {"text": text, "blocks": blocks}


def approval_buttons(approval_id: str) -> dict[str, Any]:
    """Block Kit Approve/Deny buttons for one approval (their clicks are checked by
    ``receiver.web.slack``)."""
    return {
        "type": "actions",
        "block_id": "approval",
        "elements": [
            {
                "type": "button",
                "action_id": "approve",
                "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"},
                "value": approval_id,
            },
            {
                "type": "button",
                "action_id": "deny",
                "style": "danger",
                "text": {"type": "plain_text", "text": "Deny"},
                "value": approval_id,
            },
        ],
    }


def triage_failed_message(
    snapshot: IncidentSnapshot,
    *,
    error: str,
    settings: SlackSettings | None,
    incident_url: str,
) -> dict[str, Any]:
    """The message for an incident whose automatic triage failed before anyone was paged:
    what is known (the title, the error, the link) and that people take over; it pings the
    configured ``mentions``, as an opening message does."""
    commander = settings.incident_commander if settings else None
    mentions = settings.mentions if settings else ()
    heading = " ".join(["🔴 TRIAGE FAILED: PostHog Integration", *mentions])

    def render(title: str, reason: str) -> str:
        return "\n".join(
            [
                heading,
                "Status: automatic triage failed, severity not assessed",
                "Current action: follow the runbook by hand; triage is tried again",
                f"Error: {reason}",
                f"Incident commander: {commander or 'not assigned'}",
                f"Incident: {title} {_link(incident_url)}",
            ]
        )

    spare = max(MAX_SECTION - len(render("", "")), 0)
    title_limit = min(MAX_TITLE, spare // 4)
    error_limit = min(MAX_ACTION, spare - title_limit)
    text = render(_shown(snapshot.title, title_limit), _shown(error, error_limit))
    return {
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }


class SlackSender:
    """Posts messages through the configured incoming webhook, or into each incident's thread
    with the configured bot token."""

    destination = "slack"

    def __init__(self, settings: SlackSettings, *, redactor: Redactor) -> None:
        self._settings = settings
        self._redactor = redactor

    def ready_in(self) -> float:
        return 0.0

    async def send(
        self, session: aiohttp.ClientSession, message: Message, state: Mapping[str, str]
    ) -> Sent:
        if self._settings.bot_token is not None:
            return await self._into_thread(session, message, state)
        assert self._settings.webhook_url is not None  # one of the two, checked on load
        url = self._settings.webhook_url.secret.get_secret_value()
        await http_call(
            session,
            "POST",
            url,
            service="Slack",
            json_body=message.payload,
            timeout_seconds=self._settings.timeout_seconds,
            ok=(200,),
            redactor=self._redactor,
        )
        return Sent()

    async def _into_thread(
        self, session: aiohttp.ClientSession, message: Message, state: Mapping[str, str]
    ) -> Sent:
        """Edit the thread's top message to this one, then post this one into the thread; the
        first message of an incident opens the thread instead.

        The top message is edited first: an edit repeats harmlessly, so when the reply fails
        and the message is tried again, the thread does not get the reply twice.
        """
        settings = self._settings
        assert settings.bot_token is not None
        assert settings.channel is not None
        api = SlackWebApi(
            session,
            token=settings.bot_token.secret.get_secret_value(),
            base_url=settings.api_base,
            timeout_seconds=settings.timeout_seconds,
            redactor=self._redactor,
        )
        content = message.payload
        channel, ts = state.get(CHANNEL), state.get(THREAD)
        if channel and ts:
            try:
                await api.update(channel=channel, ts=ts, content=content)
                await api.post_message(channel=channel, content=content, thread_ts=ts)
            except SlackApiFailure as e:
                if e.code not in MESSAGE_GONE:
                    raise
            else:
                return Sent()
        # The first message, or the thread's top message was deleted: a new thread.
        top = await api.post_message(channel=settings.channel, content=content)
        return Sent(remember={CHANNEL: top.channel, THREAD: top.ts})
