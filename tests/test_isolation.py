"""Isolation: concurrent transactions must not see each other half-done.

What it promises. Each transaction runs as if it were alone. The SQL standard
and Adya's generalisation name the ways that can fail (the *anomalies*) and
four isolation levels, each ruling out more of them. The strongest,
serializable, promises that the outcome equals *some* order of running the
transactions one after the other.

What breaks without it. Money vanishes from a read-modify-write (lost update),
a report adds up a total that never existed (read skew), two doctors each
count the other still on call and both go home (write skew).

How PostgreSQL provides it. With MVCC: a writer never overwrites a row
version in place, it writes a new one, and a reader picks the versions its
*snapshot* allows. Read committed takes a new snapshot per statement; repeatable
read one per transaction (snapshot isolation), and aborts a transaction that
would overwrite a change it cannot see ("could not serialize access due to
concurrent update", SQLSTATE 40001); serializable adds Serializable Snapshot
Isolation, which tracks read/write dependencies and aborts one transaction of
any dangerous structure ("... due to read/write dependencies among
transactions", the same 40001). Writers of the same row wait on the row lock.
Read uncommitted is accepted and runs as read committed: PostgreSQL never
shows uncommitted data.

How to read this file. Every test is one scenario of Kleppmann's Hermitage,
run live at the four levels, on Hermitage's table
``test(id, value) = (1, 10), (2, 20)``. The schedule is written out just above
its test: one statement per line, tagged with its session. A line whose outcome
is the same at every level says it (``sees(10)``, ``commits``); a line whose
outcome depends on the level carries a name in quotes, and the test's table
gives that outcome per level. Each session's transaction begins implicitly
(``begin transaction isolation level ...``) at its first statement; OBSERVER
is any other client, outside every transaction.

The whole run of every scenario at every level -- each statement and what the
server answered, in Hermitage's notation -- is kept in
``tests/transcripts/<code>.<level>.txt`` and compared, so you can read a run
without making a test fail. PostgreSQL 15 and 18 give the same transcripts;
where a version answers differently, its run goes into
``<code>.<level>.pg<N>.txt``, used from major version N up.

The columns are Adya's anomalies, as Hermitage tests them. PostgreSQL's
documentation states its levels in the SQL standard's four phenomena instead --
dirty read, nonrepeatable read, phantom read, serialization anomaly -- and says
at which levels each may occur. Each anomaly below names the phenomenon it is
(``phenomenon=``; G0, a dirty write, is none of the four), and every time one
happens the test checks that PostgreSQL's documentation allows that phenomenon
at that level (``acid_lab.lessons.catalog.POSTGRESQL_ALLOWS``).

These schedules are the ACID report's too: ``acid_lab.lessons.catalog.load_schedules``
imports this file and takes ``MATRIX`` and ``VARIANTS`` at its end, and the report
(and the playground) run exactly these lines and judge them with the same
``occurred`` rule; ``tests/tools/test_report.py`` checks that the report's matrix
shows the verdicts written in this file's tables.
"""

import os
from pathlib import Path

import pytest
from psycopg2.errors import InFailedSqlTransaction, SerializationFailure

from acid_lab.engine.expectations import aborts, blocks, commits, rolls_back, sees, succeeds
from acid_lab.engine.scenario import (
    OBSERVER,
    READ_COMMITTED,
    READ_UNCOMMITTED,
    REPEATABLE_READ,
    SERIALIZABLE,
    T1,
    T2,
    T3,
)
from acid_lab.lessons.catalog import (
    DIRTY_READ,
    DIRTY_WRITE,
    NONREPEATABLE_READ,
    PHANTOM_READ,
    POSSIBLE,
    POSTGRESQL_ALLOWS,
    PREVENTED,
    SERIALIZATION_ANOMALY,
    Anomaly,
)
from acid_lab.servers.queries import rows

pytestmark = pytest.mark.isolation

# The two faces of SQLSTATE 40001 (serialization_failure), told apart by their text:
# first updater wins -- a row changed since this transaction's snapshot (repeatable
# read and serializable) ...
ABORTS_CONCURRENT_UPDATE = aborts(SerializationFailure,
                                  "could not serialize access due to concurrent update")
# ... and serializable's dependency tracking: a dangerous structure of read/write
# anti-dependencies (each read a version another then overwrote).
ABORTS_RW_DEPENDENCIES = aborts(SerializationFailure, "could not serialize access due to "
                                "read/write dependencies among transactions")
# Every statement after an error, until the transaction ends (SQLSTATE 25P02).
ABORTS_IN_FAILED_TRANSACTION = aborts(InFailedSqlTransaction)


def happened(anomaly, result, verdict):
    """Assert the anomaly's verdict, decided from what the sessions observed."""
    observed = anomaly.verdict(result)
    assert observed == verdict, (
        f"isolation at {result.level}: {anomaly.name} ({anomaly.code}) was expected to be "
        f"{verdict}, but it was {observed}\n\n{result.transcript}")
    if observed == POSSIBLE:
        assert result.level in POSTGRESQL_ALLOWS[anomaly.phenomenon], (
            f"{anomaly.code} happened at {result.level}, where PostgreSQL's documentation "
            f"rules out a {anomaly.phenomenon}: is it really one?")


# -- golden transcripts -----------------------------------------------------------

TRANSCRIPTS = Path(__file__).parent / "transcripts"
# Set to rewrite the transcript files from this run instead of comparing with them.
WRITE_TRANSCRIPTS = os.environ.get("ACID_LAB_WRITE_TRANSCRIPTS") == "1"


