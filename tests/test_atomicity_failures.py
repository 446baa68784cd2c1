"""Atomicity under failure: whatever stops a transaction halfway, none of it remains.

The chapter's opening (``test_atomicity.py``) shows commit and rollback when
everything goes to plan. Here the transfer of 30 from alice to bob
(``acid_lab.lessons.bank.TRANSFER``: debit, credit, two audit rows) is interrupted
at every point by the ways transactions really die:

* the application raises an exception between two statements;
* a statement breaks a rule (a CHECK, a foreign key);
* a timeout ends a statement that waits too long for a lock: ``lock_timeout``
  (55P03, lock waits only) or ``statement_timeout`` (57014, any long statement);
* another session ends the transaction's server process (``pg_terminate_backend``);
* the client process is SIGKILLed, between statements or while one waits;
* the server aborts the transaction to break a deadlock (which transaction of
  the circle it aborts is not promised: an application retries either).

Each time the observer sees nothing of the interrupted transaction: the server
never committed it, so its row versions never become visible, and a
transaction whose session has died is rolled back by the server itself -- no
client has to be alive to clean up. A property test then lets Hypothesis
choose the operations and the point of failure.

The failures are injected with ``acid_lab.lessons.faults``; the bank is
``acid_lab.lessons.schema.BANK``: alice (account 1) has 100, bob (account 2) has 50.
"""

import signal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from psycopg2 import errors

from acid_lab.lessons.bank import (
    audit_sums,
    balances,
    execute_each,
    seen_by_everyone,
    transfer_statements,
)
from acid_lab.lessons.faults import (
    CONNECTION_LOST,
    ClientProcess,
    InjectedFailure,
    terminate_backend,
    wait_for_backend_exit,
    wait_until_blocked,
)
from acid_lab.servers.queries import execute, rows

pytestmark = pytest.mark.atomicity

# What everyone else may see: one of these two states, never anything in between.
UNTOUCHED = ({1: 100, 2: 50}, {})                    # (balances, audit sums per account)
TRANSFERRED = ({1: 70, 2: 80}, {1: -30, 2: 30})      # alice sent bob 30


def as_literal_sql(conn, statements):
    """Statements with their parameters inlined (for a client in another process)."""
    with conn.cursor() as cur:
        return [cur.mogrify(statement, params).decode() for statement, params in statements]


# --------------------------------------------------------------------------- injected failures

POINTS = [
    pytest.param(1, id="after the debit"),
    pytest.param(2, id="after the credit"),
    pytest.param(3, id="after the first audit row"),
    pytest.param(4, id="after all four statements, before commit"),
]


@pytest.mark.usefixtures("bank")
@pytest.mark.parametrize("done", POINTS)
def test_an_exception_in_the_application_undoes_the_transfer(logged_connect, statement_log,
                                                             observer, done):
    """Scenario: inside ``with conn:``, the application raises after ``done`` statements.

    Outcome: the server had run each of them (it answered UPDATE 1, INSERT 0 1);
    psycopg2 sends ROLLBACK as the block ends with the exception; nothing of
    it is seen.
    """
    conn = logged_connect()
    with pytest.raises(InjectedFailure), conn:
        execute_each(conn, transfer_statements()[:done])
        raise InjectedFailure(f"the application fails after statement {done}")

    assert statement_log.answers == [
        "BEGIN", *["UPDATE 1", "UPDATE 1", "INSERT 0 1", "INSERT 0 1"][:done], "ROLLBACK"], \
        "the statements ran on the server, then the transaction was rolled back"
    assert seen_by_everyone(observer) == UNTOUCHED, "atomicity: an exception undoes it all"


