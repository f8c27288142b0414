"""A hostile label against a rule that would backtrack: the served process stays responsive."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from tests.helpers import alert, notification
from tests.procs import ReceiverProcess, http, wait_for

pytestmark = pytest.mark.slow


def test_a_backtracking_rule_never_freezes_the_service(
    receiver_proc: Callable[..., ReceiverProcess],
) -> None:
    """``(a+)+$`` as a triage rule and a long run of ``a`` in the label it reads: the incident
    is triaged, and /healthz answers within a second all the while."""
    rx = receiver_proc(
        triage={
            "rules": [{"labels": ["reason"], "pattern": "(a+)+$", "error_class": "auth"}],
        }
    )
    stop = threading.Event()
    slow: list[Any] = []

    def probe() -> None:
        while not stop.is_set():
            try:
                http("GET", rx.url + "/healthz", timeout=1)
            except OSError as e:  # a timeout is an OSError
                slow.append(e)
            stop.wait(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    try:
        hostile = notification([alert("a1", labels={"reason": "a" * 100 + "!"})])
        assert rx.post_webhook(hostile).status == 200
        wait_for(
            lambda: [i for i in rx.get("/api/incidents").json()["incidents"] if i["errorClass"]],
            what="incident triaged",
        )
    finally:
        stop.set()
        prober.join()
    assert slow == []
