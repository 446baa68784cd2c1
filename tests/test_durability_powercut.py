"""Durability against a power cut: what fsync is for.

The crash tests (test_durability.py) SIGKILL every server process; the machine
lives on, and so does the operating system's page cache — everything PostgreSQL
handed to the kernel with write() is still there when the server restarts, on
disk or not. Those tests would pass with ``fsync = off``. The failure durability
exists for is the machine losing power: then the page cache is gone, and only
what reached the disk stays.

Here the cluster's data folder sits on a disk that can lose power
(``acid_lab/servers/lossy_disk.py``, a FUSE filesystem in the spirit of Jepsen's
LazyFS): it keeps every written byte in its own memory — standing for the page
cache — until that file is fsynced, and only then puts it on its backing folder,
the platter. A power cut SIGKILLs every server process at once, forgets every
write not yet fsynced, and unmounts; the server then restarts on what the
platter kept.

How PostgreSQL makes a commit survive that. COMMIT writes the commit record to
the WAL and, with ``synchronous_commit = on``, waits for the WAL to be flushed:
``fdatasync`` of the WAL file (``wal_sync_method``). Only then does it answer.
Table pages are written lazily and fsynced at checkpoints; after the power cut,
crash recovery replays the WAL from the last checkpoint and rebuilds them.

* ``fsync = on``: the flush is real; an acknowledged commit survives the cut.
* ``fsync = off``: PostgreSQL never calls fsync. Commits are acknowledged as
  fast as the page cache takes them, and a power cut loses all of them since the
  last time something else made the disk durable (here: since the test began).
  Worse, the kernel writes dirty pages back in any order, so the disk may hold a
  checkpoint that points to WAL that never arrived: the cluster does not start.
* ``synchronous_commit = off`` (fsync on): COMMIT answers before the flush; the
  commits of the last moments are lost, never out of order.
* ``full_page_writes = on``: a power cut can tear an 8 KiB page in mid-write (the
  disk stores it in 512-byte sectors). The first change of a page after a
  checkpoint therefore logs the whole page in the WAL, and recovery writes that
  image over whatever half-written page it finds. Off, a torn page stays torn;
  data checksums at least detect it instead of reading it.

Every test here starts from a cluster whose data is durable, runs a workload,
cuts the power, restarts and counts what the server had acknowledged and no
longer has.
"""

import contextlib
import os
import re

import psycopg2
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from acid_lab.lessons.faults import (
    AcknowledgedWriters,
    terminate_backend,
    wait_until_wal_writer_sleeps,
)
from acid_lab.servers import ServerError
from acid_lab.servers.connections import ConnectionFactory
from acid_lab.servers.crashable import SLOW_WAL_WRITER
from acid_lab.servers.lossy_disk import GROUPS, NOTHING, RULES, Writeback
from acid_lab.servers.places import PlaceKeeper
from acid_lab.servers.powercut import PowerCutCluster, bare_lossy_disk, fuse_missing
from acid_lab.servers.queries import execute, one

pytestmark = [pytest.mark.durability, pytest.mark.own_server]

# No autovacuum: no commits but the tests' own. 1 MB of shared buffers: a bulk insert
# soon has to write table pages out (to the page cache) long before a checkpoint.
MODULE_SERVER = {"autovacuum": "off", "shared_buffers": "1MB"}
COMMITS = 10          # single-row commits before one failure
WRITERS = 2           # threads committing at once in the load test
COMMITS_BETWEEN_CUTS = 10

LEDGER_AND_FILLER = ("create table ledger (id int primary key);"
                     " create table filler (id int, pad text)")

# Server settings of the table test. Every one has a WAL writer that wakes every 10 s
# only (and no autovacuum): WAL is flushed by a synchronous COMMIT or not at all.
SYNCHRONOUS = {"fsync": "on", "synchronous_commit": "on", **SLOW_WAL_WRITER}
ASYNCHRONOUS = {"fsync": "on", "synchronous_commit": "off", **SLOW_WAL_WRITER}
NO_FSYNC = {"fsync": "off", "synchronous_commit": "on", **SLOW_WAL_WRITER}


