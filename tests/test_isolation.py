"""Isolation: concurrent transactions must not see each other half-done.

What it promises. Each transaction runs as if it were alone. The SQL standard
and Adya's generalisation name the ways that can fail (the *anomalies*) and
four isolation levels, each ruling out more of them. The strongest,
serializable, promises that the outcome equals *some* order of running the
transactions one after the other.

What breaks without it. Money vanishes from a read-modify-write (lost update),
a report adds up a total that never existed (read skew), two doctors each see
the other still on call and both go home (write skew).

How PostgreSQL provides it. With MVCC: a writer never overwrites a row
version in place, it writes a new one, and a reader picks the versions its
*snapshot* allows. Read committed takes a new snapshot per statement; repeatable
read one per transaction (snapshot isolation), and aborts a transaction that
would overwrite a change it cannot see (SQLSTATE 40001); serializable adds
Serializable Snapshot Isolation, which tracks read/write dependencies and
aborts one transaction of any dangerous cycle. Writers of the same row queue
on the row lock. Read uncommitted is accepted and runs as read committed:
PostgreSQL never shows uncommitted data.

Every test below is one scenario of Kleppmann's Hermitage, run live at the
four levels. The schedules live in ``acid_lab.lessons.catalog`` and are the ones the
ACID report runs; the tables below hold what each level must show, step by
step, and whether the anomaly happened. The table is always Hermitage's
``test(id, value) = (1, 10), (2, 20)``.
"""

import pytest
from psycopg2.errors import InFailedSqlTransaction, SerializationFailure

from acid_lab.engine.scenario import (
    READ_COMMITTED,
    READ_UNCOMMITTED,
    REPEATABLE_READ,
    SERIALIZABLE,
    aborts,
    blocks,
    sees,
    succeeds,
)
from acid_lab.lessons.catalog import (
    G0,
    G1A,
    G1B,
    G1C,
    G2,
    G2_ITEM,
    G_SINGLE,
    G_SINGLE_PREDICATE,
    G_SINGLE_WRITE_PREDICATE,
    MATRIX,
    OTV,
    P4,
    PMP,
    PMP_WRITE,
    POSSIBLE,
    PREVENTED,
    READ_ONLY,
    READ_ONLY_DEFERRABLE,
    RESTORE_HERMITAGE,
    observe,
)

pytestmark = pytest.mark.isolation


def happened(anomaly, result, level, verdict):
    """Assert the anomaly's verdict, decided from what the sessions observed."""
    observed = anomaly.verdict(result)
    assert observed == verdict, (
        f"isolation at {level}: {anomaly.name} ({anomaly.code}) was expected to be "
        f"{verdict}, but it was {observed}\n\n{result.transcript}")


# -- G0, G1: what read committed already rules out ----------------------------

@pytest.mark.parametrize("level, t2_update, t2_second_update, final, verdict", [
    pytest.param(READ_UNCOMMITTED, blocks(then=succeeds), succeeds,
                 sees((1, 12), (2, 22)), PREVENTED,
                 id="read uncommitted: prevented (runs as read committed)"),
    pytest.param(READ_COMMITTED, blocks(then=succeeds), succeeds,
                 sees((1, 12), (2, 22)), PREVENTED,
                 id="read committed: prevented"),
    pytest.param(REPEATABLE_READ, blocks(then=aborts(SerializationFailure)),
                 aborts(InFailedSqlTransaction), sees((1, 11), (2, 21)), PREVENTED,
                 id="repeatable read: prevented, T2 aborts"),
    pytest.param(SERIALIZABLE, blocks(then=aborts(SerializationFailure)),
                 aborts(InFailedSqlTransaction), sees((1, 11), (2, 21)), PREVENTED,
                 id="serializable: prevented, T2 aborts"),
])
def test_g0_dirty_write(run, level, t2_update, t2_second_update, final, verdict):
    """Dirty write (G0): T2 overwrites a value T1 wrote but has not committed.

    Scenario: T1 and T2 both write rows 1 and 2; T2's first write comes while
    T1's is uncommitted.
    Outcome: at every level T2 waits for T1's row lock, so the rows never mix
    the two transactions. From repeatable read up T2 then aborts (40001): the
    row changed since its snapshot.
    """
    result = run(level, G0.steps(t2_update=t2_update, t2_second_update=t2_second_update,
                                 final=final))
    happened(G0, result, level, verdict)


