"""Atomicity: all of a transaction, or none of it.

**The promise.** A transaction bundles statements into one unit of work. Moving
30 from alice to bob is four statements (``acid_lab.lessons.bank.TRANSFER``)::

    update accounts set balance = balance - 30 where id = 1   -- debit alice
    update accounts set balance = balance + 30 where id = 2   -- credit bob
    insert into audit (account_id, delta) values (1, -30)
    insert into audit (account_id, delta) values (2, 30)

The database applies all four (COMMIT) or none (ROLLBACK, or any failure
before the commit is done). Nobody ever sees alice debited and bob not
credited. In the course notes' words: queue up your INSERT/UPDATE/DELETE in a
transaction and commit it; if anything goes wrong, roll back, and the queue
is cleared. The queue is a metaphor, though: the server keeps none. Each
statement runs on the server the moment it arrives -- it takes its locks,
meets the constraints, fails with its error then and there -- and only its
*visibility* to other sessions waits for COMMIT (a queue exists in the ORM's
session, in Python, until it flushes).

**Without it**, any failure halfway -- the application raises, a constraint
refuses a row, a statement times out, the server process or the client dies,
the database aborts the transaction to break a deadlock -- would leave 30 gone
from alice and never arrived at bob.

**How PostgreSQL does it.** Every row version a transaction writes is stamped
with its transaction id, and whether another transaction sees that version
depends on two facts: did the writer commit (MVCC; the answer is one record in
the commit log, written at COMMIT), and did it commit before the reader's
snapshot was taken? (A snapshot lists the transactions still running when it
was taken; their versions stay invisible to it even after they commit --
test_isolation_mvcc.py.) Until then the new versions are invisible to
everyone else; after an abort they stay invisible for ever, and VACUUM clears
them away later. Rolling back therefore undoes nothing row by row: the
transaction simply never commits. After an error the server refuses every
further statement of the transaction (25P02) until the client ends it, and a
COMMIT then answers ROLLBACK. Savepoints (subtransactions) give smaller units
inside. DDL is transactional too: CREATE, ALTER and DROP TABLE roll back with
the rest.

Every test below runs the bank of ``acid_lab.lessons.schema.BANK``: alice (account 1)
has 100, bob (account 2) has 50, the audit trail is empty. ``observer`` is the
session that stands for everyone else. ``test_atomicity_failures.py`` goes on
with transactions that die halfway: exceptions, broken rules, timeouts, killed
server processes and clients, deadlocks.
"""

import contextlib

import pytest
from psycopg2 import errors
from sqlalchemy import insert, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from acid_lab.engine.expectations import aborts, blocks, commits, rolls_back, sees, succeeds
from acid_lab.engine.scenario import OBSERVER, READ_COMMITTED, T1, T2
from acid_lab.lessons.bank import balances, execute_each, seen_by_everyone, transfer_statements
from acid_lab.lessons.faults import InjectedFailure
from acid_lab.lessons.models import Account, AuditEntry
from acid_lab.lessons.schema import demo_rows
from acid_lab.servers.queries import execute

pytestmark = pytest.mark.atomicity

# What everyone else may see: one of these two states, never anything in between.
UNTOUCHED = ({1: 100, 2: 50}, {})                    # (balances, audit sums per account)
TRANSFERRED = ({1: 70, 2: 80}, {1: -30, 2: 30})      # alice sent bob 30

ACCOUNTS = Account.__table__
AUDIT = AuditEntry.__table__


# ------------------------------------------------------------------ one transfer, three APIs
# The same four statements through the three layers a Python app may use. Each
# function runs the whole transfer and then ends the transaction its API's way.


def psycopg2_commit(connect, engine):
    conn = connect()                 # psycopg2 opens a transaction at the first statement
    execute_each(conn, transfer_statements())
    conn.commit()


def psycopg2_with_block(connect, engine):
    conn = connect()
    with conn:                       # COMMIT when the block ends normally
        execute_each(conn, transfer_statements())


