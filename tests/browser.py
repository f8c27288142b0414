"""A real browser for the web UI's tests: Debian's headless Chromium driven by Selenium
through Debian's chromium-driver (no driver or browser is downloaded)."""

from __future__ import annotations

import base64
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

__all__ = ["chromium"]

CHROMIUM = ("/usr/bin/chromium", "chromium")
DRIVER = ("/usr/bin/chromedriver", "chromedriver")


def _which(candidates: tuple[str, ...]) -> str | None:
    return next((found for c in candidates if (found := shutil.which(c))), None)


@contextmanager
def chromium(
    *, user: str, password: str, width: int = 1280, height: int = 900
) -> Iterator[webdriver.Chrome]:
    """A headless Chromium that sends basic credentials with every request (the page's own
    requests too, as a signed-in browser does)."""
    binary, driver = _which(CHROMIUM), _which(DRIVER)
    if binary is None or driver is None:
        pytest.fail("chromium and chromium-driver are needed (./dev.sh test installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={width},{height}",
        # Loopback only: nothing of the browser's own (updates, sync) goes anywhere.
        "--no-proxy-server",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ):
        options.add_argument(arg)
    browser = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    try:
        raw = base64.b64encode(f"{user}:{password}".encode()).decode()
        browser.execute_cdp_cmd("Network.enable", {})
        browser.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {raw}"}}
        )
        yield browser
    finally:
        browser.quit()
