"""The web stack: where ACID meets Flask, Flask-SQLAlchemy, psycopg2 and PostgreSQL.

Most people meet databases through a web app. A browser (the web client)
sends an HTTP request to a web server (here a small Flask shop,
``acid_lab.lessons.webapp``); the view works through a Flask-SQLAlchemy session, whose
SQL the ``postgresql`` dialect hands to the psycopg2 DBAPI, down a connection
the engine's pool keeps open between requests, to the database server. One
request is one transaction; one pooled connection is one server session (one
server process) that serves many requests in turn.

What each letter promises there, and what breaks without it:

* Atomicity: a request that crashes halfway leaves nothing behind. The server
  never commits anything by itself (test_atomicity_sessions.py); what ends a
  request's open transaction is the app: at the end of every request Flask
  runs its teardown functions -- Flask-SQLAlchemy's removes the request's
  session, which sends ROLLBACK for whatever the view did not commit (this
  app also rolls back explicitly, first). The session's error handlers roll
  back too, before turning a database error into an HTTP answer. Were a
  pooled connection handed on with its transaction still open, the *next*
  request's COMMIT would carry the earlier writes along: that is why the
  rollback at the end of a request matters.
* Isolation: two buyers at once. A view that reads the stock and writes back
  "what I read minus one" loses a sale at read committed; a row lock
  (``with_for_update()``), one atomic UPDATE, or serializable with a retry
  keeps both.
* Consistency: the database's constraints (unique, check, foreign key) refuse
  bad data; the app turns the refusal into a 409 or 422, not a 500, and
  nothing changes.
* A killed server process: when the process behind a pooled connection is
  killed, the pool (``pool_pre_ping``) hands the next request a new
  connection and the committed purchase is there. That is the pool
  recovering from a lost session, not durability (the server never lost
  anything; crashes of the server are test_durability.py's).

The foundation tests at the end show the course notes' picture itself:
client - web server - database server over TCP, the dialect and DBAPI (the SQL
SQLAlchemy writes, the statements psycopg2 sends), and the connection pool
(sessions reused across requests, a cap on how many).

Each test builds its own app on its own schema (the ``place``). The tests about
the stack itself serve it for real: a WSGI server (werkzeug's) on 127.0.0.1 and a
free port, and HTTP requests over TCP. The others call it in process through
Flask's test client -- the same views, without the sockets -- from several
threads where requests must overlap. Overlap is
arranged, never left to luck or sleeps: a hook in the view holds a request
until the other has read too, or until the server says the other is blocked.
"""

import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import psycopg2
import pytest
from psycopg2 import errors
from sqlalchemy import NullPool
from werkzeug.serving import make_server

from acid_lab.lessons.faults import terminate_backend
from acid_lab.lessons.webapp import (
    HOOK_TIMEOUT,
    Parking,
    Rendezvous,
    Stock,
    create_app,
    db,
    dispose_engines,
)
from acid_lab.servers.connections import sqlalchemy_url
from acid_lab.servers.queries import execute, rows

pytestmark = pytest.mark.webapp

LOCK_TIMEOUT = "10s"     # a request stuck on a lock fails on the server, not in the suite
REQUEST_TIMEOUT = 30.0   # seconds a request thread may take before the test fails
ONE_SESSION = {"pool_size": 1, "max_overflow": 0}  # one worker, one pooled connection


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def make_app(target, place):
    """Factory of shop apps on this test's place (their tables created there); pools closed.

    ``make_app(..., statement_log=log)``: the app's connections record what they send.
    """
    apps = []

    def make(engine_options=None, statement_log=None, **config):
        connect_args = {"options": f"-c search_path={place} -c lock_timeout={LOCK_TIMEOUT}",
                        "application_name": app_name(place)}
        if statement_log is not None:
            connect_args["connection_factory"] = statement_log.connection_class
        options = {"connect_args": connect_args, **(engine_options or {})}
        app = create_app(sqlalchemy_url(target.info), options, **config)
        apps.append(app)
        if statement_log is not None:
            statement_log.clear()  # creating the tables is not the test's
        return app

    yield make
    for app in apps:
        dispose_engines(app)