@pytest.mark.parametrize("level, t2_read, t2_read_again, verdict", [
    pytest.param(READ_UNCOMMITTED, sees((1, 10), (2, 20)), sees((1, 10), (2, 20)), PREVENTED,
                 id="read uncommitted: prevented (runs as read committed)"),
    pytest.param(READ_COMMITTED, sees((1, 10), (2, 20)), sees((1, 10), (2, 20)), PREVENTED,
                 id="read committed: prevented"),
    pytest.param(REPEATABLE_READ, sees((1, 10), (2, 20)), sees((1, 10), (2, 20)), PREVENTED,
                 id="repeatable read: prevented"),
    pytest.param(SERIALIZABLE, sees((1, 10), (2, 20)), sees((1, 10), (2, 20)), PREVENTED,
                 id="serializable: prevented"),
])
def test_g1a_aborted_read(run, level, t2_read, t2_read_again, verdict):
    """Aborted read (G1a): T2 reads a value written by T1, which then rolls back.

    Scenario: T1 sets row 1 to 101; T2 reads; T1 aborts; T2 reads again.
    Outcome: T2 never sees 101, at any level (even read uncommitted): an
    uncommitted row version is invisible to every other snapshot.
    """
    result = run(level, G1A.steps(t2_read=t2_read, t2_read_again=t2_read_again))
    happened(G1A, result, level, verdict)


@pytest.mark.parametrize("level, t2_read, t2_read_again, verdict", [
    pytest.param(READ_UNCOMMITTED, sees((1, 10), (2, 20)), sees((1, 11), (2, 20)), PREVENTED,
                 id="read uncommitted: prevented (runs as read committed)"),
    pytest.param(READ_COMMITTED, sees((1, 10), (2, 20)), sees((1, 11), (2, 20)), PREVENTED,
                 id="read committed: prevented"),
    pytest.param(REPEATABLE_READ, sees((1, 10), (2, 20)), sees((1, 10), (2, 20)), PREVENTED,
                 id="repeatable read: prevented"),
    pytest.param(SERIALIZABLE, sees((1, 10), (2, 20)), sees((1, 10), (2, 20)), PREVENTED,
                 id="serializable: prevented"),
])
def test_g1b_intermediate_read(run, level, t2_read, t2_read_again, verdict):
    """Intermediate read (G1b): T2 sees a value T1 wrote and then changed again.

    Scenario: T1 sets row 1 to 101, then to 11, and commits; T2 reads in between
    and after.
    Outcome: T2 never sees 101. After T1's commit read committed shows the final
    11; repeatable read and serializable keep showing T2's snapshot, 10.
    """
    result = run(level, G1B.steps(t2_read=t2_read, t2_read_again=t2_read_again))
    happened(G1B, result, level, verdict)


@pytest.mark.parametrize("level, t1_read, t2_read, t2_commit, verdict", [
    pytest.param(READ_UNCOMMITTED, sees(20), sees(10), succeeds, PREVENTED,
                 id="read uncommitted: prevented (runs as read committed)"),
    pytest.param(READ_COMMITTED, sees(20), sees(10), succeeds, PREVENTED,
                 id="read committed: prevented"),
    pytest.param(REPEATABLE_READ, sees(20), sees(10), succeeds, PREVENTED,
                 id="repeatable read: prevented"),
    pytest.param(SERIALIZABLE, sees(20), sees(10), aborts(SerializationFailure), PREVENTED,
                 id="serializable: prevented, T2's commit aborts"),
])
def test_g1c_circular_information_flow(run, level, t1_read, t2_read, t2_commit, verdict):
    """Circular information flow (G1c): T1 and T2 each read what the other wrote.

    Scenario: T1 writes row 1, T2 writes row 2; then each reads the other's row.
    Outcome: neither sees the other's uncommitted write, at any level. At
    serializable each read a row the other overwrote (a read/write cycle), so
    the second commit fails with 40001.
    """
    result = run(level, G1C.steps(t1_read=t1_read, t2_read=t2_read, t2_commit=t2_commit))
    happened(G1C, result, level, verdict)


