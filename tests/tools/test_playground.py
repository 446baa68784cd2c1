"""The playground's app: HTTP is stateless, a database session is not.

A browser talks to the playground in short HTTP requests, each complete in
itself. A transaction is the opposite: it lives in one server session (one
connection, one server process) from BEGIN to COMMIT, holding its locks and
its snapshot in between. So the app holds one real psycopg2 connection per
session of a page (T1, T2, ..., observer) between requests, under a random
token only that page knows, each page in a schema of its own.

When a step has to wait for another session's lock, the request cannot wait
for it (the step that would release the lock is the learner's next click):
the app answers "waiting" as soon as the server says the session is blocked
(``pg_isolation_test_session_is_blocked``, never a guess from a delay), and
the step's RESUMES shows in the row of the step that released it, or in a
row of its own when it ended by itself (a deadlock check) and the page polled.

These tests drive the app's JSON API through Flask's test client, against the
suite's server: the lessons (a lost update, a deadlock, a cancelled wait) and
the machinery (sessions held, pages apart, bounds, reset, idle timeout,
shutdown, the ``play`` command).
"""

import contextlib
import io
import json
import os
import re
import signal
import threading
import urllib.request
from pathlib import Path

import psutil
import pytest
from psycopg2 import errors

from acid_lab.commands.play import play_command
from acid_lab.engine.scenario import READ_COMMITTED, REPEATABLE_READ, SERIALIZABLE
from acid_lab.play.app import create_app, keyed_client
from acid_lab.play.scenarios import find
from acid_lab.play.sessions import MAX_SESSIONS, Playground
from acid_lab.servers.queries import rows

pytestmark = pytest.mark.webapp

REPO = Path(__file__).resolve().parents[2]
COMMAND_BOUND = 30  # seconds the play command may take to start or to stop


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def playground(target):
    """One playground for the module, over the run's database; closed at the end."""
    with Playground(target.info, max_pages=3) as shared:
        yield shared


@pytest.fixture
def client(playground):
    """The app's test client; every page this test opened is closed afterwards."""
    app = create_app(playground)
    yield keyed_client(app)
    playground.close_idle(now=float("inf"))


# --------------------------------------------------------------------------- helper verbs


def call(client, path, body=None, status=200):
    """POST a JSON body; check the status; return the answer."""
    response = client.post(path, json=body if body is not None else {})
    assert response.status_code == status, response.get_json()
    return response.get_json()


def open_page(client, **body):
    return call(client, "/api/pages", body, status=201)


def next_step(client, page, status=200):
    return call(client, f"/api/pages/{page['token']}/next", status=status)


def run_sql(client, page, session, sql, status=200):
    return call(client, f"/api/pages/{page['token']}/run", {"session": session, "sql": sql},
                status=status)


def poll(client, page):
    return call(client, f"/api/pages/{page['token']}/poll")


def cell(page, step, session):
    """What the row of scenario step ``step`` (1-based) shows in ``session``'s column:
    ("step" | "resumes", the entry), or None."""
    for row in page["rows"]:
        if row["step"] == step - 1:
            for found in row["cells"]:
                if found["session"] == session:
                    return found["kind"], page["entries"][str(found["entry"])]
    return None


def cells(page, kind):
    """Every (session, entry) of this kind, in row order."""
    return [(c["session"], page["entries"][str(c["entry"])])
            for row in page["rows"] for c in row["cells"] if c["kind"] == kind]


def outcome(entry):
    """``sees [[12]]``, ``UPDATE 1``, the error's class (``errors.SerializationFailure``
    for 40001), or ``WAITING`` / ``RUNNING`` while unfinished."""
    if entry["state"] != "done":
        return entry["state"].upper()
    if entry["status"] == "error":
        return errors.lookup(entry["sqlstate"])
    if entry["rows"] is not None:
        return f"sees {entry['rows']}"
    return entry["command"]


def page_sessions(observer, name):
    """The server sessions the app holds for the page named ``name`` on the server
    (``Page.name``, in its application_name; random, no part of the page's token)."""
    return rows(observer, "select state from pg_stat_activity where application_name = %s",
                (f"acid_lab play {name}",))


def schema_exists(observer, name):
    return rows(observer, "select count(*) from pg_namespace where nspname = %s",
                (name,))[0][0] == 1


