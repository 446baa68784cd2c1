"""Durability: once the server has said "committed", the transaction stays — whatever fails next.

What it promises. COMMIT is a promise with a moment attached: from the instant
the server answers it, the transaction's changes survive a failure of the
connection, of the client program, of the server processes, of the machine.
Until that instant, nothing is promised: a transaction still open when
something fails is rolled back, entirely (that is atomicity's half of it).

What breaks without it. A shop that told a customer "paid" loses the order in
the next crash; a client that retries after a crash cannot know what happened;
two systems that agreed on a transfer disagree afterwards.

How PostgreSQL provides it: the write-ahead log (WAL).

* Every change is first written as a WAL record; the table and index pages
  themselves are written back to disk later, lazily (by checkpoints).
* COMMIT appends a commit record and, with ``synchronous_commit = on`` (the
  default), waits until the WAL up to that record is flushed to disk (fsync)
  before it answers. Only then is the commit acknowledged.
* After a crash the server replays the WAL from the last checkpoint (crash
  recovery). Redo replays every record from there on, whatever transaction
  wrote it: the row versions of a transaction that never committed come back
  too. What decides is the commit log (pg_xact): replaying a commit record
  marks its transaction committed there. A transaction without one was never
  marked at all -- nothing is written for it; it counts as aborted because it
  is neither committed nor still running (recovery ended every transaction of
  the crashed server), and its row versions stay invisible forever.
* ``PREPARE TRANSACTION`` (two-phase commit) makes a transaction itself
  durable before it is committed: it survives a crash and waits for COMMIT
  PREPARED or ROLLBACK PREPARED.
* ``synchronous_commit = off`` trades the promise for speed: COMMIT answers
  before the flush, and a crash in the next moments (up to 3 x
  wal_writer_delay) loses the last acknowledged commits — never out of order,
  because the WAL is one sequence and replay stops where the flushed part ends.

The failure simulated here is a process crash: SIGKILL to every server
process at once, then a restart with WAL replay. (A killed connection or a
killed client program ends a session, not the server: nothing has to be read
back from disk, so fsync never matters there; those are in
test_atomicity_sessions.py.) The crashes run on a server of this module's
own, with fsync on, never on the server the other tests share; each test works
in a schema of its own there.

What a process crash cannot show. A SIGKILL ends processes, not the machine:
the operating system lives on, and so does its page cache — data that
PostgreSQL has handed to the kernel with write() but the disk has not stored
yet. The restarted server reads it back as if it were on disk. So these tests
show that PostgreSQL writes a commit out of its own memory before it answers,
and that recovery replays the WAL correctly; they cannot show that fsync makes
the disk keep it. That needs a power loss (or a disk cache that lies about
having written), which only a machine or a virtual disk pulled out from under
the server can test. With ``fsync = off`` the tests here would pass just the
same, and the first power cut could lose commits or corrupt the whole cluster:
hence ``fsync = on`` is asserted before every crash, and durability is claimed
only where it is on.
"""

import psycopg2
import pytest

from acid_lab.lessons.faults import AcknowledgedWriters, wait_until_wal_writer_sleeps
from acid_lab.lessons.schema import HERMITAGE, demo_rows
from acid_lab.servers.connections import ConnectionFactory
from acid_lab.servers.crashable import SLOW_WAL_WRITER, CrashableCluster
from acid_lab.servers.places import PlaceKeeper
from acid_lab.servers.queries import execute, one

pytestmark = [pytest.mark.durability]

DEMO_ROWS = [(1, 10), (2, 20)]
WRITERS = 4                  # threads committing at once in the load test
CRASHES = 3                  # crashes in the load test
COMMITS_BEFORE_CRASH = 150   # acknowledged commits between two crashes of the load test
ASYNC_COMMITS = 10


# --------------------------------------------------------------------------- helper verbs


def ids_in(conn, table: str) -> list[int]:
    with conn.cursor() as cur:
        cur.execute(f"select id from {table} order by id")
        return [row[0] for row in cur.fetchall()]


