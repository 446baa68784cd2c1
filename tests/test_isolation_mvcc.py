"""Isolation with less waiting: multi-version concurrency control (MVCC).

The course notes say PostgreSQL's MVCC "avoids unnecessary locking when
multiple writes are happening to the database at once", with "several
databases available for reading from and writing to at once". There is one
database and one table; what there are several of is *row versions*. An UPDATE
does not overwrite a row: it writes a new version of it and marks the old one
as replaced. Every version carries the id of the transaction that created it
(``xmin``) and ``xmax``: 0, or the id of a transaction that deleted or replaced
it -- or only locked it (``FOR SHARE``, ``FOR UPDATE``, a foreign-key check),
or tried to replace it and rolled back. A reader decides from these ids and its
*snapshot* (the transactions committed when it was taken: per statement at read
committed, per transaction from repeatable read up) which version it sees. So

* a plain SELECT does not wait for a writer of the row: it reads the last
  committed version;
* a writer does not wait for a plain SELECT: reading takes no row lock.

Waiting has not gone away, though; it is left where it is needed:

* two writers of the same row (test_isolation_locking.py);
* two inserts of the same unique key: the second waits to learn whether the
  first commits;
* a foreign-key check locks the referenced row ``FOR KEY SHARE``, so deleting
  that row, or changing its key, waits (changing its other columns does not);
* DDL and queries: ``ALTER TABLE ... ADD COLUMN`` (ACCESS EXCLUSIVE, like most
  forms of ALTER TABLE) waits for a SELECT's transaction to end, and a SELECT
  waits for its transaction.

MVCC has a cost: every UPDATE and DELETE leaves a dead row version behind, and
it stays on disk until VACUUM (or autovacuum) removes it -- and VACUUM may only
remove a version that no snapshot still open could need (the last test).

A database that isolates with read locks instead (two-phase locking) makes
readers and writers wait for each other; PostgreSQL's ``SELECT ... FOR SHARE``
reads like that, and serves as the contrast. Whether a session waited is the
server's answer (``pg_isolation_test_session_is_blocked``), not a timer's.
"""

import re

import pytest
from psycopg2 import errors

from acid_lab.engine.expectations import (
    aborts,
    anything,
    blocks,
    commits,
    rolls_back,
    sees,
    succeeds,
)
from acid_lab.engine.scenario import OBSERVER, RAW, READ_COMMITTED, REPEATABLE_READ, T1, T2
from acid_lab.servers.queries import execute, rows

pytestmark = pytest.mark.isolation

READ_ROW_1 = "select value from test where id = 1"
SHARE_LOCK_ROW_1 = "select value from test where id = 1 for share"
VERSION_OF_ROW_1 = "select value, xmin::text, xmax::text, ctid::text from test where id = 1"


@pytest.mark.parametrize("read, t2_write", [
    pytest.param(READ_ROW_1, succeeds,
                 id="MVCC read: the writer goes ahead at once"),
    pytest.param(SHARE_LOCK_ROW_1, blocks(then=succeeds),
                 id="read with a share lock, as locking databases read: the writer waits"),
])
def test_a_reader_does_not_block_a_writer(run, read, t2_write):
    """A reader does not block a writer.

    Scenario: T1 reads row 1 and stays open; T2 updates row 1; T1 commits,
    then T2 commits.
    Outcome: T2's update runs at once, though T1 has read the row and is still
    open -- the server never reports T2 waiting. Had T1 read with a share lock
    (as a database that isolates by read locks does), T2 would have waited
    until T1 ended.
    """
    run(READ_COMMITTED, [
        (T1, read, sees(10)),
        (T2, "update test set value = 11 where id = 1", t2_write),
        (T1, "commit", commits),
        (T2, "commit", commits),
        (OBSERVER, READ_ROW_1, sees(11)),
    ])


