"""Isolation under real concurrency: many threads, each with its own session, at once.

The scripted scenarios show one schedule at a time. Here several workers run
the same transaction on threads, each on a connection of its own, the way an
application's request handlers do. Left free, threads make an anomaly likely,
not certain; so the workers move in lockstep at the one point that matters
(every worker has *read* before any worker *writes*) -- the schedule every
anomaly needs, forced every time, with no sleeping. The outcome is then exact
and stated per isolation level:

* read committed lets the writes queue on the row lock and each overwrites
  the previous one: updates are lost, money appears from nowhere, and two
  doctors both leave a shift that needed one of them;
* repeatable read aborts the second writer of a row with 40001 (first updater
  wins) but, reading from a snapshot, still lets two transactions that write
  *different* rows break a rule they both checked (write skew);
* serializable aborts that too; an application that retries on 40001 and
  40P01 then ends exactly where running the transactions one at a time would.

Each transaction is written out below, SQL and all, as the worker runs it
between ``begin transaction isolation level ...`` and ``commit``;
``turn.wait_for_others()`` is where the workers meet. (``acid_lab.engine.workloads``
only creates the tables, runs the threads, retries and counts.) Each test
prints its counts (commits, aborts and retries per SQLSTATE); run with ``-s``
to see them.
"""

import pytest

from acid_lab.engine import workloads
from acid_lab.engine.scenario import READ_COMMITTED, READ_UNCOMMITTED, REPEATABLE_READ, SERIALIZABLE

pytestmark = pytest.mark.isolation

THREADS, INCREMENTS = 4, 5  # 20 increments; per round 3 + 2 + 1 = 6 conflicts
NO_ERRORS: dict = {}
# The two 40001s: "could not serialize access due to concurrent update" (the row
# changed since this transaction's snapshot) and "... due to read/write
# dependencies among transactions" (serializable's dependency tracking).
UPDATE_CONFLICT = "40001 concurrent update"
RW_DEPENDENCY = "40001 read/write dependencies"


def show(result):
    """Print the counts of a workload run and return them for assertion messages."""
    summary = result.summary()
    print(summary)
    return summary


# -- one counter, incremented by every thread ------------------------------------------

def read_modify_write(cur, turn):
    """Read the counter, then write back what was read plus one."""
    cur.execute("select value from counter where id = 1")
    (value,) = cur.fetchone()
    turn.wait_for_others()  # every worker has read before any writes
    cur.execute("update counter set value = %s where id = 1", (value + 1,))


def locking_read_modify_write(cur, turn):
    """The same, but the read locks the row (a second locking read waits for the first)."""
    turn.wait_for_others()  # a locking read waits, so meet before it
    cur.execute("select value from counter where id = 1 for update")
    (value,) = cur.fetchone()
    cur.execute("update counter set value = %s where id = 1", (value + 1,))


def atomic_update(cur, turn):
    """No read at all: the server adds 1 to the value as it is when the row lock is got."""
    turn.wait_for_others()
    cur.execute("update counter set value = value + 1 where id = 1")


@pytest.mark.parametrize("level, retry, counter, lost, aborts, retries", [
    pytest.param(READ_UNCOMMITTED, True, 5, 15, NO_ERRORS, NO_ERRORS,
                 id="read uncommitted (read committed in PostgreSQL): 15 of 20 lost"),
    pytest.param(READ_COMMITTED, True, 5, 15, NO_ERRORS, NO_ERRORS,
                 id="read committed: 15 of 20 increments lost"),
    pytest.param(REPEATABLE_READ, True, 20, 0, {UPDATE_CONFLICT: 30}, {UPDATE_CONFLICT: 30},
                 id="repeatable read with retries: all 20 kept"),
    pytest.param(SERIALIZABLE, True, 20, 0, {UPDATE_CONFLICT: 30}, {UPDATE_CONFLICT: 30},
                 id="serializable with retries: all 20 kept"),
    pytest.param(REPEATABLE_READ, False, 5, 0, {UPDATE_CONFLICT: 15}, NO_ERRORS,
                 id="repeatable read without retries: 15 refused, none lost silently"),
])
def test_threads_incrementing_one_counter(connect, level, retry, counter, lost, aborts, retries):
    """Lost update under threads: 4 threads x 5 read-modify-write increments of one counter.

    Scenario: each round, all four threads read the counter, then each writes
    what it read plus one (``read_modify_write`` above); the writes wait for
    each other on the row lock.
    Outcome: at read committed each write overwrites the one before: the
    counter gains 1 per round, 15 committed increments vanish without an
    error. From repeatable read up the first writer wins and the other three
    get 40001 for a concurrent update; retrying (3 + 2 + 1 aborts per round) every increment counts.
    Without the retry loop the refused increments are missing too -- but the
    application was told, which is the difference.
    """
    result = workloads.increments(connect, read_modify_write, level=level, threads=THREADS,
                                  increments=INCREMENTS, retry=retry)
    summary = show(result)

    assert result.final == counter, f"lost updates at {level}: {summary}"
    assert result.lost_updates == lost, f"committed increments missing at {level}: {summary}"
    assert result.aborts == aborts, f"transactions aborted by the server: {summary}"
    assert result.retries == retries, f"transactions retried: {summary}"


