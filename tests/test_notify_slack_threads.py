"""Slack with a bot token: one thread per incident, its top message kept current.

Everything runs through the real notifier, outbox and ``slack_sdk`` client against a fake Slack
Web API that checks requests as Slack does; the incoming webhook stays as it was.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from receiver.config import ConfigError, load_settings
from tests import test_helm_chart as helm_chart
from tests.fakes.slack import FakeSlackWebApi, markup
from tests.notify_harness import (
    SLACK_BOT_TOKEN,
    SLACK_CHANNEL,
    Clock,
    Fakes,
    Harness,
    clock_fixture,  # noqa: F401 - fixture
    fakes_fixture,  # noqa: F401 - fixture
    notify_settings,
    slack_api_fixture,  # noqa: F401 - fixture
    snapshot,
)

BOT_TOKEN = "xoxb-1-2-chartTokenForTests"
FALLBACK = {
    "id": "act-1",
    "name": "enable_fallback",
    "outcome": "applied",
    "target": "deployment/posthog-integration",
    "detail": "POSTHOG_FALLBACK=true",
}


async def threaded(
    tmp_path: Path, fakes: Fakes, clock: Clock, slack_api: FakeSlackWebApi, **slack: Any
) -> Harness:
    """A harness whose only destination is Slack, with a bot token on ``slack_api``."""
    settings = notify_settings(fakes, only=("slack",), slack_api=slack_api, slack=slack)
    harness = Harness(tmp_path / "receiver.sqlite3", settings, clock)
    await harness.open()
    return harness


@pytest_asyncio.fixture(name="h")
async def harness_fixture(
    tmp_path: Path, fakes: Fakes, clock: Clock, slack_api: FakeSlackWebApi
) -> AsyncIterator[Harness]:
    harness = await threaded(tmp_path, fakes, clock, slack_api)
    yield harness
    await harness.close()


async def open_act_resolve(h: Harness, clock: Clock) -> None:
    opened = snapshot(clock)
    await h.notifier.incident_opened(opened)
    await h.drain()
    acted = dataclasses.replace(opened, actions=(FALLBACK,))
    await h.notifier.action_taken(acted, FALLBACK)
    await h.drain()
    await h.notifier.incident_resolved(
        dataclasses.replace(acted, status="resolved", resolved_at=clock.t)
    )
    await h.drain()


def lines(text: str | None) -> list[str]:
    assert text is not None
    return text.splitlines()


@pytest.mark.asyncio
async def test_first_message_opens_a_thread_and_later_ones_go_into_it(
    h: Harness, clock: Clock, fakes: Fakes, slack_api: FakeSlackWebApi
) -> None:
    """The opening message is the thread's top message; each later message is a reply in the
    thread, and the top message is edited to the incident as it is now."""
    await open_act_resolve(h, clock)

    (top,) = slack_api.top_messages(SLACK_CHANNEL)
    replies = slack_api.replies(top.ts)
    assert [lines(r.text)[1] for r in replies] == ["Status: MONITORING", "Status: RESOLVED"]
    assert lines(top.text)[0] == "✅ P1 INCIDENT: PostHog Integration"
    assert lines(top.text)[1] == "Status: RESOLVED"
    assert top.text == replies[-1].text
    assert top.blocks == [{"type": "section", "text": {"type": "mrkdwn", "text": top.text}}]
    assert top.edits == 2
    calls = [(r.path, r.body.get("thread_ts"), r.body.get("ts")) for r in slack_api.received]
    assert calls == [
        ("/api/chat.postMessage", None, None),
        ("/api/chat.update", None, top.ts),
        ("/api/chat.postMessage", top.ts, None),
        ("/api/chat.update", None, top.ts),
        ("/api/chat.postMessage", top.ts, None),
    ]
    assert {r.headers["Authorization"] for r in slack_api.received} == {f"Bearer {SLACK_BOT_TOKEN}"}
    assert fakes.slack.attempts == 0  # the webhook is not used with a bot token
    assert [m["state"] for m in await h.messages("slack")] == ["sent"] * 3


@pytest.mark.asyncio
async def test_each_incident_has_its_own_thread(
    h: Harness, clock: Clock, slack_api: FakeSlackWebApi
) -> None:
    """Two incidents open two threads; each one's news goes into its own."""
    first, second = snapshot(clock, "inc-a"), snapshot(clock, "inc-b", title="Another one")
    await h.notifier.incident_opened(first)
    await h.notifier.incident_opened(second)
    await h.drain()
    await h.notifier.action_taken(dataclasses.replace(second, actions=(FALLBACK,)), FALLBACK)
    await h.drain()

    tops = slack_api.top_messages(SLACK_CHANNEL)
    assert len(tops) == 2
    by_incident = {("/incidents/inc-a" in (t.text or "")): t for t in tops}
    assert slack_api.replies(by_incident[True].ts) == []
    (reply,) = slack_api.replies(by_incident[False].ts)
    assert "/incidents/inc-b" in (reply.text or "")


