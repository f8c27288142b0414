"""The web UI in a real browser against a real receiver process: the list follows a new
incident without a reload, and its page shows every section in the runbook's order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import chromium
from tests.fakes.status_page import FakeStatusPage
from tests.helpers import alert, notification
from tests.procs import ReceiverProcess

pytestmark = pytest.mark.slow

USER, PASSWORD = "oncall", "browser-test-password-81c2"
SECTIONS = ["alerts", "triage", "actions", "notifications", "chart", "postmortem", "evidence"]


def _follow(rx: ReceiverProcess) -> dict[str, Any]:
    """Everything the browser does, in a thread: the test's event loop serves the fakes."""
    seen: dict[str, Any] = {}
    with chromium(user=USER, password=PASSWORD) as browser:
        wait = WebDriverWait(browser, 20)
        browser.get(rx.url + "/")
        wait.until(expected_conditions.presence_of_element_located((By.ID, "live")))
        seen["empty"] = browser.find_element(By.ID, "live").text
        # Marks this page load: a reload would lose it.
        browser.execute_script("window.loadedOnce = 'yes';")
        answer = rx.post_webhook(
            notification([alert("fp-browser", labels={"team": "<b>payments</b>"})])
        )
        assert answer.status == 200
        row = wait.until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "tr.incident"))
        )
        seen["row"] = row.text
        seen["same_load"] = browser.execute_script("return window.loadedOnce;")
        browser.find_element(By.CSS_SELECTOR, "tr.incident a").click()
        wait.until(expected_conditions.presence_of_element_located((By.ID, "triage")))
        # The responder triages in the background; the page shows it without a reload.
        browser.execute_script("window.loadedOnce = 'incident';")
        wait.until(
            lambda b: "Verdict" in b.find_element(By.ID, "triage").text,
            "triage never shown",
        )
        seen["incident_same_load"] = browser.execute_script("return window.loadedOnce;")
        sections = browser.find_elements(By.CSS_SELECTOR, "main section[id]")
        seen["sections"] = [s.get_attribute("id") for s in sections]
        seen["labels"] = browser.find_element(By.ID, "alerts").text
        seen["bold"] = browser.find_elements(By.CSS_SELECTOR, "#alerts b")
        seen["chart"] = browser.execute_script(
            "const i = document.querySelector('#chart img'); return i.complete && i.naturalWidth;"
        )
    return seen


@pytest.mark.asyncio
async def test_a_new_incident_appears_and_opens(
    receiver_proc: Callable[..., ReceiverProcess], status_page: FakeStatusPage
) -> None:
    rx = receiver_proc(
        ui={
            "users": [{"username": USER, "password": {"value": PASSWORD}}],
            "refresh_seconds": 1,
        },
        triage={"upstream": {"url": status_page.url(), "timeout_seconds": 1}},
    )
    seen = await asyncio.to_thread(_follow, rx)
    assert "No incidents" in seen["empty"]
    assert "PostHogErrorsHigh" in seen["row"]
    assert "open" in seen["row"]
    assert seen["same_load"] == "yes", "the list was reloaded instead of updated"
    assert seen["incident_same_load"] == "incident"
    assert [s for s in seen["sections"] if s in SECTIONS] == SECTIONS
    assert "team=<b>payments</b>" in seen["labels"]
    assert seen["bold"] == []
    assert seen["chart"], "the chart did not load"