# --------------------------------------------------------------------------- the lessons


@pytest.mark.isolation
@pytest.mark.parametrize("level, t2_write, row_1, verdict", [
    pytest.param(READ_COMMITTED, "UPDATE 1", [[12]], "possible",
                 id="read committed: possible (T2 overwrites)"),
    pytest.param(REPEATABLE_READ, errors.SerializationFailure, [[11]], "prevented",
                 id="repeatable read: prevented (40001)"),
    pytest.param(SERIALIZABLE, errors.SerializationFailure, [[11]], "prevented",
                 id="serializable: prevented (40001)"),
])
def test_lost_update_step_by_step(client, level, t2_write, row_1, verdict):
    """Lost update (P4), one HTTP request per step.

    Scenario: the catalog's P4 at ``level``: T1 and T2 read row 1, T1 writes 11,
    T2 writes 12 (its request answers at once: T2 WAITS for T1's row lock), T1
    commits (T2 RESUMES in that row), T2 commits, the observer reads row 1.
    Outcome: at read committed T2's write goes through and T1's 11 is lost
    (possible); from repeatable read up T2 resumes with 40001 (prevented).
    """
    page = open_page(client, mode="scenario", code="P4", level=level)
    assert page["scenario"]["legend"].startswith("Two transactions read the same value")
    for _ in range(4):
        page = next_step(client, page)
    assert outcome(cell(page, 4, "T2")[1]) == "WAITING"
    assert page["pending"] == {"T2": "waiting"}
    page = next_step(client, page)  # T1 commits
    assert cell(page, 5, "T1")[1]["command"] == "COMMIT"
    kind, t2 = cell(page, 5, "T2")
    assert (kind, t2["sql"], outcome(t2)) == ("resumes", "update test set value = 12 where id = 1",
                                               t2_write)
    assert page["verdict"] is None
    page = next_step(client, page)
    page = next_step(client, page)
    assert outcome(cell(page, 7, "observer")[1]) == f"sees {row_1}"
    assert (page["finished"], page["verdict"]) == (True, verdict)


# The chapter's outcomes at repeatable read (snapshot isolation), where they differ most.
AT_REPEATABLE_READ = [
    ("G0", "prevented"), ("G1a", "prevented"), ("G1b", "prevented"), ("G1c", "prevented"),
    ("OTV", "prevented"), ("PMP", "prevented"), ("P4", "prevented"), ("G-single", "prevented"),
    ("G2-item", "possible"), ("G2", "possible"), ("PMP-write", "prevented"),
    ("G-single-predicate", "prevented"), ("G-single-write-predicate", "prevented"),
    ("G2-read-only", "possible"), ("G2-read-only-deferrable", "possible"),
]


@pytest.mark.isolation
@pytest.mark.parametrize("code, verdict", [
    pytest.param(code, verdict, id=f"{code} at repeatable read: {verdict}")
    for code, verdict in AT_REPEATABLE_READ])
def test_every_catalog_scenario(client, code, verdict):
    """Every scenario of the catalog, stepped through the app, ends as the chapter says.

    Scenario: the anomaly's schedule at repeatable read, one request per step.
    Outcome: snapshot isolation prevents all but the write skews (G2-item, G2
    and the read-only anomalies): the verdict the page shows is the chapter's.
    """
    page = open_page(client, mode="scenario", code=code, level=REPEATABLE_READ)
    assert [(s["session"], s["sql"]) for s in page["schedule"]] \
        == [(s, sql) for s, sql in find(code).steps]
    while not page["finished"]:
        page = next_step(client, page)
    assert page["verdict"] == verdict
    call(client, f"/api/pages/{page['token']}/close")


@pytest.mark.engine
def test_the_catalog_is_offered_whole(client):
    """The page offers every anomaly of the isolation chapter, with its legend.

    Scenario: ask the app for its scenarios.
    Outcome: the catalog's matrix and variants, in order, each with its steps.
    """
    offered = client.get("/api/scenarios").get_json()
    assert [s["code"] for s in offered["scenarios"]] == [code for code, _ in AT_REPEATABLE_READ]
    assert offered["levels"] == ["read uncommitted", "read committed", "repeatable read",
                                 "serializable"]
    assert all(s["legend"] and s["steps"] for s in offered["scenarios"])