def core_engine_begin(connect, engine):
    with engine.begin() as db:       # COMMIT when the block ends normally
        db.execute(update(ACCOUNTS).where(ACCOUNTS.c.id == 1)
                   .values(balance=ACCOUNTS.c.balance - 30))
        db.execute(update(ACCOUNTS).where(ACCOUNTS.c.id == 2)
                   .values(balance=ACCOUNTS.c.balance + 30))
        db.execute(insert(AUDIT), [{"account_id": 1, "delta": -30},
                                   {"account_id": 2, "delta": 30}])


def orm_transfer(session):
    alice, bob = session.get(Account, 1), session.get(Account, 2)
    alice.balance -= 30
    bob.balance += 30
    session.add_all([AuditEntry(account_id=1, delta=-30), AuditEntry(account_id=2, delta=30)])
    session.flush()                  # the UPDATEs and INSERTs reach the server, uncommitted


def orm_session_commit(connect, engine):
    with Session(engine) as session:
        orm_transfer(session)
        session.commit()


def psycopg2_rollback(connect, engine):
    conn = connect()
    execute_each(conn, transfer_statements())
    conn.rollback()


def psycopg2_with_block_raises(connect, engine):
    conn = connect()
    with contextlib.suppress(InjectedFailure), conn:   # ROLLBACK when the block raises
        execute_each(conn, transfer_statements())
        raise InjectedFailure("the application fails before the block ends")


def core_connection_rollback(connect, engine):
    with engine.connect() as db:     # "autobegin": a transaction starts at the first statement
        db.execute(update(ACCOUNTS).where(ACCOUNTS.c.id == 1)
                   .values(balance=ACCOUNTS.c.balance - 30))
        db.execute(update(ACCOUNTS).where(ACCOUNTS.c.id == 2)
                   .values(balance=ACCOUNTS.c.balance + 30))
        db.rollback()


def core_engine_begin_raises(connect, engine):
    with contextlib.suppress(InjectedFailure), engine.begin() as db:  # ROLLBACK on exception
        db.execute(update(ACCOUNTS).where(ACCOUNTS.c.id == 1)
                   .values(balance=ACCOUNTS.c.balance - 30))
        raise InjectedFailure("the application fails before the block ends")


def orm_session_rollback(connect, engine):
    with Session(engine) as session:
        orm_transfer(session)
        session.rollback()


def orm_session_begin_raises(connect, engine):
    with contextlib.suppress(InjectedFailure), Session(engine) as session, session.begin():
        orm_transfer(session)
        raise InjectedFailure("the application fails before the block ends")


# What psycopg2 sent to the server for each API, with the server's answers: the
# UPDATE 1s prove every statement ran on the server before COMMIT or ROLLBACK.
# psycopg2 sends the BEGIN itself before the first statement (no cursor sends it).
BEGIN = ("BEGIN", "BEGIN")
COMMIT = ("COMMIT", "COMMIT")
ROLLBACK = ("ROLLBACK", "ROLLBACK")
PSYCOPG2_TRANSFER = [  # bank.TRANSFER, the parameters merged in by psycopg2
    ("update accounts set balance = balance - 30 where id = 1", "UPDATE 1"),
    ("update accounts set balance = balance + 30 where id = 2", "UPDATE 1"),
    ("insert into audit (account_id, delta) values (1, - 30)", "INSERT 0 1"),
    ("insert into audit (account_id, delta) values (2, 30)", "INSERT 0 1"),
]
CORE_DEBIT = ("UPDATE accounts SET balance=(accounts.balance - 30) WHERE accounts.id = 1",
              "UPDATE 1")
CORE_CREDIT = ("UPDATE accounts SET balance=(accounts.balance + 30) WHERE accounts.id = 2",
               "UPDATE 1")
CORE_AUDIT = ("INSERT INTO audit (account_id, delta) VALUES (1, -30), (2, 30)", "INSERT 0 2")
ORM_TRANSFER = [  # get() twice; flush: the changed balances, then both audit rows at once
    ("SELECT accounts.id, accounts.owner, accounts.balance FROM accounts "
     "WHERE accounts.id = 1", "SELECT 1"),
    ("SELECT accounts.id, accounts.owner, accounts.balance FROM accounts "
     "WHERE accounts.id = 2", "SELECT 1"),
    ("UPDATE accounts SET balance=70 WHERE accounts.id = 1", "UPDATE 1"),
    ("UPDATE accounts SET balance=80 WHERE accounts.id = 2", "UPDATE 1"),
    ("INSERT INTO audit (account_id, delta) SELECT p0::INTEGER, p1::INTEGER FROM "
     "(VALUES (1, -30, 0), (2, 30, 1)) AS imp_sen(p0, p1, sen_counter) ORDER BY sen_counter "
     "RETURNING audit.entry, audit.entry AS entry__1", "INSERT 0 2"),
]