@pytest.fixture(scope="module")
def server_major(target):
    """The server's major version: 15, 18, ... (it picks the transcript file)."""
    return int(target.version.split(".")[0])


def transcript_file(anomaly, level, major):
    """``<code>.<level>.txt``, or ``<code>.<level>.pg<N>.txt`` where server N and up differ.

    The newest ``pg<N>`` file with N at most the server's major version wins.
    """
    stem = f"{anomaly.code}.{level.replace(' ', '-')}"
    versions = sorted((int(path.suffixes[-2][3:]), path)
                      for path in TRANSCRIPTS.glob(f"{stem}.pg*.txt"))
    chosen = [path for n, path in versions if n <= major]
    return chosen[-1] if chosen else TRANSCRIPTS / f"{stem}.txt"


def same_as_transcript(anomaly, result, major):
    """Assert the run's transcript is the golden one, word for word."""
    path = transcript_file(anomaly, result.level, major)
    text = (f"-- {anomaly.code} ({anomaly.name}) at {result.level}\n"
            f"{result.transcript}\n")
    if WRITE_TRANSCRIPTS:
        path.write_text(text)
    expected = path.read_text() if path.exists() else f"(no file {path.name})\n"
    assert text == expected, (
        f"isolation at {result.level}: the run of {anomaly.code} differs from "
        f"tests/transcripts/{path.name}\n\nexpected:\n{expected}\nobserved:\n{text}")


# -- G0, G1: what read committed already rules out ----------------------------------

G0 = Anomaly(
    "G0", "dirty write",
    "A transaction overwrites a value that another transaction wrote "
    "but has not committed yet.",
    schedule=[
        (T1, "update test set value = 11 where id = 1"),
        (T2, "update test set value = 12 where id = 1",  "t2_update"),  # T1's row lock
        (T1, "update test set value = 21 where id = 2"),
        (T1, "commit",                                    commits),      # unblocks T2
        (T2, "update test set value = 22 where id = 2",  "t2_second_update"),
        (T2, "commit",                                    "t2_commit"),
        (OBSERVER, "select * from test order by id",      "final"),
    ],
    # T2 wrote over T1's uncommitted write, or the rows mix the two transactions.
    occurred=lambda o: (o.ok("t2_update") and not o.blocked("t2_update"))
    or o.rows("final") in ([[1, 12], [2, 21]], [[1, 11], [2, 22]]),
    phenomenon=DIRTY_WRITE,
)


@pytest.mark.parametrize("level, t2_update, t2_second_update, t2_commit, final, verdict", [
    pytest.param(READ_UNCOMMITTED, blocks(then=succeeds), succeeds, commits,
                 sees((1, 12), (2, 22)), PREVENTED,
                 id="read uncommitted: prevented (runs as read committed)"),
    pytest.param(READ_COMMITTED, blocks(then=succeeds), succeeds, commits,
                 sees((1, 12), (2, 22)), PREVENTED,
                 id="read committed: prevented, T2 waits"),
    pytest.param(REPEATABLE_READ, blocks(then=ABORTS_CONCURRENT_UPDATE),
                 ABORTS_IN_FAILED_TRANSACTION, rolls_back, sees((1, 11), (2, 21)), PREVENTED,
                 id="repeatable read: prevented, T2 waits, then aborts"),
    pytest.param(SERIALIZABLE, blocks(then=ABORTS_CONCURRENT_UPDATE),
                 ABORTS_IN_FAILED_TRANSACTION, rolls_back, sees((1, 11), (2, 21)), PREVENTED,
                 id="serializable: prevented, T2 waits, then aborts"),
])
def test_g0_dirty_write(run, server_major, level, t2_update, t2_second_update, t2_commit,
                        final, verdict):
    """Dirty write (G0): T2 overwrites a value T1 wrote but has not committed.

    Scenario: T1 and T2 both write rows 1 and 2; T2's first write comes while
    T1's is uncommitted.
    Outcome: at every level T2 waits for T1's row lock, so the rows never mix
    the two transactions. From repeatable read up T2 then aborts (40001,
    concurrent update): the row changed since its snapshot; its COMMIT
    answers ROLLBACK.
    """
    result = run(level, G0.steps(t2_update=t2_update, t2_second_update=t2_second_update,
                                 t2_commit=t2_commit, final=final))
    happened(G0, result, verdict)
    same_as_transcript(G0, result, server_major)


G1A = Anomaly(
    "G1a", "aborted read",
    "A transaction reads a value written by another transaction that later rolls back.",
    schedule=[
        (T1, "update test set value = 101 where id = 1"),
        (T2, "select * from test order by id",  "t2_read"),        # during T1: 101?
        (T1, "abort",                            rolls_back),
        (T2, "select * from test order by id",  "t2_read_again"),  # after T1 rolled back
        (T2, "commit",                           commits),
    ],
    occurred=lambda o: 101 in o.seen("t2_read") | o.seen("t2_read_again"),
    # A dirty read of an intermediate value. Its run at read committed shows another of
    # the standard's phenomena instead, a nonrepeatable read: T2 reads 10, then 11.
    phenomenon=DIRTY_READ,
)


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
def test_g1a_aborted_read(run, server_major, level, t2_read, t2_read_again, verdict):
    """Aborted read (G1a): T2 reads a value written by T1, which then rolls back.

    Scenario: T1 sets row 1 to 101; T2 reads; T1 aborts; T2 reads again.
    Outcome: T2 never sees 101, at any level (even read uncommitted): an
    uncommitted row version is invisible to every other snapshot.
    """
    result = run(level, G1A.steps(t2_read=t2_read, t2_read_again=t2_read_again))
    happened(G1A, result, verdict)
    same_as_transcript(G1A, result, server_major)