def current_xid(conn) -> str:
    """The id of the session's transaction (assigning one if it has none yet)."""
    return one(conn, "select pg_current_xact_id()")


def xact_status(conn, xid: str) -> str:
    return one(conn, "select pg_xact_status(%s::xid8)", (xid,))


def crash_and_restart(server: CrashableCluster) -> None:
    server.crash()
    server.restart()


def create_ledger_on_a_quiet_wal(connect: ConnectionFactory) -> None:
    """Create table ledger; start a fresh WAL segment; wait until the WAL writer sleeps.

    On a fresh page the few commits fill no WAL page (a full page would be written
    out at once); with the WAL writer asleep nothing else writes their records.
    """
    admin = connect(autocommit=True)
    execute(admin, "create table ledger (id int)")
    execute(admin, "select pg_switch_wal()")
    wait_until_wal_writer_sleeps(admin)
    admin.close()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def crash_server():
    """A server of this module's own (fsync on) that its tests crash and restart in turn.

    Only tests marked own_server use it: with --dsn they are skipped before it starts.
    """
    with CrashableCluster() as server:
        yield server


@pytest.fixture
def crash_place(crash_server):
    """Connections to a fresh schema (with the demo table) on the crash server; fsync checked.

    Afterwards the server is up again with its usual settings, whatever the test did.
    """
    keeper = PlaceKeeper(psycopg2.connect(**crash_server.info.params()))
    try:
        assert one(keeper.admin, "show fsync") == "on", "no durability claims without fsync"
        schema = keeper.create(HERMITAGE)
    finally:
        keeper.close()
    connect = ConnectionFactory(crash_server.info, schema)
    yield connect
    connect.close_all()
    if not crash_server.running or crash_server.start_settings:
        crash_and_restart(crash_server)


@pytest.fixture
def slow_wal_writer(crash_server, crash_place):
    """The crash server restarted so that only a synchronous COMMIT flushes the WAL."""
    crash_server.stop()
    crash_server.restart(**SLOW_WAL_WRITER)
    return crash_server


# --------------------------------------------------------------------------- crashed servers


@pytest.mark.own_server
def test_a_crash_keeps_committed_transactions_and_aborts_the_one_in_flight(crash_server,
                                                                           crash_place):
    """Scenario: T1 opens a transaction (row 2 => 22, row 4 added) and stays open; T2 commits
    (row 1 => 11, row 3 added). Every server process is SIGKILLed; the server restarts.

    Outcome: the server log says it was not shut down properly and replayed the WAL
    ("redo"). T2's changes are there and pg_xact_status says committed; T1's are not
    and it says aborted -- inferred: no commit record, and not running any more.
    (T2's commit flushed the WAL with T1's records in it, so redo wrote T1's row
    versions back too: they stay invisible because T1 never committed.)
    """
    t1, t2 = crash_place(), crash_place()
    execute(t1, "update test set value = 22 where id = 2")
    execute(t1, "insert into test values (4, 40)")
    t1_xid = current_xid(t1)
    execute(t2, "update test set value = 11 where id = 1")
    execute(t2, "insert into test values (3, 30)")
    t2_xid = current_xid(t2)
    t2.commit()

    crash_and_restart(crash_server)

    recovery = crash_server.startup_log()
    assert "database system was not properly shut down; automatic recovery in progress" \
        in recovery, f"the server must notice the crash:\n{recovery}"
    assert "redo starts at" in recovery, f"the server must replay the WAL:\n{recovery}"
    after = crash_place(autocommit=True)
    assert demo_rows(after) == [(1, 11), (2, 20), (3, 30)], (
        "durability: the committed transaction survives the crash, the one in flight does not")
    assert (xact_status(after, t2_xid), xact_status(after, t1_xid)) == ("committed", "aborted"), (
        "recovery: a transaction with a commit record is committed, one without is aborted")