@pytest.mark.usefixtures("bank")
@pytest.mark.parametrize("transfer_via, sent", [
    pytest.param(psycopg2_commit, [BEGIN, *PSYCOPG2_TRANSFER, COMMIT],
                 id="psycopg2: conn.commit()"),
    pytest.param(psycopg2_with_block, [BEGIN, *PSYCOPG2_TRANSFER, COMMIT],
                 id="psycopg2: with conn"),
    pytest.param(core_engine_begin, [BEGIN, CORE_DEBIT, CORE_CREDIT, CORE_AUDIT, COMMIT],
                 id="SQLAlchemy Core: engine.begin()"),
    pytest.param(orm_session_commit, [BEGIN, *ORM_TRANSFER, COMMIT],
                 id="ORM: session.commit()"),
])
def test_a_committed_transfer_is_seen_whole(transfer_via, sent, logged_connect, logged_engine,
                                            statement_log, observer):
    """Scenario: the transfer runs through one API and commits.

    Outcome: psycopg2 sent exactly the statements listed -- SQLAlchemy wrote
    its own SQL for Core and the ORM, psycopg2 merged the values in and sent
    it, BEGIN first -- and everyone sees all of it: both balances moved, both
    audit rows.
    """
    transfer_via(logged_connect, logged_engine)

    assert statement_log.transcript == sent, "what the API sent to the server"
    assert seen_by_everyone(observer) == TRANSFERRED, "atomicity: a commit applies every change"


@pytest.mark.usefixtures("bank")
@pytest.mark.parametrize("transfer_via, sent", [
    pytest.param(psycopg2_rollback, [BEGIN, *PSYCOPG2_TRANSFER, ROLLBACK],
                 id="psycopg2: conn.rollback()"),
    pytest.param(psycopg2_with_block_raises, [BEGIN, *PSYCOPG2_TRANSFER, ROLLBACK],
                 id="psycopg2: with conn, block raises"),
    pytest.param(core_connection_rollback, [BEGIN, CORE_DEBIT, CORE_CREDIT, ROLLBACK],
                 id="SQLAlchemy Core: connection.rollback()"),
    pytest.param(core_engine_begin_raises, [BEGIN, CORE_DEBIT, ROLLBACK],
                 id="SQLAlchemy Core: engine.begin(), block raises"),
    pytest.param(orm_session_rollback, [BEGIN, *ORM_TRANSFER, ROLLBACK],
                 id="ORM: session.rollback() after flush"),
    pytest.param(orm_session_begin_raises, [BEGIN, *ORM_TRANSFER, ROLLBACK],
                 id="ORM: session.begin(), block raises"),
])
def test_a_rolled_back_transfer_leaves_no_trace(transfer_via, sent, logged_connect, logged_engine,
                                                statement_log, observer):
    """Scenario: the transfer's statements reach the server, then the transaction rolls back.

    Outcome: the server ran every statement (it answered UPDATE 1, INSERT ...)
    before the ROLLBACK; yet nobody ever sees any of it: balances and audit
    trail as before.
    """
    transfer_via(logged_connect, logged_engine)

    assert statement_log.transcript == sent, "the statements ran on the server, then ROLLBACK"
    assert seen_by_everyone(observer) == UNTOUCHED, "atomicity: a rollback leaves nothing"