G1B = Anomaly(
    "G1b", "intermediate read",
    "A transaction reads a value that another transaction wrote and then "
    "changed again before committing.",
    schedule=[
        (T1, "update test set value = 101 where id = 1"),
        (T2, "select * from test order by id",  "t2_read"),        # T1's 101, or 10?
        (T1, "update test set value = 11 where id = 1"),
        (T1, "commit",                           commits),
        (T2, "select * from test order by id",  "t2_read_again"),  # T1's final 11, or 10?
        (T2, "commit",                           commits),
    ],
    occurred=lambda o: 101 in o.seen("t2_read") | o.seen("t2_read_again"),
    phenomenon=DIRTY_READ,
)


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
def test_g1b_intermediate_read(run, server_major, level, t2_read, t2_read_again, verdict):
    """Intermediate read (G1b): T2 sees a value T1 wrote and then changed again.

    Scenario: T1 sets row 1 to 101, then to 11, and commits; T2 reads in between
    and after.
    Outcome: T2 never sees 101. After T1's commit read committed shows the final
    11; repeatable read and serializable keep showing T2's snapshot, 10.
    """
    result = run(level, G1B.steps(t2_read=t2_read, t2_read_again=t2_read_again))
    happened(G1B, result, verdict)
    same_as_transcript(G1B, result, server_major)


G1C = Anomaly(
    "G1c", "circular information flow",
    "Two transactions each read a value the other one wrote before "
    "either of them committed.",
    schedule=[
        (T1, "update test set value = 11 where id = 1"),
        (T2, "update test set value = 22 where id = 2"),
        (T1, "select value from test where id = 2",  "t1_read"),  # T2's 22, or 20?
        (T2, "select value from test where id = 1",  "t2_read"),  # T1's 11, or 10?
        (T1, "commit",                                commits),
        (T2, "commit",                                "t2_commit"),
    ],
    occurred=lambda o: 22 in o.seen("t1_read") and 11 in o.seen("t2_read"),
    phenomenon=DIRTY_READ,
)


@pytest.mark.parametrize("level, t1_read, t2_read, t2_commit, verdict", [
    pytest.param(READ_UNCOMMITTED, sees(20), sees(10), commits, PREVENTED,
                 id="read uncommitted: prevented (runs as read committed)"),
    pytest.param(READ_COMMITTED, sees(20), sees(10), commits, PREVENTED,
                 id="read committed: prevented"),
    pytest.param(REPEATABLE_READ, sees(20), sees(10), commits, PREVENTED,
                 id="repeatable read: prevented"),
    pytest.param(SERIALIZABLE, sees(20), sees(10), ABORTS_RW_DEPENDENCIES, PREVENTED,
                 id="serializable: prevented, T2's commit aborts"),
])
def test_g1c_circular_information_flow(run, server_major, level, t1_read, t2_read, t2_commit,
                                       verdict):
    """Circular information flow (G1c): would T1 and T2 each read what the other wrote?

    Scenario: T1 writes row 1, T2 writes row 2; then each reads the other's row.
    Outcome: neither sees the other's uncommitted write, at any level. At
    serializable each has read a version the other overwrote (two read/write
    anti-dependencies, a cycle), so the second commit fails with 40001 for
    read/write dependencies.
    """
    result = run(level, G1C.steps(t1_read=t1_read, t2_read=t2_read, t2_commit=t2_commit))
    happened(G1C, result, verdict)
    same_as_transcript(G1C, result, server_major)


OTV = Anomaly(
    "OTV", "observed transaction vanishes",
    "A transaction sees one write of a committed transaction, then reads "
    "an older value that this transaction had overwritten.",
    schedule=[
        (T1, "update test set value = 11 where id = 1"),
        (T1, "update test set value = 19 where id = 2"),
        (T2, "update test set value = 12 where id = 1",  "t2_update"),  # T1's row lock
        (T1, "commit",                                    commits),      # unblocks T2
        (T3, "select value from test where id = 1",      sees(11)),
        (T2, "update test set value = 18 where id = 2",  "t2_second_update"),
        (T3, "select value from test where id = 2",      sees(19)),     # T2 not committed
        (T2, "commit",                                    "t2_commit"),
        (T3, "select value from test where id = 2",      "t3_reads_row_2"),  # T2's 18?
        (T3, "select value from test where id = 1",      "t3_reads_row_1"),  # T1's 11?
        (T3, "commit",                                    commits),
    ],
    # T3 saw T2's 18, then T1's 11 that T2 had overwritten: T2 vanished.
    occurred=lambda o: o.rows("t3_reads_row_2") == [[18]] and o.rows("t3_reads_row_1") == [[11]],
    phenomenon=NONREPEATABLE_READ,
)