@pytest.mark.parametrize("increment, counter", [
    pytest.param(locking_read_modify_write, 20,
                 id="select for update: the reads wait, all 20 kept"),
    pytest.param(atomic_update, 20, id="set value = value + 1: all 20 kept"),
    pytest.param(read_modify_write, 5, id="plain read then write: 15 lost"),
])
def test_threads_incrementing_at_read_committed_with_locks(connect, increment, counter):
    """Locking as the fix, under threads: the same 4 x 5 increments at read committed.

    Scenario: all four threads start each round together; each increments the
    counter by a locking read (select ... for update) then a write, or by one
    update that adds to the current value, or (for contrast) by a plain read
    then a write.
    Outcome: the row lock now orders the whole read-modify-write (or the
    server re-reads the row after the wait), so nothing is lost and nothing
    has to be retried; the plain read still loses 15.
    """
    result = workloads.increments(connect, increment, level=READ_COMMITTED, threads=THREADS,
                                  increments=INCREMENTS)
    summary = show(result)

    assert result.final == counter, (
        f"lost updates at read committed ({increment.__name__}): {summary}")
    assert result.aborts == NO_ERRORS, f"locking needs no retries: {summary}"


# -- tellers paying out of one shared account -------------------------------------------

def pay_10_from_the_shared_account(cur, turn):
    """Teller i reads account 0 and customer account i + 1, then writes both new balances."""
    customer = turn.worker + 1
    cur.execute("select balance from accounts where id = 0")
    (shared_balance,) = cur.fetchone()
    cur.execute("select balance from accounts where id = %s", (customer,))
    (customer_balance,) = cur.fetchone()
    turn.wait_for_others()  # every teller has read before any writes
    cur.execute("update accounts set balance = %s where id = 0", (shared_balance - 10,))
    cur.execute("update accounts set balance = %s where id = %s",
                (customer_balance + 10, customer))


@pytest.mark.parametrize("level, total, shared_account, aborts", [
    pytest.param(READ_COMMITTED, 1150, 950, NO_ERRORS,
                 id="read committed: 150 created from nothing"),
    pytest.param(REPEATABLE_READ, 1000, 800, {UPDATE_CONFLICT: 30},
                 id="repeatable read with retries: total conserved"),
    pytest.param(SERIALIZABLE, 1000, 800, {UPDATE_CONFLICT: 30},
                 id="serializable with retries: total conserved"),
])
def test_bank_transfers_conserve_the_total(connect, level, total, shared_account, aborts):
    """Bank transfers: 4 tellers each pay 10 out of one shared account (1000) 5 times.

    Scenario: each round every teller reads the shared balance and its
    customer's balance, then writes both new balances (shared - 10, customer + 10).
    Outcome: at read committed the debits overwrite each other -- the shared
    account is charged once per round while four customers are paid: 150
    appear from nothing. From repeatable read up the conflicting debits are
    refused (40001, concurrent update) and retried: 200 paid out, 200
    debited, total still 1000.
    """
    result = workloads.bank_transfers(connect, pay_10_from_the_shared_account, level=level,
                                      tellers=THREADS, transfers=INCREMENTS, opening=1000)
    summary = show(result)

    assert result.total == total, f"money conserved by concurrent transfers? {summary}"
    assert result.balances[0] == shared_account, f"debits of the shared account: {summary}"
    assert [result.balances[i] for i in (1, 2, 3, 4)] == [50, 50, 50, 50], (
        f"every customer received 5 x 10: {summary}")
    assert result.aborts == aborts, f"transactions aborted by the server: {summary}"
    assert result.retries == aborts, f"every aborted transfer was retried: {summary}"


# -- two doctors on call ----------------------------------------------------------------

DOCTORS = ("alice", "bob")


def go_off_call_if_another_stays(cur, turn):
    """Count who is on call this shift; leave (only your own row) if that is two or more."""
    shift, name = turn.round, DOCTORS[turn.worker]
    cur.execute("select count(*) from doctors where shift = %s and on_call", (shift,))
    (on_call,) = cur.fetchone()
    turn.wait_for_others()  # every doctor has counted before anyone leaves
    if on_call < 2:
        return "stays on call"
    cur.execute("update doctors set on_call = false where shift = %s and name = %s",
                (shift, name))
    return "goes off call"


@pytest.mark.parametrize("level, on_call, aborts", [
    pytest.param(READ_COMMITTED, [0, 0, 0], NO_ERRORS,
                 id="read committed: every shift left uncovered"),
    pytest.param(REPEATABLE_READ, [0, 0, 0], NO_ERRORS,
                 id="repeatable read: write skew, every shift left uncovered"),
    pytest.param(SERIALIZABLE, [1, 1, 1], {RW_DEPENDENCY: 3},
                 id="serializable: one doctor stays each shift"),
])
def test_on_call_doctors_keep_one_on_call(connect, level, on_call, aborts):
    """Write skew (G2-item): two doctors on call, each may leave if another one stays.

    Scenario: for each of 3 shifts Alice and Bob both count who is on call (2),
    then each takes only *their own* row off call -- no row is written twice.
    Outcome: read committed and repeatable read see no conflict and both leave:
    nobody is on call. Serializable notices that each counted a row the other
    then overwrote (a read/write anti-dependency each way), aborts one (40001
    for read/write dependencies: no row was written twice), and on retry that
    doctor counts 1 and stays.
    """
    result = workloads.on_call_doctors(connect, go_off_call_if_another_stays, level=level,
                                       shifts=3, doctors=DOCTORS)
    summary = show(result)

    assert result.on_call == on_call, f"rule 'at least one doctor on call' at {level}: {summary}"
    assert result.aborts == aborts, f"transactions aborted by the server: {summary}"
    assert result.retries == aborts, f"every aborted transaction was retried: {summary}"
