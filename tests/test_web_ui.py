"""The web UI through the real application: who may see it, what it shows, and the kill
switch switched from the operations page."""

from __future__ import annotations

import base64
import re
import time
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from receiver import links
from receiver.keys import RESPONSE_TIMES, STORE
from receiver.notify.outbox import Draft, enqueue, list_messages
from receiver.remediation import Remediator
from receiver.remediation.outcome import ActionOutcome
from receiver.runbook import ErrorClass, Severity, Verdict
from receiver.store import Store, journal
from receiver.store.audit import recent_audit
from receiver.store.incidents import add_timeline, record_triage
from receiver.store.outbox import record_failed, record_retry, record_sent
from receiver.web.access import Viewer
from receiver.web.keys import ACCESS
from tests.conftest import ClientFactory, RecordingResponder, remediation_settings
from tests.helpers import TOKEN, alert, bearer, notification, wait_until

Client = TestClient[Any, Any]
PASSWORD = "ui-password-3b9d"
LINK_KEY = "ui-link-key-0c6f2a9e41d7b58a"
USERS = {"users": [{"username": "alice", "password": {"value": PASSWORD}}]}


def basic(user: str = "alice", password: str = PASSWORD) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


async def ui_client(make_client: ClientFactory, **ui: Any) -> Client:
    return await make_client(responder=RecordingResponder(), ui={**USERS, **ui})


async def open_incident(client: Client, labels: dict[str, str] | None = None) -> str:
    resp = await client.post(
        "/webhook/alertmanager", json=notification([alert("fp1", labels=labels)]), headers=bearer()
    )
    assert resp.status == 200

    async def listed() -> list[str]:
        text = await (await client.get("/", headers=basic())).text()
        return re.findall(r'data-incident="([^"]+)"', text)

    found = await wait_until(listed, bool, what="the incident listed")
    return found[0]