@pytest.mark.parametrize(
    "level, t2_update, t2_second_update, t2_commit, t3_reads_row_2, t3_reads_row_1, verdict", [
        pytest.param(READ_UNCOMMITTED, blocks(then=succeeds), succeeds, commits,
                     sees(18), sees(12), PREVENTED,
                     id="read uncommitted: prevented (runs as read committed)"),
        pytest.param(READ_COMMITTED, blocks(then=succeeds), succeeds, commits,
                     sees(18), sees(12), PREVENTED, id="read committed: prevented"),
        pytest.param(REPEATABLE_READ, blocks(then=ABORTS_CONCURRENT_UPDATE),
                     ABORTS_IN_FAILED_TRANSACTION, rolls_back, sees(19), sees(11), PREVENTED,
                     id="repeatable read: prevented, T2 aborts"),
        pytest.param(SERIALIZABLE, blocks(then=ABORTS_CONCURRENT_UPDATE),
                     ABORTS_IN_FAILED_TRANSACTION, rolls_back, sees(19), sees(11), PREVENTED,
                     id="serializable: prevented, T2 aborts"),
    ])
def test_otv_observed_transaction_vanishes(run, server_major, level, t2_update,
                                           t2_second_update, t2_commit, t3_reads_row_2,
                                           t3_reads_row_1, verdict):
    """Observed transaction vanishes (OTV): three sessions, T2's effect half gone.

    Scenario: T1 writes rows 1 and 2 and commits; T2, which waited for T1,
    overwrites both; T3 reads row 2 and then row 1 after T2 committed.
    Outcome: once T3 sees T2's 18 in row 2 it also sees T2's 12 in row 1,
    never T1's overwritten 11. From repeatable read up T2 aborts instead (40001,
    concurrent update) and T3 sees only T1's rows.
    """
    result = run(level, OTV.steps(t2_update=t2_update, t2_second_update=t2_second_update,
                                  t2_commit=t2_commit, t3_reads_row_2=t3_reads_row_2,
                                  t3_reads_row_1=t3_reads_row_1))
    happened(OTV, result, verdict)
    same_as_transcript(OTV, result, server_major)


# -- PMP, P4, G-single: what repeatable read adds ------------------------------------

PMP = Anomaly(
    "PMP", "predicate-many-preceders",
    "A transaction searches twice and the second search finds a row that "
    "another transaction committed in between.",
    schedule=[
        (T1, "select * from test where value = 30",      sees()),
        (T2, "insert into test (id, value) values (3, 30)"),
        (T2, "commit",                                    commits),
        (T1, "select * from test where value % 3 = 0",   "t1_search_again"),  # (3, 30)?
        (T1, "commit",                                    commits),
    ],
    occurred=lambda o: 30 in o.seen("t1_search_again"),
    phenomenon=PHANTOM_READ,
)


@pytest.mark.parametrize("level, t1_search_again, verdict", [
    pytest.param(READ_UNCOMMITTED, sees((3, 30)), POSSIBLE,
                 id="read uncommitted: possible (as at read committed)"),
    pytest.param(READ_COMMITTED, sees((3, 30)), POSSIBLE,
                 id="read committed: phantom appears"),
    pytest.param(REPEATABLE_READ, sees(), PREVENTED, id="repeatable read: prevented"),
    pytest.param(SERIALIZABLE, sees(), PREVENTED, id="serializable: prevented"),
])
def test_pmp_predicate_many_preceders(run, server_major, level, t1_search_again, verdict):
    """Predicate-many-preceders (PMP), read predicate: a phantom row appears.

    Scenario: T1 searches for value 30 and finds nothing; T2 inserts (3, 30) and
    commits; T1 searches for multiples of 3.
    Outcome: at read committed T1's second search finds T2's row; from
    repeatable read up T1 keeps its snapshot and finds nothing.
    """
    result = run(level, PMP.steps(t1_search_again=t1_search_again))
    happened(PMP, result, verdict)
    same_as_transcript(PMP, result, server_major)


PMP_WRITE = Anomaly(
    "PMP-write", "predicate-many-preceders, write predicate",
    "A waiting DELETE re-checks its condition on the row another "
    "transaction just committed, and leaves behind a row that matches it.",
    schedule=[
        (T1, "update test set value = value + 10"),
        (T2, "delete from test where value = 20 returning *",  "t2_delete"),  # T1's locks
        (T1, "commit",                                          commits),      # unblocks T2
        (T2, "select * from test order by id",                  "t2_read"),    # a 20 left?
        (T2, "commit",                                          "t2_commit"),
    ],
    # T2's "delete where value = 20" went through, yet T2 still sees a value 20.
    occurred=lambda o: o.ok("t2_delete") and 20 in o.seen("t2_read"),
    phenomenon=PHANTOM_READ,
)


@pytest.mark.parametrize("level, t2_delete, t2_read, t2_commit, verdict", [
    pytest.param(READ_UNCOMMITTED, blocks(then=sees()), sees((1, 20), (2, 30)), commits,
                 POSSIBLE, id="read uncommitted: possible (as at read committed)"),
    pytest.param(READ_COMMITTED, blocks(then=sees()), sees((1, 20), (2, 30)), commits,
                 POSSIBLE, id="read committed: delete re-checks and removes nothing"),
    pytest.param(REPEATABLE_READ, blocks(then=ABORTS_CONCURRENT_UPDATE),
                 ABORTS_IN_FAILED_TRANSACTION, rolls_back, PREVENTED,
                 id="repeatable read: prevented, T2 aborts"),
    pytest.param(SERIALIZABLE, blocks(then=ABORTS_CONCURRENT_UPDATE),
                 ABORTS_IN_FAILED_TRANSACTION, rolls_back, PREVENTED,
                 id="serializable: prevented, T2 aborts"),
])
def test_pmp_write_predicate(run, server_major, level, t2_delete, t2_read, t2_commit,
                             verdict):
    """Predicate-many-preceders (PMP), write predicate: read committed's re-check.

    Scenario: T1 adds 10 to every row (10, 20 -> 20, 30); T2 deletes the rows
    with value 20 and has to wait for T1's row lock on row 2.
    Outcome: at read committed, once T1 commits, T2 re-checks its condition on
    row 2's new version (30), deletes nothing, and still sees a row with value
    20: row 1, which its search never considered. From repeatable read up T2
    aborts (40001, concurrent update).
    """
    result = run(level, PMP_WRITE.steps(t2_delete=t2_delete, t2_read=t2_read,
                                        t2_commit=t2_commit))
    happened(PMP_WRITE, result, verdict)
    same_as_transcript(PMP_WRITE, result, server_major)


