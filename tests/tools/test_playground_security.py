"""The playground, attacked as an attacker would: let no one in.

The page runs any SQL typed into it, so the app must make sure that only the
user who started it can type, and that what is typed can harm nothing but the
page itself:

* a web page the user happens to visit may reach 127.0.0.1 too: through DNS
  rebinding (its own name, resolved to 127.0.0.1: the ``Host`` header gives it
  away), a cross-site request (a foreign ``Origin``) or a frame. Each is refused;
* another local account can connect to the port, but has no key (the key is
  printed to the user's terminal only): 401;
* the SQL of a page runs as a role of that page's own, not a superuser: no shell
  commands (``COPY ... FROM PROGRAM``), no server settings, no other page's schema;
* statements, results and a page's history are bounded; bad request bodies get
  400 and one JSON line, never a 500.

The app runs under Flask's test client (and, for the other account, served on
127.0.0.1 from this process), over the suite's server.
"""

import dataclasses
import json
import os
import pwd
import secrets
import subprocess

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from markupsafe import escape
from psycopg2 import errors

from acid_lab.commands.play import dsn_warning
from acid_lab.play.app import MAX_REQUEST_BYTES, bounds_text, create_app, keyed_client
from acid_lab.play.http import serving
from acid_lab.play.sessions import (
    ANSWER_BOUND,
    MAX_CELL_CHARS,
    MAX_ERROR_CHARS,
    MAX_HISTORY,
    MAX_RESULT_ROWS,
    Playground,
)
from acid_lab.servers.queries import rows

pytestmark = pytest.mark.webapp

PORT = 8765                       # the port keyed_client's requests name in their Host
OTHER_ACCOUNT = "nobody"
SUBPROCESS_BOUND = 30             # seconds the other account's request may take
WATCHDOG_POLLS = 10               # polls (each waits at most POLL_BOUND) for the app's cancel


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def playground(target):
    with Playground(target.info, max_pages=4) as shared:
        yield shared


@pytest.fixture
def app(playground):
    app = create_app(playground, port=PORT)
    yield app
    playground.close_idle(now=float("inf"))  # every page this test opened


@pytest.fixture
def client(app):
    return keyed_client(app, PORT)


def call(client, path, body=None, status=200):
    response = client.post(path, json=body if body is not None else {})
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    return response.get_json()


def run_sql(client, page, session, sql):
    return call(client, f"/api/pages/{page['token']}/run", {"session": session, "sql": sql})


def last(page):
    """The outcome of the page's latest statement: SQLSTATE class, or its rows / command."""
    entry = page["entries"][str(max(int(key) for key in page["entries"]))]
    if entry["status"] == "error":
        return errors.lookup(entry["sqlstate"])
    return entry["rows"] if entry["rows"] is not None else entry["command"]


def one_json_line(response):
    """A refusal is one JSON line: {"error": "..."}."""
    text = response.get_data(as_text=True)
    assert text.count("\n") <= 1 and text.endswith("\n"), text[:300]
    return json.loads(text)["error"]


# --------------------------------------------------------------------------- access


HOME = f"127.0.0.1:{PORT}"


