"""How long one playground step takes, from the click to the filled row.

    python bench/bench_playground.py [--dsn DSN] [--runs N]

Without --dsn it starts a temporary server. The playground is served from this
process on 127.0.0.1, as ``python -m acid_lab play`` serves it. One step is
``select value from test where id = 1`` on T1 of a free-mode page (autocommit),
timed two ways, each the median of N steps after a few warm-up ones:

* HTTP alone: one ``POST /api/pages/<token>/run`` through a real socket
  (urllib), until its JSON answer is read;
* the browser: headless Chromium clicks "Run on T1" and the page's own clock
  (``performance.now()``) stops when a MutationObserver sees the new row
  drawn: fetch(), the app, the server and the drawing, without Selenium's own
  round trips. Skipped when the system's Chromium or chromedriver is missing.

Goal: median <= 50 ms on the temporary server.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import statistics
import sys
import time
import urllib.request

from acid_lab.play import browser
from acid_lab.play.app import create_app, entry_url
from acid_lab.play.http import serving
from acid_lab.play.sessions import MAX_HISTORY, Playground
from acid_lab.servers.target import open_target

GOAL_MS = 50.0
WARM_UP = 5
STEP = "select value from test where id = 1"


# Holds the playground's cookie once its keyed URL has been opened, as a browser would.
_client = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(
    http.cookiejar.CookieJar()))


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with _client.open(request, timeout=10) as response:
        return json.load(response)


def http_steps(site: str, runs: int) -> list[float]:
    """Milliseconds per step through HTTP alone."""
    page = post(site + "api/pages", {"mode": "free"})
    run = f"{site}api/pages/{page['token']}/run"
    timings = []
    for number in range(WARM_UP + runs):
        started = time.perf_counter()
        post(run, {"session": "T1", "sql": STEP})
        if number >= WARM_UP:
            timings.append((time.perf_counter() - started) * 1000)
    post(f"{site}api/pages/{page['token']}/close", {})
    return timings


def browser_steps(keyed_url: str, runs: int) -> list[float]:
    """Milliseconds per step from the click to the row drawn, by the page's clock (at most
    as many as the page keeps in its history, so that row N stays row N)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    timings = []
    with browser.chromium() as driver:
        driver.get(keyed_url)
        Select(driver.find_element(By.ID, "free-level")).select_by_value("")  # autocommit
        browser.click_until(driver, "load-free", "#sql-T1")
        driver.execute_script("document.getElementById('sql-T1').value = arguments[0]", STEP)
        for number in range(min(WARM_UP + runs, MAX_HISTORY)):
            drawn = (f"#timeline tbody tr:nth-child({number + 1}) "
                     'td[data-session="T1"][data-kind="step"] .outcome')
            elapsed = browser.click_until(driver, "send-T1", drawn)
            if number >= WARM_UP:
                timings.append(elapsed)
    return timings


def report(name: str, timings: list[float]) -> bool:
    median = statistics.median(timings)
    print(f"{name:<28} median {median:6.1f} ms   min {min(timings):6.1f}   "
          f"max {max(timings):6.1f}   ({len(timings)} steps)")
    return median <= GOAL_MS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="an existing server (default: a temporary one)")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    with open_target(args.dsn) as target, Playground(target.info) as playground:
        app = create_app(playground)
        with serving(app) as site:
            return _measure(target, app, site, args.runs)


def _measure(target, app, site: str, runs: int) -> int:
    with _client.open(entry_url(app), timeout=10):
        pass  # the cookie, as a browser opening the printed URL gets it
    print(f"playground step round trip on {target.description} (goal: median <= "
          f"{GOAL_MS:g} ms)")
    ok = report("HTTP alone (urllib)", http_steps(site, runs))
    why = browser.missing()
    if why is None:
        ok = report("browser (click -> row)", browser_steps(entry_url(app), runs)) and ok
    else:
        print(f"browser: skipped, {why}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