P4 = Anomaly(
    "P4", "lost update",
    "Two transactions read the same value and both write it back; "
    "one of the two updates silently disappears.",
    schedule=[
        (T1, "select value from test where id = 1",      sees(10)),
        (T2, "select value from test where id = 1",      sees(10)),
        (T1, "update test set value = 11 where id = 1"),                   # 10 + 1
        (T2, "update test set value = 12 where id = 1",  "t2_update"),    # 10 + 2
        (T1, "commit",                                    commits),        # unblocks T2
        (T2, "commit",                                    "t2_commit"),
        (OBSERVER, "select value from test where id = 1", "final"),       # both: 13
    ],
    # Only T2's write is left: T1's committed update is lost.
    occurred=lambda o: o.rows("final") == [[12]],
    phenomenon=NONREPEATABLE_READ,
)


@pytest.mark.parametrize("level, t2_update, t2_commit, final, verdict", [
    pytest.param(READ_UNCOMMITTED, blocks(then=succeeds), commits, sees(12), POSSIBLE,
                 id="read uncommitted: possible (as at read committed)"),
    pytest.param(READ_COMMITTED, blocks(then=succeeds), commits, sees(12), POSSIBLE,
                 id="read committed: lost update happens"),
    pytest.param(REPEATABLE_READ, blocks(then=ABORTS_CONCURRENT_UPDATE), rolls_back, sees(11),
                 PREVENTED, id="repeatable read: prevented, T2 aborts"),
    pytest.param(SERIALIZABLE, blocks(then=ABORTS_CONCURRENT_UPDATE), rolls_back, sees(11),
                 PREVENTED, id="serializable: prevented, T2 aborts"),
])
def test_p4_lost_update(run, server_major, level, t2_update, t2_commit, final, verdict):
    """Lost update (P4): two read-modify-write cycles on one row; one write vanishes.

    Scenario: T1 and T2 both read row 1 (10); T1 writes 10 + 1, T2 writes
    10 + 2 and waits for T1's row lock.
    Outcome: at read committed T2 overwrites T1's committed write without
    noticing (12, not 13). From repeatable read up T2 aborts (40001,
    concurrent update) rather than lose T1's update. (Hermitage's P4: a written
    value disappears. The history checker's ``lost-update``, Elle's, is the
    list-append form: both appends stay, but both read the same stale list.)
    """
    result = run(level, P4.steps(t2_update=t2_update, t2_commit=t2_commit, final=final))
    happened(P4, result, verdict)
    same_as_transcript(P4, result, server_major)


G_SINGLE = Anomaly(
    "G-single", "read skew",
    "A transaction sees part of another transaction's changes and misses "
    "the rest, e.g. a total that never existed.",
    schedule=[
        (T1, "select value from test where id = 1",      sees(10)),
        (T2, "select value from test where id = 1",      sees(10)),
        (T2, "select value from test where id = 2",      sees(20)),
        (T2, "update test set value = 12 where id = 1"),  # moves 2 from row 2 to row 1
        (T2, "update test set value = 18 where id = 2"),
        (T2, "commit",                                    commits),
        (T1, "select value from test where id = 2",      "t1_read_row_2"),  # 10 + 18 = 28?
        (T1, "commit",                                    commits),
    ],
    occurred=lambda o: o.rows("t1_read_row_2") == [[18]],
    phenomenon=NONREPEATABLE_READ,
)


@pytest.mark.parametrize("level, t1_read_row_2, verdict", [
    pytest.param(READ_UNCOMMITTED, sees(18), POSSIBLE,
                 id="read uncommitted: possible (as at read committed)"),
    pytest.param(READ_COMMITTED, sees(18), POSSIBLE, id="read committed: read skew happens"),
    pytest.param(REPEATABLE_READ, sees(20), PREVENTED, id="repeatable read: prevented"),
    pytest.param(SERIALIZABLE, sees(20), PREVENTED, id="serializable: prevented"),
])
def test_g_single_read_skew(run, server_major, level, t1_read_row_2, verdict):
    """Read skew (G-single): T1 sees half of T2's transfer.

    Scenario: T1 reads row 1 (10); T2 moves 2 from row 2 to row 1 (12, 18) and
    commits; T1 reads row 2.
    Outcome: at read committed T1 sees 18, so to T1 the total is 10 + 18 = 28,
    a state that never existed. From repeatable read up T1 sees 20.
    """
    result = run(level, G_SINGLE.steps(t1_read_row_2=t1_read_row_2))
    happened(G_SINGLE, result, verdict)
    same_as_transcript(G_SINGLE, result, server_major)