@pytest.mark.own_server
def test_a_prepared_transaction_survives_a_crash(crash_server, crash_place):
    """Scenario: a transaction updates row 1 to 11, adds row 3 and is prepared for two-phase
    commit (PREPARE TRANSACTION). The server crashes and restarts; then COMMIT PREPARED.

    Outcome: before COMMIT PREPARED nobody sees its changes, before or after the
    crash; after the crash it is still listed in pg_prepared_xacts, and COMMIT
    PREPARED makes its changes visible: the prepared state itself was durable.
    """
    gid = f"acid_lab_{crash_place.schema}"
    session = crash_place(autocommit=True)
    execute(session, "begin")
    execute(session, "update test set value = 11 where id = 1")
    execute(session, "insert into test values (3, 30)")
    execute(session, f"prepare transaction '{gid}'")
    assert demo_rows(session) == DEMO_ROWS, "a prepared transaction is not committed yet"

    crash_and_restart(crash_server)

    after = crash_place(autocommit=True)
    assert one(after, "select count(*) from pg_prepared_xacts where gid = %s", (gid,)) == 1, (
        "durability: the prepared transaction must survive the crash")
    assert demo_rows(after) == DEMO_ROWS, "still prepared, still invisible"
    execute(after, f"commit prepared '{gid}'")
    assert demo_rows(after) == [(1, 11), (2, 20), (3, 30)], (
        "COMMIT PREPARED after the crash must commit everything the transaction did")


@pytest.mark.own_server
def test_every_acknowledged_commit_survives_crashes_under_load(crash_server, crash_place,
                                                               record_property):
    """Scenario: writer threads commit one row per transaction, as fast as they can, and
    note each commit the server acknowledged. Each time the writers together have
    150 more acknowledged commits, every server process is SIGKILLed; the server
    restarts and the writers start again; three crashes in all.

    Outcome: every acknowledged row is there: 0 lost. A commit cut off by the crash
    (sent, never answered) may or may not have happened; a row whose COMMIT was never
    sent never appears. The tally is printed (pytest -s) and kept as a test property.
    """
    execute(crash_place(autocommit=True), "create table ledger (id bigint primary key)")
    writers = AcknowledgedWriters(crash_place.dsn(), "ledger", threads=WRITERS)

    for _ in range(CRASHES):
        with writers.running():
            writers.wait_until_acknowledged(len(writers.acknowledged) + COMMITS_BEFORE_CRASH)
            crash_server.crash()
        crash_server.restart()

    tally = writers.tally(set(ids_in(crash_place(), "ledger")))
    record_property("acknowledged_writes", f"crashes: {CRASHES}, {tally}")
    print(f"\nacknowledged writes under load: crashes: {CRASHES}, {tally}")
    assert tally.lost == [], f"durability: acknowledged commits lost in a crash ({tally})"
    assert tally.never_committed_present == [], (
        f"atomicity: rows whose COMMIT was never sent must not exist ({tally})")


@pytest.mark.own_server
@pytest.mark.parametrize("synchronous_commit, survivors", [
    pytest.param("on", list(range(1, ASYNC_COMMITS + 1)),
                 id="synchronous_commit on: 0 of 10 acknowledged commits lost"),
    pytest.param("off", [],
                 id="synchronous_commit off: 10 of 10 acknowledged commits lost"),
])
def test_synchronous_commit_decides_if_an_acknowledged_commit_survives_a_crash(
        slow_wal_writer, crash_place, synchronous_commit, survivors):
    """Scenario: a session commits rows 1..10, one transaction each, every commit
    acknowledged; the server crashes right after the last one and restarts. The WAL
    writer sleeps (wal_writer_delay = 10 s) and the commits start on a fresh WAL page.

    Outcome: with synchronous_commit on, each COMMIT waited for its WAL flush: all
    10 rows survive. With off, COMMIT answered at once and left its record in the
    server's memory for the WAL writer to write later (at most 3 x wal_writer_delay,
    which is 200 ms by default); the crash came first: all 10 acknowledged commits
    are lost.
    The trade: off saves each commit the wait for the disk (see bench/bench_crash.py
    for the latency of both), and risks the commits of the last moments before a
    crash — never the consistency of what survives (next test).
    """
    create_ledger_on_a_quiet_wal(crash_place)
    session = crash_place()
    execute(session, "set synchronous_commit = %s", (synchronous_commit,))
    session.commit()
    for row in range(1, ASYNC_COMMITS + 1):
        execute(session, "insert into ledger values (%s)", (row,))
        session.commit()

    crash_and_restart(slow_wal_writer)

    assert ids_in(crash_place(), "ledger") == survivors, (
        f"durability with synchronous_commit = {synchronous_commit}: acknowledged commits "
        "surviving a crash right after them")