@pytest.mark.parametrize(
    "level, t2_update, t2_second_update, t3_reads_row_2, t3_reads_row_1, verdict", [
        pytest.param(READ_UNCOMMITTED, blocks(then=succeeds), succeeds, sees(18), sees(12),
                     PREVENTED, id="read uncommitted: prevented (runs as read committed)"),
        pytest.param(READ_COMMITTED, blocks(then=succeeds), succeeds, sees(18), sees(12),
                     PREVENTED, id="read committed: prevented"),
        pytest.param(REPEATABLE_READ, blocks(then=aborts(SerializationFailure)),
                     aborts(InFailedSqlTransaction), sees(19), sees(11),
                     PREVENTED, id="repeatable read: prevented, T2 aborts"),
        pytest.param(SERIALIZABLE, blocks(then=aborts(SerializationFailure)),
                     aborts(InFailedSqlTransaction), sees(19), sees(11),
                     PREVENTED, id="serializable: prevented, T2 aborts"),
    ])
def test_otv_observed_transaction_vanishes(run, level, t2_update, t2_second_update,
                                           t3_reads_row_2, t3_reads_row_1, verdict):
    """Observed transaction vanishes (OTV): three sessions, T2's effect half gone.

    Scenario: T1 writes rows 1 and 2 and commits; T2, which waited for T1,
    overwrites both; T3 reads row 2 and then row 1 after T2 committed.
    Outcome: once T3 sees T2's 18 in row 2 it also sees T2's 12 in row 1,
    never T1's overwritten 11. From repeatable read up T2 aborts instead (40001)
    and T3 sees only T1's rows.
    """
    result = run(level, OTV.steps(t2_update=t2_update, t2_second_update=t2_second_update,
                                  t3_reads_row_2=t3_reads_row_2,
                                  t3_reads_row_1=t3_reads_row_1))
    happened(OTV, result, level, verdict)


# -- PMP, P4, G-single: what repeatable read adds -----------------------------

@pytest.mark.parametrize("level, t1_search_again, verdict", [
    pytest.param(READ_UNCOMMITTED, sees((3, 30)), POSSIBLE,
                 id="read uncommitted: possible (as at read committed)"),
    pytest.param(READ_COMMITTED, sees((3, 30)), POSSIBLE,
                 id="read committed: phantom appears"),
    pytest.param(REPEATABLE_READ, sees(), PREVENTED, id="repeatable read: prevented"),
    pytest.param(SERIALIZABLE, sees(), PREVENTED, id="serializable: prevented"),
])
def test_pmp_predicate_many_preceders(run, level, t1_search_again, verdict):
    """Predicate-many-preceders (PMP), read predicate: a phantom row appears.

    Scenario: T1 searches for value 30 and finds nothing; T2 inserts (3, 30) and
    commits; T1 searches for multiples of 3.
    Outcome: at read committed T1's second search finds T2's row; from
    repeatable read up T1 keeps its snapshot and finds nothing.
    """
    result = run(level, PMP.steps(t1_search_again=t1_search_again))
    happened(PMP, result, level, verdict)


@pytest.mark.parametrize("level, t2_delete, t2_read, verdict", [
    pytest.param(READ_UNCOMMITTED, blocks(then=sees()), sees((1, 20), (2, 30)), POSSIBLE,
                 id="read uncommitted: possible (as at read committed)"),
    pytest.param(READ_COMMITTED, blocks(then=sees()), sees((1, 20), (2, 30)), POSSIBLE,
                 id="read committed: delete re-checks and removes nothing"),
    pytest.param(REPEATABLE_READ, blocks(then=aborts(SerializationFailure)),
                 aborts(InFailedSqlTransaction), PREVENTED,
                 id="repeatable read: prevented, T2 aborts"),
    pytest.param(SERIALIZABLE, blocks(then=aborts(SerializationFailure)),
                 aborts(InFailedSqlTransaction), PREVENTED,
                 id="serializable: prevented, T2 aborts"),
])
def test_pmp_write_predicate(run, level, t2_delete, t2_read, verdict):
    """Predicate-many-preceders (PMP), write predicate: read committed's re-check.

    Scenario: T1 adds 10 to every row (10, 20 -> 20, 30); T2 deletes the rows
    with value 20 and has to wait for T1's row lock on row 2.
    Outcome: at read committed, once T1 commits, T2 re-checks its condition on
    row 2's new version (30), deletes nothing, and still sees a row with value
    20: row 1, which its search never considered. From repeatable read up T2
    aborts (40001).
    """
    result = run(level, PMP_WRITE.steps(t2_delete=t2_delete, t2_read=t2_read))
    happened(PMP_WRITE, result, level, verdict)