@pytest.mark.parametrize("session_level, begin", [
    pytest.param(None, "BEGIN", id="default session: BEGIN"),
    pytest.param("SERIALIZABLE", "BEGIN ISOLATION LEVEL SERIALIZABLE",
                 id="set_session() with a level: BEGIN carries the level"),
])
def test_psycopg2_sends_begin_itself(target, logged_connect, statement_log, session_level, begin):
    """The statement log's BEGIN, checked against the server's own log.

    Scenario: one session asks the server to log every statement it receives
    (``log_statement = all``), then, not in autocommit mode (maybe with an
    isolation level set by ``conn.set_session()``), runs an UPDATE and
    ``conn.commit()``.
    Outcome: the server received BEGIN, the UPDATE and COMMIT -- the list the
    statement log recorded -- though the program executed one statement: the
    BEGIN came from psycopg2 itself, carrying the session's isolation level,
    the COMMIT from ``commit()``. (The next statement, sent only to have the
    COMMIT's log line written, gets a BEGIN too.)
    """
    if not target.managed:
        pytest.skip("reads the log file of a server the suite started (--dsn is set)")
    conn = logged_connect(autocommit=True)
    execute(conn, "set log_statement = 'all'")
    conn.autocommit = False
    if session_level:
        conn.set_session(isolation_level=session_level)
    statement_log.clear()
    start = target.cluster.workdir.log.stat().st_size

    execute(conn, "update test set value = 11 where id = 1")
    conn.commit()
    execute(conn, "select 'logged so far'")  # its log lines follow the COMMIT's

    with open(target.cluster.workdir.log, errors="replace") as log:
        log.seek(start)
        marker = f"[{conn.info.backend_pid}] LOG:  statement: "
        received = [line.split(marker, 1)[1].strip() for line in log if marker in line]
    assert received == statement_log.sent == [
        begin, "update test set value = 11 where id = 1", "COMMIT",
        begin, "select 'logged so far'"], "what the server received, in order"


# --------------------------------------------------------------------------- the queue


@pytest.mark.parametrize("end, after", [
    pytest.param("commit", [(1, 11), (3, 30)], id="commit: the queue is applied"),
    pytest.param("rollback", [(1, 10), (2, 20)], id="rollback: the queue is cleared"),
])
def test_changes_queue_up_in_the_transaction_until_it_ends(connect, observer, end, after):
    """The course notes' picture: INSERT, UPDATE, DELETE queue up; COMMIT or ROLLBACK decides.

    Scenario: on Hermitage's table test (1, 10), (2, 20) a session inserts (3, 30),
    updates row 1 to 11 and deletes row 2; then it commits, or rolls back.
    Outcome: the session sees its own changes at once, everyone else sees
    none of them while the transaction is open, and afterwards all or none.
    """
    conn = connect()
    execute_each(conn, [("insert into test (id, value) values (3, 30)", None),
               ("update test set value = 11 where id = 1", None),
               ("delete from test where id = 2", None)])

    assert demo_rows(conn) == [(1, 11), (3, 30)], "a session sees its own queued changes"
    assert demo_rows(observer) == [(1, 10), (2, 20)], "others see none before the end"
    getattr(conn, end)()
    assert demo_rows(observer) == after, f"atomicity: {end} decides for all three changes"


@pytest.mark.usefixtures("bank")
@pytest.mark.parametrize("end, accounts_after", [
    pytest.param("commit", {1: 100, 2: 50, 3: 0}, id="commit: carol is in"),
    pytest.param("rollback", {1: 100, 2: 50}, id="rollback: carol never was"),
])
def test_the_orm_session_queues_objects_until_flush(logged_engine, statement_log, observer, end,
                                                    accounts_after):
    """SQLAlchemy's unit of work: ``session.add()`` queues in Python, flush sends, commit decides.

    Scenario: session.add(Account carol); then flush; then commit or rollback.
    Outcome: after add the object is only pending in the session: nothing was
    sent. Flush sent BEGIN and the INSERT, which ran in the open transaction
    (the server answered INSERT 0 1), still invisible to others; commit makes
    it everyone's, rollback clears it from the session and from the database.
    This queue is the ORM's, in Python; the server keeps none (see below).
    """
    with Session(logged_engine) as session:
        carol = Account(id=3, owner="carol")
        session.add(carol)
        assert carol in session.new, "add() only queues the object in the session"
        assert statement_log.transcript == [], "add() sends nothing"
        session.flush()
        assert statement_log.transcript == [
            ("BEGIN", "BEGIN"),
            ("INSERT INTO accounts (id, owner, balance) VALUES (3, 'carol', 0)", "INSERT 0 1")], \
            "flush() sent the INSERT"
        assert balances(observer) == {1: 100, 2: 50}, "a flushed INSERT is not yet committed"
        getattr(session, end)()
        assert statement_log.sent[-1] == end.upper()
        assert not session.new, "the session's queue is empty after the transaction ends"

    assert balances(observer) == accounts_after, f"atomicity: {end} decides for the INSERT"