@pytest.mark.engine
@pytest.mark.parametrize("method, path, headers, key, status", [
    pytest.param("GET", "/api/scenarios", {"Host": f"evil.example:{PORT}"}, "cookie", 403,
                 id="DNS rebinding: Host evil.example -> 403"),
    pytest.param("POST", "/api/pages", {"Host": f"evil.example:{PORT}"}, "cookie", 403,
                 id="DNS rebinding, opening a page -> 403"),
    pytest.param("GET", "/api/scenarios", {"Host": "127.0.0.1:1"}, "cookie", 403,
                 id="Host with another port -> 403"),
    pytest.param("GET", "/api/scenarios", {"Host": "127.0.0.1"}, "cookie", 403,
                 id="Host without the port -> 403"),
    pytest.param("GET", "/api/scenarios", {"Host": HOME}, None, 401, id="no key -> 401"),
    pytest.param("POST", "/api/pages", {"Host": HOME}, None, 401,
                 id="no key, opening a page -> 401"),
    pytest.param("GET", "/", {"Host": HOME}, None, 401, id="no key, the page -> 401"),
    pytest.param("GET", "/api/scenarios?key=wrong", {"Host": HOME}, None, 401,
                 id="a wrong key -> 401"),
    pytest.param("POST", "/api/pages", {"Host": HOME, "Origin": "http://evil.example"}, "cookie",
                 403, id="cross-site: foreign Origin -> 403"),
    pytest.param("POST", "/api/pages", {"Host": HOME, "Origin": "null"}, "cookie", 403,
                 id="cross-site: Origin null (a sandboxed frame) -> 403"),
    pytest.param("GET", "/api/scenarios", {"Host": HOME, "Origin": f"http://{HOME}"}, "cookie",
                 200, id="own Origin, with the cookie -> 200"),
    pytest.param("GET", "/api/scenarios", {"Host": f"localhost:{PORT}"}, "cookie", 200,
                 id="Host localhost with the port -> 200"),
    pytest.param("GET", "/api/scenarios", {"Host": f"[::1]:{PORT}"}, "parameter", 200,
                 id="Host [::1] with the port, the key as a parameter -> 200"),
])
def test_who_gets_in(app, method, path, headers, key, status):
    """Only this playground's own page, opened from the printed URL, gets in.

    Scenario: a request as a rebound or cross-site page (or another local
    account) would send it: its Host, its Origin, with or without the key's
    cookie (a rebound page has the browser's cookie only if it were this site's).
    Outcome: 403 for a foreign Host or Origin, 401 without the key, each one
    JSON line; every answer refuses frames.
    """
    client = app.test_client()
    if key == "cookie":  # as the browser holds it, for the name the request is sent to
        client.set_cookie(f"acid_lab_play_{PORT}", app.config["PLAY_KEY"],
                          domain=headers["Host"].rsplit(":", 1)[0])
    elif key == "parameter":
        path += f"?key={app.config['PLAY_KEY']}"
    response = client.open(path, method=method, headers=headers,
                           json={"mode": "free"} if method == "POST" else None)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    if status >= 400:
        assert one_json_line(response).startswith("refused: ")
    assert (response.headers["X-Frame-Options"],
            response.headers["Content-Security-Policy"]) == ("DENY", "frame-ancestors 'none'")


@pytest.mark.engine
def test_the_key_sets_a_strict_cookie(app, playground):
    """Opening ``/?key=SECRET`` sets an HttpOnly, SameSite=Strict cookie and drops the key.

    Scenario: open the printed URL; then the page and its API without the key.
    Outcome: 303 to ``/`` with the cookie; then both are served with the cookie
    alone, and the page states its bounds.
    """
    client, home = app.test_client(), f"http://{HOME}"
    opened = client.get(f"/?key={app.config['PLAY_KEY']}", base_url=home)
    cookie = opened.headers["Set-Cookie"]
    assert (opened.status_code, opened.headers["Location"]) == (303, "/")
    assert cookie.startswith(f"acid_lab_play_{PORT}={app.config['PLAY_KEY']};")
    assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {p.strip() for p in cookie.split(";")}
    page = client.get("/", base_url=home)
    assert page.status_code == 200 and bounds_text(playground) in page.text
    assert client.get("/api/scenarios", base_url=home).status_code == 200
    assert client.get("/static/play.js", base_url=home).headers["X-Frame-Options"] == "DENY"


