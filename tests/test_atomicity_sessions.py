"""Atomicity when a session ends: the server never commits an open transaction by itself.

A session lives exactly as long as its connection (one server process per
connection). Whatever ends it -- the client closes the connection, the client
program is killed, an administrator terminates the server process
(``pg_terminate_backend``), the server's own ``idle_in_transaction_session_timeout``
fires -- a transaction still open in it is rolled back, entirely; what it
committed before stays. Nothing is ever committed without a COMMIT from the
client: the course notes' "start a connection -- transactions are committed
to the database -- end a connection" holds only for the transactions the
client committed.

These are failures of a session, not of the server: nothing has to be read
back from disk afterwards, so fsync and the WAL play no part here (they do in
test_durability.py, where the server itself crashes). Applications meet these
endings through their pool: SQLAlchemy's tests below show how a pool notices
a connection whose server process is gone.
"""

import pytest
import sqlalchemy.exc
from sqlalchemy import text

from acid_lab.lessons.faults import (
    CONNECTION_LOST,
    ClientProcess,
    terminate_backend,
    wait_for_backend_exit,
)
from acid_lab.lessons.schema import demo_rows
from acid_lab.servers.connections import make_engine
from acid_lab.servers.queries import execute, one

pytestmark = pytest.mark.atomicity

DEMO_ROWS = [(1, 10), (2, 20)]


def xact_status(conn, xid: str) -> str:
    return one(conn, "select pg_xact_status(%s::xid8)", (xid,))


@pytest.fixture
def engines(target, place):
    """Factory of SQLAlchemy engines on this test's place, disposed at teardown."""
    made = []

    def make(**engine_options):
        made.append(make_engine(target.info, place, **engine_options))
        return made[-1]

    yield make
    for engine in made:
        engine.dispose()


def close_the_connection(session, observer):
    session.close()


def terminate_the_server_process(session, observer):
    terminate_backend(observer, session.info.backend_pid)


def let_the_server_time_it_out(session, observer):
    # the server ends a session idle inside a transaction for longer than this
    execute(session, "set idle_in_transaction_session_timeout = '10ms'")


@pytest.mark.parametrize("end_session", [
    pytest.param(close_the_connection, id="the client closes the connection"),
    pytest.param(terminate_the_server_process, id="pg_terminate_backend"),
    pytest.param(let_the_server_time_it_out, id="idle_in_transaction_session_timeout"),
])
def test_the_server_never_commits_an_open_transaction_by_itself(connect, observer, end_session):
    """Scenario: a session inserts row 3 and, without COMMIT or ROLLBACK, its session
    ends the way the id says; the observer waits until the server process is gone.

    Outcome: the insert had reached the server (the session read its own row 3,
    and the server listed the session "idle in transaction"); after the end
    its transaction is aborted (pg_xact_status) and row 3 was never committed.
    """
    session = connect()
    execute(session, "insert into test values (3, 30)")
    assert demo_rows(session) == [*DEMO_ROWS, (3, 30)], "the insert ran on the server"
    xid = one(session, "select pg_current_xact_id()::text")
    pid = session.info.backend_pid
    assert one(observer, "select state from pg_stat_activity where pid = %s", (pid,)) == \
        "idle in transaction", "the server holds the open transaction"

    end_session(session, observer)
    wait_for_backend_exit(observer, pid)

    assert xact_status(observer, xid) == "aborted", "nobody committed it: it is rolled back"
    assert demo_rows(observer) == DEMO_ROWS, "atomicity: nothing of the open transaction stays"


# --------------------------------------------------------------------------- killed connections


def test_a_killed_connection_keeps_its_commits_and_loses_its_open_transaction(connect, observer):
    """Scenario: a session commits (row 1 => 11, row 3 added), then opens another transaction
    (row 2 => 22, row 4 added); before it ends, the session's server process is terminated
    (pg_terminate_backend). The client reconnects.

    Outcome: the committed transaction is all there; the open one is all gone (the
    server rolled it back as the process ended). The old connection is dead: its
    next request fails.
    """
    session = connect()
    execute(session, "update test set value = 11 where id = 1")
    execute(session, "insert into test values (3, 30)")
    session.commit()
    execute(session, "update test set value = 22 where id = 2")
    execute(session, "insert into test values (4, 40)")

    terminate_backend(observer, session.info.backend_pid)

    with pytest.raises(CONNECTION_LOST):
        execute(session, "select 1")
    assert demo_rows(connect()) == [(1, 11), (2, 20), (3, 30)], (
        "the commit made before the kill stays (the server never lost it: only a session "
        "ended); atomicity: the transaction open at the kill must vanish entirely")