G_SINGLE_PREDICATE = Anomaly(
    "G-single-predicate", "read skew, predicate read",
    "A transaction's second search sees another transaction's committed "
    "change that its first search did not.",
    schedule=[
        (T1, "select * from test where value % 5 = 0 order by id",  sees((1, 10), (2, 20))),
        (T2, "update test set value = 12 where value = 10"),
        (T2, "commit",                                               commits),
        (T1, "select * from test where value % 3 = 0",  "t1_search_again"),  # (1, 12)?
        (T1, "commit",                                               commits),
    ],
    occurred=lambda o: 12 in o.seen("t1_search_again"),
    phenomenon=NONREPEATABLE_READ,
)


@pytest.mark.parametrize("level, t1_search_again, verdict", [
    pytest.param(READ_UNCOMMITTED, sees((1, 12)), POSSIBLE,
                 id="read uncommitted: possible (as at read committed)"),
    pytest.param(READ_COMMITTED, sees((1, 12)), POSSIBLE,
                 id="read committed: read skew happens"),
    pytest.param(REPEATABLE_READ, sees(), PREVENTED, id="repeatable read: prevented"),
    pytest.param(SERIALIZABLE, sees(), PREVENTED, id="serializable: prevented"),
])
def test_g_single_predicate_read(run, server_major, level, t1_search_again, verdict):
    """Read skew (G-single) through predicate reads.

    Scenario: T1 finds the multiples of 5 (rows 1 and 2); T2 sets the 10 to 12
    and commits; T1 searches for multiples of 3.
    Outcome: at read committed the second search finds (1, 12), a row the first
    search had seen as 10. From repeatable read up it finds nothing.
    """
    result = run(level, G_SINGLE_PREDICATE.steps(t1_search_again=t1_search_again))
    happened(G_SINGLE_PREDICATE, result, verdict)
    same_as_transcript(G_SINGLE_PREDICATE, result, server_major)


G_SINGLE_WRITE_PREDICATE = Anomaly(
    "G-single-write-predicate", "read skew, write predicate",
    "A transaction reads one row before another transaction commits and "
    "then deletes by a condition judged after it.",
    schedule=[
        (T1, "select value from test where id = 1",      sees(10)),
        (T2, "select * from test order by id",           sees((1, 10), (2, 20))),
        (T2, "update test set value = 12 where id = 1"),
        (T2, "update test set value = 18 where id = 2"),
        (T2, "commit",                                    commits),
        (T1, "delete from test where value = 20 returning *",  "t1_delete"),  # after T2's 18
        (T1, "commit",                                          "t1_commit"),
    ],
    # T1 read row 1 from before T2 and judged row 2 after T2.
    occurred=lambda o: o.ok("t1_delete"),
    phenomenon=NONREPEATABLE_READ,
)


@pytest.mark.parametrize("level, t1_delete, t1_commit, verdict", [
    pytest.param(READ_UNCOMMITTED, sees(), commits, POSSIBLE,
                 id="read uncommitted: possible (as at read committed)"),
    pytest.param(READ_COMMITTED, sees(), commits, POSSIBLE,
                 id="read committed: delete judged after T2"),
    pytest.param(REPEATABLE_READ, ABORTS_CONCURRENT_UPDATE, rolls_back, PREVENTED,
                 id="repeatable read: prevented, T1 aborts"),
    pytest.param(SERIALIZABLE, ABORTS_CONCURRENT_UPDATE, rolls_back, PREVENTED,
                 id="serializable: prevented, T1 aborts"),
])
def test_g_single_write_predicate(run, server_major, level, t1_delete, t1_commit, verdict):
    """Read skew (G-single) through a write predicate.

    Scenario: T1 reads row 1 (10); T2 changes both rows (12, 18) and commits;
    T1 deletes the rows with value 20.
    Outcome: at read committed the delete sees T2's 18 and removes nothing,
    while T1's earlier read saw the state before T2. From repeatable read up the
    delete finds row 2 (20) in T1's snapshot, sees it changed since, and aborts
    (40001, concurrent update).
    """
    result = run(level, G_SINGLE_WRITE_PREDICATE.steps(t1_delete=t1_delete,
                                                       t1_commit=t1_commit))
    happened(G_SINGLE_WRITE_PREDICATE, result, verdict)
    same_as_transcript(G_SINGLE_WRITE_PREDICATE, result, server_major)


# -- G2: what only serializable rules out --------------------------------------------

# The rule both transactions of G2-item keep, each on its own: the two values add up
# to at most 31. Each reads 10 + 20 = 30 and adds 1 to one row: 31, within the rule.
# Together they make 32.
G2_ITEM_RULE = "select sum(value) <= 31 from test where id in (1, 2)"

G2_ITEM = Anomaly(
    "G2-item", "write skew",
    "Two transactions read the same rows, then each updates a different one: "
    "each overwrites a row the other read, and together they break a rule "
    "each of them checked.",
    schedule=[
        (T1, "select * from test where id in (1, 2) order by id",  sees((1, 10), (2, 20))),
        (T2, "select * from test where id in (1, 2) order by id",  sees((1, 10), (2, 20))),
        (T1, "update test set value = 11 where id = 1"),
        (T2, "update test set value = 21 where id = 2"),
        (T1, "commit",                                              commits),
        (T2, "commit",                                              "t2_commit"),
        (OBSERVER, "select * from test order by id",                "final"),
    ],
    occurred=lambda o: o.rows("final") == [[1, 11], [2, 21]],
    phenomenon=SERIALIZATION_ANOMALY,
)