@pytest.mark.asyncio
async def test_a_restart_keeps_the_thread(
    h: Harness, clock: Clock, slack_api: FakeSlackWebApi
) -> None:
    """Where the thread is lives in the store: after a restart the news goes into it."""
    opened = snapshot(clock)
    await h.notifier.incident_opened(opened)
    await h.drain()
    await h.restart()
    await h.notifier.action_taken(dataclasses.replace(opened, actions=(FALLBACK,)), FALLBACK)
    await h.drain()

    (top,) = slack_api.top_messages(SLACK_CHANNEL)
    (reply,) = slack_api.replies(top.ts)
    assert "Status: MONITORING" in (reply.text or "")
    assert top.edits == 1


@pytest.mark.asyncio
async def test_a_deleted_top_message_opens_a_new_thread(
    h: Harness, clock: Clock, slack_api: FakeSlackWebApi
) -> None:
    """Someone deleted the thread in Slack: the next message opens a new one, remembered."""
    opened = snapshot(clock)
    await h.notifier.incident_opened(opened)
    await h.drain()
    (gone,) = slack_api.top_messages(SLACK_CHANNEL)
    slack_api.delete(gone.ts)
    acted = dataclasses.replace(opened, actions=(FALLBACK,))
    await h.notifier.action_taken(acted, FALLBACK)
    await h.drain()
    await h.notifier.incident_resolved(dataclasses.replace(acted, status="resolved"))
    await h.drain()

    (top,) = slack_api.top_messages(SLACK_CHANNEL)
    assert top.ts != gone.ts
    assert lines(top.text)[1] == "Status: RESOLVED"
    assert [lines(r.text)[1] for r in slack_api.replies(top.ts)] == ["Status: RESOLVED"]
    assert ("chat.update", "message_not_found") in slack_api.errors
    assert [m["state"] for m in await h.messages("slack")] == ["sent"] * 3


@pytest.mark.asyncio
async def test_429_retry_after_is_honoured(
    h: Harness, clock: Clock, slack_api: FakeSlackWebApi
) -> None:
    """Slack's 429 ``ratelimited`` is retried no sooner than its Retry-After, then delivered."""
    slack_api.rate_limit(retry_after="7")
    await h.notifier.incident_opened(snapshot(clock))
    await h.worker.run_once()
    (message,) = await h.messages("slack")
    assert message["state"] == "pending"
    assert message["next_attempt_at"] == clock.t + 7
    assert message["last_error"] == "Slack chat.postMessage answered ratelimited"
    clock.advance(6.9)
    assert await h.drain() == 0
    clock.advance(0.1)
    assert await h.drain() == 1
    assert len(slack_api.top_messages(SLACK_CHANNEL)) == 1
    assert h.metric("posthog_receiver_notifications_retried_total", "slack") == 1