def test_sqlalchemy_invalidates_a_connection_killed_inside_a_transaction(engines, observer):
    """Scenario: through a pool of one connection (pool_pre_ping on), one transaction commits
    row 3; the next inserts row 4 and, before it ends, its server process is terminated.
    Its next statement fails; then the app checks out a connection again and commits row 5.

    Outcome: SQLAlchemy raises OperationalError with ``connection_invalidated`` (the
    pool throws that connection away); row 4 is gone, rows 3 and 5 are there: the
    next checkout got a fresh, working connection.
    """
    engine = engines(pool_size=1, max_overflow=0, pool_pre_ping=True)
    with engine.begin() as conn:
        conn.execute(text("insert into test values (3, 30)"))

    with engine.connect() as conn:
        conn.execute(text("insert into test values (4, 40)"))
        terminate_backend(observer, conn.execute(text("select pg_backend_pid()")).scalar_one())
        with pytest.raises(sqlalchemy.exc.OperationalError) as killed:
            conn.execute(text("select 1"))
    assert killed.value.connection_invalidated, "the pool must drop a connection that died"

    with engine.begin() as conn:
        conn.execute(text("insert into test values (5, 50)"))
    assert demo_rows(observer) == [*DEMO_ROWS, (3, 30), (5, 50)], (
        "the pool recovers: commits before and after the kill stay; the killed "
        "transaction's row 4 is gone")


@pytest.mark.parametrize("pre_ping, first_statement", [
    pytest.param(True, "works",
                 id="pool_pre_ping on: the checkout replaces the dead connection"),
    pytest.param(False, "fails: connection invalidated",
                 id="pool_pre_ping off: the first statement finds it dead"),
])
def test_a_pooled_connection_killed_while_idle(engines, observer, pre_ping, first_statement):
    """Scenario: a pool of one connection; while that connection idles in the pool, its
    server process is terminated. The app checks it out and runs a statement, then again.

    Outcome: with pool_pre_ping the checkout pings, finds the connection dead and
    opens a new one: the statement works. Without it the first statement fails (and
    invalidates the connection); the checkout after that works either way.
    """
    engine = engines(pool_size=1, max_overflow=0, pool_pre_ping=pre_ping)
    with engine.connect() as conn:
        pooled_pid = conn.execute(text("select pg_backend_pid()")).scalar_one()
    terminate_backend(observer, pooled_pid)

    try:
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        outcome = "works"
    except sqlalchemy.exc.OperationalError as error:
        outcome = f"fails: connection {'invalidated' if error.connection_invalidated else '?'}"

    assert outcome == first_statement, "what the app sees of a connection killed in the pool"
    with engine.connect() as conn:
        assert conn.execute(text("select count(*) from test")).scalar_one() == 2, (
            "after a dead connection the pool must hand out a working one")


# --------------------------------------------------------------------------- killed clients


@pytest.mark.parametrize("statements, status, rows_after", [
    pytest.param(["begin", "insert into test values (3, 30)", "select pg_current_xact_id()",
                  "commit"],
                 "committed", [*DEMO_ROWS, (3, 30)],
                 id="committed, then killed: the row stays"),
    pytest.param(["begin", "insert into test values (3, 30)", "select pg_current_xact_id()"],
                 "aborted", DEMO_ROWS,
                 id="killed with the transaction open: the row never appears"),
])
def test_a_killed_client_process(connect, observer, statements, status, rows_after):
    """Scenario: a real client program (a child process) runs the statements and is SIGKILLed
    before it closes anything: no COMMIT or ROLLBACK afterwards, no goodbye to the server.

    Outcome: the server notices the vanished connection and ends its session. A
    transaction committed before the kill stays; one open at the kill is aborted
    (pg_xact_status of its id says so) and its row never appears.
    """
    with ClientProcess(connect.dsn()) as client:
        reports = client.run(statements)
        assert all(report.ok for report in reports), [report.error for report in reports]
        xid = reports[2].rows[0][0]
        assert client.kill() == -9, "the client must die by SIGKILL"
    wait_for_backend_exit(observer, client.backend_pid)

    assert xact_status(observer, xid) == status, "what became of the client's transaction"
    assert demo_rows(observer) == rows_after, (
        "a session's end keeps what it committed; a killed client's open transaction is "
        "rolled back")