@pytest.mark.isolation
def test_free_mode_deadlock(client):
    """A deadlock typed by hand: the server breaks the cycle with 40P01.

    Scenario: free mode at read committed; T1 updates row 1, T2 row 2; T1 updates
    row 2 (WAITS for T2); T2, with a short deadlock_timeout, updates row 1 (WAITS
    for T1: a cycle). The page polls.
    Outcome: T2's deadlock check finds the cycle and T2 resumes with 40P01; T1
    then gets row 2 and resumes with UPDATE 1.
    """
    page = open_page(client, mode="free", level=READ_COMMITTED)
    page = run_sql(client, page, "T2", "set deadlock_timeout = '100ms'")
    page = run_sql(client, page, "T1", "update test set value = 11 where id = 1")
    page = run_sql(client, page, "T2", "update test set value = 22 where id = 2")
    page = run_sql(client, page, "T1", "update test set value = 21 where id = 2")
    assert page["pending"] == {"T1": "waiting"}
    page = run_sql(client, page, "T2", "update test set value = 12 where id = 1")
    for _ in range(10):  # each poll waits (bounded) for a waiting statement to finish
        if not page["pending"]:
            break
        page = poll(client, page)
    # Both clients learn at about the same moment, in either order: T2's error
    # reaches its client once T2's abort released the lock T1 got.
    resumed = {session: outcome(entry) for session, entry in cells(page, "resumes")}
    assert resumed == {"T2": errors.DeadlockDetected, "T1": "UPDATE 1"}


@pytest.mark.isolation
def test_cancel_a_waiting_step(client, playground, observer):
    """A waiting step can be cancelled: the page's own pg_cancel_backend.

    Scenario: free mode; T1 updates row 1 and keeps its transaction open; T2's
    update of row 1 WAITS; the learner clicks "cancel" on T2.
    Outcome: T2 resumes with 57014 (query_canceled), its transaction is
    aborted; T1's transaction, still open, is untouched.
    """
    page = open_page(client, mode="free", level=READ_COMMITTED)
    page = run_sql(client, page, "T1", "update test set value = 11 where id = 1")
    page = run_sql(client, page, "T2", "update test set value = 12 where id = 1")
    assert page["pending"] == {"T2": "waiting"}
    page = call(client, f"/api/pages/{page['token']}/cancel", {"session": "T2"})
    assert [(s, outcome(e)) for s, e in cells(page, "resumes")] == [
        ("T2", errors.QueryCanceled)]
    assert sorted(page_sessions(observer, playground.page(page["token"]).name)) == [
        ("idle in transaction",), ("idle in transaction (aborted)",)]


@pytest.mark.isolation
def test_pasted_script(client):
    """A pasted Hermitage script runs as written: its own setup, its own BEGINs.

    Scenario: examples/lost_update_repeatable_read.sql, stepped to the end.
    Outcome: T2's update WAITS, then resumes with 40001; nothing is judged (a
    script has no verdict, only what the server did).
    """
    text = (REPO / "examples" / "lost_update_repeatable_read.sql").read_text()
    page = open_page(client, mode="script", text=text)
    assert page["level"] is None
    while not page["finished"]:
        page = next_step(client, page)
    waits = [(s, e["sql"]) for s, e in cells(page, "step") if e["blocked"]]
    assert waits == [("T2", "update test set value = 12 where id = 1")]
    assert [(s, outcome(e)) for s, e in cells(page, "resumes")] == [
        ("T2", errors.SerializationFailure)]
    assert page["verdict"] is None


@pytest.mark.isolation
def test_pasted_page(client):
    """A pasted Hermitage page holds several scripts; the page plays the one picked.

    Scenario: examples/lost_update_page.md; its second script (repeatable read),
    stepped to the end, where the "either" session reads row 1.
    Outcome: the page lists both scripts by heading; T2 WAITS, then resumes with
    40001; "either" sees T1's 11.
    """
    text = (REPO / "examples" / "lost_update_page.md").read_text()
    page = open_page(client, mode="script", text=text, part=1)
    assert [name.split(":")[0] for name in page["parts"]] == ["Read committed",
                                                              "Repeatable read"]
    while not page["finished"]:
        page = next_step(client, page)
    assert [(s, outcome(e)) for s, e in cells(page, "resumes")] == [
        ("T2", errors.SerializationFailure)]
    assert [outcome(e) for s, e in cells(page, "step") if s == "either"] == ["sees [[1, 11]]"]
    call(client, "/api/pages", {"mode": "script", "text": text, "part": 2}, status=400)


