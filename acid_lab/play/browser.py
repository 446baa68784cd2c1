"""A headless Chromium for the playground's browser tests and benchmark.

Only the system's browser and driver (Debian's ``chromium`` and
``chromium-driver``) are used: the driver path is given to Selenium, so its
Selenium Manager never looks for (or downloads) a browser of its own. Each
browser gets a fresh profile folder, removed when it quits.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "apt-get install chromium chromium-driver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync")


def missing() -> str | None:
    """Why there is no browser to drive (with what to install), or None."""
    absent = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if absent:
        return f"{' and '.join(absent)} missing: {INSTALL}"
    return None


@contextlib.contextmanager
def chromium(width: int = 1100, height: int = 760) -> Iterator:
    """A Selenium WebDriver on a headless system Chromium; quit and its profile removed after."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="acid_lab-chromium-")
    try:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)),
                                  options=options)
        try:
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


# Clicks in the page and resolves once ``selector`` matches, timed with the page's own
# clock: a MutationObserver sees the row being drawn, no polling from outside.
_CLICK_UNTIL = """
const [id, selector, done] = arguments;
const start = performance.now();
const finish = () => { observer.disconnect(); done(performance.now() - start); };
const observer = new MutationObserver(() => { if (document.querySelector(selector)) finish(); });
observer.observe(document.body, {childList: true, subtree: true, attributes: true,
                                 characterData: true});
document.getElementById(id).click();
if (document.querySelector(selector)) finish();
"""


def click_until(driver, element_id: str, selector: str, bound: float = 10.0) -> float:
    """Click ``#element_id``; return the milliseconds until ``selector`` matches (at most
    ``bound`` seconds, else Selenium's ScriptTimeoutException)."""
    driver.set_script_timeout(bound)
    return driver.execute_async_script(_CLICK_UNTIL, element_id, selector)