@pytest.mark.asyncio
async def test_slack_failing_or_slow_is_retried_with_backoff(
    tmp_path: Path, fakes: Fakes, clock: Clock, slack_api: FakeSlackWebApi
) -> None:
    """A 503, then an answer slower than the timeout, are temporary: retried with growing
    waits, then the thread opens once."""
    h = await threaded(tmp_path, fakes, clock, slack_api, timeout_seconds=0.2)
    slack_api.fail(503)
    slack_api.slow(30.0)  # released when the fake stops
    errors = []
    try:
        await h.notifier.incident_opened(snapshot(clock))
        waits = []
        for _ in range(2):
            await h.worker.run_once()
            (message,) = await h.messages("slack")
            errors.append(message["last_error"])
            waits.append(message["next_attempt_at"] - clock.t)
            clock.advance(waits[-1])
        assert await h.drain() == 1
    finally:
        await h.close()
    assert errors == [
        "Slack chat.postMessage answered HTTP 503",
        "Slack chat.postMessage: no answer within 0.2s",
    ]
    assert waits == [1.0, 2.0]  # exponential, no jitter configured
    assert len(slack_api.top_messages(SLACK_CHANNEL)) == 1


@pytest.mark.asyncio
async def test_a_reply_rate_limited_after_the_edit_is_posted_once(
    h: Harness, clock: Clock, slack_api: FakeSlackWebApi
) -> None:
    """When the reply is rate limited after the top message was edited, the retry edits again
    (harmless) and the thread gets the reply once."""
    opened = snapshot(clock)
    await h.notifier.incident_opened(opened)
    await h.drain()
    await h.notifier.action_taken(dataclasses.replace(opened, actions=(FALLBACK,)), FALLBACK)
    calls = len(slack_api.received)
    slack_api.rate_limit(retry_after="3")
    await h.worker.run_once()  # the edit is rate limited
    assert len(slack_api.received) == calls
    clock.advance(3)
    await h.drain()

    (top,) = slack_api.top_messages(SLACK_CHANNEL)
    assert len(slack_api.replies(top.ts)) == 1
    assert top.edits == 1


@pytest.mark.asyncio
async def test_invalid_auth_is_a_permanent_failure_with_a_readable_error(
    tmp_path: Path, fakes: Fakes, clock: Clock
) -> None:
    """A bot token Slack does not know fails the message for good, says what to check, and
    never shows the token; later messages are still attempted."""
    slack_api = FakeSlackWebApi("xoxb-another-workspace-token", channels=(SLACK_CHANNEL,))
    await slack_api.start()
    h = await threaded(tmp_path, fakes, clock, slack_api)
    try:
        await h.notifier.incident_opened(snapshot(clock))
        await h.drain()
        (message,) = await h.messages("slack")
        failed = h.metric("posthog_receiver_notifications_failed_total", "slack")
    finally:
        await h.close()
        await slack_api.stop()
    assert message["state"] == "failed"
    assert message["attempts"] == 1
    assert message["last_error"] == (
        "Slack chat.postMessage answered invalid_auth: the bot token is not valid: "
        "check notify.slack.bot_token"
    )
    assert failed == 1
    assert slack_api.errors == [("chat.postMessage", "invalid_auth")]


@pytest.mark.parametrize(
    ("channel", "not_member", "error"),
    [
        (
            "C0ELSEWHERE",
            (),
            "Slack chat.postMessage answered channel_not_found: no channel with the configured "
            "ID is visible to the bot",
        ),
        (
            SLACK_CHANNEL,
            (SLACK_CHANNEL,),
            "Slack chat.postMessage answered not_in_channel: the bot is not a member of the "
            "channel: invite the app to it",
        ),
    ],
)
@pytest.mark.asyncio
async def test_a_channel_the_bot_cannot_post_in_is_a_permanent_failure(
    tmp_path: Path,
    fakes: Fakes,
    clock: Clock,
    channel: str,
    not_member: tuple[str, ...],
    error: str,
) -> None:
    """An unknown channel, or one the bot was not invited to, fails at once, saying so."""
    slack_api = FakeSlackWebApi(
        SLACK_BOT_TOKEN, channels=(SLACK_CHANNEL,), not_member=not_member, clock=clock
    )
    await slack_api.start()
    h = await threaded(tmp_path, fakes, clock, slack_api, channel=channel)
    try:
        await h.notifier.incident_opened(snapshot(clock))
        await h.drain()
        (message,) = await h.messages("slack")
    finally:
        await h.close()
        await slack_api.stop()
    assert message["state"] == "failed"
    assert message["last_error"].startswith(error)