# The pinned adversarial writeback: the checkpoint's pg_control reaches the platter, the
# WAL it points to does not.
CHECKPOINT_WITHOUT_ITS_WAL = Writeback(pg_control="all", wal="none", relations="none",
                                       other="none")
WRITEBACKS = st.builds(Writeback, **{group: st.sampled_from(RULES) for group in GROUPS})
# The load test's power cuts: what of the page cache reaches the platter at each
CUT_WRITEBACKS = (NOTHING, Writeback(pg_control="all", wal="torn-512", relations="alternate",
                                     other="torn-4096"))


# --------------------------------------------------------------------------- helper verbs


def ids_in_ledger(conn) -> list[int]:
    with conn.cursor() as cur:
        cur.execute("select id from ledger order by id")
        return [row[0] for row in cur.fetchall()]


def commit_rows(conn, ids) -> None:
    """One transaction per row; each commit() returns once the server acknowledged it."""
    for row_id in ids:
        execute(conn, "insert into ledger values (%s)", (row_id,))
        conn.commit()


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def powercut_server():
    """A server of this module's own on the lossy disk (fsync on). Skipped, with what to
    install, where FUSE is missing."""
    missing = fuse_missing()
    if missing:
        pytest.skip(missing)
    with PowerCutCluster(settings=MODULE_SERVER) as server:
        yield server


@pytest.fixture
def ledger(powercut_server):
    """``ledger(**settings)``: the server running with these settings, and a ConnectionFactory
    to a fresh schema holding empty tables ledger(id) and filler(id, pad), on the platter
    already.

    The table is created with a synchronous commit, then the disk writes everything
    back (as the kernel's own writeback would within half a minute): whatever the
    settings, the test starts from durable data. Then a fresh WAL segment begins
    and the WAL writer is asleep: nothing flushes the WAL but a synchronous COMMIT.
    """
    server = powercut_server
    factories: list[ConnectionFactory] = []

    def prepare(**settings: str) -> ConnectionFactory:
        running_with = {**server.settings, **server.start_settings}
        if not server.running or running_with != {**server.settings, **settings}:
            if server.running:
                server.stop()
            server.restart(**settings)
        keeper = PlaceKeeper(psycopg2.connect(**server.info.params()))
        try:
            execute(keeper.admin, "set synchronous_commit = on")
            schema = keeper.create(LEDGER_AND_FILLER)
            server.disk.sync()
            execute(keeper.admin, "select pg_switch_wal()")
            wait_until_wal_writer_sleeps(keeper.admin)
        finally:
            keeper.close()
        factories.append(ConnectionFactory(server.info, schema))
        return factories[-1]

    yield prepare
    for factory in factories:
        factory.close_all()
    if not server.running:
        server.restart(**server.start_settings)


# --------------------------------------------------------------------------- the disk itself


def test_the_disk_keeps_what_was_fsynced_and_forgets_the_rest():
    """Scenario: on a lossy disk with no server on it, a file that was on the platter is
    overwritten without fsync; a new file is written and fsynced; another is written
    with O_DSYNC; then a file is created and one renamed, with no fsync after them.
    The power is cut.

    Outcome: the platter holds the old contents of the overwritten file, the fsynced
    file and the O_DSYNC one; the later create and rename are undone — exactly what
    a machine keeps when its page cache is lost.
    """
    missing = fuse_missing()
    if missing:
        pytest.skip(missing)
    with bare_lossy_disk() as disk:
        (disk.backing / "old").write_bytes(b"on the platter")
        mounted = disk.mountpoint
        (mounted / "old").write_bytes(b"in the page cache only")
        assert (mounted / "old").read_bytes() == b"in the page cache only", (
            "reads must see writes not yet fsynced")
        kept = os.open(mounted / "fsynced", os.O_CREAT | os.O_WRONLY, 0o600)
        os.write(kept, b"fsynced")
        os.fsync(kept)
        os.close(kept)
        synchronous = os.open(mounted / "dsync", os.O_CREAT | os.O_WRONLY | os.O_DSYNC, 0o600)
        os.write(synchronous, b"written with O_DSYNC")
        os.close(synchronous)
        (mounted / "created later").write_bytes(b"never fsynced")
        os.rename(mounted / "fsynced", mounted / "renamed later")

        disk.cut(NOTHING)

        platter = {path.name: path.read_bytes() for path in disk.backing.iterdir()}
    assert platter == {"old": b"on the platter", "fsynced": b"fsynced",
                       "dsync": b"written with O_DSYNC"}, (
        "a power cut keeps what was fsynced and nothing else")