@pytest.mark.parametrize("level, t2_commit, final, rule_holds, verdict", [
    pytest.param(READ_UNCOMMITTED, commits, sees((1, 11), (2, 21)), False, POSSIBLE,
                 id="read uncommitted: possible (as at read committed)"),
    pytest.param(READ_COMMITTED, commits, sees((1, 11), (2, 21)), False, POSSIBLE,
                 id="read committed: write skew happens"),
    pytest.param(REPEATABLE_READ, commits, sees((1, 11), (2, 21)), False, POSSIBLE,
                 id="repeatable read: write skew happens"),
    pytest.param(SERIALIZABLE, ABORTS_RW_DEPENDENCIES, sees((1, 11), (2, 20)), True, PREVENTED,
                 id="serializable: prevented, T2's commit aborts"),
])
def test_g2_item_write_skew(run, observer, server_major, level, t2_commit, final, rule_holds,
                            verdict):
    """Write skew (G2-item): each transaction updates a row the other one read.

    Scenario: T1 and T2 both read rows 1 and 2; T1 updates row 1, T2 row 2;
    both commit.
    Outcome: no row is written twice, so snapshot isolation lets both commit.
    Neither saw the other's write: each read a version the other then
    overwrote (T1 -rw-> T2 and T2 -rw-> T1, two anti-dependencies), and no
    serial order gives both reads. Each kept the rule above G2_ITEM (sum at most
    31) in what it saw; together they break it (32). Serializable sees that cycle
    and fails T2's commit (40001, read/write dependencies): the rule holds.
    """
    result = run(level, G2_ITEM.steps(t2_commit=t2_commit, final=final))
    assert rows(observer, G2_ITEM_RULE) == [(rule_holds,)], \
        f"isolation at {level}: the rule each transaction checked: {G2_ITEM_RULE}"
    happened(G2_ITEM, result, verdict)
    same_as_transcript(G2_ITEM, result, server_major)


# The rule both transactions of G2 keep, each on its own: at most one multiple of 3
# in the table. Each searches, finds none, and inserts one: within the rule. Together
# they make two.
G2_RULE = "select count(*) <= 1 from test where value % 3 = 0"

G2 = Anomaly(
    "G2", "anti-dependency cycle",
    "Two transactions each search for rows, find none, and each insert a "
    "row that the other's search would have found.",
    schedule=[
        (T1, "select * from test where value % 3 = 0",  sees()),
        (T2, "select * from test where value % 3 = 0",  sees()),
        (T1, "insert into test (id, value) values (3, 30)"),
        (T2, "insert into test (id, value) values (4, 42)"),
        (T1, "commit",                                   commits),
        (T2, "commit",                                   "t2_commit"),
        (OBSERVER, "select * from test where value % 3 = 0 order by id",  "final"),
    ],
    occurred=lambda o: o.rows("final") == [[3, 30], [4, 42]],
    phenomenon=SERIALIZATION_ANOMALY,
)


@pytest.mark.parametrize("level, t2_commit, final, rule_holds, verdict", [
    pytest.param(READ_UNCOMMITTED, commits, sees((3, 30), (4, 42)), False, POSSIBLE,
                 id="read uncommitted: possible (as at read committed)"),
    pytest.param(READ_COMMITTED, commits, sees((3, 30), (4, 42)), False, POSSIBLE,
                 id="read committed: both insert"),
    pytest.param(REPEATABLE_READ, commits, sees((3, 30), (4, 42)), False, POSSIBLE,
                 id="repeatable read: both insert"),
    pytest.param(SERIALIZABLE, ABORTS_RW_DEPENDENCIES, sees((3, 30)), True, PREVENTED,
                 id="serializable: prevented, T2's commit aborts"),
])
def test_g2_anti_dependency_cycle(run, observer, server_major, level, t2_commit, final,
                                  rule_holds, verdict):
    """Anti-dependency cycle (G2) on a predicate: write skew with phantoms.

    Scenario: T1 and T2 both search for multiples of 3 and find none; T1
    inserts (3, 30), T2 inserts (4, 42); both commit.
    Outcome: each insert is a row the other's search should have found; no row
    lock can catch that. Each kept the rule above G2 (at most one multiple of 3)
    in what it saw; together they break it (two). Serializable's predicate
    (SIREAD) locks catch it: T2's commit fails (40001, read/write dependencies)
    and the rule holds.
    """
    result = run(level, G2.steps(t2_commit=t2_commit, final=final))
    assert rows(observer, G2_RULE) == [(rule_holds,)], \
        f"isolation at {level}: the rule each transaction checked: {G2_RULE}"
    happened(G2, result, verdict)
    same_as_transcript(G2, result, server_major)


# Fekete, O'Neil and O'Neil (2004): under snapshot isolation a transaction that
# only reads can see a state no serial order produces. T1 must come before T2
# (it missed T2's write), T3 saw T2 but not T1: T2 before T3 before T1.
READ_ONLY = Anomaly(
    "G2-read-only", "read-only transaction anomaly",
    "A transaction that only reads sees a state that no serial order of "
    "the writing transactions could produce.",
    schedule=[
        (T1, "select * from test order by id",                  sees((1, 10), (2, 20))),
        (T2, "update test set value = value + 5 where id = 2"),
        (T2, "commit",                                           commits),
        (T3, "select * from test order by id",                  sees((1, 10), (2, 25))),
        (T3, "commit",                                           commits),  # T2 done, T1 not
        (T1, "update test set value = 0 where id = 1",          "t1_update"),
        (T1, "commit",                                           "t1_commit"),
        (OBSERVER, "select * from test order by id",            "final"),
    ],
    # T3's report showed T2 without T1, and T1 (which missed T2) committed anyway.
    occurred=lambda o: o.committed("t1_commit"),
    phenomenon=SERIALIZATION_ANOMALY,
)


