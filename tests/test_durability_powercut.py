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
  last time something else made the disk durable — here, since the server started.
  Worse, the kernel writes dirty pages back in any order, so the disk may hold a
  checkpoint that points to WAL that never arrived: the cluster does not start.
* ``synchronous_commit = off`` (fsync on): COMMIT answers before the flush; the
  commits of the last moments are lost, never out of order.

Every test here starts from a cluster whose data is durable, runs a workload,
cuts the power, restarts and counts what the server had acknowledged and no
longer has.
"""

import psycopg2
import pytest

from acid_lab.lessons.faults import AcknowledgedWriters
from acid_lab.lessons.queries import execute, one
from acid_lab.servers.connections import ConnectionFactory
from acid_lab.servers.places import PlaceKeeper
from acid_lab.servers.powercut import PowerCutCluster, fuse_missing

pytestmark = [pytest.mark.durability, pytest.mark.own_server]

COMMITS = 20          # single-row commits before one power cut
WRITERS = 2           # threads committing at once in the load test
CUTS = 3              # power cuts in the load test
COMMITS_BETWEEN_CUTS = 20


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
    """A server of this module's own on the lossy disk (fsync on, no autovacuum: no commits
    but the tests' own). Skipped, with what to install, where FUSE is missing."""
    missing = fuse_missing()
    if missing:
        pytest.skip(missing)
    with PowerCutCluster(settings={"autovacuum": "off"}) as server:
        yield server


@pytest.fixture
def ledger(powercut_server):
    """Prepares a durable, empty table ledger(id) in a fresh schema; then the server runs with
    the settings asked for. Call ``ledger(**settings)`` -> a ConnectionFactory to that schema.

    Afterwards the server runs again with its usual settings on durable data, whatever
    the test did (a stop, a clean shutdown of the machine, a start).
    """
    server = powercut_server
    factories: list[ConnectionFactory] = []

    def prepare(**settings: str) -> ConnectionFactory:
        keeper = PlaceKeeper(psycopg2.connect(**server.info.params()))
        try:
            assert one(keeper.admin, "show fsync") == "on"
            schema = keeper.create("create table ledger (id int primary key)")
        finally:
            keeper.close()
        if any(server.settings.get(name) != value for name, value in settings.items()):
            server.stop()  # a clean shutdown with fsync on: all of it is on the platter
            server.restart(**settings)
        factories.append(ConnectionFactory(server.info, schema))
        return factories[-1]

    yield prepare
    for factory in factories:
        factory.close_all()
    if server.running and server.start_settings:
        server.stop()
        server.disk.sync()  # a clean shutdown of the machine writes its page cache out
    if not server.running:
        server.restart()


# --------------------------------------------------------------------------- power cuts


@pytest.mark.parametrize("fsync, survivors", [
    pytest.param("on", list(range(1, COMMITS + 1)),
                 id="fsync on: 0 of 20 acknowledged commits lost"),
    pytest.param("off", [],
                 id="fsync off: 20 of 20 acknowledged commits lost"),
])
def test_fsync_decides_what_a_power_cut_keeps(powercut_server, ledger, fsync, survivors):
    """Scenario: with ``fsync = on`` / ``off``, a session commits rows 1..20 into ledger, one
    transaction each, every commit acknowledged. Then the power is cut (every server
    process SIGKILLed, every write the disk had not been asked to fsync forgotten) and
    the server restarts on what the disk kept.

    Outcome: with fsync on, each COMMIT waited for fdatasync of the WAL: all 20 rows
    are there. With fsync off, PostgreSQL never asked the disk to keep anything: the
    WAL records of all 20 commits lived only in the page cache, and the cluster comes
    back as it was when the server started — ledger empty, 20 of 20 acknowledged
    commits lost.
    """
    connect = ledger(fsync=fsync)
    session = connect()
    commit_rows(session, range(1, COMMITS + 1))

    powercut_server.power_cut()
    powercut_server.restart()

    assert ids_in_ledger(connect()) == survivors, (
        f"durability across a power cut with fsync = {fsync}: the acknowledged rows that "
        "survive")


def test_acknowledged_commits_survive_repeated_power_cuts_under_load(powercut_server, ledger,
                                                                     record_property):
    """Scenario: with fsync on, two writer threads commit one row per transaction and note
    each commit the server acknowledged. Each time 20 more commits are acknowledged,
    the power is cut while they write; the server restarts on what the disk kept and
    the writers go on; three power cuts in all.

    Outcome: every acknowledged row is there: 0 lost, and the cluster came back every
    time. A commit cut off by the power (sent, never answered) may or may not have
    happened; a row whose COMMIT was never sent never appears.
    """
    connect = ledger()
    writers = AcknowledgedWriters(connect.dsn(), "ledger", threads=WRITERS)

    for _ in range(CUTS):
        with writers.running():
            writers.wait_until_acknowledged(len(writers.acknowledged) + COMMITS_BETWEEN_CUTS)
            powercut_server.power_cut()
        powercut_server.restart()

    tally = writers.tally(set(ids_in_ledger(connect())))
    record_property("acknowledged_writes", f"power cuts: {CUTS}, {tally}")
    assert tally.lost == [], f"durability: acknowledged commits lost in a power cut ({tally})"
    assert tally.never_committed_present == [], (
        f"atomicity: rows whose COMMIT was never sent must not exist ({tally})")