# --------------------------------------------------------------------------- the failures


def kill_the_connection(server, connect, session) -> None:
    """pg_terminate_backend of the session's server process; the server lives on."""
    terminate_backend(connect(autocommit=True), session.info.backend_pid)


def kill_the_server(server, connect, session) -> None:
    """SIGKILL every server process; the machine (and its page cache) lives on."""
    server.crash()
    server.restart(**server.start_settings)


def cut_the_power(server, connect, session) -> None:
    """SIGKILL every server process and forget every write the disk was not made to keep."""
    server.power_cut()
    server.restart(**server.start_settings)


# --------------------------------------------------------------------------- the table


@pytest.mark.parametrize("failure, server_settings, lost", [
    pytest.param(kill_the_connection, SYNCHRONOUS, 0,
                 id="killed connection, fsync on: 0 of 10 acknowledged commits lost"),
    pytest.param(kill_the_server, SYNCHRONOUS, 0,
                 id="killed server, fsync on: 0 of 10 lost"),
    pytest.param(cut_the_power, SYNCHRONOUS, 0,
                 id="power cut, fsync on: 0 of 10 lost"),
    pytest.param(kill_the_connection, ASYNCHRONOUS, 0,
                 id="killed connection, synchronous_commit off: 0 of 10 lost"),
    pytest.param(kill_the_server, ASYNCHRONOUS, 10,
                 id="killed server, synchronous_commit off: 10 of 10 lost"),
    pytest.param(cut_the_power, ASYNCHRONOUS, 10,
                 id="power cut, synchronous_commit off: 10 of 10 lost"),
    pytest.param(kill_the_connection, NO_FSYNC, 0,
                 id="killed connection, fsync off: 0 of 10 lost"),
    pytest.param(kill_the_server, NO_FSYNC, 0,
                 id="killed server, fsync off: 0 of 10 lost"),
    pytest.param(cut_the_power, NO_FSYNC, 10,
                 id="power cut, fsync off: 10 of 10 lost"),
])
def test_acknowledged_commits_lost_by_failure_and_setting(powercut_server, ledger, failure,
                                                          server_settings, lost):
    """Scenario: a session commits rows 1..10 into ledger, one transaction each, every commit
    acknowledged. Then one failure: its connection is killed (pg_terminate_backend), or
    the server is (SIGKILL of every server process: a process crash, the page cache
    survives), or the power is cut (the page cache is lost too); after the last two
    the server restarts with the same settings. The rows are counted.

    Outcome, acknowledged commits lost:

    ======================  ==================  =========================  =========
    failure                 fsync on            synchronous_commit off     fsync off
    ======================  ==================  =========================  =========
    killed connection       0                   0                          0
    killed server           0                   10                         0
    power cut               0                   10                         10
    ======================  ==================  =========================  =========

    A killed connection loses nothing: the server has the commits. A killed server
    loses the asynchronous commits still in its own memory (the WAL writer was asleep),
    but fsync off costs nothing yet: the kernel still holds the WAL. Only a power cut
    shows what fsync is for: without it, every commit since the data was last
    written back is gone.
    """
    connect = ledger(**server_settings)
    session = connect()
    commit_rows(session, range(1, COMMITS + 1))

    failure(powercut_server, connect, session)

    survivors = ids_in_ledger(connect())
    assert COMMITS - len(survivors) == lost, (
        f"durability: acknowledged commits lost by {failure.__name__} with {server_settings} "
        f"(survivors: {survivors})")
    assert survivors == list(range(1, len(survivors) + 1)), (
        "what survives is always a prefix of the commit order")