@pytest.fixture
def serve():
    """Serves an app over real HTTP: a WSGI server (werkzeug's) on 127.0.0.1 and a free
    port, in a thread; ``serve(app)`` returns (host, port). Shut down at teardown."""
    running = []

    def start(app):
        server = make_server("127.0.0.1", 0, app, threaded=True)
        # shutdown() is noticed at the next poll (default 0.5 s): a short poll ends it quickly
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                                  name="wsgi-server", daemon=True)  # sleep-ok: see above
        thread.start()
        running.append((server, thread))
        return server.server_address

    yield start
    for server, thread in running:
        server.shutdown()
        thread.join(REQUEST_TIMEOUT)
        server.server_close()


def http_request(address, method, path):
    """One HTTP request over TCP, as a browser would send it: (status, JSON body)."""
    connection = http.client.HTTPConnection(*address, timeout=REQUEST_TIMEOUT)
    try:
        connection.request(method, path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


# --------------------------------------------------------------------------- helper verbs


def app_name(place):
    """The application_name the app's sessions carry, so the server can count them."""
    return f"acid_lab_webapp_{place}"


def put_stock(observer, item, quantity):
    execute(observer, "insert into stock (item, quantity) values (%s, %s)", (item, quantity))


def stock_of(observer, item):
    return rows(observer, "select quantity from stock where item = %s", (item,))[0][0]


def server_sessions_of(observer, place):
    return rows(observer, "select count(*) from pg_stat_activity where application_name = %s",
                 (app_name(place),))[0][0]


def everything(observer):
    """Every row of the shop's tables, as the rest of the world sees them."""
    return [rows(observer, f"select * from {table} order by 1")
            for table in ("drivers", "vehicles", "stock")]


def post_together(app, *paths):
    """POST each path at once, each from its own thread and test client; responses in order."""

    def post(path):
        return app.test_client().post(path)

    with ThreadPoolExecutor(max_workers=len(paths)) as pool:
        futures = [pool.submit(post, path) for path in paths]
        return [future.result(timeout=REQUEST_TIMEOUT) for future in futures]


# --------------------------------------------------------------------------- atomicity


@pytest.mark.atomicity
def test_a_request_that_fails_halfway_leaves_nothing_behind(make_app, observer):
    """Scenario: POST /drivers writes a driver, then a first vehicle, then raises (a bug)
    before the second vehicle; then the same worker serves the next request.

    Outcome: 500, and neither the driver nor the vehicle exists; the session was rolled
    back at teardown (its server session sits idle, no transaction open), so the next
    request on the same pooled server session commits only its own writes. Its driver
    gets id 2: the failed insert did reach the server (sequences are not rolled back),
    its row did not survive.
    """
    app = make_app(ONE_SESSION, FAIL_AFTER_WRITES=2)
    client = app.test_client()
    worker_pid = client.get("/session").json["backend_pid"]

    failed = client.post("/drivers", json={"name": "Ada", "vehicles": [
        {"plate": "AB-1", "seats": 4}, {"plate": "AB-2", "seats": 2}]})
    left_behind = rows(observer, "select (select count(*) from drivers),"
                                  " (select count(*) from vehicles)")[0]
    worker_state = rows(observer, "select state from pg_stat_activity where pid = %s",
                         (worker_pid,))
    app.config["FAIL_AFTER_WRITES"] = None
    following = client.post("/drivers", json={"name": "Grace", "vehicles": [
        {"plate": "GH-1", "seats": 5}]})

    assert failed.status_code == 500, "the injected failure is an unhandled error"
    assert left_behind == (0, 0), "atomicity: two of three writes were undone with the request"
    assert worker_state == [("idle",)], "the worker's session was left with no transaction open"
    assert (following.status_code, following.json) == (201, {"id": 2}), \
        "the next request works, after the failed one's insert used id 1"
    assert client.get("/session").json["backend_pid"] == worker_pid, \
        "the next request ran on the same pooled server session"
    assert client.get("/drivers").json == [{"name": "Grace", "plates": ["GH-1"]}], \
        "atomicity: nothing of the failed request rode along in the next commit"


# The end of a request, as this app wires it (acid_lab/lessons/webapp.py):
#
#     db.init_app(app)                                # Flask-SQLAlchemy registers its teardown:
#                                                     #   db.session.remove() -> ROLLBACK
#     app.teardown_appcontext(roll_back_what_is_left) # ours: db.session.rollback()
#
#     @shop.app_errorhandler(sa_exc.IntegrityError)   # an error handler: roll back, then 409/422
#     def broken_constraint(error):
#         db.session.rollback()
#         return jsonify(error=..., sqlstate=error.orig.pgcode, ...), 409 or 422
#
# Flask runs teardown functions in the reverse order of registration: ours first.
TEARDOWN = ["roll_back_what_is_left", "_teardown_session"]
DRAFT_INSERT = "INSERT INTO drivers (name) VALUES ('Ada') RETURNING drivers.id"


@pytest.mark.atomicity
@pytest.mark.parametrize("ours, teardown, sent, state_after", [
    pytest.param(True, TEARDOWN, ["BEGIN", DRAFT_INSERT, "ROLLBACK"], "idle",
                 id="our rollback at teardown, then Flask-SQLAlchemy's: one ROLLBACK"),
    pytest.param(False, TEARDOWN[1:], ["BEGIN", DRAFT_INSERT, "ROLLBACK"], "idle",
                 id="Flask-SQLAlchemy's teardown alone: ROLLBACK all the same"),
])
def test_the_end_of_a_request_rolls_back_what_the_view_left_open(
        make_app, observer, statement_log, ours, teardown, sent, state_after):
    """Scenario: a view (``POST /drafts``) inserts a driver and returns without committing;
    the request ends. Then the same worker lists the drivers.

    Outcome: at the end of the request Flask runs the teardown functions listed
    (Flask-SQLAlchemy's removes the request's session); the server receives
    ROLLBACK -- from the app, never decided by the server -- the server session
    sits idle with no transaction open, and nobody ever sees Ada, not even the
    next request on the same pooled connection.
    """
    app = make_app(ONE_SESSION, statement_log=statement_log, rollback_at_teardown=ours)
    client = app.test_client()

    draft = client.post("/drafts", json={"name": "Ada"})

    assert draft.status_code == 200
    assert [f.__name__ for f in reversed(app.teardown_appcontext_funcs)] == teardown, \
        "the teardown functions Flask runs at the end of every request, in order"
    assert [sql for sql in statement_log.sent if not sql.startswith("SELECT pg_backend_pid")] \
        == sent, "what the request sent, end of request included"
    assert rows(observer, "select state from pg_stat_activity where pid = %s",
                (draft.json["backend_pid"],)) == [(state_after,)], \
        "no transaction left open in the pooled server session"
    assert client.get("/drivers").json == [], "atomicity: the uncommitted driver never appears"
    assert client.get("/session").json["backend_pid"] == draft.json["backend_pid"], \
        "the next request ran on the same pooled server session"


# --------------------------------------------------------------------------- isolation


ALL_READ, ONE_WAITS = Rendezvous.ALL_READ, Rendezvous.ONE_WAITS_FOR_A_LOCK


READ_THE_WIDGET = ("SELECT stock.item, stock.quantity FROM stock WHERE stock.item = 'widget'",
                   "SELECT 1")
WRITE_BACK_9 = ("UPDATE stock SET quantity=9 WHERE stock.item = 'widget'", "UPDATE 1")


@pytest.mark.isolation
@pytest.mark.parametrize("way, sent", [
    pytest.param("read-modify-write", [
        ("BEGIN ISOLATION LEVEL READ COMMITTED", "BEGIN"),
        READ_THE_WIDGET,           # the view reads 10 ...
        WRITE_BACK_9,              # ... and writes back the 9 it computed in Python
        ("COMMIT", "COMMIT"),
    ], id="read-modify-write"),
    pytest.param("for-update", [
        ("BEGIN ISOLATION LEVEL READ COMMITTED", "BEGIN"),
        (READ_THE_WIDGET[0] + " FOR UPDATE", "SELECT 1"),   # the read locks the row
        WRITE_BACK_9,
        ("COMMIT", "COMMIT"),
    ], id="with_for_update"),
    pytest.param("atomic-update", [
        ("BEGIN ISOLATION LEVEL READ COMMITTED", "BEGIN"),
        ("UPDATE stock SET quantity=(stock.quantity - 1) WHERE stock.item = 'widget' "
         "RETURNING stock.quantity", "UPDATE 1"),           # read and write in one statement
        ("COMMIT", "COMMIT"),
    ], id="atomic UPDATE"),
    pytest.param("serializable", [
        ("BEGIN ISOLATION LEVEL SERIALIZABLE", "BEGIN"),   # the server checks the reads
        READ_THE_WIDGET,
        WRITE_BACK_9,
        ("COMMIT", "COMMIT"),
    ], id="serializable"),
])
def test_each_way_to_buy_sends_its_sql(make_app, observer, statement_log, way, sent):
    """The SQL behind the four buy views (``acid_lab.lessons.webapp``), as psycopg2 sent it.

    Scenario: stock 10; one ``POST /stock/widget/buy/<way>``, alone.
    Outcome: exactly these statements, with the server's answers. Alone, all four
    leave 9; the next test runs two buyers at once, where they differ.
    """
    app = make_app(ONE_SESSION, statement_log=statement_log)
    put_stock(observer, "widget", 10)

    bought = app.test_client().post(f"/stock/widget/buy/{way}")

    assert (bought.status_code, bought.json["quantity"]) == (200, 9)
    assert statement_log.transcript == sent, "what the view sent"


@pytest.mark.isolation
@pytest.mark.parametrize(
    "way, attempts_allowed, before_writing, statuses, told_left, attempts, stock_after", [
        pytest.param("read-modify-write", 3, ALL_READ, [200, 200], [9, 9], [1, 1], 9,
                     id="read committed, read-modify-write: stock 10, 2 buys -> 9, lost update"),
        pytest.param("for-update", 3, ONE_WAITS, [200, 200], [8, 9], [1, 1], 8,
                     id="read committed, with_for_update: stock 10, 2 buys -> 8"),
        pytest.param("atomic-update", 3, ONE_WAITS, [200, 200], [8, 9], [1, 1], 8,
                     id="read committed, atomic UPDATE: stock 10, 2 buys -> 8"),
        pytest.param("serializable", 3, ALL_READ, [200, 200], [8, 9], [1, 2], 8,
                     id="serializable with retry: stock 10, 2 buys -> 8, one retried"),
        pytest.param("serializable", 1, ALL_READ, [200, 503], [9], [1], 9,
                     id="serializable without retry: stock 10, one buy refused (503) -> 9"),
    ])
def test_two_buyers_at_once(make_app, observer, way, attempts_allowed, before_writing, statuses,
                            told_left, attempts, stock_after):
    """Lost update through the web: two "buy one" requests on the same item at once.

    Scenario: stock 10; each request pauses after its read (the view's after-read hook)
    until the other has read too, or until the server says the other is blocked on a row
    lock this one holds; then each writes and commits.
    Outcome: the read-modify-write view tells both buyers "9 left" and leaves 9 -- one
    sale lost at read committed. with_for_update() makes the second reader wait for the
    first buyer's commit, and so does the atomic UPDATE's row lock; serializable lets
    both read, aborts the second writer (40001), and the retry decorator runs it again
    on the new stock -- without a retry, that buyer gets a 503.
    """
    rendezvous = Rendezvous(observer)
    app = make_app(AFTER_READ_HOOK=rendezvous, SERIALIZABLE_ATTEMPTS=attempts_allowed)
    put_stock(observer, "widget", 10)

    buy = f"/stock/widget/buy/{way}"
    buyers = post_together(app, buy, buy)
    served = [response.json for response in buyers if response.status_code == 200]

    assert rendezvous.how == before_writing, \
        "isolation: did both buyers read, or did one wait for the other's lock?"
    assert sorted(response.status_code for response in buyers) == statuses, \
        f"isolation: the buy requests' outcomes ({[r.json for r in buyers]})"
    assert sorted(answer["quantity"] for answer in served) == told_left, \
        "isolation: what each buyer was told is left"
    assert sorted(answer["attempts"] for answer in served) == attempts, \
        "isolation: how many transactions each successful buy took"
    assert stock_of(observer, "widget") == stock_after, \
        f"isolation: stock after {len(served)} sale(s) from 10"


# --------------------------------------------------------------------------- consistency


@pytest.mark.consistency
@pytest.mark.parametrize("path, body, status, refusal, constraint", [
    pytest.param("/drivers/1/vehicles", {"plate": "AB-1", "seats": 4},
                 409, errors.UniqueViolation, "vehicles_plate_key",
                 id="plate already registered: 409"),
    pytest.param("/drivers/1/vehicles", {"plate": "CD-2", "seats": 0},
                 422, errors.CheckViolation, "vehicle_seats_1_to_9",
                 id="vehicle without seats: 422"),
    pytest.param("/drivers/99/vehicles", {"plate": "CD-2", "seats": 4},
                 422, errors.ForeignKeyViolation, "vehicles_driver_id_fkey",
                 id="vehicle of an unknown driver: 422"),
    pytest.param("/stock/kettle/buy/atomic-update", None,
                 422, errors.CheckViolation, "stock_never_negative",
                 id="buying what is sold out: 422"),
])
def test_a_broken_rule_is_an_http_error_and_changes_nothing(make_app, observer, path, body,
                                                            status, refusal, constraint):
    """Scenario: driver Ada (id 1) owns AB-1; kettles are sold out; a request breaks a rule
    the database enforces (unique plate, 1-9 seats, vehicles belong to drivers, stock never
    negative).

    Outcome: the database refuses (the SQLSTATE of the constraint), the app answers 409
    for a duplicate and 422 for any other broken rule -- not 500 -- and every table is as
    it was; the same worker then serves the next request normally.
    """
    app = make_app(ONE_SESSION)
    client = app.test_client()
    execute(observer, "insert into drivers (name) values ('Ada');"
                      " insert into vehicles (plate, seats, driver_id) values ('AB-1', 4, 1)")
    put_stock(observer, "kettle", 0)
    before = everything(observer)

    refused = client.post(path, json=body)

    assert refused.status_code == status, f"consistency: the refusal as HTTP ({refused.json})"
    assert errors.lookup(refused.json["sqlstate"]) is refusal, \
        "consistency: the database itself refused the write"
    assert refused.json["constraint"] == constraint, "consistency: the constraint that refused"
    assert everything(observer) == before, "consistency: a refused request changes nothing"
    assert client.get("/drivers").json == [{"name": "Ada", "plates": ["AB-1"]}], \
        "the worker's session was rolled back and serves the next request"


# --------------------------------------------------------------------------- a killed session


@pytest.mark.foundation
@pytest.mark.parametrize("pre_ping, statuses_after_kill", [
    pytest.param(True, [200], id="pool_pre_ping on: the next request works"),
    pytest.param(False, [503, 200], id="pool_pre_ping off: one request fails (503) first"),
])
def test_the_pool_replaces_a_killed_server_process_after_a_committed_buy(make_app, observer,
                                                                        pre_ping,
                                                                        statuses_after_kill):
    """Scenario: a buy commits (stock 10 -> 9) on the app's one pooled connection; then its
    server process is killed (pg_terminate_backend) while the connection idles in the pool.

    Outcome: the purchase is there for the next request, served by a new server process.
    With pool_pre_ping the pool tests the connection at checkout and replaces it unseen;
    without, the next request runs into the dead connection (503) and the pool replaces
    it for the one after.
    """
    app = make_app({**ONE_SESSION, "pool_pre_ping": pre_ping})
    put_stock(observer, "widget", 10)
    client = app.test_client()
    killed_pid = client.get("/session").json["backend_pid"]
    assert client.post("/stock/widget/buy/atomic-update").json["quantity"] == 9

    terminate_backend(observer, killed_pid)
    after_kill = [client.get("/stock/widget") for _ in statuses_after_kill]

    assert [response.status_code for response in after_kill] == statuses_after_kill, \
        "the requests after the kill"
    assert after_kill[-1].json["quantity"] == 9, \
        "the committed buy is there: it never depended on the session that made it"
    assert client.get("/session").json["backend_pid"] != killed_pid, \
        "a new server process serves the pool's new connection"


# --------------------------------------------------------------------------- the web client

# Two ways a page's script sends data to Flask (the course notes name both), each
# posting {"name": ...} as JSON to POST /drivers and handing back (status, JSON body).
SEND_WITH_FETCH = """
const [name, done] = arguments;
fetch('/drivers', {method: 'POST', headers: {'Content-Type': 'application/json'},
                   body: JSON.stringify({name: name})})
  .then(response => response.json().then(body => done([response.status, body])));
"""
SEND_WITH_XMLHTTPREQUEST = """
const [name, done] = arguments;
const request = new XMLHttpRequest();
request.open('POST', '/drivers');
request.setRequestHeader('Content-Type', 'application/json');
request.onload = () => done([request.status, JSON.parse(request.responseText)]);
request.send(JSON.stringify({name: name}));
"""


@pytest.fixture(scope="module")
def web_browser():
    """A headless Chromium (the system's), shared by this module's browser tests."""
    from acid_lab.play import browser

    why = browser.missing()
    if why:
        pytest.skip(f"no browser to send the requests: {why}")
    with browser.chromium() as driver:
        driver.set_script_timeout(REQUEST_TIMEOUT)
        yield driver


@pytest.mark.foundation
@pytest.mark.parametrize("script, name, status, answer", [
    pytest.param(SEND_WITH_FETCH, "Ada", 201, {"id": 1}, id="fetch()"),
    pytest.param(SEND_WITH_XMLHTTPREQUEST, "Grace", 201, {"id": 1}, id="XMLHttpRequest"),
])
def test_a_page_sends_data_to_flask_with_fetch_or_xmlhttprequest(make_app, serve, web_browser,
                                                                 observer, script, name, status,
                                                                 answer):
    """Scenario: the app served over real HTTP; a browser (headless Chromium) opens one of
    its pages, and the page's script posts a new driver as JSON -- with ``fetch()`` or
    with the older ``XMLHttpRequest`` (the scripts above).

    Outcome: either way the same HTTP request reaches the same Flask view: 201 and
    the new driver's id, and the driver is committed in the database.
    """
    host, port = serve(make_app())
    web_browser.get(f"http://{host}:{port}/drivers")   # a page of the app: same origin

    sent = web_browser.execute_async_script(script, name)

    assert sent == [status, answer], "what the script got back: (status, JSON body)"
    assert rows(observer, "select name from drivers") == [(name,)], "the driver is stored"


# --------------------------------------------------------------------------- the stack


@pytest.mark.foundation
def test_a_request_goes_web_client_web_server_database_server(make_app, serve, observer, target,
                                                               place):
    """Scenario: the app runs in a real WSGI server listening on 127.0.0.1 and a free port;
    a web client sends ``GET /session`` over TCP (http.client, as a browser would) and
    the view reports who called it and which database session served it; the observer
    asks the database server about that session.

    Outcome: two TCP hops, two ports: the web client reached the web server on the
    port it listens on (a free one here; 80 for plain HTTP in production), and the web
    server's database session came over TCP/IP to the database server's port (5432 by
    default; the run's own port here), from a client address (a Unix socket would have
    none). To the database server the web server is just a client, one server process
    per connection, named by its application_name.
    """
    web_server = serve(make_app())
    status, session = http_request(web_server, "GET", "/session")
    seen_by_server = rows(observer, "select application_name, backend_type, client_addr"
                                     " from pg_stat_activity where pid = %s",
                           (session["backend_pid"],))

    assert status == 200, "HTTP request and response"
    assert (session["web_client_addr"], session["web_server_port"]) == web_server, \
        "the web client reached the web server over TCP, on its port"
    assert session["server_port"] == target.info.port, "the database server's TCP port"
    assert session["client_addr"] is not None, "the web server reached the database over TCP"
    assert seen_by_server == [(app_name(place), "client backend", session["client_addr"])], \
        "the database server sees the web server as one more client session"


@pytest.mark.foundation
def test_sqlalchemy_writes_postgresql_sql_and_psycopg2_sends_it(make_app, serve, statement_log):
    """Scenario: the app serves ``GET /stock/widget`` over HTTP; we record the SQL
    SQLAlchemy wrote for it and what psycopg2 sent to the database server.

    Outcome: the engine's dialect is postgresql, its DBAPI psycopg2, and the pooled
    connection a plain psycopg2 connection. SQLAlchemy wrote the SELECT with a
    %(pk_1)s placeholder (psycopg2's pyformat style); psycopg2 sent BEGIN (by itself),
    that SELECT with 'widget' filled in, and ROLLBACK: the request wrote nothing, and
    the pool rolls a returned connection back.
    """
    app = make_app(statement_log=statement_log)
    with app.app_context():
        engine = statement_log.watch(db.engine)
        driver_connection = db.session.connection().connection.driver_connection
        db.session.add(Stock(item="widget", quantity=10))
        db.session.commit()
    statement_log.clear()

    status, body = http_request(serve(app), "GET", "/stock/widget")

    assert (status, body) == (200, {"item": "widget", "quantity": 10})
    assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "psycopg2"), \
        "dialect + DBAPI"
    assert engine.dialect.loaded_dbapi is psycopg2, "the DBAPI module is psycopg2"
    assert isinstance(driver_connection, psycopg2.extensions.connection), \
        "psycopg2 carries the SQL to the server"
    assert statement_log.written == [
        "SELECT stock.item, stock.quantity \nFROM stock \nWHERE stock.item = %(pk_1)s",
    ], "SQLAlchemy writes the SQL"
    assert statement_log.transcript == [
        ("BEGIN", "BEGIN"),
        ("SELECT stock.item, stock.quantity FROM stock WHERE stock.item = 'widget'", "SELECT 1"),
        ("ROLLBACK", "ROLLBACK"),
    ], "psycopg2 sends it"