@pytest.mark.usefixtures("bank")
@pytest.mark.parametrize("statements, failing, error", [
    pytest.param(transfer_statements(amount=150), 1, errors.CheckViolation,
                 id="statement 1: the debit overdraws alice (23514)"),
    pytest.param(transfer_statements(amount=-60), 2, errors.CheckViolation,
                 id="statement 2: amount -60, the credit overdraws bob (23514)"),
    pytest.param(transfer_statements(target=99), 4, errors.ForeignKeyViolation,
                 id="statement 4: the audit row of unknown account 99 (23503)"),
])
def test_a_statement_that_breaks_a_rule_undoes_the_transfer(connect, observer, statements,
                                                             failing, error):
    """Scenario: statement ``failing`` of the transfer violates a constraint.

    Outcome: that statement fails with its SQLSTATE; with it the transaction
    fails, and the statements before it are undone as well: alice's +60 from
    the "debit" of -60, or for account 99 the debit whose credit found no row.
    """
    conn = connect()
    succeeded = []
    with pytest.raises(error), conn:
        for statement in statements:
            execute_each(conn, [statement])
            succeeded.append(statement)

    assert len(succeeded) == failing - 1, f"statement {failing} is the one that fails"
    assert seen_by_everyone(observer) == UNTOUCHED, "atomicity: a failed statement undoes it all"


@pytest.mark.usefixtures("bank")
@pytest.mark.parametrize("lock, cancelled", [
    pytest.param("select from accounts where id = 1 for update", 1, id="the debit waits"),
    pytest.param("select from accounts where id = 2 for update", 2, id="the credit waits"),
    pytest.param("lock table audit in share mode", 3, id="the audit insert waits"),
])
def test_a_statement_cancelled_by_statement_timeout_undoes_the_transfer(connect, observer,
                                                                        lock, cancelled):
    """Scenario: another session holds a lock; statement ``cancelled`` of the transfer waits
    for it under ``statement_timeout = 100ms``, and the server cancels it.

    Outcome: QueryCanceled (57014); the transaction is failed and rolled back,
    the statements before it included.
    """
    holder = connect()
    execute(holder, lock)
    conn = connect()

    with pytest.raises(errors.QueryCanceled), conn:
        statements = transfer_statements()
        execute_each(conn, statements[:cancelled - 1])
        execute_each(conn, [("set local statement_timeout = '100ms'", None),
                            statements[cancelled - 1]])
    holder.rollback()

    assert seen_by_everyone(observer) == UNTOUCHED, "atomicity: a cancelled statement undoes all"


@pytest.mark.usefixtures("bank")
@pytest.mark.parametrize("setting, statement, error", [
    pytest.param("lock_timeout", "update accounts set balance = balance - 30 where id = 1",
                 errors.LockNotAvailable, id="lock_timeout, a lock wait: 55P03 lock_not_available"),
    pytest.param("statement_timeout", "update accounts set balance = balance - 30 where id = 1",
                 errors.QueryCanceled, id="statement_timeout, a lock wait: 57014 query_canceled"),
    pytest.param("lock_timeout", "select pg_sleep(0.2)", None,
                 id="lock_timeout, a slow statement without a lock wait: runs to its end"),
    pytest.param("statement_timeout", "select pg_sleep(0.2)", errors.QueryCanceled,
                 id="statement_timeout, a slow statement: 57014 query_canceled"),
])
def test_lock_timeout_and_statement_timeout_are_two_different_limits(connect, setting,
                                                                     statement, error):
    """Scenario: another session holds alice's row (FOR UPDATE); under a 100 ms limit
    a session debits alice (a lock wait) or sleeps 0.2 s (no lock involved).

    Outcome: lock_timeout limits only the time spent waiting for a lock, and
    fails with its own code, 55P03 (lock_not_available); statement_timeout
    limits the whole statement, whatever it waits for, and cancels it with
    57014 (query_canceled). Either error fails the transaction.
    """
    holder = connect()
    execute(holder, "select from accounts where id = 1 for update")
    conn = connect()
    execute(conn, f"set local {setting} = '100ms'")

    if error is None:
        execute(conn, statement)
    else:
        with pytest.raises(error):
            execute(conn, statement)
        with pytest.raises(errors.InFailedSqlTransaction):
            execute(conn, "select 1")
    conn.rollback()
    holder.rollback()


@pytest.mark.usefixtures("bank")
@pytest.mark.parametrize("done", POINTS)
def test_a_terminated_server_process_takes_its_transaction_with_it(connect, observer, done):
    """Scenario: after ``done`` statements, another session ends this session's server
    process (``pg_terminate_backend``) and waits until it is gone.

    Outcome: the client's COMMIT finds the connection lost; the server rolled
    the transaction back when the process ended; nothing of it is seen.
    """
    conn = connect()
    execute_each(conn, transfer_statements()[:done])

    terminate_backend(observer, conn.info.backend_pid)

    with pytest.raises(CONNECTION_LOST):
        conn.commit()
    assert seen_by_everyone(observer) == UNTOUCHED, "atomicity: a dead session commits nothing"