def test_the_server_runs_each_statement_at_once_only_visibility_waits_for_commit(run):
    """The "queue" is a metaphor: the server keeps no queue of statements.

    Scenario: T1 updates row 1 and stays open; an observer reads row 1; T2
    tries to update row 1; T1 inserts a second row with id 2; T1 sends COMMIT;
    then T2 commits.
    Outcome: each of T1's statements ran on the server the moment it was sent:
    its update already holds the row's lock (T2 waits now, before any COMMIT),
    and its insert is checked against the primary key now and refused (23505).
    COMMIT decides one thing only, whether the others get to see T1's work --
    here the server answers ROLLBACK, because the transaction had failed, and
    T2's waiting update goes through.
    """
    run(READ_COMMITTED, [
        (T1, "update test set value = 11 where id = 1"),        # ran: UPDATE 1
        (OBSERVER, "select value from test where id = 1", sees(10)),   # not visible yet
        (T2, "update test set value = 12 where id = 1", blocks(then=succeeds)),  # locked now
        (T1, "insert into test (id, value) values (2, 21)", aborts(errors.UniqueViolation)),
        (T1, "commit", rolls_back),
        (T2, "commit", commits),
        (OBSERVER, "select id, value from test order by id", sees((1, 12), (2, 20))),
    ])


@pytest.mark.usefixtures("bank")
def test_a_single_statement_is_atomic_too(observer):
    """Scenario: in autocommit mode, one UPDATE takes 60 from every account.

    Outcome: alice's row (100 -> 40) would pass, bob's (50 -> -10) violates
    no_negative_balance; the statement fails as a whole and alice keeps 100.
    """
    with pytest.raises(errors.CheckViolation):
        execute(observer, "update accounts set balance = balance - 60")

    assert balances(observer) == {1: 100, 2: 50}, "atomicity: a statement is all or nothing"


# --------------------------------------------------------------------------- partial rollback


@pytest.mark.usefixtures("bank")
def test_rolling_back_to_a_savepoint_undoes_only_its_part(connect, observer):
    """Scenario: debit and credit; SAVEPOINT; a mistaken extra credit of 1000 to bob;
    ROLLBACK TO SAVEPOINT; the audit rows; COMMIT.

    Outcome: the mistake is gone, everything else is committed.
    """
    conn = connect()
    statements = transfer_statements()
    execute_each(conn, statements[:2])
    execute_each(conn, [("savepoint mistake", None),
               ("update accounts set balance = balance + 1000 where id = 2", None),
               ("rollback to savepoint mistake", None)])
    execute_each(conn, statements[2:])
    conn.commit()

    assert seen_by_everyone(observer) == TRANSFERRED, "a savepoint undoes only its own part"


@pytest.mark.usefixtures("bank")
def test_an_error_inside_a_savepoint_spares_the_rest_of_the_transaction(connect, observer):
    """Scenario: debit and credit; SAVEPOINT; an audit row for unknown account 99 fails;
    ROLLBACK TO SAVEPOINT; the right audit rows; COMMIT.

    Outcome: the error aborted only the subtransaction; the transaction goes on
    and commits the whole transfer.
    """
    conn = connect()
    statements = transfer_statements()
    execute_each(conn, statements[:2])
    execute(conn, "savepoint audit")
    with pytest.raises(errors.ForeignKeyViolation):
        execute(conn, "insert into audit (account_id, delta) values (99, -30)")
    execute(conn, "rollback to savepoint audit")
    execute_each(conn, statements[2:])
    conn.commit()

    assert seen_by_everyone(observer) == TRANSFERRED, "the savepoint contained the error"


