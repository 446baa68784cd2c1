"""Foundation: the client-server model every chapter stands on.

PostgreSQL is a server. A client (psql, a web app, this suite) opens a
*connection* over TCP/IP — to 127.0.0.1 and a port, 5432 by default, a free one
here — and that connection is a *session*: the server starts a process of its
own for it (the backend), and every transaction of the session runs there,
one after another, until the connection closes.

This suite starts a private server for each run, gives each test a fresh
schema holding Hermitage's table ``test`` (rows (1, 10) and (2, 20)), and
opens sessions with ``connect()`` (test_fixtures.py checks that machinery).
``observer`` is one more session, in autocommit mode, that stands for everyone
else: what it sees is what the rest of the world sees.
"""

import pytest
from psycopg2 import errors

from acid_lab.lessons.queries import one, rows

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