@pytest.mark.engine
def test_another_local_account_gets_401(playground):
    """Another account of this machine reaches the port, but not the API: it has no key.

    Scenario: as root, the playground served on 127.0.0.1 from this process; a
    Python switched to the ``nobody`` account (subprocess ``user=``/``group=``)
    asks for ``/api/scenarios`` and ``POST /api/pages``, with the right Host.
    Outcome: 401 both times (the key is printed to the user's terminal only:
    not in the command line, not in the environment).
    """
    if os.geteuid() != 0:
        pytest.skip("needs root, to switch to another local account")
    account = pwd.getpwnam(OTHER_ACCOUNT)
    app = create_app(playground)
    probe = ("import sys, urllib.request, urllib.error\n"
             "for data in (None, b'{\"mode\": \"free\"}'):\n"
             "    try:\n"
             "        urllib.request.urlopen(urllib.request.Request(sys.argv[1], data=data),"
             " timeout=10)\n"
             "        print(200)\n"
             "    except urllib.error.HTTPError as error:\n"
             "        print(error.code)\n")
    with serving(app) as site:
        done = subprocess.run(["/usr/bin/python3", "-c", probe, site + "api/scenarios"],
                              user=account.pw_uid, group=account.pw_gid, cwd="/",
                              capture_output=True, text=True, timeout=SUBPROCESS_BOUND,
                              check=False)
    assert (done.stdout.split(), done.stderr) == (["401", "401"], "")
    assert playground.page_count() == 0


# --------------------------------------------------------------------------- least privilege


@pytest.fixture(scope="module")
def two_pages(playground):
    """Pages A and B (free mode, autocommit), A with a table of its own; one pair for every
    attack (a refused statement changes nothing)."""
    client = keyed_client(create_app(playground, port=PORT), PORT)
    attacker = call(client, "/api/pages", {"mode": "free"}, status=201)
    run_sql(client, attacker, "T1", "create table o (t text)")
    victim = call(client, "/api/pages", {"mode": "free"}, status=201)
    yield client, attacker, victim
    for page in (attacker, victim):
        playground.close_page(page["token"])


@pytest.mark.engine
@pytest.mark.parametrize("attack, refused", [
    pytest.param("copy o from program 'id'", errors.InsufficientPrivilege,
                 id="COPY FROM PROGRAM: refused"),
    pytest.param("alter system set work_mem = '1GB'", errors.InsufficientPrivilege,
                 id="ALTER SYSTEM: refused"),
    pytest.param("select * from {other}.test", errors.InsufficientPrivilege,
                 id="reading another page's schema: refused"),
    pytest.param("drop schema {other} cascade", errors.InsufficientPrivilege,
                 id="dropping another page's schema: refused"),
    pytest.param("select pg_read_file('/etc/passwd')", errors.InsufficientPrivilege,
                 id="reading a server file: refused"),
    pytest.param("set role {login}", errors.InsufficientPrivilege,
                 id="becoming the playground's login: refused"),
])
def test_a_page_harms_nothing_but_itself(two_pages, playground, attack, refused):
    """A page's SQL runs as a role of that page's own: not a superuser, no file or program
    rights, owner of its own schema only.

    Scenario: two pages (free mode, autocommit); page A sends the attack, naming
    page B's schema or the playground's login; page B reads its table.
    Outcome: the server refuses the attack with 42501 (insufficient privilege);
    page B's rows are untouched.
    """
    client, page, other = two_pages
    sql = attack.format(other=playground.page(other["token"]).schema, login=playground.info.user)
    assert last(run_sql(client, page, "T1", sql)) is refused
    assert last(run_sql(client, other, "T1", "select count(*) from test")) == [[2]]


