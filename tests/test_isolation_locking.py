"""Isolation by locking: making the other transaction wait, on purpose.

At read committed PostgreSQL does not stop a lost update: two transactions
read the same row, both write what they computed, the second write lands on
top of the first. Instead of raising the isolation level (and retrying on
40001), an application can take the lock it needs and let the server order
the transactions:

* ``SELECT ... FOR UPDATE`` locks the rows it reads; a second locking read of
  them waits until the first transaction ends, then reads the new value.
  ``NOWAIT`` refuses at once (55P03) instead of waiting; ``SKIP LOCKED``
  passes over locked rows -- a job queue where workers never wait for each other;
* ``UPDATE ... SET v = v + 1`` needs no read at all: the row lock of the
  UPDATE orders the writers, and each adds to the value as it is then;
* advisory locks are locks on a number the application chooses; only the
  sessions that ask for the same number wait for each other;
* locks can wait in a circle. PostgreSQL looks for such a deadlock when a
  waiting session's ``deadlock_timeout`` runs out, and aborts one transaction
  of the circle (40P01) so the others can go on. *Which* one is not promised:
  PostgreSQL's documentation (Explicit Locking, Deadlocks) says it is difficult
  to predict and should not be relied upon. An application must be ready to
  retry whichever of its transactions is aborted. The test below fixes the
  outcome only to have something literal to check: this server, today, aborts
  the session whose own check finds the circle -- an implementation detail.

"Blocks" below means the server reported the session as waiting for a lock
(the scenario runner asks it); nobody sleeps.
"""

import pytest
from psycopg2 import errors

from acid_lab.engine import workloads
from acid_lab.engine.expectations import aborts, blocks, commits, rolls_back, sees, succeeds
from acid_lab.engine.scenario import OBSERVER, READ_COMMITTED, T1, T2

pytestmark = pytest.mark.isolation

READ_ROW_1 = "select value from test where id = 1"
LOCK_ROW_1 = "select value from test where id = 1 for update"


@pytest.mark.parametrize("read, t2_read, t2_write, row_1", [
    pytest.param(LOCK_ROW_1, blocks(then=sees(11)), "update test set value = 12 where id = 1", 12,
                 id="select for update: T2 waits, reads 11, writes 12"),
    pytest.param(READ_ROW_1, sees(10), "update test set value = 11 where id = 1", 11,
                 id="plain select: T2 reads 10 at once, T1's increment lost"),
])
def test_select_for_update_turns_the_lost_update_into_a_wait(run, read, t2_read, t2_write,
                                                             row_1):
    """SELECT ... FOR UPDATE at read committed: the second read-modify-write waits.

    Scenario: T1 reads row 1 and locks it; T2 reads it the same way; T1 writes
    10 + 1 and commits; T2 writes what it read plus one.
    Outcome: T2's locking read waits for T1 and, once T1 has committed, returns
    T1's 11 -- T2 writes 12. With a plain read T2 gets 10 at once and its 11
    overwrites T1's.
    """
    run(READ_COMMITTED, [
        (T1, read, sees(10)),
        (T2, read, t2_read),
        (T1, "update test set value = 11 where id = 1"),
        (T1, "commit", commits),  # releases the row lock: T2's read returns
        (T2, t2_write),
        (T2, "commit", commits),
        (OBSERVER, READ_ROW_1, sees(row_1)),
    ])