@pytest.mark.parametrize("t2_read, t2_outcome", [
    pytest.param(READ_ROW_1, sees(10),
                 id="MVCC read: the reader gets the last committed 10 at once"),
    pytest.param(SHARE_LOCK_ROW_1, blocks(then=sees(11)),
                 id="read with a share lock: the reader waits for the writer's commit"),
])
def test_a_writer_does_not_block_a_reader(run, t2_read, t2_outcome):
    """A writer does not block a reader.

    Scenario: T1 updates row 1 to 11 and has not committed; T2 reads row 1;
    then T1 commits.
    Outcome: T2's read returns at once with 10, the version committed before
    T1's update -- no waiting, and no dirty read either. A share-locking read
    has to wait until T1 commits.
    """
    run(READ_COMMITTED, [
        (T1, "update test set value = 11 where id = 1"),
        (T2, t2_read, t2_outcome),
        (T1, "commit", commits),
        (T2, READ_ROW_1, sees(11)),
        (T2, "commit", commits),
    ])


def test_an_update_writes_a_new_row_version(run):
    """Row versions: xmin and xmax seen from two sessions.

    Scenario: T1 (repeatable read) reads row 1's version; T2 updates row 1
    (returning the new version's xmin) and commits; T1 and an observer look again.
    Outcome: the old version is still there for T1's snapshot: same place
    (ctid), same xmin, value 10, but its xmax is now T2's transaction id -- it
    was replaced by T2 (already before T2 committed). The observer sees the new
    version: another ctid, value 11, created by T2 (xmin), not replaced (xmax 0).
    Both versions are rows of the one table ``test``: not two databases.
    """
    result = run(REPEATABLE_READ, [
        (T1, VERSION_OF_ROW_1, anything),
        (T2, "update test set value = 11 where id = 1 returning xmin::text", anything),
        (T1, VERSION_OF_ROW_1, anything),
        (T2, "commit", commits),
        (T1, VERSION_OF_ROW_1, anything),
        (OBSERVER, VERSION_OF_ROW_1, anything),
    ])
    before, t2_update, during, _, after, observer = (step.rows for step in result.steps)
    (old_value, old_xmin, old_xmax, old_ctid), = before
    (t2_xid,), = t2_update
    story = f"\ntranscript:\n{result.transcript}"

    assert (old_value, old_xmax) == (10, "0"), "a current version has xmax 0" + story
    assert t2_xid != old_xmin, "the update creates a version of its own transaction" + story
    assert during == [[10, old_xmin, t2_xid, old_ctid]], (
        "the old version is kept, marked replaced by T2 (xmax) even before T2 commits" + story)
    assert after == [[10, old_xmin, t2_xid, old_ctid]], (
        "T1's snapshot still reads the old version after T2 committed" + story)
    (new_value, new_xmin, new_xmax, new_ctid), = observer
    assert (new_value, new_xmin, new_xmax) == (11, t2_xid, "0"), (
        "everyone else reads the new version, created by T2" + story)
    assert new_ctid != old_ctid, "the new version is a new tuple, not the old one rewritten" + story


@pytest.mark.parametrize("t1_first_read, t1_later_read", [
    pytest.param(None, sees(11),
                 id="begin alone takes no snapshot: the first read sees T2's 11"),
    pytest.param("select value from test where id = 2", sees(10),
                 id="a select takes the snapshot: the later read still sees 10"),
])
def test_a_select_inside_a_transaction_fixes_what_it_sees(run, t1_first_read, t1_later_read):
    """SELECT belongs in transactions too: the course notes' "transactions concern
    changing data, not querying" misses what a reader gets from one.

    Scenario: T1 begins a repeatable read transaction, maybe reads row 2;
    T2 updates row 1 to 11 (autocommit); T1 reads row 1, then commits.
    Outcome: the snapshot is taken by the transaction's first statement, not
    by BEGIN. Once T1 has read anything, it keeps reading the database as it
    was then -- row 1 is still 10, a consistent picture across all its
    SELECTs; without that first read, its first look at row 1 shows 11.
    """
    steps = [(T1, "begin transaction isolation level repeatable read")]
    if t1_first_read:
        steps.append((T1, t1_first_read, sees(20)))
    run(RAW, [
        *steps,
        (T2, "update test set value = 11 where id = 1"),
        (T1, READ_ROW_1, t1_later_read),
        (T1, "commit", commits),
    ])