@pytest.mark.usefixtures("bank")
def test_sqlalchemy_begin_nested_undoes_only_its_part(logged_engine, statement_log, observer):
    """Scenario: an ORM session moves the money and adds the audit rows; inside
    ``session.begin_nested()`` (a SAVEPOINT) it adds an audit row for unknown
    account 99, which fails at flush; then the session commits.

    Outcome: SQLAlchemy sent SAVEPOINT, the INSERT (refused: 23503), ROLLBACK TO
    SAVEPOINT, and later COMMIT: IntegrityError (ForeignKeyViolation) leaves
    the nested block, whose savepoint is rolled back; the commit keeps the
    transfer.
    """
    with Session(logged_engine) as session:
        orm_transfer(session)
        with pytest.raises(IntegrityError) as failure, session.begin_nested():
            session.add(AuditEntry(account_id=99, delta=5))
            session.flush()
        session.commit()

    assert statement_log.transcript == [BEGIN, *ORM_TRANSFER,
        ("SAVEPOINT sa_savepoint_1", "SAVEPOINT"),
        ("INSERT INTO audit (account_id, delta) VALUES (99, 5) RETURNING audit.entry",
         "ERROR 23503"),
        ("ROLLBACK TO SAVEPOINT sa_savepoint_1", "ROLLBACK"),
        COMMIT]
    assert isinstance(failure.value.orig, errors.ForeignKeyViolation)
    assert seen_by_everyone(observer) == TRANSFERRED, "begin_nested() undid only its part"


@pytest.mark.usefixtures("bank")
@pytest.mark.parametrize("next_statement, answer", [
    pytest.param("select 1", "ERROR 25P02", id="select: refused"),
    pytest.param("update accounts set balance = balance + 30 where id = 2", "ERROR 25P02",
                 id="update: refused"),
    pytest.param("insert into audit (account_id, delta) values (1, -30)", "ERROR 25P02",
                 id="insert: refused"),
    pytest.param("savepoint too_late", "ERROR 25P02", id="a new savepoint: refused"),
    pytest.param("rollback to savepoint before_debit", "ROLLBACK",
                 id="rollback to an earlier savepoint: accepted"),
])
def test_after_an_error_the_transaction_refuses_every_statement_but_its_way_out(
        logged_connect, statement_log, observer, next_statement, answer):
    """Scenario: a savepoint, then the debit overdraws alice (23514); the session sends
    one more statement, then ``select 1``, then commits.

    Outcome: InFailedSqlTransaction (25P02) for every statement except the
    ways out: ROLLBACK ends the transaction, and ROLLBACK TO SAVEPOINT
    (to a savepoint set before the error) undoes the failed part, after which
    the transaction works again and its COMMIT commits. Otherwise the COMMIT
    is answered ROLLBACK. Nothing changes either way.
    """
    conn = logged_connect()
    execute(conn, "savepoint before_debit")
    with pytest.raises(errors.CheckViolation):
        execute_each(conn, transfer_statements(amount=150)[:1])

    with contextlib.suppress(errors.InFailedSqlTransaction):
        execute(conn, next_statement)
    with contextlib.suppress(errors.InFailedSqlTransaction):
        execute(conn, "select 1")
    conn.commit()

    recovered = answer == "ROLLBACK"
    assert statement_log.transcript == [
        BEGIN,
        ("savepoint before_debit", "SAVEPOINT"),
        ("update accounts set balance = balance - 150 where id = 1", "ERROR 23514"),
        (next_statement, answer),
        ("select 1", "SELECT 1" if recovered else "ERROR 25P02"),
        ("COMMIT", "COMMIT" if recovered else "ROLLBACK"),
    ]
    assert seen_by_everyone(observer) == UNTOUCHED


@pytest.mark.usefixtures("bank")
def test_commit_of_a_failed_transaction_rolls_back(connect, observer):
    """Scenario: in an explicit transaction (BEGIN ... COMMIT sent as SQL), the debit
    succeeds, the audit row for account 99 fails; then the client sends COMMIT.

    Outcome: the server answers COMMIT with ROLLBACK: the debit is gone too.
    """
    conn = connect(autocommit=True)  # transaction control by SQL statements
    execute_each(conn, [("begin", None), transfer_statements()[0]])
    with pytest.raises(errors.ForeignKeyViolation):
        execute(conn, "insert into audit (account_id, delta) values (99, 30)")

    with conn.cursor() as cur:
        cur.execute("commit")
        assert cur.statusmessage == "ROLLBACK", "COMMIT of a failed transaction rolls back"
    assert seen_by_everyone(observer) == UNTOUCHED, "atomicity: nothing of it was committed"