@pytest.mark.parametrize("write, row_1", [
    pytest.param("update test set value = value + 1 where id = 1", 12,
                 id="set value = value + 1: T2 waits, then adds to T1's 11"),
    pytest.param("update test set value = 11 where id = 1", 11,
                 id="set value = 11 computed from the read: T1's increment lost"),
])
def test_update_in_place_instead_of_read_modify_write(run, write, row_1):
    """UPDATE ... SET value = value + 1 versus writing a value computed from an earlier read.

    Scenario: T1 and T2 both read row 1 (10); each then increments it -- either
    with ``value = value + 1`` or by writing 11 (what it read plus one); T2's
    write waits for T1's row lock.
    Outcome: when T1 commits, read committed re-reads the row for T2's waiting
    UPDATE: ``value + 1`` is computed from T1's 11, giving 12; the literal 11
    was computed from the stale read and overwrites T1's increment.
    """
    run(READ_COMMITTED, [
        (T1, READ_ROW_1, sees(10)),
        (T2, READ_ROW_1, sees(10)),
        (T1, write),
        (T2, write, blocks(then=succeeds)),
        (T1, "commit", commits),
        (T2, "commit", commits),
        (OBSERVER, READ_ROW_1, sees(row_1)),
    ])


@pytest.mark.parametrize("t2_lock, t2_outcome", [
    pytest.param(LOCK_ROW_1 + " nowait", aborts(errors.LockNotAvailable),
                 id="for update nowait: refused at once with 55P03"),
    pytest.param(LOCK_ROW_1, blocks(then=sees(10)),
                 id="for update: waits until T1 ends"),
])
def test_nowait_refuses_instead_of_waiting(run, t2_lock, t2_outcome):
    """NOWAIT: a locking read that would have to wait fails instead (55P03 lock_not_available).

    Scenario: T1 locks row 1 (select ... for update); T2 tries to lock it too,
    with or without NOWAIT; then T1 rolls back.
    Outcome: with NOWAIT T2 gets an error without waiting at all -- the
    application can answer "busy, try later"; without it T2 waits until T1
    ends and then gets the row.
    """
    run(READ_COMMITTED, [
        (T1, LOCK_ROW_1, sees(10)),
        (T2, t2_lock, t2_outcome),
        (T1, "rollback", rolls_back),
        (T2, "rollback", rolls_back),
    ])


@pytest.mark.parametrize("t2_step, t2_outcome", [
    pytest.param("select pg_advisory_xact_lock(42)", blocks(then=succeeds),
                 id="same key: T2 waits until T1 commits"),
    pytest.param("select pg_try_advisory_xact_lock(42)", sees(False),
                 id="same key, try: T2 is told 'taken' at once"),
    pytest.param("select pg_advisory_xact_lock(43)", succeeds,
                 id="another key: no wait"),
    pytest.param("update test set value = 11 where id = 1", succeeds,
                 id="no advisory lock asked: nothing stops T2"),
])
def test_advisory_lock_stops_only_who_asks_for_it(run, t2_step, t2_outcome):
    """Advisory locks: a lock on a number, held until the transaction ends.

    Scenario: T1 takes the transaction-level advisory lock 42; T2 asks for the
    same key, tries it, asks for another key, or touches the data without asking.
    Outcome: only the same key waits (or, tried, answers false at once). The
    lock guards nothing by itself: a session that does not ask is not stopped.
    """
    run(READ_COMMITTED, [
        (T1, "select pg_advisory_xact_lock(42)"),
        (T2, t2_step, t2_outcome),
        (T1, "commit", commits),  # releases the advisory lock
        (T2, "commit", commits),
    ])


def test_advisory_lock_serializes_a_read_modify_write(run):
    """Advisory lock as the fix for the lost update at read committed.

    Scenario: before reading row 1, each transaction takes advisory lock 1
    (the application's convention: "lock 1 guards row 1"); T1 reads 10 and
    writes 11; T2's lock request waits until T1 commits.
    Outcome: T2 then reads 11 and writes 12: both increments counted.
    """
    run(READ_COMMITTED, [
        (T1, "select pg_advisory_xact_lock(1)"),
        (T1, READ_ROW_1, sees(10)),
        (T2, "select pg_advisory_xact_lock(1)", blocks(then=succeeds)),
        (T1, "update test set value = 11 where id = 1"),
        (T1, "commit", commits),
        (T2, READ_ROW_1, sees(11)),
        (T2, "update test set value = 12 where id = 1"),
        (T2, "commit", commits),
        (OBSERVER, READ_ROW_1, sees(12)),
    ])