@pytest.mark.engine
def test_the_page_role(client, playground, observer):
    """What a page's role is, and that nothing of it is left once the page is gone.

    Scenario: open a page, run one statement; read the role's attributes and
    memberships and the sessions' application_name; reset the page, then close
    the new one.
    Outcome: a login that is not a superuser and may not create roles or
    databases, member of no role; application_name has no part of the token;
    after reset and close neither role exists any more.
    """
    page = call(client, "/api/pages", {"mode": "free"}, status=201)
    run_sql(client, page, "T1", "select 1")
    role = playground.page(page["token"]).role
    assert rows(observer, "select rolcanlogin, rolsuper, rolcreaterole, rolcreatedb,"
                " rolreplication, rolbypassrls from pg_roles where rolname = %s", (role,)) \
        == [(True, False, False, False, False, False)]
    assert rows(observer, "select count(*) from pg_auth_members m join pg_roles r"
                " on r.oid = m.member where r.rolname = %s", (role,)) == [(0,)]
    names = [name for (name,) in rows(
        observer, "select application_name from pg_stat_activity where usename = %s",
        (role,))]
    assert names and not any(page["token"][i:i + 4] in name
                             for name in names for i in range(len(page["token"]) - 3))
    fresh = call(client, f"/api/pages/{page['token']}/reset")
    fresh_role = playground.page(fresh["token"]).role
    call(client, f"/api/pages/{fresh['token']}/close")
    assert rows(observer, "select count(*) from pg_roles where rolname in (%s, %s)",
                (role, fresh_role)) == [(0,)]


@pytest.fixture
def login(target, observer):
    """A login that is not a superuser, made for the test (and dropped after): CREATEROLE
    or not, allowed to make schemas in the run's database."""
    made = []

    def make(may_create_roles: bool):
        name, password = f"acid_lab_login_{secrets.token_hex(3)}", secrets.token_urlsafe(16)
        rights = "createrole" if may_create_roles else "nocreaterole"
        with observer.cursor() as cursor:
            cursor.execute(f"create role {name} login {rights} password %s", (password,))
            cursor.execute(f"grant create on database {target.info.dbname} to {name}")
        made.append(name)
        return target.info.params(user=name, password=password)

    yield make
    with observer.cursor() as cursor:
        for name in made:
            cursor.execute(f"drop owned by {name}; drop role {name}")


@pytest.mark.engine
@pytest.mark.parametrize("may_create_roles, sandboxed, says", [
    pytest.param(True, True, "Each page's SQL runs as a role of that page's own",
                 id="--dsn login with CREATEROLE: pages get roles of their own"),
    pytest.param(False, False, "with that login's full rights: this is not a sandbox. Use a "
                 "dedicated login that is not a superuser.",
                 id="--dsn login without CREATEROLE: says plainly it is not a sandbox"),
])
def test_dsn_login(target, login, observer, may_create_roles, sandboxed, says):
    """With ``--dsn``, the pages are sandboxed where the login may create roles; where it
    may not, the command and the page say so plainly.

    Scenario: a playground logged in as a non-superuser made for the test; a
    page tries ``COPY ... TO PROGRAM``.
    Outcome: with CREATEROLE, the page's role is refused (42501) and no role of
    the page is left after; without, the warning (the command's and the page's)
    says the SQL runs with the login's full rights, not a sandbox.
    """
    params = login(may_create_roles)
    info = dataclasses.replace(target.info, user=params["user"], password=params["password"])
    with Playground(info) as own:
        warning = dsn_warning(own, "the suite's server")
        app = create_app(own, warning=warning, port=PORT)
        client = keyed_client(app, PORT)
        assert (own.sandboxed, says in warning, escape(warning) in client.get("/").text) \
            == (sandboxed, True, True)
        page = call(client, "/api/pages", {"mode": "free"}, status=201)
        role = own.page(page["token"]).role
        page = run_sql(client, page, "T1", "copy (select 1) to program 'id'")
        assert last(page) is errors.InsufficientPrivilege  # never a superuser either way
    if role is not None:
        assert rows(observer, "select count(*) from pg_roles where rolname = %s",
                    (role,)) == [(0,)]


# --------------------------------------------------------------------------- bounds


