"""The web UI in a real browser against a real receiver process: the list follows a new
incident without a reload, its page shows every section in the runbook's order, and an action
awaiting approval is approved with a click: the Deployment restarts on the Kubernetes emulator
and the page follows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.browser import chromium
from tests.fakes.status_page import FakeStatusPage
from tests.helpers import alert, notification
from tests.kube_emulator import (
    DEPLOYMENTS,
    PODS,
    SECRETS,
    ClusterEmulator,
    deployment,
    pod,
    secret,
    write_kubeconfig,
)
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


NAME = "posthog-integration"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"


def restarted_at(cluster: ClusterEmulator) -> str | None:
    """The restart annotation on the Deployment's pod template (``None``: never restarted)."""
    template = cluster.current(DEPLOYMENTS, "prod", NAME)["spec"]["template"]
    annotations: dict[str, str] = template["metadata"].get("annotations") or {}
    return annotations.get(RESTARTED_AT)


def _approve(rx: ReceiverProcess, cluster: ClusterEmulator) -> dict[str, Any]:
    """In a thread: watch the 401 incident appear, open it, click Approve, watch it applied."""
    seen: dict[str, Any] = {}
    with chromium(user=USER, password=PASSWORD) as browser:
        wait = WebDriverWait(browser, 30)
        browser.get(rx.url + "/")
        wait.until(expected_conditions.presence_of_element_located((By.ID, "live")))
        browser.execute_script("window.loadedOnce = 'yes';")
        body = notification([alert("fp-rotated", labels={"status_code": "401"})])
        assert rx.post_webhook(body).status == 200
        link = wait.until(
            expected_conditions.presence_of_element_located((By.CSS_SELECTOR, "tr.incident a"))
        )
        seen["same_load"] = browser.execute_script("return window.loadedOnce;")
        link.click()
        # Triage and remediation run in the background; the page shows the approval when
        # the action reaches it, without a reload.
        button = wait.until(
            expected_conditions.element_to_be_clickable(
                (By.CSS_SELECTOR, 'tr.action[data-state="awaiting_approval"] button.approve')
            ),
            "no action awaiting approval",
        )
        seen["before"] = restarted_at(cluster)
        seen["awaiting"] = browser.find_element(By.ID, "actions").text
        button.click()
        # Applied, then verified once the rollout finished: either shows the restart done.
        done = 'tr.action[data-state="applied"], tr.action[data-state="verified"]'
        wait.until(
            lambda b: b.find_elements(By.CSS_SELECTOR, done), "the action never showed applied"
        )
        seen["after"] = restarted_at(cluster)
        seen["state"] = browser.find_element(By.CSS_SELECTOR, "tr.action").get_attribute(
            "data-state"
        )
        # Every outcome, the folded history too.
        seen["actions"] = browser.find_element(By.ID, "actions").get_attribute("textContent")
        seen["url"] = browser.current_url
        seen["buttons"] = browser.find_elements(By.CSS_SELECTOR, "button.approve")
    return seen


@pytest.mark.asyncio
async def test_approve_in_the_browser_restarts_the_deployment(
    receiver_proc: Callable[..., ReceiverProcess],
    status_page: FakeStatusPage,
    cluster: ClusterEmulator,
    tmp_path: Path,
) -> None:
    """A 401 after the API key's Secret changed (after the pods started): the runbook's restart
    waits for approval; Approve in the browser restarts the Deployment on the emulator, and
    the page shows it applied."""
    cluster.put_object(DEPLOYMENTS, "prod", NAME, deployment())
    cluster.put_object(PODS, "prod", "p1", pod("p1", started="2026-11-23T04:00:00Z"))
    cluster.put_object(
        SECRETS,
        "prod",
        "posthog-secrets",
        secret("posthog-secrets", {"api-key": "bmV3LWtleQ=="}, managed_at="2026-11-23T04:30:00Z"),
    )
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", str(cluster.url).rstrip("/"))
    rx = receiver_proc(
        ui={
            "users": [{"username": USER, "password": {"value": PASSWORD}}],
            "refresh_seconds": 1,
        },
        triage={"upstream": {"url": status_page.url(), "timeout_seconds": 1}},
        kubernetes={"mode": "kubeconfig", "kubeconfig": str(kubeconfig)},
        remediation={
            "dry_run": False,
            "target": {"namespace": "prod"},
            "cooldown_seconds": 0,
            "rollout_timeout_seconds": 2,
            "rollout_poll_seconds": 0.1,
        },
    )
    seen = await asyncio.to_thread(_approve, rx, cluster)
    assert seen["same_load"] == "yes", "the list was reloaded instead of updated"
    assert "awaiting approval" in seen["awaiting"]
    assert "restart_for_rotated_key" in seen["awaiting"]
    assert seen["before"] is None, "restarted before anyone approved"
    assert seen["after"] is not None, "Approve did not restart the Deployment"
    assert seen["state"] in ("applied", "verified")
    assert 'approved by "oncall" from the incident page' in seen["actions"]
    assert "restarted the Deployment" in seen["actions"]
    assert seen["buttons"] == []
    # The form's answer (303) brought the browser back to the incident's page.
    assert seen["url"].startswith(rx.url + "/incidents/inc-")