def test_asynchronous_commits_lose_the_unflushed_tail_and_keep_a_prefix(powercut_server,
                                                                         ledger):
    """Scenario: with synchronous_commit off (fsync on) and the WAL writer asleep, a session
    commits rows 1..5; row 6 commits with ``set local synchronous_commit = on``; rows
    7..10 commit asynchronously again. The power is cut; the server restarts.

    Outcome: exactly rows 1..6 survive, and the cluster starts. Flushing the WAL up to
    commit 6 made every earlier commit durable too; the commits after it lived in
    memory only. What survives is a prefix of the commit order: never a later commit
    without an earlier one.
    """
    connect = ledger(**ASYNCHRONOUS)
    session = connect()
    for row in range(1, COMMITS + 1):
        if row == 6:
            execute(session, "set local synchronous_commit = on")
        execute(session, "insert into ledger values (%s)", (row,))
        session.commit()

    powercut_server.power_cut()
    powercut_server.restart()

    assert ids_in_ledger(connect()) == [1, 2, 3, 4, 5, 6], (
        "durability: a synchronous commit makes every earlier commit durable, and no later one")


def test_acknowledged_commits_survive_repeated_power_cuts_under_load(powercut_server, ledger,
                                                                     record_property):
    """Scenario: with fsync on, two writer threads commit one row per transaction and note
    each commit the server acknowledged. Each time 10 more commits are acknowledged,
    the power is cut while they write; the server restarts on what the disk kept and
    the writers go on. Two power cuts: the first forgets every unsynced write, at the
    second they reach the platter torn or out of order (``CUT_WRITEBACKS``).

    Outcome: every acknowledged row is there: 0 lost, and the cluster came back every
    time. A commit cut off by the power (sent, never answered) may or may not have
    happened; a row whose COMMIT was never sent never appears.
    """
    connect = ledger(**SYNCHRONOUS)
    writers = AcknowledgedWriters(connect.dsn(), "ledger", threads=WRITERS)

    for writeback in CUT_WRITEBACKS:
        with writers.running():
            writers.wait_until_acknowledged(len(writers.acknowledged) + COMMITS_BETWEEN_CUTS)
            powercut_server.power_cut(writeback)
        powercut_server.restart(**SYNCHRONOUS)

    tally = writers.tally(set(ids_in_ledger(connect())))
    record_property("acknowledged_writes", f"power cuts: {len(CUT_WRITEBACKS)}, {tally}")
    assert tally.lost == [], f"durability: acknowledged commits lost in a power cut ({tally})"
    assert tally.never_committed_present == [], (
        f"atomicity: rows whose COMMIT was never sent must not exist ({tally})")


# --------------------------------------------------------------------------- adversarial writeback


def commits_around_a_checkpoint(connect: ConnectionFactory):
    """Rows 1..10 committed, CHECKPOINT, rows 11..20 committed, then a bulk insert into
    filler left open: unsynced WAL and table pages are in the page cache at the cut."""
    session = connect()
    commit_rows(session, range(1, 11))
    execute(session, "checkpoint")
    session.commit()
    commit_rows(session, range(11, 21))
    execute(session, "insert into filler select g, repeat('x', 400) from generate_series(1, 300) g")
    return session


def server_words(log: str) -> str:
    """The first PANIC or FATAL message of the log, word for word, without what varies:
    the WAL position PostgreSQL 17+ adds, the relation's file."""
    for line in log.splitlines():
        words = re.search(r"(PANIC|FATAL):  .*", line)
        if words:
            return re.sub(r" (at [0-9A-F]+/[0-9A-F]+|of relation \S+)$", "", words[0])
    return "(nothing logged)"


def start_outcome(server, connect) -> str:
    """'starts: N of 20 acknowledged commits lost', or 'does not start: ' and the server's
    PANIC or FATAL message, word for word (without the WAL position PostgreSQL 17+ adds)."""
    try:
        server.restart(**server.start_settings)
    except ServerError:
        return "does not start: " + server_words(server.startup_log())
    lost = 20 - len(ids_in_ledger(connect()))
    return f"starts: {lost} of 20 acknowledged commits lost"