@pytest.mark.own_server
def test_a_synchronous_commit_makes_every_earlier_commit_durable_too(slow_wal_writer,
                                                                      crash_place):
    """Scenario: with synchronous_commit off and the WAL writer asleep, a session commits
    rows 1..5; row 6 commits with ``set local synchronous_commit = on``; rows 7..10
    commit asynchronously again. The server crashes right after and restarts.

    Outcome: exactly rows 1..6 survive. Flushing the WAL up to commit 6 flushed all
    that came before it in the log, and nothing after: what survives is always a
    prefix of the commit order — a later commit never survives without an earlier one.
    """
    create_ledger_on_a_quiet_wal(crash_place)
    session = crash_place()
    execute(session, "set synchronous_commit = off")
    session.commit()
    for row in range(1, ASYNC_COMMITS + 1):
        if row == 6:
            execute(session, "set local synchronous_commit = on")
        execute(session, "insert into ledger values (%s)", (row,))
        session.commit()

    crash_and_restart(slow_wal_writer)

    assert ids_in(crash_place(), "ledger") == [1, 2, 3, 4, 5, 6], (
        "durability: a synchronous commit makes all earlier commits durable, and no later one")


@pytest.mark.own_server
@pytest.mark.parametrize("synchronous_commit, flushed_when_acknowledged", [
    pytest.param("on", True, id="on: COMMIT returns after the flush of its WAL"),
    pytest.param("off", False, id="off: COMMIT returns with its WAL not yet flushed"),
])
def test_a_commit_is_acknowledged_after_its_wal_is_flushed(slow_wal_writer, crash_place,
                                                           synchronous_commit,
                                                           flushed_when_acknowledged):
    """What the server does at COMMIT, seen in its WAL positions rather than in a setting.

    Scenario: the WAL writer asleep (nothing else flushes the WAL), a session inserts a
    row and reads ``pg_current_wal_insert_lsn()``: how far the WAL has been *written
    into* (in memory), its insert record included. It commits; then it asks
    ``pg_current_wal_flush_lsn()``: how far the WAL has been *flushed* -- written out
    and, with ``fsync = on``, fsynced.

    Outcome: with synchronous_commit on, by the time COMMIT has returned the flush
    position is past the insert (the commit record came after it, and was flushed
    before the answer). With it off COMMIT returns first: the flush position has not
    even reached the insert -- what a crash now would lose (the test above).
    (Whether the flush reaches the *disk* is fsync's business: with ``fsync = off``
    the position moves on without the fsync; only a power cut tells the two apart,
    test_durability_powercut.py.)
    """
    create_ledger_on_a_quiet_wal(crash_place)
    session = crash_place()
    execute(session, "set synchronous_commit = %s", (synchronous_commit,))
    session.commit()
    execute(session, "insert into ledger values (1)")
    written_up_to = one(session, "select pg_current_wal_insert_lsn()::text")
    session.commit()

    assert one(session, "select pg_current_wal_flush_lsn() > %s::pg_lsn",
               (written_up_to,)) is flushed_when_acknowledged, \
        "durability: is the commit's WAL flushed once COMMIT has answered?"