@pytest.mark.usefixtures("deadlock_timeout_settable")
@pytest.mark.parametrize("patient, victim", [
    pytest.param(T1, T2, id="T2 has the short deadlock_timeout: here T2 is aborted"),
    pytest.param(T2, T1, id="T1 has the short deadlock_timeout: here T1 is aborted"),
])
def test_a_deadlock_is_broken_by_aborting_one_of_its_transactions(run, patient, victim):
    """Deadlock (40P01): two transactions each wait for a row the other has locked.

    Scenario: the patient session sets deadlock_timeout to 10 s, the victim to
    200 ms. The patient updates row 1, the victim row 2; the patient then waits
    for row 2, and the victim, asking for row 1, closes the circle.
    Outcome: one transaction of the circle is aborted with 40P01; its locks go,
    so the other's update goes through and commits. Which one is an
    implementation detail that PostgreSQL does not promise ("difficult to
    predict and should not be relied upon"): on this server the session whose
    check runs first (after 200 ms) finds the circle and aborts itself, so the
    table names it; the patient's own check would have come after 10 s.
    """
    run(READ_COMMITTED, [
        (patient, "set local deadlock_timeout = '10s'"),
        (victim, "set local deadlock_timeout = '200ms'"),
        (patient, "update test set value = 11 where id = 1"),
        (victim, "update test set value = 22 where id = 2"),
        (patient, "update test set value = 21 where id = 2", blocks(then=succeeds)),
        (victim, "update test set value = 12 where id = 1",
         blocks(then=aborts(errors.DeadlockDetected))),
        (victim, "rollback", rolls_back),
        (patient, "commit", commits),
        (OBSERVER, "select id, value from test order by id", sees((1, 11), (2, 21))),
    ])


def take_jobs_claimed_with(claim):
    """A worker's transaction: claim the first job not done (``select ... <claim>``),
    record that this worker ran it, mark it done."""
    def take_job(cur, turn):
        cur.execute(f"select id from jobs where not done order by id limit 1 {claim}")
        row = cur.fetchone()
        turn.wait_for_others()  # every worker holds its claim now
        if row is None:
            return workloads.STOP
        cur.execute("insert into job_runs (job_id, worker) values (%s, %s)",
                    (row[0], turn.worker))
        cur.execute("update jobs set done = true where id = %s", (row[0],))
        return row[0]
    return take_job


@pytest.mark.parametrize("claim, runs_per_job, jobs_per_worker", [
    pytest.param("for update skip locked", 1, [2, 2, 2, 2],
                 id="for update skip locked: each job once, four at a time"),
    pytest.param("", 4, [8, 8, 8, 8],
                 id="plain select: every worker does every job"),
])
def test_skip_locked_job_queue(connect, claim, runs_per_job, jobs_per_worker):
    """A job queue on a table: 4 workers take 8 jobs with SELECT ... FOR UPDATE SKIP LOCKED.

    Scenario: each worker, in a loop until the queue is empty, runs
    ``take_jobs_claimed_with(claim)`` above: claim the first job not done,
    record that it ran it, mark it done, commit. Each round, all four workers
    hold their claim at the same moment before any finishes.
    Outcome: with SKIP LOCKED each worker passes over the jobs the others hold,
    so four different jobs run at once, each job exactly once, nobody waits
    (a worker that had to wait could not meet the others). Claiming with a
    plain read, all four take the same first job: every job runs four times.
    """
    result = workloads.job_queue(connect, take_jobs_claimed_with(claim), workers=4, jobs=8)
    summary = result.summary()
    print(summary)

    assert set(result.runs_per_job.values()) == {runs_per_job}, f"runs of each job: {summary}"
    assert result.jobs_per_worker == jobs_per_worker, f"work shared out: {summary}"
