"""The receiver as a real process: logs, graceful shutdown, and recovery after a crash."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers import BASIC_PASSWORD, TOKEN, alert, notification
from tests.procs import ReceiverProcess, receiver_config, wait_for

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


def test_sigterm_lets_the_in_flight_request_finish(receiver_proc: StartReceiver) -> None:
    """On SIGTERM a webhook still waiting for its commit completes with 200; the exit code is 0."""
    rx = receiver_proc(store={"busy_timeout_seconds": 10})
    body = json.dumps(notification([alert("a1")])).encode()
    head = (
        "POST /webhook/alertmanager HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{rx.port}\r\n"
        f"Authorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    # Another process holds the database's write lock: the request stays in flight.
    other = sqlite3.connect(rx.workdir / "receiver.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with socket.create_connection(("127.0.0.1", rx.port), timeout=20) as conn:
            conn.sendall(head + body)
            time.sleep(0.5)
            assert rx.proc is not None
            rx.proc.terminate()
            time.sleep(0.5)
            assert rx.running(), "the process must wait for the in-flight request"
            other.execute("ROLLBACK")
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 200 OK"
    assert json.loads(rest.partition(b"\r\n\r\n")[2]) == {"status": "stored", "alerts": 1}
    assert rx.proc.wait(timeout=15) == 0
    assert any(e["event"] == "receiver stopped" for e in rx.log_events())


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