@pytest.mark.parametrize("t1_statement, t1_end, xmax_after", [
    pytest.param(READ_ROW_1, "commit", "0", id="a plain read: xmax stays 0"),
    pytest.param(SHARE_LOCK_ROW_1, "commit", "T1", id="for share: the locker's id in xmax"),
    pytest.param("select value from test where id = 1 for update", "commit", "T1",
                 id="for update: the locker's id in xmax"),
    pytest.param("update test set value = 11 where id = 1", "rollback", "T1",
                 id="an update rolled back: the aborted updater's id in xmax"),
])
def test_xmax_names_lockers_and_aborted_updaters_too(run, t1_statement, t1_end, xmax_after):
    """xmax is not only "replaced by": a row lock and a rolled-back update leave it set too.

    Scenario: T1 learns its transaction id, runs the statement, and ends;
    an observer reads row 1's value and xmax.
    Outcome: the row is current (value 10, everyone reads it), yet after a
    lock or an aborted update its xmax holds T1's id. Whether such an xmax
    hides the version is decided from the transaction's fate and the version's
    flags (lock only, aborted), not from xmax alone.
    """
    result = run(READ_COMMITTED, [
        (T1, "select pg_current_xact_id()::xid::text", anything),
        (T1, t1_statement),
        (T1, t1_end, commits if t1_end == "commit" else rolls_back),
        (OBSERVER, "select value, xmax::text from test where id = 1", anything),
    ])
    (t1_xid,), = result.steps[0].rows
    expected_xmax = t1_xid if xmax_after == "T1" else "0"
    assert result.steps[-1].rows == [[10, expected_xmax]], result.transcript


# ------------------------------------------------------------------ where MVCC still waits


@pytest.mark.parametrize("t1_end, t1_outcome, t2_insert, t2_commit, key_3_after", [
    pytest.param("commit", commits, blocks(then=aborts(errors.UniqueViolation)), rolls_back,
                 [(3, 30)], id="T1 commits: T2 waited, then 23505"),
    pytest.param("rollback", rolls_back, blocks(then=succeeds), commits,
                 [(3, 31)], id="T1 rolls back: T2 waited, then inserted"),
])
def test_two_inserts_of_one_unique_key_wait_for_each_other(run, t1_end, t1_outcome, t2_insert,
                                                           t2_commit, key_3_after):
    """Scenario: T1 inserts id 3 (the primary key) and stays open; T2 inserts id 3 too;
    T1 ends; T2 commits.

    Outcome: T2 waits -- whether its row may exist depends on whether T1's
    commits, which no snapshot can tell yet. When T1 commits, T2 fails with
    23505; when T1 rolls back, T2's insert goes through.
    """
    run(READ_COMMITTED, [
        (T1, "insert into test (id, value) values (3, 30)"),
        (T2, "insert into test (id, value) values (3, 31)", t2_insert),
        (T1, t1_end, t1_outcome),
        (T2, "commit", t2_commit),
        (OBSERVER, "select id, value from test where id = 3", sees(*key_3_after)),
    ])


@pytest.mark.parametrize("t2_statement, t2_outcome, t2_commit", [
    pytest.param(READ_ROW_1, sees(10), commits, id="a plain read: at once"),
    pytest.param("update test set value = 11 where id = 1", succeeds, commits,
                 id="update a non-key column: at once (FOR NO KEY UPDATE)"),
    pytest.param("select value from test where id = 1 for update", blocks(then=sees(10)),
                 commits, id="for update: waits"),
    pytest.param("update test set id = 3 where id = 1",
                 blocks(then=aborts(errors.ForeignKeyViolation)), rolls_back,
                 id="change the key: waits, then 23503"),
    pytest.param("delete from test where id = 1",
                 blocks(then=aborts(errors.ForeignKeyViolation)), rolls_back,
                 id="delete: waits, then 23503"),
])
def test_a_foreign_key_check_locks_the_referenced_row_for_key_share(run, observer, t2_statement,
                                                                    t2_outcome, t2_commit):
    """Scenario: orders.test_id references test(id). T1 inserts an order for row 1 and
    stays open; T2 touches row 1; T1 commits; T2 commits.

    Outcome: T1's foreign-key check locked row 1 ``FOR KEY SHARE`` (its xmax
    now names T1): the row's key cannot go away while T1 may still commit an
    order for it. A plain read and an update of a non-key column go ahead at
    once; FOR UPDATE, a key change and a delete wait for T1 -- and then the
    key change and the delete fail, because the order exists.
    """
    execute(observer, "create table orders (id int primary key, test_id int references test (id))")
    run(READ_COMMITTED, [
        (T1, "insert into orders (id, test_id) values (1, 1)"),
        (OBSERVER, "select xmax::text <> '0' from test where id = 1", sees(True)),
        (T2, t2_statement, t2_outcome),
        (T1, "commit", commits),
        (T2, "commit", t2_commit),
        (OBSERVER, "select id, test_id from orders", sees((1, 1))),
    ])