@pytest.mark.engine
def test_a_poll_stays_small(client, playground):
    """A page's answer stays small however long the page lives.

    Scenario: a free page selects a 10 MB value, then 1000 rows, raises a 1 MB
    error, then sends
    MAX_HISTORY + 2 more statements that each return 5000 characters; it polls.
    Outcome: the value is cut to MAX_CELL_CHARS, the rows to MAX_RESULT_ROWS,
    both marked truncated, the error to MAX_ERROR_CHARS; the page keeps its last
    MAX_HISTORY statements (``earlier`` counts the others) and the poll's answer
    is under ANSWER_BOUND.
    """
    page = call(client, "/api/pages", {"mode": "free"}, status=201)
    page = run_sql(client, page, "T1", "select repeat('x', 10000000)")
    entry = page["entries"]["1"]
    assert (len(entry["rows"][0][0]), entry["truncated"]) == (MAX_CELL_CHARS + 1, True)
    page = run_sql(client, page, "T1", "select generate_series(1, 1000)")
    entry = page["entries"]["2"]
    assert (len(entry["rows"]), entry["truncated"]) == (MAX_RESULT_ROWS, True)
    page = run_sql(client, page, "T1", "do $$ begin raise exception '%', repeat('z', 1000000);"
                                       " end $$")
    assert len(page["entries"]["3"]["error"]) == MAX_ERROR_CHARS + 1
    for _ in range(MAX_HISTORY + 2):
        run_sql(client, page, "T2", "select repeat('y', 5000)")
    answer = client.post(f"/api/pages/{page['token']}/poll", json={})
    polled = answer.get_json()
    assert (len(polled["entries"]), polled["earlier"]) == (MAX_HISTORY, 5)
    assert len(answer.data) < ANSWER_BOUND


@pytest.mark.engine
def test_statement_bound_enforced_by_the_app(target, observer):
    """A page's SQL may SET statement_timeout away; the app still cancels it at the bound.

    Scenario: a playground whose statements are bounded at 0.5 s; the sessions
    show their settings; T1 locks row 1; T2 sets statement_timeout = 0 and
    updates row 1 (WAITS); the page polls.
    Outcome: the sessions start with statement_timeout 500ms and an idle
    transaction bound; the server's clock passes 0.5 s, the app's watchdog
    asks the server which statements are past it and cancels T2: 57014,
    "canceling statement due to user request" (the server's own timeout was off).
    """
    with Playground(target.info, statement_timeout=0.5) as own:
        client = keyed_client(create_app(own, port=PORT), PORT)
        page = call(client, "/api/pages", {"mode": "free", "level": "read committed"},
                    status=201)
        assert last(run_sql(client, page, "T1", "show statement_timeout")) == [["500ms"]]
        assert last(run_sql(client, page, "T1", "show idle_in_transaction_session_timeout")) \
            == [["10min"]]
        run_sql(client, page, "T1", "update test set value = 11 where id = 1")
        run_sql(client, page, "T2", "set statement_timeout = 0")
        page = run_sql(client, page, "T2", "update test set value = 12 where id = 1")
        assert page["pending"] == {"T2": "waiting"}
        for _ in range(WATCHDOG_POLLS):
            page = call(client, f"/api/pages/{page['token']}/poll")
            if not page["pending"]:
                break
        resumed = page["entries"][str(page["rows"][-1]["cells"][0]["entry"])]
        assert (resumed["session"], resumed["sqlstate"], resumed["error"]) \
            == ("T2", "57014", "canceling statement due to user request")


# --------------------------------------------------------------------------- bad bodies


