"""Driving the dashboard in headless Chromium: what its tests and its benchmark see.

Uses Debian's `chromium` and `chromium-driver` packages (`make install` puts them there), through
Selenium with the driver's path given, so nothing is downloaded at run time.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from dashboard.app import TABS
from infra.errors import FleetError

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


class NoChromium(FleetError):
    """Chromium or its driver is not installed."""


def chromium(width: int = 1400, height: int = 1000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver") or CHROMEDRIVER
    if not Path(driver_path).exists() or not Path(CHROMIUM).exists():
        raise NoChromium(
            f"headless Chromium needs {CHROMIUM} and {CHROMEDRIVER}: `apt-get install chromium chromium-driver`"
            " (`make install` does it)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--mute-audio",
        "--disable-background-networking",
        "--autoplay-policy=no-user-gesture-required",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver_path), options=options)


def open_view(driver, url: str, tab: str, ready_css: str, timeout_s: float = 30) -> float:
    """Load the dashboard, switch to `tab`, and wait until `ready_css` is on the page and the
    loading spinner is gone; returns the seconds from the click (or the page load) to then."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    if tab not in TABS:
        raise ValueError(f"no view {tab!r}: {', '.join(TABS)}")
    wait = WebDriverWait(driver, timeout_s, poll_frequency=0.02)  # the default 0.5 s would be most of what we measure
    t = time.perf_counter()
    if not driver.current_url.startswith(url):
        driver.get(url)
        wait.until(ec.presence_of_element_located((By.ID, "tab-fleet")))
    if not driver.find_elements(By.CSS_SELECTOR, f"#tab-{tab}.tab--selected"):
        t = time.perf_counter()
        driver.find_element(By.ID, f"tab-{tab}").click()
    wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ready_css)))
    wait.until(
        lambda d: (
            not d.execute_script(
                "return !!document.querySelector('#view ._dash-loading, [data-dash-is-loading=\"true\"]')"
            )
        )
    )
    return time.perf_counter() - t