class _Text(HTMLParser):
    """The page's visible text and every element's tag, as a browser would parse them."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(html: str) -> _Text:
    parser = _Text()
    parser.feed(html)
    return parser


# -- access ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_pages_need_a_sign_in(make_client: ClientFactory) -> None:
    client = await ui_client(make_client)
    for path in ("/", "/operations", "/incidents/inc-1"):
        resp = await client.get(path)
        assert resp.status == 401, path
        assert resp.headers["WWW-Authenticate"].startswith("Basic ")
    wrong = await client.get("/", headers=basic(password="nope"))
    assert wrong.status == 401
    # The webhook's bearer token opens the API, not the pages.
    assert (await client.get("/", headers=bearer())).status == 401
    assert (await client.get("/", headers=basic())).status == 200


@pytest.mark.asyncio
async def test_proxy_identity_only_when_configured(make_client: ClientFactory) -> None:
    plain = await ui_client(make_client)
    assert (await plain.get("/", headers={"X-Auth-Request-User": "mallory"})).status == 401
    proxied = await ui_client(make_client, proxy_user_header="X-Auth-Request-User")
    resp = await proxied.get("/", headers={"X-Auth-Request-User": "bob@example.com"})
    assert resp.status == 200
    assert "signed in as bob@example.com" in await resp.text()


@pytest.mark.asyncio
async def test_signed_link_opens_one_incident_until_it_expires(make_client: ClientFactory) -> None:
    client = await ui_client(make_client, link_key={"value": LINK_KEY})
    incident_id = await open_incident(client)
    key = LINK_KEY.encode()
    path = links.incident_path(incident_id)
    good = links.sign(key, path, expires=int(time.time()) + 600)
    resp = await client.get(f"{path}?{good}")
    assert resp.status == 200
    page = await resp.text()
    assert "opened from a signed link" in page
    # What the page loads carries the link's signature, and is let in by it.
    assert f"{path}/chart.svg?exp=" in page

    exp, sig = re.search(r"exp=(\d+)&sig=([\w-]+)", good).groups()  # type: ignore[union-attr]
    tampered = sig[:-2] + ("AA" if sig[-2:] != "AA" else "BB")
    assert (await client.get(f"{path}?exp={exp}&sig={tampered}")).status == 403
    # A later expiry under the same signature is a tampered link too.
    assert (await client.get(f"{path}?exp={int(exp) + 3600}&sig={sig}")).status == 403
    expired = links.sign(key, path, expires=int(time.time()) - 1)
    assert (await client.get(f"{path}?{expired}")).status == 403
    # Another incident's path, the list and the operations view are not opened by it.
    assert (await client.get(f"/incidents/other?{good}")).status == 403
    assert (await client.get(f"/operations?{good}")).status == 403
    assert (await client.get(f"/?{good}")).status == 403
    # A key other than the configured one signs nothing.
    forged = links.sign(b"another key", path, expires=int(time.time()) + 600)
    assert (await client.get(f"{path}?{forged}")).status == 403


def test_incident_url_is_signed_only_with_a_key() -> None:
    from receiver.config import UiSettings

    plain = links.incident_url(UiSettings(), "https://r.example.com", "inc-1", now=1000.0)
    assert plain == "https://r.example.com/incidents/inc-1"
    ui = UiSettings.model_validate({"link_key": {"value": LINK_KEY}, "link_ttl_hours": 2})
    signed = links.incident_url(ui, "https://r.example.com", "inc-1", now=1000.0)
    exp, sig = re.search(r"\?exp=(\d+)&sig=([\w-]+)$", signed).groups()  # type: ignore[union-attr]
    assert int(exp) == 1000 + 7200
    assert links.verify(LINK_KEY.encode(), "/incidents/inc-1", exp=exp, sig=sig, now=1001.0)
    assert not links.verify(LINK_KEY.encode(), "/incidents/inc-1", exp=exp, sig=sig, now=8201.0)


def test_signed_url_is_the_page_path() -> None:
    url = links.signed_incident_url("https://r.example.com/", b"k", "inc-1", expires=2_000_000_000)
    assert url.startswith("https://r.example.com/incidents/inc-1?exp=2000000000&sig=")
    assert links.verify(
        b"k", "/incidents/inc-1", exp="2000000000", sig=url.rsplit("sig=", 1)[1], now=1.0
    )


# -- what the pages show --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_labels_holding_markup_are_text(make_client: ClientFactory) -> None:
    client = await ui_client(make_client)
    hostile = {
        "team": '<script>alert("x")</script>',
        "runbook": '<a href="https://evil.example.com">click</a>',
        "note": '"><img src=x onerror=alert(1)>',
    }
    incident_id = await open_incident(client, labels=hostile)
    for path in ("/", f"/incidents/{incident_id}", f"/incidents/{incident_id}?fragment=live"):
        html = await (await client.get(path, headers=basic())).text()
        page = parsed(html)
        assert "script" not in page.tags or html.count("<script") == html.count(
            '<script src="/static/ui.js" defer></script>'
        )
        assert "evil.example.com" not in " ".join(re.findall(r'href="([^"]*)"', html))
        assert "onerror" not in " ".join(re.findall(r"<img[^>]*>", html))
        if "incidents/" in path:
            text = "".join(page.text)
            for value in hostile.values():
                assert value in text


@pytest.mark.asyncio
async def test_pages_carry_the_page_policy_and_no_secret(make_client: ClientFactory) -> None:
    client = await ui_client(make_client, link_key={"value": LINK_KEY})
    incident_id = await open_incident(client)
    for path in ("/", f"/incidents/{incident_id}", "/operations"):
        resp = await client.get(path, headers=basic())
        policy = resp.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy
        assert "style-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        html = await resp.text()
        for secret in (PASSWORD, LINK_KEY, TOKEN):
            assert secret not in html
        assert "<script>" not in html
        assert " style=" not in html
    api = await client.get("/api/incidents", headers=bearer())
    assert "sandbox" in api.headers["Content-Security-Policy"]
    js = await client.get("/static/ui.js")
    assert js.status == 200
    assert js.content_type == "text/javascript"
    assert js.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.asyncio
async def test_list_filters_and_marks_overdue(make_client: ClientFactory) -> None:
    client = await ui_client(make_client)
    incident_id = await open_incident(client)
    store: Store = client.app[STORE]

    await store.write(
        lambda c: record_triage(
            c,
            incident_id,
            error_class=ErrorClass.AUTH,
            severity=Severity.P1,
            acknowledge_by=datetime.fromtimestamp(time.time() - 120, UTC),
            decision={"verdict": "our_integration", "summary": "the key was rotated"},
        )
    )
    html = await (await client.get("/", headers=basic())).text()
    row = re.search(r'<tr class="incident open overdue".*?</tr>', html, re.S)
    assert row is not None, html
    assert "overdue by 2m" in row.group(0)
    assert "P1" in row.group(0)
    assert "auth" in row.group(0)
    assert "our integration" in row.group(0)
    assert incident_id in (await (await client.get("/?severity=P1", headers=basic())).text())
    other = await (await client.get("/?severity=P3", headers=basic())).text()
    assert incident_id not in other
    assert "match this filter" in other
    resolved = await (await client.get("/?status=resolved", headers=basic())).text()
    assert incident_id not in resolved
    assert (await client.get("/?status=bogus", headers=basic())).status == 400


def _outcome(action: str, status: str, reason: str, **extra: Any) -> ActionOutcome:
    return ActionOutcome(
        action, "prod/posthog-integration", status, reason, at=time.time(), **extra
    )  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_every_action_state_is_rendered(make_client: ClientFactory) -> None:
    client = await ui_client(make_client)
    incident_id = await open_incident(client)
    store: Store = client.app[STORE]
    outcomes = [
        _outcome("enable_queue", "applied", "set", before="unset", after='"queue"', verified=True),
        _outcome("enable_fallback", "applied", "applied before an interruption"),
        _outcome("restart", "dry_run", "dry run: would restart the Deployment"),
        _outcome("copy_key", "skipped", "cooldown: applied 10s ago, wait 890s more"),
        _outcome("escalate", "escalated", "our infrastructure is unhealthy"),
        _outcome("broken", "failed", "kept conflicting"),
        _outcome("undo", "reverted", "reverted", before='"queue"', after="unset"),
    ]

    def seed(conn: Any) -> None:
        for o in outcomes:
            add_timeline(conn, incident_id, "remediation", o.summary, o.as_dict(), at=o.at)
        # The journal's own states: about to be applied, and what became of a revert.
        for name, state, reason in (
            ("planned_one", "intent", ""),
            ("kept_one", "revert_skipped", "changed by someone else since"),
            ("shared_one", "handed_over", "another incident still needs it"),
        ):
            journal.write_intent(
                conn,
                incident_id=incident_id,
                action=name,
                kind="set_env",
                target="prod/posthog-integration/app env RATE_LIMIT_MODE",
                before={"present": False},
                after={"present": True, "value": "queue"},
                at=time.time(),
                state=state,
                reason=reason,
            )

    await store.write(seed)
    html = await (await client.get(f"/incidents/{incident_id}", headers=basic())).text()
    states = dict(re.findall(r'<tr class="action" data-state="(\w+)">\s*<td><strong>(\w+)', html))
    assert {v: k for k, v in states.items()} == {
        "enable_queue": "verified",
        "enable_fallback": "applied",
        "restart": "dry_run",
        "copy_key": "skipped",
        "escalate": "escalated",
        "broken": "failed",
        "undo": "reverted",
        "planned_one": "planned",
        "kept_one": "revert_skipped",
        "shared_one": "handed_over",
    }
    text = "".join(parsed(html).text)
    assert "cooldown: applied 10s ago" in text  # the guard that stopped it
    assert 'unset → "queue"' in text  # before → after
    assert "unset → queue" in text  # from the journal's values


def test_awaiting_approval_is_its_own_state() -> None:
    from receiver.web.views import action_views

    entry = journal.JournalEntry(
        1,
        "inc",
        "restart",
        "restart_if_key_rotated",
        "prod/x",
        "awaiting_approval",  # type: ignore[arg-type]
        None,
        None,
        "restarting needs a person",
    )
    (view,) = action_views([entry], [])
    assert (view.state, view.label) == ("awaiting_approval", "awaiting approval")


@pytest.mark.asyncio
async def test_notifications_per_destination(make_client: ClientFactory) -> None:
    client = await ui_client(make_client)
    incident_id = await open_incident(client)
    store: Store = client.app[STORE]
    now = time.time()

    def seed(conn: Any) -> None:
        drafts = [
            Draft("pagerduty", "pagerduty.trigger", {}, "k1"),
            Draft("slack", "slack.opened", {}, "k2"),
            Draft("statuspage", "statuspage.create", {}, "k3", not_before=now + 600),
            Draft("pagerduty", "pagerduty.resolve", {}, "k4"),
            Draft("slack", "slack.action", {}, "k5"),
        ]
        enqueue(conn, incident_id, drafts, now=now)
        ids = {m["kind"]: int(m["id"]) for m in list_messages(conn, incident_id)}
        record_sent(conn, ids["pagerduty.trigger"], skipped=None, now=now)
        record_retry(conn, ids["slack.opened"], error="HTTP 503", next_attempt_at=now + 30)
        record_failed(conn, ids["pagerduty.resolve"], error="HTTP 400: invalid")
        record_sent(conn, ids["slack.action"], skipped="resolved during the hold-off", now=now)

    await store.write(seed)
    html = await (await client.get(f"/incidents/{incident_id}", headers=basic())).text()
    section = html[html.index('id="notifications"') : html.index('id="timeline"')]
    text = " ".join("".join(parsed(section).text).split())
    assert "delivered pagerduty.trigger" in text
    assert "failed pagerduty.resolve" in text
    assert "HTTP 400: invalid" in text
    assert "retrying slack.opened" in text
    assert "next attempt" in text
    assert "HTTP 503" in text
    assert "skipped slack.action" in text
    assert "resolved during the hold-off" in text
    assert "queued statuspage.create" in text
    assert "held until" in text


@pytest.mark.asyncio
async def test_live_fragment_follows_the_incident(make_client: ClientFactory) -> None:
    client = await ui_client(make_client)
    incident_id = await open_incident(client)
    before = await (
        await client.get(f"/incidents/{incident_id}?fragment=live", headers=basic())
    ).text()
    assert "<html" not in before
    assert "Not triaged yet" in before
    store: Store = client.app[STORE]

    await store.write(
        lambda c: record_triage(
            c,
            incident_id,
            error_class=ErrorClass.RATE_LIMITED,
            severity=Severity.P2,
            acknowledge_by=datetime.now(UTC),
            decision={
                "verdict": "vendor_incident",
                "summary": "PostHog reports an incident",
                "steps": [
                    {
                        "question": "Is PostHog's status page green?",
                        "answer": "no",
                        "finding": "major outage",
                        "evidence": {"indicator": "major"},
                        "duration_ms": 42.0,
                    }
                ],
            },
        )
    )
    after = await (
        await client.get(f"/incidents/{incident_id}?fragment=live", headers=basic())
    ).text()
    text = " ".join("".join(parsed(after).text).split())
    assert "Is PostHog's status page green? → no (42 ms)" in text
    assert "major outage" in text
    assert '{"indicator": "major"}' in text
    assert "vendor incident: PostHog reports an incident" in text


# -- the kill switch ------------------------------------------------------------------------


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html
    return found.group(1)


@pytest.mark.asyncio
async def test_kill_switch_post_needs_the_csrf_token(make_client: ClientFactory) -> None:
    client = await ui_client(
        make_client, users=[*USERS["users"], {"username": "bob", "password": {"value": "pw-bob"}}]
    )
    for form in ({"state": "on"}, {"state": "on", "csrf": "123.forged"}):
        resp = await client.post(
            "/operations/kill-switch", data=form, headers=basic(), allow_redirects=False
        )
        assert resp.status == 403
    # Bob's token is not Alice's.
    bobs = _csrf(await (await client.get("/operations", headers=basic("bob", "pw-bob"))).text())
    resp = await client.post(
        "/operations/kill-switch",
        data={"state": "on", "csrf": bobs},
        headers=basic(),
        allow_redirects=False,
    )
    assert resp.status == 403
    # Without credentials: not signed in at all.
    resp = await client.post("/operations/kill-switch", data={"state": "on", "csrf": bobs})
    assert resp.status == 401
    store: Store = client.app[STORE]
    assert await store.read(recent_audit) == []


@pytest.mark.asyncio
async def test_kill_switch_from_the_page_is_audited_and_stops_remediation(
    make_client: ClientFactory,
) -> None:
    client = await ui_client(make_client)
    incident_id = await open_incident(client)
    store: Store = client.app[STORE]
    remediator = Remediator(settings=remediation_settings(dry_run=True), store=store, workload=None)

    async def remediate() -> list[ActionOutcome]:
        return await remediator.remediate(
            incident_id=incident_id,
            error_class=ErrorClass.RATE_LIMITED,
            verdict=Verdict.OUR_INTEGRATION,
            labels={},
        )

    token = _csrf(await (await client.get("/operations", headers=basic())).text())
    resp = await client.post(
        "/operations/kill-switch",
        data={"state": "on", "csrf": token},
        headers=basic(),
        allow_redirects=False,
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "/operations"
    (entry,) = await store.read(recent_audit)
    assert (entry.actor, entry.origin, entry.action) == ("alice", "127.0.0.1", "kill switch on")
    page = " ".join(
        "".join(
            parsed(await (await client.get("/operations", headers=basic())).text()).text
        ).split()
    )
    assert "switched on by alice from 127.0.0.1" in page

    outcomes = await remediate()
    assert outcomes
    assert all(o.status == "skipped" for o in outcomes)
    assert all(
        'kill switch switched on from the operations page by "alice"' in o.reason for o in outcomes
    )

    # Switched off again (allowed by default): remediation runs (here: reports a dry run).
    token = _csrf(await (await client.get("/operations", headers=basic())).text())
    resp = await client.post(
        "/operations/kill-switch",
        data={"state": "off", "csrf": token},
        headers=basic(),
        allow_redirects=False,
    )
    assert resp.status == 303
    assert [e.action for e in await store.read(recent_audit)] == [
        "kill switch off",
        "kill switch on",
    ]
    assert {o.status for o in await remediate()} == {"dry_run"}


@pytest.mark.asyncio
async def test_kill_switch_survives_a_restart(make_client: ClientFactory, tmp_path: Path) -> None:
    client = await ui_client(make_client)
    token = _csrf(await (await client.get("/operations", headers=basic())).text())
    await client.post(
        "/operations/kill-switch", data={"state": "on", "csrf": token}, headers=basic()
    )
    await client.close()
    again = await ui_client(make_client, allow_kill_switch_off=False)
    html = await (await again.get("/operations", headers=basic())).text()
    assert '<span class="badge switch-on">on</span>' in html
    assert 'value="off"' not in html  # switching off from the page is not offered
    # A valid form token for Alice: what refuses is the setting, not the token.
    token = again.app[ACCESS].csrf_token(Viewer("alice", "basic"))
    resp = await again.post(
        "/operations/kill-switch", data={"state": "off", "csrf": token}, headers=basic()
    )
    assert resp.status == 403


@pytest.mark.asyncio
async def test_postmortem_chart_and_bundles_on_the_page(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    client = await make_client(
        responder=RecordingResponder(),
        ui=USERS,
        evidence={"directory": str(tmp_path / "evidence")},
    )
    incident_id = await open_incident(client, labels={"team": "<img src=x onerror=alert(1)>"})
    page = await (await client.get(f"/incidents/{incident_id}", headers=basic())).text()
    assert "No evidence has been collected" in page
    assert (
        await client.get(f"/incidents/{incident_id}/evidence/opened", headers=basic())
    ).status == 404
    # The evidence API collects the bundle; the page then renders the draft from it.
    assert (
        await client.get(f"/api/incidents/{incident_id}/evidence", headers=bearer())
    ).status == 200
    page = await (await client.get(f"/incidents/{incident_id}", headers=basic())).text()
    draft = page[page.index('<article class="markdown">') : page.index("</article>")]
    assert "<h2>Incident: " in draft  # Markdown rendered as HTML
    # The draft's chart (chart.svg beside it in a bundle) is the page's chart endpoint.
    assert f'<img src="/incidents/{incident_id}/chart.svg"' in draft
    download = await client.get(f"/incidents/{incident_id}/evidence/opened", headers=basic())
    assert download.status == 200
    assert download.headers["Content-Type"] == "application/gzip"
    assert (await download.read())[:2] == b"\x1f\x8b"
    assert (await client.get(f"/incidents/{incident_id}/evidence/opened")).status == 401
    chart = await client.get(f"/incidents/{incident_id}/chart.svg", headers=basic())
    assert chart.status == 200
    assert chart.content_type == "image/svg+xml"
    assert "sandbox" in chart.headers["Content-Security-Policy"]


def test_postmortem_markup_is_text() -> None:
    from receiver.web.pages import postmortem_html

    html = str(
        postmortem_html(
            "## Title <script>alert(1)</script>\n\n[x](javascript:alert(1)) ![c](chart.svg)",
            chart_url="/incidents/i/chart.svg",
        )
    )
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "javascript:" not in html.replace("[x](javascript:alert(1))", "")
    assert 'src="/incidents/i/chart.svg"' in html


@pytest.mark.asyncio
async def test_the_response_times_are_on_the_incident_page(make_client: ClientFactory) -> None:
    """Who acknowledged, through what, after how long and whether in time, and when the
    incident was mitigated: the runbook's response times, shown beside the triage."""
    client = await ui_client(make_client)
    incident_id = await open_incident(client)
    store: Store = client.app[STORE]
    await store.write(
        lambda c: record_triage(
            c,
            incident_id,
            error_class=ErrorClass.AUTH,
            severity=Severity.P1,
            acknowledge_by=datetime.fromtimestamp(time.time() + 600, UTC),
            decision={"verdict": "our_integration", "summary": "the key was rotated"},
        )
    )
    page = parsed(await (await client.get(f"/incidents/{incident_id}", headers=basic())).text())
    assert "Acknowledged not yet" in " ".join(" ".join(page.text).split())

    await client.app[RESPONSE_TIMES].acknowledged(
        incident_id, "Alice <script>", time.time(), "pagerduty"
    )
    text = await (await client.get(f"/incidents/{incident_id}", headers=basic())).text()
    shown = " ".join(" ".join(parsed(text).text).split())
    assert re.search(r"Acknowledged by Alice <script> \(pagerduty\) after \d+s, in time", shown)
    assert "<script>" not in text  # the name is data: escaped
    assert "Mitigated not yet" in shown
