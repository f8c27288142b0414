"""The receiver as a real process: logs, graceful shutdown, and recovery after a crash."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers import BASIC_PASSWORD, TOKEN, alert, notification
from tests.procs import ReceiverProcess, receiver_config, wait_for
from tests.store_outsider import holding_write_lock

pytestmark = pytest.mark.slow

StartReceiver = Callable[..., ReceiverProcess]


def incidents(rx: ReceiverProcess) -> list[dict[str, Any]]:
    answer = rx.get("/api/incidents")
    assert answer.status == 200, answer
    found: list[dict[str, Any]] = answer.json()["incidents"]
    return found


def test_logs_are_json_with_request_ids_and_never_a_secret(receiver_proc: StartReceiver) -> None:
    """Every log line is JSON; request lines carry the request id; no secret appears anywhere."""
    rx = receiver_proc(logging={"level": "debug", "format": "json"})
    leaky = notification([alert("a1", annotations={"note": f"token is {TOKEN}"})])
    accepted = rx.post_webhook(leaky, headers={"X-Request-Id": "req-from-alertmanager-1"})
    assert accepted.status == 200
    assert accepted.headers["X-Request-Id"] == "req-from-alertmanager-1"
    refused = rx.post_webhook(leaky, headers={"Authorization": f"Bearer {TOKEN}-but-longer"})
    assert refused.status == 401
    assert rx.get(f"/api/incidents?token={TOKEN}").status == 200
    wait_for(lambda: incidents(rx), what="incident opened")
    assert rx.terminate() == 0

    text = rx.logs()
    assert TOKEN not in text
    assert BASIC_PASSWORD not in text
    events = rx.log_events()
    assert len(events) == len(text.splitlines())  # nothing but JSON lines
    by_request = [e for e in events if e.get("request_id") == "req-from-alertmanager-1"]
    assert {e["event"] for e in by_request} >= {"webhook accepted", "request"}
    assert all("timestamp" in e and "level" in e for e in events)
    rejected = [e for e in events if e["event"] == "webhook rejected"]
    assert rejected
    assert rejected[0]["request_id"] != "req-from-alertmanager-1"
    assert any(e["event"] == "notification applied" for e in events)


def test_sigterm_under_load_loses_no_acknowledged_webhook(receiver_proc: StartReceiver) -> None:
    """SIGTERM while webhooks keep arriving: requests in flight are answered, never with a
    5xx; the process exits 0; every webhook answered 200 is an incident after the restart."""
    rx = receiver_proc(worker={"paused": True})
    answered: dict[str, int] = {}
    stop = threading.Event()

    def send(sender: int) -> None:
        for n in range(150):  # at most 900 in all: every incident fits in one API page
            group = f'{{}}:{{sender="{sender}", n="{n}"}}'
            try:
                answer = rx.post_webhook(notification([alert(f"f{sender}-{n}")], group_key=group))
            except OSError:  # refused or reset: the server stopped listening
                return
            answered[group] = answer.status
            if stop.is_set():
                return

    senders = [threading.Thread(target=send, args=(i,)) for i in range(6)]
    for sender in senders:
        sender.start()
    time.sleep(0.2)
    assert rx.terminate() == 0
    stop.set()
    for sender in senders:
        sender.join(timeout=30)
    assert any(e["event"] == "receiver stopped" for e in rx.log_events())
    stored = {group for group, status in answered.items() if status == 200}
    assert 0 < len(stored) < 6 * 150, "SIGTERM must come while webhooks still arrive"
    assert set(answered.values()) == {200}, "no webhook may get a 5xx while stopping"

    rx.write_config(receiver_config(rx.workdir, worker={"paused": False}))
    rx.start()
    wait_for(lambda: stored <= incidents_by_group(rx), what="every acknowledged webhook applied")


def incidents_by_group(rx: ReceiverProcess) -> set[str]:
    answer = rx.get("/api/incidents?limit=1000")
    assert answer.status == 200, answer
    return {i["groupKey"] for i in answer.json()["incidents"]}


def test_webhook_spooled_while_the_store_is_locked_survives_a_crash(
    receiver_proc: StartReceiver,
) -> None:
    """A webhook answered 200 while the database cannot commit is only in the spool; SIGKILLed
    then, it is moved into the inbox and becomes an incident after the restart."""
    rx = receiver_proc()
    # Another writer holds the lock: nothing can leave the spool.
    with holding_write_lock(rx.workdir / "receiver.sqlite3"):
        answer = rx.post_webhook(notification([alert("s1")]))
        assert (answer.status, answer.json()["status"]) == (200, "stored")
        time.sleep(0.3)
        rx.kill()
    spool = rx.workdir / "receiver.sqlite3.spool"
    assert [p.stat().st_size > 0 for p in spool.iterdir()] == [True]

    rx.start()
    [incident] = wait_for(lambda: incidents(rx), what="incident after restart")
    detail = rx.get(f"/api/incidents/{incident['id']}").json()
    assert [a["fingerprint"] for a in detail["alerts"]] == ["s1"]
    wait_for(lambda: [p for p in spool.iterdir() if p.stat().st_size] == [], what="spool moved")
    again = rx.post_webhook(notification([alert("s1")]))
    assert again.json()["status"] == "duplicate"


def test_webhook_acknowledged_before_a_crash_is_processed_after_restart(
    receiver_proc: StartReceiver,
) -> None:
    """A webhook answered 200, then SIGKILLed before processing, is an incident after restart."""
    rx = receiver_proc(worker={"paused": True})  # 'before processing', made deterministic
    answer = rx.post_webhook(notification([alert("a1"), alert("b2")]))
    assert (answer.status, answer.json()["status"]) == (200, "stored")
    assert incidents(rx) == []
    rx.kill()

    rx.write_config(receiver_config(rx.workdir, worker={"paused": False}))
    rx.start()
    [incident] = wait_for(lambda: incidents(rx), what="incident after restart")
    detail = rx.get(f"/api/incidents/{incident['id']}").json()
    assert {a["fingerprint"]: a["status"] for a in detail["alerts"]} == {
        "a1": "firing",
        "b2": "firing",
    }
    # The resend Alertmanager makes after the restart is recognised as already known.
    again = rx.post_webhook(notification([alert("a1"), alert("b2")]))
    assert again.json()["status"] == "duplicate"