@pytest.mark.usefixtures("bank")
@pytest.mark.parametrize("done, killed_while_waiting, status, expected", [
    pytest.param(1, False, "aborted", UNTOUCHED, id="killed after the debit"),
    pytest.param(3, False, "aborted", UNTOUCHED, id="killed after the first audit row"),
    pytest.param(4, False, "aborted", UNTOUCHED,
                 id="killed after all four statements, before commit"),
    pytest.param(1, True, "aborted", UNTOUCHED, id="killed while the credit waits for a lock"),
    pytest.param(5, False, "committed", TRANSFERRED, id="killed after commit: the transfer stays"),
])
def test_a_killed_client_process_commits_nothing(connect, observer, done, killed_while_waiting,
                                                 status, expected):
    """Scenario: a real client process runs ``begin``, asks its transaction's id
    (``select pg_current_xact_id()``), runs the transfer (plus ``commit`` as statement 5)
    and is SIGKILLed after ``done`` of them -- or while its next statement waits for a
    row lock another session holds.

    Outcome: the server sees the connection vanish and ends the session; once its
    server process is gone, the transaction's fate is final and the server says it
    (``pg_xact_status``): aborted, unless its COMMIT had completed. Before that moment
    the open transaction is merely invisible (``in progress``), which proves nothing;
    so the balances are read only after the process has gone.
    """
    holder = connect()
    statements = as_literal_sql(observer, transfer_statements()) + ["commit"]
    with ClientProcess(connect.dsn()) as client:
        reports = client.run(["begin", "select pg_current_xact_id()", *statements[:done]])
        assert all(report.ok for report in reports), reports
        xid = reports[1].rows[0][0]
        if killed_while_waiting:
            execute(holder, "select from accounts where id = 2 for update")
            client.send(statements[done])
            assert wait_until_blocked(observer, client.backend_pid) == [holder.info.backend_pid]
        assert client.kill() == -signal.SIGKILL, "the client died at once, mid-transaction"

    holder.rollback()  # a waiting server process notices its client is gone once it runs again
    wait_for_backend_exit(observer, client.backend_pid)
    assert rows(observer, "select pg_xact_status(%s::xid8)", (xid,)) == [(status,)], \
        "the server's own record of the killed client's transaction"
    assert seen_by_everyone(observer) == expected, "atomicity: a dead client commits nothing"


@pytest.mark.usefixtures("bank", "deadlock_timeout_settable")
def test_a_deadlock_victim_loses_its_whole_transaction(connect, observer):
    """Scenario: T1 (a client process) sends alice -> bob 30 while T2 sends bob -> alice 20.
    T1 debits alice, T2 debits bob; T1's credit of bob waits for T2, T2's credit
    of alice waits for T1: a deadlock. T2's short deadlock_timeout makes the
    server find it in T2's session, which on this server aborts T2 -- an
    implementation detail (PostgreSQL does not promise which transaction of a
    deadlock is aborted); the test pins it only so that its outcome is literal.

    Outcome: T2 fails with DeadlockDetected (40P01) and its debit of bob is
    undone; T1 goes on and commits. Everyone sees T1's transfer and nothing of T2.
    """
    t1_statements = ["begin", "set local deadlock_timeout = '10s'",
                     *as_literal_sql(observer, transfer_statements(1, 2, 30))]
    t2 = connect()
    execute(t2, "set local deadlock_timeout = '10ms'")
    with ClientProcess(connect.dsn()) as t1:
        assert all(report.ok for report in t1.run(t1_statements[:3]))  # T1 debits alice
        execute_each(t2, transfer_statements(2, 1, 20)[:1])               # T2 debits bob
        t1.send(t1_statements[3])                                    # T1 credits bob: waits
        wait_until_blocked(observer, t1.backend_pid)

        with pytest.raises(errors.DeadlockDetected):
            execute_each(t2, transfer_statements(2, 1, 20)[1:2])          # T2 credits alice: cycle
        t2.rollback()

        assert t1.wait_report().ok, "the survivor's waiting statement goes on"
        assert all(report.ok for report in t1.run([*t1_statements[4:], "commit"]))
        t1.quit()

    assert seen_by_everyone(observer) == TRANSFERRED, "atomicity: the victim left no trace"