@pytest.mark.asyncio
async def test_alert_data_stays_escaped_in_the_thread(
    h: Harness, clock: Clock, slack_api: FakeSlackWebApi
) -> None:
    """A hostile title pings nobody and links nowhere, in the top message and in replies."""
    opened = snapshot(clock, title="<!channel> <@U0MALLORY> <https://evil.example|click>")
    await h.notifier.incident_opened(opened)
    await h.drain()
    await h.notifier.action_taken(dataclasses.replace(opened, actions=(FALLBACK,)), FALLBACK)
    await h.drain()

    (top,) = slack_api.top_messages(SLACK_CHANNEL)
    for message in (top, *slack_api.replies(top.ts)):
        assert markup(message.text or "") == [
            "@U0ALICE01|alice",
            "https://receiver.example.com/incidents/inc-1",
        ]
        assert "&lt;!channel&gt;" in (message.text or "")


@pytest.mark.asyncio
async def test_the_webhook_stays_the_default(
    tmp_path: Path, fakes: Fakes, clock: Clock, slack_api: FakeSlackWebApi
) -> None:
    """Without a bot token every message is a message of its own on the incoming webhook."""
    h = Harness(tmp_path / "r.sqlite3", notify_settings(fakes, only=("slack",)), clock)
    await h.open()
    try:
        await open_act_resolve(h, clock)
    finally:
        await h.close()
    assert [set(r.body) for r in fakes.slack.received] == [{"text", "blocks"}] * 3
    assert slack_api.attempts == 0


# -- the fake Web API is as strict as Slack ------------------------------------------------


@pytest.mark.asyncio
async def test_fake_web_api_refuses_what_slack_refuses(slack_api: FakeSlackWebApi) -> None:
    """No token, another token, a form body, no text, an unknown thread, and an edit of
    someone else's message are refused with Slack's error codes."""
    url = slack_api.api_base
    auth = {"Authorization": f"Bearer {SLACK_BOT_TOKEN}"}
    message = {"channel": SLACK_CHANNEL, "text": "hi"}
    someone = slack_api.post_as_someone_else(SLACK_CHANNEL, "hello")

    async with aiohttp.ClientSession() as http:

        async def call(method: str, **kwargs: Any) -> tuple[int, Any]:
            async with http.post(f"{url}/{method}", **kwargs) as r:
                return r.status, await r.json()

        def error(code: str) -> tuple[int, Any]:
            return 200, {"ok": False, "error": code}

        assert await call("chat.postMessage", json=message) == error("not_authed")
        wrong = {"Authorization": "Bearer xoxb-wrong"}
        assert await call("chat.postMessage", json=message, headers=wrong) == error("invalid_auth")
        assert await call("chat.postMessage", data=message, headers=auth) == error("invalid_json")
        no_text = {"channel": SLACK_CHANNEL, "text": " "}
        assert await call("chat.postMessage", json=no_text, headers=auth) == error("no_text")
        reply = {**message, "thread_ts": "1.000001"}
        assert await call("chat.postMessage", json=reply, headers=auth) == error("thread_not_found")
        edit = {**message, "ts": someone}
        assert await call("chat.update", json=edit, headers=auth) == error("cant_update_message")
        status, posted = await call("chat.postMessage", json=message, headers=auth)
        assert (status, posted["ok"], posted["channel"]) == (200, True, SLACK_CHANNEL)
        in_reply = {**message, "thread_ts": posted["ts"]}
        status, answered = await call("chat.postMessage", json=in_reply, headers=auth)
        assert answered["ok"] is True
        # A reply is not a thread of its own.
        nested = {**message, "thread_ts": answered["ts"]}
        assert await call("chat.postMessage", json=nested, headers=auth) == error(
            "thread_not_found"
        )
        slack_api.rate_limit(retry_after="5")
        async with http.post(f"{url}/chat.update", json=message, headers=auth) as r:
            assert (r.status, r.headers["Retry-After"]) == (429, "5")


# -- settings -----------------------------------------------------------------------------


def load(tmp_path: Path, slack: str) -> Any:
    path = tmp_path / "receiver.yaml"
    path.write_text(
        "webhook: {allow_unauthenticated: true}\nnotify:\n  slack:\n" + slack, encoding="utf-8"
    )
    return load_settings(path)