@pytest.mark.parametrize("server_settings, outcome", [
    pytest.param(SYNCHRONOUS, "starts: 0 of 20 acknowledged commits lost",
                 id="fsync on: the cluster starts, 0 of 20 lost"),
    pytest.param(NO_FSYNC, "does not start: PANIC:  could not locate a valid checkpoint record",
                 id="fsync off: the cluster does not start"),
])
def test_a_checkpoint_written_back_without_its_wal(powercut_server, ledger, server_settings,
                                                   outcome):
    """Scenario: a session commits rows 1..10, runs CHECKPOINT, commits rows 11..20 and
    starts a bulk insert. The power is cut, and of the writes still in the page cache
    only the new pg_control reaches the platter — the kernel writes dirty pages back
    in any order: ``Writeback(pg_control='all', wal='none', relations='none',
    other='none')``. The server restarts.

    Outcome: with fsync on the checkpoint had fsynced the WAL and the pages before it
    wrote pg_control (and fsynced that too): nothing of it was left to reorder; the
    cluster starts with all 20 rows. With fsync off, pg_control now names a
    checkpoint record that never reached the disk, and the server refuses to start:
    "PANIC:  could not locate a valid checkpoint record". (Then the test puts the
    old pg_control back, so that the server starts again for the next test.)
    """
    connect = ledger(**server_settings)
    control_file = powercut_server.platter / "global" / "pg_control"
    durable_control = control_file.read_bytes()
    commits_around_a_checkpoint(connect)

    powercut_server.power_cut(CHECKPOINT_WITHOUT_ITS_WAL)
    observed = start_outcome(powercut_server, connect)
    if not powercut_server.running:  # repair the platter for the tests after this one
        powercut_server.power_cut()
        control_file.write_bytes(durable_control)
        powercut_server.restart(**powercut_server.start_settings)

    assert observed == outcome, (
        f"durability: what a power cut with a reordered writeback leaves, fsync = "
        f"{server_settings['fsync']}\n{powercut_server.log_tail()}")


@settings(max_examples=2)
@given(writeback=WRITEBACKS)
@example(writeback=CHECKPOINT_WITHOUT_ITS_WAL)  # the one that breaks a cluster with fsync off
def test_with_fsync_on_no_writeback_order_loses_an_acknowledged_commit(powercut_server, ledger,
                                                                        writeback):
    """Scenario: with fsync on, rows 1..10 commit, CHECKPOINT, rows 11..20 commit, a bulk
    insert into filler is left open (its WAL and table pages partly written out, not
    fsynced). The power is cut; the writes still in the page cache reach the platter
    as the writeback says — per group of files (pg_control, WAL, tables, the rest):
    none, all, every other one, or each torn after its first 512 bytes or 4 KiB.
    Hypothesis chooses the writebacks (two); one is pinned: the writeback that leaves
    a cluster with fsync off unable to start (previous test).

    Outcome, for every writeback: the cluster starts, all 20 acknowledged rows are
    there, the open insert left nothing. Torn WAL ends replay at the first record
    whose checksum fails (all of it after the last flush); a torn table page is
    rebuilt from the full-page image the WAL holds of it since the checkpoint. A
    failing writeback is printed as a literal to paste into ``@example``.
    """
    connect = ledger(**SYNCHRONOUS)
    commits_around_a_checkpoint(connect)

    cut = powercut_server.power_cut(writeback)
    replay = f"replay with @example(writeback={writeback!r}); the cut: {cut}"
    observed = start_outcome(powercut_server, connect)

    assert observed == "starts: 0 of 20 acknowledged commits lost", (
        f"durability with fsync on, whatever order the page cache was written back in; "
        f"{replay}\n{powercut_server.log_tail()}")
    assert one(connect(), "select count(*) from filler") == 0, (
        f"atomicity: the insert open at the cut must leave nothing; {replay}")


# --------------------------------------------------------------------------- full-page writes


EVICTOR_ROWS = 12000  # about 300 pages: more than twice the 128 shared buffers


