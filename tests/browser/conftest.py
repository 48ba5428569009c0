"""Fixtures for the browser test: a real node and headless Chromium sessions."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

from swiftchat_node import Node  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


def _missing() -> list[str]:
    return [p for p in (CHROMIUM, CHROMEDRIVER) if not (Path(p).exists() or shutil.which(p))]


@pytest.fixture(scope="session", autouse=True)
def _chromium_installed():
    missing = _missing()
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: apt-get install -y chromium chromium-driver",
                    pytrace=False)


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path).start()
    yield n
    n.stop()


@pytest.fixture
def browsers(tmp_path):
    """A factory of headless Chromium sessions, all closed at the end."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Never let Selenium Manager try to download a driver or a browser.
    os.environ.setdefault("SE_OFFLINE", "true")
    drivers = []

    def make():
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--window-size=1280,800", "--lang=en-US", "--force-color-profile=srgb",
                    "--hide-scrollbars", "--no-first-run", "--disable-extensions",
                    "--disable-background-timer-throttling",
                    "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows"):
            opts.add_argument(arg)
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        log = tmp_path / f"chromedriver-{len(drivers)}.log"
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(log)), options=opts)
        driver.set_page_load_timeout(30)
        set_viewport(driver, 1280, 800)
        drivers.append(driver)
        return driver

    yield make
    for d in drivers:
        try:
            d.quit()
        except Exception:
            pass


def set_viewport(driver, width: int, height: int, mobile: bool = False) -> None:
    """Sets the page's viewport exactly (the screenshots' size)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})
    if mobile:
        driver.execute_cdp_cmd("Emulation.setTouchEmulationEnabled", {"enabled": True, "maxTouchPoints": 5})