@pytest.mark.parametrize(
    ("slack", "message"),
    [
        (
            "    webhook_url: {value: 'https://hooks.slack.com/services/T0/B0/xyz'}\n"
            "    bot_token: {env: SLACK_BOT_TOKEN}\n    channel: C0INCIDENT\n",
            "set either webhook_url (messages) or bot_token with channel (threads), not both",
        ),
        ("    next_update_minutes: 5\n", "set webhook_url, or bot_token with channel"),
        ("    bot_token: {env: SLACK_BOT_TOKEN}\n", "bot_token needs channel"),
        (
            "    webhook_url: {value: 'https://hooks.slack.com/services/T0/B0/xyz'}\n"
            "    channel: C0INCIDENT\n",
            "channel is used with bot_token only",
        ),
        (
            "    bot_token: {env: SLACK_BOT_TOKEN}\n    channel: '#incidents'\n",
            "'#incidents' is not a channel ID",
        ),
        (
            "    bot_token: {value: xoxp-a-user-token}\n    channel: C0INCIDENT\n",
            "notify.slack.bot_token: must hold a bot token, which starts with 'xoxb-'",
        ),
    ],
)
def test_slack_takes_exactly_one_way_to_post(tmp_path: Path, slack: str, message: str) -> None:
    """A webhook or a bot token with a channel, never both or neither; errors say which."""
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, slack)
    assert "notify.slack" in str(caught.value)
    assert message in str(caught.value)
    assert "xoxp-a-user-token" not in str(caught.value)


def test_a_bot_token_and_channel_load(tmp_path: Path) -> None:
    """A bot token from the environment and a channel ID make a threaded Slack."""
    slack = load(tmp_path, "    bot_token: {env: SLACK_BOT_TOKEN}\n    channel: C0INCIDENT\n")
    assert slack.notify.slack.threads
    assert slack.notify.slack.api_base == "https://slack.com/api"


# -- the Helm chart -----------------------------------------------------------------------


def test_chart_mounts_a_bot_token_for_threads(tmp_path: Path) -> None:
    """With notify.slack.threads the chart's Secret holds the bot token instead of the webhook
    URL, the config reads it from its mounted file, and check-config accepts the result."""
    docs = helm_chart.render(
        {
            "secrets": {"webhookToken": "token-alertmanager-sends", "slackBotToken": BOT_TOKEN},
            "notify": {"slack": {"enabled": True, "threads": True}},
            "config": {"notify": {"slack": {"channel": SLACK_CHANNEL}}},
        }
    )
    secret = helm_chart.only(docs, "Secret")
    assert set(secret["data"]) == {"webhook-token", "slack-bot-token"}
    items = next(
        v
        for v in helm_chart.only(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "secrets"
    )["secret"]["items"]
    assert {i["key"] for i in items} == set(secret["data"])
    config = helm_chart.rendered_config(docs)
    secrets_dir = "/etc/posthog-receiver/secrets"
    assert config["notify"]["slack"] == {
        "bot_token": {"file": f"{secrets_dir}/slack-bot-token"},
        "channel": SLACK_CHANNEL,
    }
    (tmp_path / "webhook-token").write_text("token-alertmanager-sends\n")
    (tmp_path / "slack-bot-token").write_text(BOT_TOKEN + "\n")
    text = helm_chart.only(docs, "ConfigMap")["data"]["config.yaml"]
    config_file = tmp_path / "config.yaml"
    config_file.write_text(text.replace(secrets_dir + "/", f"{tmp_path}/"))
    code, out, err = helm_chart.check_config(config_file)
    assert code == 0, err
    assert "config OK" in out


def test_chart_refuses_threads_without_a_channel() -> None:
    """Threads without config.notify.slack.channel fail at render time, naming the setting."""
    values = {
        "secrets": {"slackBotToken": BOT_TOKEN},
        "notify": {"slack": {"enabled": True, "threads": True}},
    }
    with pytest.raises(helm_chart.helm.HelmRenderError, match=r"config\.notify\.slack\.channel"):
        helm_chart.render(values)