@pytest.fixture(scope="module")
def evictor(powercut_server):
    """A durable table public.evictor(id, pad) of about 300 pages with an index, vacuumed
    (its hint bits set): reading it by index pushes every other page out of the 1 MB of
    shared buffers, dirty ones written to the page cache, not fsynced."""
    with contextlib.closing(psycopg2.connect(**powercut_server.info.params())) as admin:
        admin.autocommit = True
        execute(admin, "create table public.evictor (id int primary key, pad text)")
        execute(admin, "insert into public.evictor select g, repeat('x', 180) "
                       "from generate_series(1, %s) g", (EVICTOR_ROWS,))
        execute(admin, "vacuum (freeze) public.evictor")
    return "public.evictor"


def push_out_of_shared_buffers(session, evictor: str) -> None:
    """Read every page of ``evictor`` through its index: the clock sweep passes all shared
    buffers more than twice, and writes each dirty page it evicts (without fsync)."""
    execute(session, "set enable_seqscan = off; set enable_bitmapscan = off")
    one(session, f"select count(pad) from {evictor} where id > 0")


@pytest.mark.parametrize("full_page_writes, outcome", [
    pytest.param("on", "starts: row 1 reads 'after'",
                 id="full_page_writes on: the torn page is rebuilt from its image in the WAL"),
    pytest.param("off", "does not start: FATAL:  invalid page in block 0",
                 id="full_page_writes off: the checksum finds the torn page"),
])
def test_a_page_torn_by_the_power_cut(powercut_server, ledger, evictor, full_page_writes,
                                      outcome):
    """Scenario: with fsync on and data checksums, table notes holds row 1 = 'before' on
    one page, durable (a clean restart with ``full_page_writes`` on / off made a
    checkpoint). A session commits ``update notes set note = 'after' where id = 1``;
    then the page is pushed out of shared buffers, so the server writes it to the page
    cache — it would be fsynced at the next checkpoint. The power is cut while only
    the first 512 bytes of that 8 KiB write have reached the platter
    (``Writeback(relations='torn-512', files=(<its file>,))``; every other unsynced
    write is lost): a torn page. The server restarts.

    Outcome: with full_page_writes on, the first change of the page after the
    checkpoint put a full image of it in the WAL, and recovery writes that image over
    the torn page: the cluster starts and row 1 reads 'after'. With it off, recovery
    has only the update record to apply to a page that is half new, half old; the page
    checksum says so ("WARNING:  page verification failed", then "FATAL:  invalid page
    in block 0 of relation ...") and the server refuses to start rather than read a
    corrupt page. (Then the test puts the durable page back, so that the server starts
    again for the next test.)
    """
    connect = ledger(**SYNCHRONOUS)
    session = connect()
    execute(session, "create table notes (id int, note text); "
                     "insert into notes values (1, 'before')")
    session.commit()
    table_path = one(session, "select pg_relation_filepath('notes')")
    table_file = powercut_server.platter / table_path
    session.close()
    powercut_server.stop()
    powercut_server.restart(**SYNCHRONOUS, full_page_writes=full_page_writes)
    durable_page = table_file.read_bytes()
    session = connect()
    execute(session, "update notes set note = 'after' where id = 1")
    session.commit()
    push_out_of_shared_buffers(session, evictor)

    powercut_server.power_cut(Writeback(relations="torn-512", files=(table_path,)))
    observed = page_outcome(powercut_server, connect)
    if not powercut_server.running:  # repair the platter for the tests after this one
        powercut_server.power_cut()
        table_file.write_bytes(durable_page)
        powercut_server.restart(**SYNCHRONOUS)

    assert observed == outcome, (
        f"durability across a torn page with full_page_writes = {full_page_writes}\n"
        f"{powercut_server.log_tail()}")


def page_outcome(server, connect) -> str:
    """"starts: row 1 reads '...'", or 'does not start: ' and the server's words."""
    try:
        server.restart(**server.start_settings)
    except ServerError:
        return "does not start: " + server_words(server.startup_log())
    return f"starts: row 1 reads '{one(connect(), 'select note from notes where id = 1')}'"