@pytest.mark.parametrize("t1_statement, t2_statement, t2_outcome", [
    pytest.param(READ_ROW_1, "alter table test add column note text", blocks(then=succeeds),
                 id="a SELECT's open transaction makes ALTER TABLE wait"),
    pytest.param("alter table test add column note text", READ_ROW_1, blocks(then=sees(10)),
                 id="an ALTER TABLE's open transaction makes a SELECT wait"),
])
def test_ddl_and_queries_wait_for_each_other(run, t1_statement, t2_statement, t2_outcome):
    """Scenario: T1 runs a statement on table test and stays open; T2 runs the other; T1
    commits.

    Outcome: a SELECT holds the table's ACCESS SHARE lock until its transaction
    ends, and ``ALTER TABLE ... ADD COLUMN`` -- the form shown -- takes ACCESS
    EXCLUSIVE, which conflicts with every lock: whichever comes second waits
    until T1 commits. Not every form of ALTER TABLE is that strong: each form's
    lock is named on PostgreSQL's ALTER TABLE page (e.g. ``SET STATISTICS`` and
    ``VALIDATE CONSTRAINT`` take SHARE UPDATE EXCLUSIVE, which a SELECT's ACCESS
    SHARE does not conflict with). Row versions do not
    help here -- they version rows, not the table's definition.
    """
    run(READ_COMMITTED, [
        (T1, t1_statement, anything),
        (T2, t2_statement, t2_outcome),
        (T1, "commit", commits),
        (T2, "commit", commits),
        (OBSERVER, "select count(*) from information_schema.columns "
                   "where table_schema = current_schema() and table_name = 'test'", sees(3)),
    ])


def vacuum_verbose(conn, table):
    """VACUUM (VERBOSE) ``table``: (row versions removed, dead ones it had to keep)."""
    del conn.notices[:]
    execute(conn, f"vacuum (verbose) {table}")
    report = " ".join(conn.notices)
    found = re.search(r"tuples: (\d+) removed, \d+ remain, (\d+) are dead but not yet removable",
                      report)
    assert found, f"VACUUM VERBOSE's report: {report}"
    return int(found[1]), int(found[2])


@pytest.mark.parametrize("snapshot_held, first_vacuum, after_the_snapshot_ends", [
    pytest.param(False, (3, 0), (0, 0),
                 id="no old snapshot: VACUUM removes the 3 dead versions"),
    pytest.param(True, (0, 3), (3, 0),
                 id="a snapshot from before the updates: all 3 kept until it ends"),
])
def test_dead_row_versions_wait_for_vacuum(connect, observer, snapshot_held, first_vacuum,
                                           after_the_snapshot_ends):
    """Scenario: maybe T1 opens a repeatable read transaction and reads row 1 (10); then
    row 1 is updated three times (11, 12, 13), each committed. ``vacuum (verbose) test``
    runs; T1 reads row 1 again and ends; VACUUM runs again.

    Outcome: each update left the version it replaced behind: three dead versions.
    Without an old snapshot VACUUM removes all three. While T1's snapshot is open,
    VACUUM must keep them ("dead but not yet removable"): T1 still reads 10 from
    one of them. Once T1 ends, the next VACUUM removes them. (A long transaction
    makes the table carry its dead versions: MVCC's cost.)
    """
    t1 = connect()
    if snapshot_held:
        execute(t1, "begin transaction isolation level repeatable read")
        assert rows(t1, READ_ROW_1) == [(10,)]
    for value in (11, 12, 13):
        execute(observer, "update test set value = %s where id = 1", (value,))

    assert vacuum_verbose(observer, "test") == first_vacuum, "(removed, dead but kept)"
    assert rows(t1, READ_ROW_1) == [(10,) if snapshot_held else (13,)], \
        "a snapshot from before the updates still reads the old version"
    t1.rollback()
    assert vacuum_verbose(observer, "test") == after_the_snapshot_ends, "(removed, dead but kept)"
