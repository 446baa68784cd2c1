"""Isolation without waiting: multi-version concurrency control (MVCC).

The course notes say PostgreSQL's MVCC "avoids unnecessary locking when
multiple writes are happening to the database at once -- avoids wait times".
Here is what that means. An UPDATE does not overwrite a row: it writes a new
*version* of it and marks the old one as replaced. Every version carries the
id of the transaction that created it (``xmin``) and of the one that deleted
or replaced it (``xmax``, 0 while nobody has). Each statement (or, from
repeatable read up, each transaction) reads from a *snapshot*: the versions
committed when the snapshot was taken. So

* a reader never waits for a writer: it reads the last committed version;
* a writer never waits for a reader: reading takes no lock a writer needs;
* only two writers of the same row wait for each other (see the locking tests).

A database that isolates with read locks instead (two-phase locking) makes
both wait; PostgreSQL's ``SELECT ... FOR SHARE`` reads like that, and serves
as the contrast. Whether a session waited is the server's answer, not a timer's.
"""

import pytest

from acid_lab.engine.scenario import (
    OBSERVER,
    READ_COMMITTED,
    REPEATABLE_READ,
    T1,
    T2,
    anything,
    blocks,
    sees,
    succeeds,
)

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
        (T1, "commit"),
        (T2, "commit"),
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
        (T1, "commit"),
        (T2, READ_ROW_1, sees(11)),
        (T2, "commit"),
    ])


def test_an_update_writes_a_new_row_version(run):
    """Row versions: xmin and xmax seen from two sessions.

    Scenario: T1 (repeatable read) reads row 1's version; T2 updates row 1
    (returning the new version's xmin) and commits; T1 and an observer look again.
    Outcome: the old version is still there for T1's snapshot: same place
    (ctid), same xmin, value 10, but its xmax is now T2's transaction id -- it
    was replaced by T2 (already before T2 committed). The observer sees the new
    version: another ctid, value 11, created by T2 (xmin), not replaced (xmax 0).
    """
    result = run(REPEATABLE_READ, [
        (T1, VERSION_OF_ROW_1, anything),
        (T2, "update test set value = 11 where id = 1 returning xmin::text", anything),
        (T1, VERSION_OF_ROW_1, anything),
        (T2, "commit"),
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