@pytest.mark.parametrize("level, t2_update, final, verdict", [
    pytest.param(READ_UNCOMMITTED, blocks(then=succeeds), sees(12), POSSIBLE,
                 id="read uncommitted: possible (as at read committed)"),
    pytest.param(READ_COMMITTED, blocks(then=succeeds), sees(12), POSSIBLE,
                 id="read committed: lost update happens"),
    pytest.param(REPEATABLE_READ, blocks(then=aborts(SerializationFailure)), sees(11), PREVENTED,
                 id="repeatable read: prevented, T2 aborts"),
    pytest.param(SERIALIZABLE, blocks(then=aborts(SerializationFailure)), sees(11), PREVENTED,
                 id="serializable: prevented, T2 aborts"),
])
def test_p4_lost_update(run, level, t2_update, final, verdict):
    """Lost update (P4): two read-modify-write cycles on one row; one write vanishes.

    Scenario: T1 and T2 both read row 1 (10); T1 writes 10 + 1, T2 writes
    10 + 2 and waits for T1's row lock.
    Outcome: at read committed T2 overwrites T1's committed write without
    noticing (12, not 13). From repeatable read up T2 aborts (40001) rather
    than lose T1's update.
    """
    result = run(level, P4.steps(t2_update=t2_update, final=final))
    happened(P4, result, level, verdict)


@pytest.mark.parametrize("level, t1_read_row_2, verdict", [
    pytest.param(READ_UNCOMMITTED, sees(18), POSSIBLE,
                 id="read uncommitted: possible (as at read committed)"),
    pytest.param(READ_COMMITTED, sees(18), POSSIBLE, id="read committed: read skew happens"),
    pytest.param(REPEATABLE_READ, sees(20), PREVENTED, id="repeatable read: prevented"),
    pytest.param(SERIALIZABLE, sees(20), PREVENTED, id="serializable: prevented"),
])
def test_g_single_read_skew(run, level, t1_read_row_2, verdict):
    """Read skew (G-single): T1 sees half of T2's transfer.

    Scenario: T1 reads row 1 (10); T2 moves 2 from row 2 to row 1 (12, 18) and
    commits; T1 reads row 2.
    Outcome: at read committed T1 sees 18, so to T1 the total is 10 + 18 = 28,
    a state that never existed. From repeatable read up T1 sees 20.
    """
    result = run(level, G_SINGLE.steps(t1_read_row_2=t1_read_row_2))
    happened(G_SINGLE, result, level, verdict)


@pytest.mark.parametrize("level, t1_search_again, verdict", [
    pytest.param(READ_UNCOMMITTED, sees((1, 12)), POSSIBLE,
                 id="read uncommitted: possible (as at read committed)"),
    pytest.param(READ_COMMITTED, sees((1, 12)), POSSIBLE,
                 id="read committed: read skew happens"),
    pytest.param(REPEATABLE_READ, sees(), PREVENTED, id="repeatable read: prevented"),
    pytest.param(SERIALIZABLE, sees(), PREVENTED, id="serializable: prevented"),
])
def test_g_single_predicate_read(run, level, t1_search_again, verdict):
    """Read skew (G-single) through predicate reads.

    Scenario: T1 finds the multiples of 5 (rows 1 and 2); T2 sets the 10 to 12
    and commits; T1 searches for multiples of 3.
    Outcome: at read committed the second search finds (1, 12), a row the first
    search had seen as 10. From repeatable read up it finds nothing.
    """
    result = run(level, G_SINGLE_PREDICATE.steps(t1_search_again=t1_search_again))
    happened(G_SINGLE_PREDICATE, result, level, verdict)


@pytest.mark.parametrize("level, t1_delete, verdict", [
    pytest.param(READ_UNCOMMITTED, sees(), POSSIBLE,
                 id="read uncommitted: possible (as at read committed)"),
    pytest.param(READ_COMMITTED, sees(), POSSIBLE,
                 id="read committed: delete judged after T2"),
    pytest.param(REPEATABLE_READ, aborts(SerializationFailure), PREVENTED,
                 id="repeatable read: prevented, T1 aborts"),
    pytest.param(SERIALIZABLE, aborts(SerializationFailure), PREVENTED,
                 id="serializable: prevented, T1 aborts"),
])
def test_g_single_write_predicate(run, level, t1_delete, verdict):
    """Read skew (G-single) through a write predicate.

    Scenario: T1 reads row 1 (10); T2 changes both rows (12, 18) and commits;
    T1 deletes the rows with value 20.
    Outcome: at read committed the delete sees T2's 18 and removes nothing,
    while T1's earlier read saw the state before T2. From repeatable read up the
    delete finds row 2 (20) in T1's snapshot, sees it changed, and aborts (40001).
    """
    result = run(level, G_SINGLE_WRITE_PREDICATE.steps(t1_delete=t1_delete))
    happened(G_SINGLE_WRITE_PREDICATE, result, level, verdict)