# --------------------------------------------------------------------------- the machinery


@pytest.mark.engine
def test_sessions_are_held_between_requests(client, playground, observer):
    """HTTP is stateless, a database session is not.

    Scenario: free mode; one request opens T1's transaction and writes 11; the
    next request reads row 1 on T2, the one after on T1.
    Outcome: between requests the server shows T1's session idle in
    transaction; T2 still sees 10 (T1 has not committed), T1 sees its own 11.
    """
    page = open_page(client, mode="free", level=READ_COMMITTED)
    page = run_sql(client, page, "T1", "update test set value = 11 where id = 1")
    assert page_sessions(observer, playground.page(page["token"]).name) == [
        ("idle in transaction",)]
    page = run_sql(client, page, "T2", "select value from test where id = 1")
    page = run_sql(client, page, "T1", "select value from test where id = 1")
    assert [outcome(e) for _, e in cells(page, "step")][1:] == ["sees [[10]]", "sees [[11]]"]
    assert cells(page, "step")[0][1]["begin"] == "begin transaction isolation level read committed"


@pytest.mark.engine
def test_pages_are_apart(client):
    """Each page plays in a schema of its own.

    Scenario: two pages; page A's T1 deletes every row of test (autocommit);
    page B's T1 reads test.
    Outcome: page B still sees both rows.
    """
    first = open_page(client, mode="free")  # autocommit: the SQL's own transactions
    second = open_page(client, mode="free")
    run_sql(client, first, "T1", "delete from test")
    second = run_sql(client, second, "T1", "select count(*) from test")
    assert outcome(cells(second, "step")[0][1]) == "sees [[2]]"
    assert first["token"] != second["token"]


@pytest.mark.engine
def test_bounds(client):
    """Pages and sessions are bounded, and a token is the only key.

    Scenario: open pages up to the limit and one more; send SQL to one session
    more than a page may hold; call an unknown token; send a second step to a
    session that still waits.
    Outcome: 503, 400, 404 and 409, each with a message; nothing else changes.
    """
    pages = [open_page(client, mode="free", level=READ_COMMITTED) for _ in range(3)]
    assert "pages are open already" in call(client, "/api/pages", {"mode": "free"},
                                            status=503)["error"]
    page = pages[0]
    for number in range(1, MAX_SESSIONS + 1):
        page = run_sql(client, page, f"T{number}", "select 1")
    run_sql(client, page, f"T{MAX_SESSIONS + 1}", "select 1", status=400)
    call(client, "/api/pages/not-a-token/next", status=404)
    page = run_sql(client, page, "T1", "update test set value = 11 where id = 1")
    page = run_sql(client, page, "T2", "update test set value = 12 where id = 1")
    assert "T2 is still waiting" in run_sql(client, page, "T2", "select 1", status=409)["error"]
    call(client, "/api/pages", {"mode": "scenario", "code": "P4", "level": "chaos"}, status=400)


@pytest.mark.engine
def test_reset_and_close_end_the_sessions(client, playground, observer):
    """Reset closes a page's sessions and schema; so do leaving the page and the idle timeout.

    Scenario: a scenario page with an open transaction is reset; the new page
    is closed (the page left); a third page is left idle past the timeout.
    Outcome: each time the server no longer has the page's sessions, its
    schema is gone and its token answers 404.
    """
    page = open_page(client, mode="scenario", code="P4", level=REPEATABLE_READ)
    for _ in range(3):
        page = next_step(client, page)
    schema, name = playground.page(page["token"]).schema, playground.page(page["token"]).name
    fresh = call(client, f"/api/pages/{page['token']}/reset")
    assert (page_sessions(observer, name), schema_exists(observer, schema)) \
        == ([], False)
    next_step(client, page, status=404)
    assert (fresh["next_step"], fresh["rows"]) == (0, [])

    name = playground.page(fresh["token"]).name
    call(client, f"/api/pages/{fresh['token']}/close")
    assert page_sessions(observer, name) == []

    idle = open_page(client, mode="free")
    idle = run_sql(client, idle, "T1", "select 1")
    name = playground.page(idle["token"]).name
    closed = playground.close_idle(now=playground.page(idle["token"]).last_used
                                   + playground.idle_timeout + 1)
    assert closed == [idle["token"]]
    assert page_sessions(observer, name) == []