@pytest.mark.engine
@pytest.mark.parametrize("route, body, status", [
    pytest.param("/api/pages", b"not json", 400, id="not JSON -> 400"),
    pytest.param("/api/pages", b"\xff\xfe{", 400, id="not UTF-8 -> 400"),
    pytest.param("/api/pages", b"[1, 2]", 400, id="an array -> 400"),
    pytest.param("/api/pages", b"[" * 50000, 400, id="nested 50000 deep -> 400"),
    pytest.param("/api/pages", b'{"mode": {"mode": "free"}}', 400, id="mode an object -> 400"),
    pytest.param("/api/pages", b'{"mode": "scenario", "code": ["P4"], "level": "serializable"}',
                 400, id="code a list -> 400"),
    pytest.param("/api/pages", b'{"mode": "script", "text": 5}', 400, id="text a number -> 400"),
    pytest.param("/api/pages", b'{"mode": "script", "text": "x", "part": true}', 400,
                 id="part true -> 400"),
    pytest.param("/api/pages", b'{"mode": "script", "text": "x", "part": 1e300}', 400,
                 id="part a float -> 400"),
    pytest.param("/api/pages", b'{"mode": "free", "level": 7}', 400, id="level a number -> 400"),
    pytest.param("/api/pages", b'{"text": "' + b"x" * MAX_REQUEST_BYTES + b'"}', 413,
                 id="a body over MAX_CONTENT_LENGTH -> 413"),
    pytest.param("/api/pages/{token}/run", b'{"session": ["T1"], "sql": "select 1"}', 400,
                 id="run: session a list -> 400"),
    pytest.param("/api/pages/{token}/run", b'{"session": "T1", "sql": {"a": 1}}', 400,
                 id="run: sql an object -> 400"),
    pytest.param("/api/pages/{token}/run", b'{"session": "T1", "sql": "' + b"x" * 5000 + b'"}',
                 400, id="run: a statement over MAX_SQL_CHARS -> 400"),
    pytest.param("/api/pages/{token}/cancel", b'{"session": null}', 409,
                 id="cancel: no session -> 409"),
])
def test_bad_bodies(client, route, body, status):
    """A malformed body gets a 4xx and one JSON line, never a 500.

    Scenario: POST each body to a route (a free page's for the page routes).
    Outcome: the status in the table, with one line saying what is wrong.
    """
    if "{token}" in route:
        route = route.format(token=call(client, "/api/pages", {"mode": "free"}, status=201)[
            "token"])
    response = client.post(route, data=body, content_type="application/json")
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert one_json_line(response)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8)
FIELDS = ("mode", "code", "level", "text", "part", "session", "sql")
BODIES = st.one_of(
    st.binary(max_size=100),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(st.sampled_from(FIELDS), JSON_VALUES | st.sampled_from(
        ["free", "scenario", "script", "P4", "serializable", "T1", "select 1", 0]),
        max_size=4).map(lambda value: json.dumps(value).encode()),
)
# The routes that read a body get a live page's token; the others read none (and a live
# page's poll waits POLL_BOUND, its reset opens a page anew): an unknown token.
ROUTES = ("/api/pages", "/api/scenarios", "/api/pages/{token}/run", "/api/pages/{token}/cancel",
          "/api/pages/nope/next", "/api/pages/nope/poll", "/api/pages/nope/reset",
          "/api/pages/nope/close")


@pytest.mark.engine
# No shrinking: each example opens a page, and a failure must stay quick too (the example
# that failed is reported as it was made).
@settings(max_examples=15, deadline=None, database=None, phases=[Phase.generate],
          derandomize=os.environ.get("CI") == "true",
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=BODIES)
def test_any_body_gets_an_answer(client, playground, live_page, body):
    """Random and mutated bodies at every API route: a 2xx or a 4xx, never a 5xx.

    Scenario: Hypothesis makes bodies (bytes, JSON values, objects with the API's
    fields holding anything); each goes to every route, those that read a body
    with a live free page's token.
    Outcome: no answer is a 5xx; every answer is one JSON line.
    """
    for route in ROUTES:
        response = client.post(route.format(token=live_page["token"]), data=body,
                               content_type="application/json")
        assert response.status_code < 500, (route, body, response.get_data(as_text=True))
        assert response.get_data(as_text=True).count("\n") <= 1
        if route == "/api/pages" and response.status_code == 201:  # a page it opened
            playground.close_page(response.get_json()["token"])


@pytest.fixture
def live_page(client):
    return call(client, "/api/pages", {"mode": "free"}, status=201)
