"""The playground in a real browser: click "next step" and watch T2 wait for T1's lock.

This is the course notes' picture, live: a web client (headless Chromium,
driven by Selenium) sends each click with ``fetch()`` to a web server (the
playground's Flask app, served from this process on 127.0.0.1), which runs the
step on a database session it holds for the page (a psycopg2 connection to the
suite's PostgreSQL). The page only draws what the app answers; whether a step
waits is decided by the server.

Outcome, as a learner sees it: at read committed T2's write WAITS for T1 and,
when T1 commits, RESUMES and overwrites T1's write (the lost update is
possible); at repeatable read it RESUMES with 40001 (prevented); two sessions
that lock rows in opposite orders end in a deadlock, 40P01.

Only the system's Chromium and chromedriver are used (never a download);
without them these tests skip, saying what to install (on CI, where .ci/run
installs them, they fail instead).
"""

import os

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from acid_lab.engine.scenario import READ_COMMITTED, REPEATABLE_READ
from acid_lab.play import browser
from acid_lab.play.app import create_app, entry_url
from acid_lab.play.http import serving
from acid_lab.play.sessions import Playground

pytestmark = [pytest.mark.webapp, pytest.mark.isolation]


@pytest.fixture(scope="module")
def site(target):
    """The playground served on 127.0.0.1 from a thread of this process; the URL the play
    command would print (``http://127.0.0.1:PORT/?key=SECRET``): opening it sets the cookie
    that every fetch() of the page then sends."""
    with Playground(target.info) as playground:
        app = create_app(playground)
        with serving(app):
            yield entry_url(app)


@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium for the module (starting one takes a second or two)."""
    why = browser.missing()
    if why is not None and os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests: {why}")  # .ci/run installs them as root
    if why is not None:
        pytest.skip(why)
    with browser.chromium() as driver:
        yield driver


@pytest.fixture
def page(chromium, site):
    """The playground page, freshly loaded (the last page's sessions closed as it left)."""
    chromium.get(site)
    return chromium


# --------------------------------------------------------------------------- helper verbs


def cell_selector(row, session, kind="step"):
    """The cell of ``session`` in a row (``#step-5``, or ``tr:nth-child(3)``), once drawn."""
    return f'#timeline tbody {row} td[data-session="{session}"][data-kind="{kind}"]'


def text_of(driver, selector):
    return driver.find_element(By.CSS_SELECTOR, selector).text


def load_scenario(driver, code, level):
    Select(driver.find_element(By.ID, "scenario")).select_by_value(code)
    Select(driver.find_element(By.ID, "level")).select_by_value(level)
    browser.click_until(driver, "load-scenario", "#step-1.todo")


def next_step(driver, number, session):
    """Click "next step"; wait until step ``number`` shows ``session``'s outcome."""
    browser.click_until(driver, "next", cell_selector(f"#step-{number}", session))


def type_and_run(driver, session, sql, row):
    """Free mode: type into the session's box, click "Run", wait for row ``row`` (1-based)."""
    # What typing would leave in the box (send_keys costs ~0.1 s per statement here).
    driver.execute_script("document.getElementById(arguments[0]).value = arguments[1]",
                          f"sql-{session}", sql)
    browser.click_until(driver, f"send-{session}",
                        cell_selector(f"tr:nth-child({row})", session))


# --------------------------------------------------------------------------- the lessons


@pytest.mark.parametrize("level, t2_resumes, verdict", [
    pytest.param(READ_COMMITTED, "UPDATE 1", "✗ possible",
                 id="read committed: possible (T2 waits, then overwrites)"),
    pytest.param(REPEATABLE_READ, "ERROR 40001", "✓ prevented",
                 id="repeatable read: prevented (T2 waits, then 40001)"),
])
def test_lost_update_in_the_browser(page, level, t2_resumes, verdict):
    """Lost update (P4), clicked through step by step.

    Scenario: pick P4 and ``level``; click "next step" four times (T1 and T2
    read 10, T1 writes 11, T2 writes 12), then once more (T1 commits), then
    "run to the end".
    Outcome: step 4 shows T2's write WAITS; step 5's row shows T2 RESUMES with
    UPDATE 1 at read committed and with ERROR 40001 at repeatable read; the
    verdict says possible, or prevented.
    """
    load_scenario(page, "P4", level)
    assert "one of the two updates silently disappears" in text_of(page, "#about")
    for number, session in [(1, "T1"), (2, "T2"), (3, "T1")]:
        next_step(page, number, session)
    next_step(page, 4, "T2")
    t2_write = page.find_element(By.CSS_SELECTOR, cell_selector("#step-4", "T2"))
    assert ("WAITS" in t2_write.text, t2_write.get_attribute("class")) == (True, "waits")
    browser.click_until(page, "next", cell_selector("#step-5", "T2", kind="resumes"))
    resumed = text_of(page, cell_selector("#step-5", "T2", kind="resumes"))
    assert resumed.startswith("RESUMES") and t2_resumes in resumed
    browser.click_until(page, "run-all", "#verdict:not([hidden])")
    assert text_of(page, "#verdict").startswith(f"{verdict} at {level}")


def test_free_mode_deadlock_in_the_browser(page):
    """A deadlock, typed by hand into two sessions' boxes.

    Scenario: free mode; T2 shortens its deadlock_timeout; T1 updates row 1,
    T2 row 2; T1 updates row 2 (WAITS); T2 updates row 1 (WAITS: a cycle).
    Outcome: without another click, the page (polling the app) shows T2
    RESUMES with ERROR 40P01 and then T1 RESUMES with UPDATE 1.
    """
    Select(page.find_element(By.ID, "free-level")).select_by_value(READ_COMMITTED)
    browser.click_until(page, "load-free", "#sql-T2")
    type_and_run(page, "T2", "set deadlock_timeout = '100ms'", row=1)
    type_and_run(page, "T1", "update test set value = 11 where id = 1", row=2)
    type_and_run(page, "T2", "update test set value = 22 where id = 2", row=3)
    type_and_run(page, "T1", "update test set value = 21 where id = 2", row=4)
    assert "WAITS" in text_of(page, cell_selector("tr:nth-child(4)", "T1"))
    type_and_run(page, "T2", "update test set value = 12 where id = 1", row=5)
    resumes = 'td[data-kind="resumes"]'
    page.set_script_timeout(10)
    page.execute_async_script(  # the page polls the app; wait until T1 has resumed too
        "const [selector, done] = arguments;"
        "const seen = () => document.querySelector(selector) && done();"
        "new MutationObserver(seen).observe(document.body, {childList: true, subtree: true});"
        "seen();", f'{resumes}[data-session="T1"]')
    resumed = {cell.get_attribute("data-session"): cell.text.split("\n")
               for cell in page.find_elements(By.CSS_SELECTOR, resumes)}
    assert resumed["T2"][0] == "RESUMES" and resumed["T2"][1].startswith("ERROR 40P01")
    assert resumed["T1"] == ["RESUMES", "UPDATE 1"]
