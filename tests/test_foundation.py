"""Foundation: the client-server model every chapter stands on.

PostgreSQL is a server. A client -- a command-line application such as
``psql``, a web app, this suite through psycopg2 -- opens a *connection* over
TCP/IP (to an address and a port: 5432 unless the server is told otherwise, a
free one here) or, on the server's own machine, over a Unix-domain socket; never
over UDP. That connection is a *session*: the server starts a process of its
own for it (the backend), and every transaction of the session runs there,
one after another, until the connection closes.

This suite starts a private server for each run, gives each test a fresh
schema holding Hermitage's table ``test`` (rows (1, 10) and (2, 20)), and
opens sessions with ``connect()`` (test_fixtures.py checks that machinery).
``observer`` is one more session, in autocommit mode, that stands for everyone
else: what it sees is what the rest of the world sees.
"""

import shutil
import subprocess

import pytest
from psycopg2 import errors

from acid_lab.lessons.schema import demo_rows
from acid_lab.servers import ServerError
from acid_lab.servers.binaries import find_binaries
from acid_lab.servers.queries import one, rows

pytestmark = pytest.mark.foundation


def test_each_connection_is_a_session_with_its_own_server_process(connect):
    """Scenario: open two connections; ask each for its backend's process id.

    Outcome: two different processes on the server, each reporting the pid the
    client library knows for it.
    """
    first, second = connect(), connect()
    first_pid = one(first, "select pg_backend_pid()")
    second_pid = one(second, "select pg_backend_pid()")

    assert first_pid != second_pid, "two sessions must be served by two server processes"
    assert first.info.backend_pid == first_pid, "the client knows its own backend's pid"


def test_a_session_reaches_the_server_over_tcp_on_its_port(connect, target):
    """Scenario: ask the server which address and port this session came in on.

    Outcome: 127.0.0.1 and the port the suite chose; the server was told to
    listen there and nowhere else.
    """
    conn = connect()
    address, port = rows(conn, "select host(inet_server_addr()), inet_server_port()")[0]

    assert (address, port) == ("127.0.0.1", target.info.port), "sessions travel over TCP/IP"
    assert one(conn, "select current_setting('listen_addresses')") == "127.0.0.1"


def test_the_default_port_is_5432_and_this_server_listens_on_another(connect, target):
    """Scenario: ask the server for its ``port`` setting: the value it was built with
    (``boot_val`` in pg_settings) and the value it runs with (``setting``).

    Outcome: built with 5432, PostgreSQL's default port (the one a client tries when
    told none); run with the free port the suite chose, so that a run never collides
    with a server already on 5432.
    """
    boot_val, setting = rows(connect(), "select boot_val, setting from pg_settings"
                                        " where name = 'port'")[0]

    assert boot_val == "5432", "PostgreSQL's default port"
    assert setting == str(target.info.port), "the port this server was started on"


@pytest.mark.parametrize("how, server_address", [
    pytest.param("tcp", "127.0.0.1", id="TCP/IP: the server knows the client's address"),
    pytest.param("unix socket", None, id="Unix-domain socket: no IP address at all"),
])
def test_a_client_on_the_same_machine_may_also_come_through_a_unix_socket(
        connect, target, how, server_address):
    """Scenario: open one session over TCP/IP (host 127.0.0.1) and one through the Unix-
    domain socket the server also listens on (``host`` = the socket's folder, which
    ``unix_socket_directories`` names); ask each for the server address it reached.

    Outcome: over TCP the server answers 127.0.0.1; through the socket
    ``inet_server_addr()`` is NULL: no network, no IP, the same kind of session.
    """
    if how == "unix socket":
        if not target.managed:
            pytest.skip("the socket of an existing server may be elsewhere or closed to us")
        folder = one(connect(), "show unix_socket_directories").split(",")[0].strip()
        conn = connect(host=folder)
    else:
        conn = connect()
    assert rows(conn, "select inet_server_addr()::text, count(*) from test") == [
        (None if server_address is None else f"{server_address}/32", 2)], \
        "where the session came in, and it sees the same data"


def psql_program() -> str | None:
    """psql, from the PostgreSQL the suite runs (its bin folder), else from PATH."""
    try:
        program = find_binaries().program("psql")
        if program.exists():
            return str(program)
    except ServerError:
        pass
    return shutil.which("psql")


@pytest.mark.parametrize("script, printed, rows_after", [
    pytest.param("select value from test where id = 1;", "10", [(1, 10), (2, 20)],
                 id="a query: psql prints the rows"),
    pytest.param("insert into test values (3, 30);", "INSERT 0 1", [(1, 10), (2, 20), (3, 30)],
                 id="psql's AUTOCOMMIT on: each statement commits at once"),
    pytest.param("\\set AUTOCOMMIT off\ninsert into test values (3, 30);", "INSERT 0 1",
                 [(1, 10), (2, 20)],
                 id="AUTOCOMMIT off: psql sends BEGIN, quits, the server rolls back"),
])
def test_psql_is_a_command_line_client_of_the_same_server(connect, observer, script, printed,
                                                          rows_after):
    """Scenario: run ``psql`` -- PostgreSQL's command-line client, the course notes'
    "command line application" -- with the same connection string as the suite's
    psycopg2 sessions, feeding it a script on standard input.

    Outcome: psql prints what the server answered (``-A -t``: bare rows) and ends its
    session when it exits. By default psql commits each statement by itself; with
    ``\\set AUTOCOMMIT off`` it opens a transaction before the first statement, as
    psycopg2 does, and quitting without COMMIT ends the session: the server rolls
    the transaction back.
    """
    psql = psql_program()
    if psql is None:
        pytest.skip("psql not found: apt-get install postgresql-client")
    done = subprocess.run([psql, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", connect.dsn()],
                          input=script, capture_output=True, text=True, timeout=30)

    assert (done.returncode, done.stderr) == (0, ""), "psql ran the script"
    assert done.stdout.strip() == printed, "what psql printed"
    assert demo_rows(observer) == rows_after, "what the rest of the world sees afterwards"


def test_closing_the_connection_ends_the_session(connect, observer):
    """Scenario: a session takes a session-level advisory lock, then its connection closes.

    Outcome: while it lives, the observer cannot take the lock; once the client
    closes the connection, the server ends the session and the lock is free.
    (The observer waits on the server, bounded by lock_timeout: no client sleeps.)
    """
    conn = connect()
    with conn.cursor() as cur:
        cur.execute("select pg_advisory_lock(42)")
    assert one(observer, "select pg_try_advisory_lock(42)") is False, "the session holds it"

    conn.close()
    with observer.cursor() as cur:
        cur.execute("set lock_timeout = '5s'")
        cur.execute("select pg_advisory_lock(42)")  # returns once the session has ended
        cur.execute("select pg_advisory_unlock(42)")
        assert cur.fetchone()[0] is True, "closing the connection must end its session"


def test_the_observer_sees_committed_data_only(connect, observer):
    """Scenario: a session changes row 1 and has not committed; then it commits.

    Outcome: the observer sees 10 before the commit and 11 after it.
    """
    writer = connect()
    with writer.cursor() as cur:
        cur.execute("update test set value = 11 where id = 1")
    assert one(observer, "select value from test where id = 1") == 10, "uncommitted is private"

    writer.commit()
    assert one(observer, "select value from test where id = 1") == 11, "committed is public"


def test_a_sql_error_has_its_sqlstate(observer):
    """Outcome: errors carry a SQLSTATE that psycopg2 maps to a class (42P01 here)."""
    with pytest.raises(errors.UndefinedTable), observer.cursor() as cur:
        cur.execute("select * from no_such_table")