@pytest.mark.foundation
@pytest.mark.parametrize("engine_options, same_server_session", [
    pytest.param(ONE_SESSION, True, id="QueuePool: one server session serves both requests"),
    pytest.param({"poolclass": NullPool}, False, id="NullPool: a new session per request"),
])
def test_the_pool_keeps_server_sessions_between_requests(make_app, serve, engine_options,
                                                         same_server_session):
    """Scenario: two HTTP requests to the served app, one after the other, each ask which
    database server process and which transaction serve them.

    Outcome: with a pool the second request reuses the first one's connection -- the same
    server process, a long-running session -- without one, each request connects anew.
    Either way each request is a transaction of its own.
    """
    web_server = serve(make_app(engine_options))

    (_, first), (_, second) = (http_request(web_server, "GET", "/session") for _ in range(2))

    assert (first["backend_pid"] == second["backend_pid"]) is same_server_session, \
        "is the server session reused across requests?"
    assert first["transaction_id"] != second["transaction_id"], \
        "one request, one transaction; a session runs many"


@pytest.mark.foundation
def test_the_pool_caps_how_many_server_sessions_the_app_opens(make_app, observer, place):
    """Scenario: pool_size=1, max_overflow=0; a buy is parked mid-transaction, holding the
    one connection; meanwhile a second request arrives.

    Outcome: the second request finds no free connection within pool_timeout (0 here:
    refuse at once) and gets 503; the server never sees a second session of the app.
    Once the buy commits and returns its connection, the next request is served (stock 9).
    """
    parking = Parking()
    # Whole seconds only: Flask-SQLAlchemy's engine_from_config makes pool_timeout an int.
    app = make_app({**ONE_SESSION, "pool_timeout": 0}, AFTER_READ_HOOK=parking)
    put_stock(observer, "widget", 10)

    with ThreadPoolExecutor(max_workers=1) as pool:
        buy = pool.submit(app.test_client().post, "/stock/widget/buy/atomic-update")
        try:
            assert parking.parked.wait(HOOK_TIMEOUT), "the buy reached its hook"
            meanwhile = app.test_client().get("/stock/widget")
            sessions_meanwhile = server_sessions_of(observer, place)
        finally:
            parking.release.set()
        bought = buy.result(timeout=REQUEST_TIMEOUT)
    afterwards = app.test_client().get("/stock/widget")

    assert (meanwhile.status_code, meanwhile.json["error"]) == \
        (503, "no free database connection"), "the pool refuses rather than exceed its size"
    assert sessions_meanwhile == 1, "the server saw one session of the app, the pool's size"
    assert bought.status_code == 200, "the parked buy went on"
    assert (afterwards.status_code, afterwards.json["quantity"]) == (200, 9), \
        "the returned connection serves the next request"