@pytest.mark.usefixtures("bank")
def test_psycopg2_commit_of_a_failed_transaction_rolls_back_quietly(connect, observer):
    """Scenario: the same through psycopg2: debit, failing audit row, ``conn.commit()``.

    Outcome: commit() returns without an error, yet nothing was committed. An
    application must not take a quiet commit() for success after an error it
    swallowed.
    """
    conn = connect()
    execute_each(conn, transfer_statements()[:1])
    with pytest.raises(errors.ForeignKeyViolation):
        execute(conn, "insert into audit (account_id, delta) values (99, 30)")

    conn.commit()
    assert seen_by_everyone(observer) == UNTOUCHED, "atomicity: commit() after an error is void"


# --------------------------------------------------------------------------- transactional DDL

SCHEMA_BEFORE = {"accounts": ["id", "owner", "balance"],
                 "audit": ["entry", "account_id", "delta"]}


def tables_and_columns(conn):
    """This place's tables (but Hermitage's) and their columns, in order."""
    with conn.cursor() as cur:
        cur.execute("""select table_name::text,
                              array_agg(column_name::text order by ordinal_position)
                       from information_schema.columns
                       where table_schema = current_schema() and table_name <> 'test'
                       group by 1 order by 1""")
        return dict(cur.fetchall())


@pytest.mark.usefixtures("bank")
@pytest.mark.parametrize("ddl, schema_inside", [
    pytest.param(["create table loans (id int primary key, account_id int references accounts)",
                  "insert into loans values (1, 1)"],
                 {**SCHEMA_BEFORE, "loans": ["id", "account_id"]}, id="create table"),
    pytest.param(["alter table accounts add column currency text not null default 'EUR'"],
                 {**SCHEMA_BEFORE, "accounts": ["id", "owner", "balance", "currency"]},
                 id="alter table add column"),
    pytest.param(["alter table accounts drop column owner"],
                 {**SCHEMA_BEFORE, "accounts": ["id", "balance"]}, id="alter table drop column"),
    pytest.param(["drop table audit"], {"accounts": ["id", "owner", "balance"]},
                 id="drop table"),
])
def test_ddl_rolls_back_with_the_transaction(connect, observer, ddl, schema_inside):
    """Scenario: a transaction changes the schema (and the data in it), then rolls back.

    Outcome: inside, the session sees its new schema; after ROLLBACK the tables,
    their columns and their rows are exactly as before -- DDL is transactional
    in PostgreSQL.
    """
    conn = connect()
    execute_each(conn, [(statement, None) for statement in ddl])
    assert tables_and_columns(conn) == schema_inside, "the session sees its own DDL"

    conn.rollback()

    assert tables_and_columns(observer) == SCHEMA_BEFORE, "atomicity: DDL rolled back"
    assert seen_by_everyone(observer) == UNTOUCHED, "atomicity: the data is as before"


@pytest.mark.usefixtures("bank")
def test_ddl_and_data_commit_together(connect, observer):
    """Scenario: one transaction creates table loans, inserts a loan, adds a column
    to it and fills it; then commits.

    Outcome: everyone sees the new table, its new column and its row at once.
    """
    conn = connect()
    execute_each(conn, [
        ("create table loans (id int primary key, account_id int references accounts)", None),
        ("insert into loans values (1, 1)", None),
        ("alter table loans add column amount int", None),
        ("update loans set amount = 500", None)])
    assert "loans" not in tables_and_columns(observer), "others see no uncommitted DDL"
    conn.commit()

    assert tables_and_columns(observer)["loans"] == ["id", "account_id", "amount"]
    with observer.cursor() as cur:
        cur.execute("select * from loans")
        assert cur.fetchall() == [(1, 1, 500)], "the data committed with the DDL"