# -- G2: what only serializable rules out --------------------------------------

@pytest.mark.parametrize("level, t2_commit, final, verdict", [
    pytest.param(READ_UNCOMMITTED, succeeds, sees((1, 11), (2, 21)), POSSIBLE,
                 id="read uncommitted: possible (as at read committed)"),
    pytest.param(READ_COMMITTED, succeeds, sees((1, 11), (2, 21)), POSSIBLE,
                 id="read committed: write skew happens"),
    pytest.param(REPEATABLE_READ, succeeds, sees((1, 11), (2, 21)), POSSIBLE,
                 id="repeatable read: write skew happens"),
    pytest.param(SERIALIZABLE, aborts(SerializationFailure), sees((1, 11), (2, 20)), PREVENTED,
                 id="serializable: prevented, T2's commit aborts"),
])
def test_g2_item_write_skew(run, level, t2_commit, final, verdict):
    """Write skew (G2-item): each transaction updates a row the other one read.

    Scenario: T1 and T2 both read rows 1 and 2; T1 updates row 1, T2 row 2;
    both commit.
    Outcome: no row is written twice, so snapshot isolation lets both commit:
    neither saw the other's write (no serial order gives both reads).
    Serializable sees the read/write cycle and fails T2's commit (40001).
    """
    result = run(level, G2_ITEM.steps(t2_commit=t2_commit, final=final))
    happened(G2_ITEM, result, level, verdict)


@pytest.mark.parametrize("level, t2_commit, final, verdict", [
    pytest.param(READ_UNCOMMITTED, succeeds, sees((3, 30), (4, 42)), POSSIBLE,
                 id="read uncommitted: possible (as at read committed)"),
    pytest.param(READ_COMMITTED, succeeds, sees((3, 30), (4, 42)), POSSIBLE,
                 id="read committed: both insert"),
    pytest.param(REPEATABLE_READ, succeeds, sees((3, 30), (4, 42)), POSSIBLE,
                 id="repeatable read: both insert"),
    pytest.param(SERIALIZABLE, aborts(SerializationFailure), sees((3, 30)), PREVENTED,
                 id="serializable: prevented, T2's commit aborts"),
])
def test_g2_anti_dependency_cycle(run, level, t2_commit, final, verdict):
    """Anti-dependency cycle (G2) on a predicate: write skew with phantoms.

    Scenario: T1 and T2 both search for multiples of 3 and find none; T1
    inserts (3, 30), T2 inserts (4, 42); both commit.
    Outcome: each insert is a row the other's search should have found; no row
    lock can catch that. Serializable's predicate (SIREAD) locks do: T2's
    commit fails (40001).
    """
    result = run(level, G2.steps(t2_commit=t2_commit, final=final))
    happened(G2, result, level, verdict)


@pytest.mark.parametrize("level, t1_update, t1_commit, final, verdict", [
    pytest.param(READ_UNCOMMITTED, succeeds, succeeds, sees((1, 0), (2, 25)), POSSIBLE,
                 id="read uncommitted: possible (as at read committed)"),
    pytest.param(READ_COMMITTED, succeeds, succeeds, sees((1, 0), (2, 25)), POSSIBLE,
                 id="read committed: report shows an impossible state"),
    pytest.param(REPEATABLE_READ, succeeds, succeeds, sees((1, 0), (2, 25)), POSSIBLE,
                 id="repeatable read: report shows an impossible state"),
    pytest.param(SERIALIZABLE, aborts(SerializationFailure), succeeds, sees((1, 10), (2, 25)),
                 PREVENTED, id="serializable: prevented, T1 aborts"),
])
def test_read_only_transaction_anomaly(run, level, t1_update, t1_commit, final, verdict):
    """The read-only transaction anomaly (Fekete, O'Neil and O'Neil, 2004).

    Scenario: T1 reads both rows; T2 adds 5 to row 2 and commits; T3, which
    only reads, prints both rows (10, 25) and commits; then T1 sets row 1 to 0.
    Outcome: T1 did not see T2's write, so T1 must come before T2; T3 saw T2
    but not T1. No serial order fits, though T3 never wrote anything. Snapshot
    isolation lets it happen; serializable aborts T1's update (40001). (T1's
    ``commit`` then answers ROLLBACK, without an error.)
    """
    result = run(level, READ_ONLY.steps(t1_update=t1_update, t1_commit=t1_commit, final=final))
    happened(READ_ONLY, result, level, verdict)