@pytest.mark.parametrize("level, t1_update, t1_commit, final, verdict", [
    pytest.param(READ_UNCOMMITTED, succeeds, commits, sees((1, 0), (2, 25)), POSSIBLE,
                 id="read uncommitted: possible (as at read committed)"),
    pytest.param(READ_COMMITTED, succeeds, commits, sees((1, 0), (2, 25)), POSSIBLE,
                 id="read committed: report shows an impossible state"),
    pytest.param(REPEATABLE_READ, succeeds, commits, sees((1, 0), (2, 25)), POSSIBLE,
                 id="repeatable read: report shows an impossible state"),
    pytest.param(SERIALIZABLE, ABORTS_RW_DEPENDENCIES, rolls_back, sees((1, 10), (2, 25)),
                 PREVENTED, id="serializable: prevented, T1 aborts"),
])
def test_read_only_transaction_anomaly(run, server_major, level, t1_update, t1_commit, final,
                                       verdict):
    """The read-only transaction anomaly (Fekete, O'Neil and O'Neil, 2004).

    Scenario: T1 reads both rows; T2 adds 5 to row 2 and commits; T3, which
    only reads, prints both rows (10, 25) and commits; then T1 sets row 1 to 0.
    Outcome: T1 did not see T2's write, so T1 must come before T2; T3 saw T2
    but not T1. No serial order fits, though T3 never wrote anything. Snapshot
    isolation lets it happen; serializable aborts T1's update (40001,
    read/write dependencies), and T1's ``commit`` then answers ROLLBACK,
    without an error.
    """
    result = run(level, READ_ONLY.steps(t1_update=t1_update, t1_commit=t1_commit, final=final))
    happened(READ_ONLY, result, verdict)
    same_as_transcript(READ_ONLY, result, server_major)


@pytest.mark.parametrize("level", [
    pytest.param(SERIALIZABLE, id="serializable: without the reader, both commit"),
])
def test_read_only_anomaly_control_without_the_reader(run, level):
    """The control case of the read-only anomaly: the same schedule without T3.

    Scenario: T1 reads both rows; T2 adds 5 to row 2 and commits; T1 sets row 1
    to 0 and commits -- as above, but nobody reads in between.
    Outcome: at serializable both commit. T1 missed T2's write, so the order
    is T1 then T2, and nothing contradicts it: only the read-only T3, having
    seen T2 without T1, closed the cycle above. (PostgreSQL's own
    read-only-anomaly spec runs the same pair of permutations.)
    """
    run(level, [
        (T1, "select * from test order by id",                  sees((1, 10), (2, 20))),
        (T2, "update test set value = value + 5 where id = 2"),
        (T2, "commit",                                           commits),
        (T1, "update test set value = 0 where id = 1"),
        (T1, "commit",                                           commits),
        (OBSERVER, "select * from test order by id",            sees((1, 0), (2, 25))),
    ])


READ_ONLY_DEFERRABLE = Anomaly(
    "G2-read-only-deferrable", "read-only anomaly, read only deferrable",
    "A READ ONLY DEFERRABLE transaction waits for a snapshot on which no "
    "anomaly is possible, instead of seeing one or aborting a writer.",
    schedule=[
        (T1, "select * from test order by id",                  sees((1, 10), (2, 20))),
        (T2, "update test set value = value + 5 where id = 2"),
        (T2, "commit",                                           commits),
        (T3, "set transaction read only, deferrable"),
        (T3, "select * from test order by id",                  "t3_read"),  # safe snapshot?
        (T1, "update test set value = 0 where id = 1"),
        (T1, "commit",                                           "t1_commit"),
        (T3, "commit",                                           commits),
    ],
    # The report T3 printed shows T2's deposit but not T1's committed write.
    occurred=lambda o: o.rows("t3_read") == [[1, 10], [2, 25]] and o.committed("t1_commit"),
    phenomenon=SERIALIZATION_ANOMALY,
)


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
def test_read_only_deferrable_waits_for_a_safe_snapshot(run, server_major, level, t3_read,
                                                        verdict):
    """SERIALIZABLE READ ONLY DEFERRABLE: wait for a safe snapshot instead of aborting.

    Scenario: the read-only anomaly again, but T3 declares itself
    ``read only, deferrable`` and reads while T1 is still running.
    Outcome: at serializable T3's read waits (the server reports a safe-snapshot
    wait) until T1 commits, then sees T1's write too, and nobody aborts. At the
    lower levels DEFERRABLE means nothing: T3 reads at once and the report
    again shows a state no serial order produces.
    """
    result = run(level, READ_ONLY_DEFERRABLE.steps(t3_read=t3_read, t1_commit=commits))
    happened(READ_ONLY_DEFERRABLE, result, verdict)
    same_as_transcript(READ_ONLY_DEFERRABLE, result, server_major)


# -- the ACID report's matrix: these schedules, collected by acid_lab.lessons.catalog --

#: The report's columns, in Hermitage's order (its rows are the four levels).
MATRIX = (G0, G1A, G1B, G1C, OTV, PMP, P4, G_SINGLE, G2_ITEM, G2)
#: More scenarios of the catalog, not columns of the matrix.
VARIANTS = (PMP_WRITE, G_SINGLE_PREDICATE, G_SINGLE_WRITE_PREDICATE, READ_ONLY,
            READ_ONLY_DEFERRABLE)