@pytest.mark.engine
def test_shutdown_closes_every_session(target, observer):
    """At shutdown every page's sessions are closed and its schema dropped, waits and all.

    Scenario: a playground of its own with two pages, one of them with T2
    waiting for T1's lock; the playground closes.
    Outcome: none of its sessions is left on the server, no schema of its, no
    role of its pages.
    """
    with Playground(target.info) as own:
        client = keyed_client(create_app(own))
        waiting = open_page(client, mode="free", level=READ_COMMITTED)
        run_sql(client, waiting, "T1", "update test set value = 11 where id = 1")
        assert run_sql(client, waiting, "T2", "update test set value = 12 where id = 1")[
            "pending"] == {"T2": "waiting"}
        other = open_page(client, mode="scenario", code="G0", level=SERIALIZABLE)
        places = [(own.page(p["token"]).name, own.page(p["token"]).schema,
                   own.page(p["token"]).role) for p in (waiting, other)]
    for name, schema, role in places:
        assert page_sessions(observer, name) == []
        assert not schema_exists(observer, schema)
        assert rows(observer, "select count(*) from pg_roles where rolname = %s",
                    (role,)) == [(0,)]


class ConsoleWatch(io.StringIO):
    """Stands for the terminal; ``printed`` is set once the command has shown its URL."""

    def __init__(self):
        super().__init__()
        self.printed = threading.Event()

    def write(self, text):
        written = super().write(text)
        if "open http://" in self.getvalue():
            self.printed.set()
        return written


@pytest.mark.engine
def test_play_command(target, observer):
    """``python -m acid_lab play --dsn ...``: warns, serves on 127.0.0.1, Ctrl-C ends it cleanly.

    Scenario: the command (in this process, as the terminal would run it) on the
    suite's server; a visitor opens the page and asks for the scenarios, then
    presses Ctrl-C (SIGINT).
    Outcome: a warning that the page runs the SQL typed into it; the only
    listening socket is on 127.0.0.1; the page is served; exit status 0, and
    the playground's database is gone from the server.
    """
    out, err = ConsoleWatch(), io.StringIO()
    seen = {}

    def visitor():
        if not out.printed.wait(COMMAND_BOUND):
            return
        printed = re.search(r"open (http://127\.0\.0\.1:(\d+)/)\?key=([\w-]+)  ",
                            out.getvalue())
        site, port = printed[1], int(printed[2])
        seen["listening"] = sorted({c.laddr.ip for c in psutil.Process().net_connections("tcp")
                                    if c.status == psutil.CONN_LISTEN and c.laddr.port == port})
        browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with browser.open(printed[0].split()[1], timeout=COMMAND_BOUND) as response:
            seen["page"] = response.read().decode()  # after the redirect, with the cookie
        with browser.open(site + "api/scenarios", timeout=COMMAND_BOUND) as response:
            seen["codes"] = [s["code"] for s in json.load(response)["scenarios"]]
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C

    visiting = threading.Thread(target=visitor)
    visiting.start()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = play_command(["--dsn", target.info.dsn()])
    finally:
        out.printed.set()  # the visitor stops waiting, whatever happened
        visiting.join(COMMAND_BOUND)
    assert status == 0, err.getvalue()
    assert seen["listening"] == ["127.0.0.1"]
    assert "ACID Lab playground" in seen["page"]
    assert "This page runs the SQL typed into it" in seen["page"]
    assert seen["codes"][:10] == ["G0", "G1a", "G1b", "G1c", "OTV", "PMP", "P4", "G-single",
                                  "G2-item", "G2"]
    assert "warning: This page runs the SQL typed into it" in err.getvalue()
    database = err.getvalue().split("in a database of its own (")[1].split(",")[0]
    assert rows(observer, "select count(*) from pg_database where datname = %s",
                (database,)) == [(0,)]