@pytest.mark.parametrize("level, t3_read, verdict", [
    pytest.param(READ_UNCOMMITTED, sees((1, 10), (2, 25)), POSSIBLE,
                 id="read uncommitted: no wait, anomaly possible"),
    pytest.param(READ_COMMITTED, sees((1, 10), (2, 25)), POSSIBLE,
                 id="read committed: no wait, anomaly possible"),
    pytest.param(REPEATABLE_READ, sees((1, 10), (2, 25)), POSSIBLE,
                 id="repeatable read: no wait, anomaly possible"),
    pytest.param(SERIALIZABLE, blocks(then=sees((1, 0), (2, 25))), PREVENTED,
                 id="serializable: waits for a safe snapshot"),
])
def test_read_only_deferrable_waits_for_a_safe_snapshot(run, level, t3_read, verdict):
    """SERIALIZABLE READ ONLY DEFERRABLE: wait for a safe snapshot instead of aborting.

    Scenario: the read-only anomaly again, but T3 declares itself
    ``read only, deferrable`` and reads while T1 is still running.
    Outcome: at serializable T3's read waits (the server reports a safe-snapshot
    wait) until T1 commits, then sees T1's write too, and nobody aborts. At the
    lower levels DEFERRABLE means nothing: T3 reads at once and the report
    again shows a state no serial order produces.
    """
    result = run(level, READ_ONLY_DEFERRABLE.steps(t3_read=t3_read, t1_commit=succeeds))
    happened(READ_ONLY_DEFERRABLE, result, level, verdict)


# -- the report's matrix, observed the way the report observes it -------------

@pytest.mark.parametrize("level, row", [
    pytest.param(READ_UNCOMMITTED, {
        "G0": PREVENTED, "G1a": PREVENTED, "G1b": PREVENTED, "G1c": PREVENTED,
        "OTV": PREVENTED, "PMP": POSSIBLE, "P4": POSSIBLE, "G-single": POSSIBLE,
        "G2-item": POSSIBLE, "G2": POSSIBLE}, id="read uncommitted: same as read committed"),
    pytest.param(READ_COMMITTED, {
        "G0": PREVENTED, "G1a": PREVENTED, "G1b": PREVENTED, "G1c": PREVENTED,
        "OTV": PREVENTED, "PMP": POSSIBLE, "P4": POSSIBLE, "G-single": POSSIBLE,
        "G2-item": POSSIBLE, "G2": POSSIBLE}, id="read committed"),
    pytest.param(REPEATABLE_READ, {
        "G0": PREVENTED, "G1a": PREVENTED, "G1b": PREVENTED, "G1c": PREVENTED,
        "OTV": PREVENTED, "PMP": PREVENTED, "P4": PREVENTED, "G-single": PREVENTED,
        "G2-item": POSSIBLE, "G2": POSSIBLE}, id="repeatable read"),
    pytest.param(SERIALIZABLE, {
        "G0": PREVENTED, "G1a": PREVENTED, "G1b": PREVENTED, "G1c": PREVENTED,
        "OTV": PREVENTED, "PMP": PREVENTED, "P4": PREVENTED, "G-single": PREVENTED,
        "G2-item": PREVENTED, "G2": PREVENTED}, id="serializable: prevents all ten"),
])
def test_matrix_row(run, observer, level, row):
    """The ACID report's matrix, one level per row, observed live.

    Scenario: ``catalog.observe`` runs each of the ten anomalies' schedules at
    one level, on a freshly restored table, without checking any step, and
    judges from what the sessions saw, as the report does.
    Outcome: the row of Hermitage's PostgreSQL table, in the report's order.
    """
    observed = {}
    for anomaly in MATRIX:
        observer.cursor().execute(RESTORE_HERMITAGE)
        observed[anomaly.code] = observe(anomaly, level, run).verdict
    assert list(observed) == list(row), "the matrix columns are out of Hermitage's order"
    assert observed == row, f"isolation at {level}: the report's matrix row differs"