# --------------------------------------------------------------------------- property-based

START = {1: 100, 2: 50, 3: 0}
RESET = ("delete from audit; delete from accounts; "
         "insert into accounts (id, owner, balance) values (1, 'alice', 100), "
         "(2, 'bob', 50), (3, 'carol', 0)")

account_ids = st.sampled_from(sorted(START))
amounts = st.integers(min_value=1, max_value=80)
operations = st.one_of(
    st.tuples(st.just("deposit"), account_ids, amounts),
    st.tuples(st.just("withdraw"), account_ids, amounts),
    st.tuples(st.just("transfer"), account_ids, account_ids, amounts),
)
FAILURES = ["application raises", "statement breaks a rule", "server process terminated"]


def statements_of(operation):
    kind, *args = operation
    if kind == "transfer":
        return transfer_statements(*args)
    account, amount = args
    delta = amount if kind == "deposit" else -amount
    return [("update accounts set balance = balance + %s where id = %s", (delta, account)),
            ("insert into audit (account_id, delta) values (%s, %s)", (account, delta))]


def applied(operations_):
    """The balances after every operation, or None if one would overdraw (a model in Python)."""
    result = dict(START)
    for kind, *args in operations_:
        if kind == "transfer":
            source, target, amount = args
            changes = [(source, -amount), (target, amount)]
        else:
            account, amount = args
            changes = [(account, amount if kind == "deposit" else -amount)]
        for account, delta in changes:
            result[account] += delta
            if result[account] < 0:
                return None
    return result


@pytest.mark.usefixtures("bank")
@settings(max_examples=40)
@example(operations_=[("transfer", 1, 2, 30)], failure=None)                       # commits
@example(operations_=[("transfer", 1, 2, 30)], failure=("application raises", 4))  # before commit
@given(operations_=st.lists(operations, min_size=1, max_size=5),
       failure=st.none() | st.tuples(st.sampled_from(FAILURES), st.integers(0, 20)))
def test_a_transaction_is_all_or_nothing_for_any_operations(connect, observer, operations_,
                                                            failure):
    """Property: run any sequence of deposits, withdrawals and transfers as one transaction,
    with or without a failure injected at any point.

    Outcome: if anything failed (the injected failure, or an overdraft the
    database refused), everyone sees the bank exactly as before; otherwise
    exactly as after every operation. Never anything in between.
    """
    execute(observer, RESET)
    statements = [s for operation in operations_ for s in statements_of(operation)]
    fail_at = None if failure is None else min(failure[1], len(statements))
    conn = connect()
    try:
        with conn:
            for number, statement in enumerate(statements):
                if number == fail_at:
                    inject(failure[0], conn, observer)
                execute_each(conn, [statement])
            if fail_at == len(statements):
                inject(failure[0], conn, observer)
    except (InjectedFailure, errors.CheckViolation, *CONNECTION_LOST):
        pass
    finally:
        conn.close()

    expected = None if failure else applied(operations_)
    if expected is None:
        assert balances(observer) == START, "atomicity: a failed transaction leaves nothing"
        assert audit_sums(observer) == {}, "atomicity: a failed transaction leaves nothing"
    else:
        assert balances(observer) == expected, "atomicity: a commit applies every operation"
        audited = audit_sums(observer)
        assert {account: audited.get(account, 0) for account in START} == {
            account: expected[account] - START[account] for account in START
        }, "atomicity: every audit row committed with its balance change"


def inject(failure, conn, observer):
    if failure == "application raises":
        raise InjectedFailure("the application fails mid-transaction")
    if failure == "statement breaks a rule":
        execute(conn, "update accounts set balance = -1 where id = 1")
    if failure == "server process terminated":
        terminate_backend(observer, conn.info.backend_pid)
        execute(conn, "select 1")
    raise AssertionError(f"{failure} did not fail")

