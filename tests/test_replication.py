"""Beyond one server: streaming replication, and what a failover keeps of your commits.

What it promises. Durability on one machine ends where the machine ends. A
*hot standby* is a second server that receives the primary's write-ahead log
(WAL) as it is written, replays it, and answers read-only queries; when the
primary's machine is lost, the standby is *promoted* and takes over. Whether
a commit the primary acknowledged survives that failover depends on one
setting, and it is the setting most systems leave at its default.

* **Asynchronous** (the default: ``synchronous_standby_names = ''``): COMMIT
  returns once the WAL is flushed on the primary; the standby gets it a moment
  later. Lose the primary in that moment and promote the standby: commits the
  client was told about are gone. Not a crash of a process -- those are
  replayed from the primary's own WAL -- but a lost machine (here: SIGKILL of
  every primary process and its folder removed, never to come back).
* **Synchronous** (the standby named in ``synchronous_standby_names`` on the
  primary): COMMIT also waits for the standby, as far as
  ``synchronous_commit`` asks -- ``remote_write`` (written to the standby's
  OS), ``on`` (flushed to the standby's disk), ``remote_apply`` (replayed:
  visible to queries on the standby). While it waits, the session shows the
  wait event ``SyncRep`` in pg_stat_activity; with the standby unreachable, it
  waits for ever. Cancelling that wait does not undo the commit: the
  transaction committed locally before the wait began. PostgreSQL says so in a
  WARNING -- the client sees a COMMIT that "succeeded" but was never
  replicated, the famous subtlety of synchronous replication.
* **Reading your own writes** on a standby needs ``remote_apply``: with ``on``
  or ``remote_write`` the commit has arrived at the standby but may not be
  replayed yet, and a read there is stale.
* **Isolation on a standby**: every transaction is read-only; SERIALIZABLE is
  refused (the standby cannot see the primary's read/write dependencies),
  REPEATABLE READ and READ COMMITTED are allowed.

How the tests make it deterministic: the module starts a primary and a hot
standby of its own (``pg_basebackup -R`` with a replication slot, 127.0.0.1).
The standby's WAL receiver is cut off (``alter system set primary_conninfo =
''`` + ``pg_reload_conf()`` on the standby) and replay paused
(``pg_wal_replay_pause()``) exactly when a scenario needs it, and every wait is
decided by the servers' own views: pg_stat_replication on the primary,
pg_stat_wal_receiver and ``pg_last_wal_replay_lsn()`` on the standby, the
``SyncRep`` wait event of the committing session. With ``--dsn`` and
``--standby-dsn`` the read-your-writes and standby-isolation tests run against
a user's primary and standby instead; nothing there is killed or reconfigured.
"""

from __future__ import annotations

import contextlib

import psycopg2
import pytest
from psycopg2 import errors

from acid_lab.lessons.failover import AFTER_CUT_OFF, lost_at_failover
from acid_lab.lessons.faults import AcknowledgedWriters
from acid_lab.lessons.schema import HERMITAGE
from acid_lab.servers.connections import ConnectionFactory
from acid_lab.servers.places import PlaceKeeper
from acid_lab.servers.powercut import fuse_missing
from acid_lab.servers.queries import execute, one, rows
from acid_lab.servers.replication import (
    STANDBY_NAME,
    Commit,
    ReplicationPair,
    admin_connection,
    pause_replay,
    resume_replay,
    wait_for,
    wait_replayed,
)
from acid_lab.servers.target import parse_dsn

COMMITTED, WAITS = Commit.COMMITTED, Commit.WAITING
ASYNCHRONOUS = ""            # synchronous_standby_names: nobody to wait for
SYNCHRONOUS = STANDBY_NAME   # synchronous_standby_names: the pair's standby
FAILOVER_ROUNDS = 2          # failovers under load per setting
WRITERS = 2                  # writer threads under load
LOAD_BEFORE_CUT_OFF = 5      # acknowledged commits per round before the cut-off
LOAD_AFTER_CUT_OFF = 5       # ... and after it (only asynchronous commits get there)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def pair():
    """A primary and a hot standby of this module's own, shared by its tests.

    Tests that lose the primary leave the promoted standby as the primary; the
    next test's ``streaming_pair`` clones a new standby from it.
    """
    with ReplicationPair() as servers:
        yield servers


@pytest.fixture
def streaming_pair(pair):
    """The module's pair, reset: a standby streaming and replaying, asynchronous."""
    pair.reset()
    return pair


class Replica:
    """A place (schema with the demo table) on a primary, and the same place read on its standby."""

    def __init__(self, primary: ConnectionFactory, standby: ConnectionFactory, *,
                 pair: ReplicationPair | None):
        self.primary = primary
        self.standby = standby
        self.pair = pair                      # None: a user's servers, not to be reconfigured
        self.primary_admin = admin_connection(primary.info)
        self.standby_admin = admin_connection(standby.info)

    def use(self, names: str) -> None:
        """Make the primary name ``names`` as synchronous standby, or skip if it cannot."""
        if self.pair is not None:
            self.pair.set_synchronous(names)
            return
        configured = one(self.primary_admin, "show synchronous_standby_names")
        standbys = rows(self.primary_admin, "select sync_state from pg_stat_replication")
        if names == ASYNCHRONOUS and configured:
            pytest.skip(f"the --dsn server names synchronous standbys ({configured!r})")
        if names != ASYNCHRONOUS and standbys != [("sync",)]:
            pytest.skip("needs the --standby-dsn server as the one synchronous standby of the "
                        f"--dsn server (pg_stat_replication.sync_state there: {standbys})")

    def close(self) -> None:
        for conn in (self.primary_admin, self.standby_admin):
            with contextlib.suppress(psycopg2.Error):
                conn.close()
        self.primary.close_all()
        self.standby.close_all()


@pytest.fixture
def replica(request, pytestconfig):
    """The demo table on a primary and its hot standby: the module's pair, or the user's.

    With --dsn, the standby named by --standby-dsn (skipped without it); the
    test's place is made on the run's database and read there on the standby.
    """
    if pytestconfig.getoption("dsn"):
        standby_info = request.getfixturevalue("existing_standby")
        primary = request.getfixturevalue("connect")
        # the run's database and the place reach the standby by replay
        with contextlib.closing(admin_connection(primary.info)) as on_primary, \
                contextlib.closing(admin_connection(
                    parse_dsn(pytestconfig.getoption("standby_dsn")))) as on_standby:
            wait_replayed(on_primary, on_standby)
        made = Replica(primary, ConnectionFactory(standby_info, primary.schema), pair=None)
        try:
            yield made
        finally:
            made.close()
        return
    servers = request.getfixturevalue("streaming_pair")
    keeper = PlaceKeeper(admin_connection(servers.primary.info))
    schema = keeper.create(HERMITAGE)
    made = Replica(ConnectionFactory(servers.primary.info, schema),
                   ConnectionFactory(servers.standby.info, schema), pair=servers)
    try:
        wait_replayed(made.primary_admin, made.standby_admin)
        yield made
    finally:
        made.close()
        keeper.drop(schema)
        keeper.close()


# --------------------------------------------------------------------------- reading on a standby


@pytest.mark.replication
@pytest.mark.parametrize("names, synchronous_commit, commit, standby_reads", [
    pytest.param(ASYNCHRONOUS, "on", COMMITTED, 10,
                 id="asynchronous: COMMIT returns, the standby reads the old value"),
    pytest.param(SYNCHRONOUS, "remote_write", COMMITTED, 10,
                 id="remote_write: COMMIT returns, the standby reads the old value"),
    pytest.param(SYNCHRONOUS, "on", COMMITTED, 10,
                 id="on: COMMIT returns, the standby reads the old value"),
    pytest.param(SYNCHRONOUS, "remote_apply", WAITS, 11,
                 id="remote_apply: COMMIT waits for replay, then the standby reads 11"),
])
def test_reading_your_own_write_on_the_standby(replica, names, synchronous_commit, commit,
                                               standby_reads):
    """Read-your-writes across servers: commit on the primary, read on the standby at once.

    Scenario: the standby's replay is paused (``select pg_wal_replay_pause()``
    on the standby: WAL still arrives and is flushed, it is not applied). A
    session on the primary runs ``set synchronous_commit = ...; update test set
    value = 11 where id = 1; commit``. If COMMIT waits (wait event SyncRep),
    replay is resumed (``pg_wal_replay_resume()``) and COMMIT returns. Right
    after COMMIT has returned, a session on the standby reads row 1.
    Outcome: only remote_apply waits for the standby to *apply* the commit,
    so only there the standby reads 11; with on and remote_write the standby
    has the commit on disk but reads 10 -- a stale read of your own write.
    """
    replica.use(names)
    reader = replica.standby(autocommit=True)
    try:
        pause_replay(replica.standby_admin)
    except errors.InsufficientPrivilege:
        pytest.skip("pausing WAL replay on the standby needs a superuser there")
    try:
        writer = replica.primary()
        execute(writer, f"set synchronous_commit = {synchronous_commit}")
        execute(writer, "update test set value = 11 where id = 1")
        pending = Commit(writer)
        settled = pending.settle(replica.primary_admin)
        if settled == WAITS:
            resume_replay(replica.standby_admin)
        pending.finish()
        read = one(reader, "select value from test where id = 1")
    finally:
        resume_replay(replica.standby_admin)
    assert (settled, pending.error, read) == (commit, None, standby_reads), (
        "read-your-writes on a standby holds with remote_apply only")


@pytest.mark.replication
@pytest.mark.parametrize("begin, then, outcome", [
    pytest.param("begin isolation level serializable", "select value from test where id = 1",
                 errors.FeatureNotSupported, id="serializable: refused"),
    pytest.param("begin isolation level repeatable read", "select value from test where id = 1",
                 10, id="repeatable read: allowed, reads 10"),
    pytest.param("begin isolation level read committed", "select value from test where id = 1",
                 10, id="read committed: allowed, reads 10"),
    pytest.param("begin", "update test set value = 11 where id = 1",
                 errors.ReadOnlySqlTransaction, id="a write: refused"),
    pytest.param("begin", "select value from test where id = 1 for update",
                 errors.ReadOnlySqlTransaction, id="select for update: refused"),
])
def test_what_a_hot_standby_refuses(replica, begin, then, outcome):
    """Isolation levels and writes on a hot standby.

    Scenario: on the standby, a session runs ``begin ...`` and then one statement.
    Outcome: SERIALIZABLE is refused (0A000, "cannot use serializable mode in
    a hot standby"; the hint suggests REPEATABLE READ); REPEATABLE READ and
    READ COMMITTED read as usual; a write, and a row lock (FOR UPDATE), are
    refused as in any read-only transaction (25006).
    """
    session = replica.standby(autocommit=True)
    try:
        execute(session, begin)
        seen = one(session, then)
    except psycopg2.Error as error:
        seen = type(error)
    finally:
        execute(session, "rollback")
    assert seen == outcome


@pytest.mark.replication
def test_repeatable_read_on_the_standby_keeps_its_snapshot_while_replay_goes_on(replica):
    """A standby's snapshot, like a primary's, is fixed for a repeatable read transaction.

    Scenario: on the standby, T1 runs ``begin isolation level repeatable read``
    and reads row 1 (10). On the primary, row 1 is updated to 11 and
    committed; the standby replays it (its pg_last_wal_replay_lsn() reaches
    the primary's pg_current_wal_lsn()). T1 reads row 1 again; a new session
    on the standby reads it too.
    Outcome: T1 still reads 10 (its snapshot); the new session reads 11.
    """
    t1 = replica.standby(autocommit=True)
    execute(t1, "begin isolation level repeatable read")
    first = one(t1, "select value from test where id = 1")
    execute(replica.primary(autocommit=True), "update test set value = 11 where id = 1")
    wait_replayed(replica.primary_admin, replica.standby_admin)
    again = one(t1, "select value from test where id = 1")
    execute(t1, "commit")
    assert (first, again, one(replica.standby(), "select value from test where id = 1")) == \
        (10, 10, 11)


# ----------------------------------------------------------------------- committing with a standby


@pytest.mark.replication
@pytest.mark.own_server
@pytest.mark.parametrize("names, synchronous_commit, commit", [
    pytest.param(ASYNCHRONOUS, "on", COMMITTED, id="asynchronous: COMMIT returns"),
    pytest.param(SYNCHRONOUS, "remote_write", WAITS, id="remote_write: COMMIT waits"),
    pytest.param(SYNCHRONOUS, "on", WAITS, id="on: COMMIT waits"),
    pytest.param(SYNCHRONOUS, "remote_apply", WAITS, id="remote_apply: COMMIT waits"),
])
def test_commit_with_the_standby_cut_off(streaming_pair, names, synchronous_commit, commit):
    """A network failure between primary and standby (the standby's WAL receiver cut off).

    Scenario: the primary names ``synchronous_standby_names`` as the id says
    (ALTER SYSTEM + pg_reload_conf()); the standby is cut off (``alter system
    set primary_conninfo = ''`` + ``pg_reload_conf()`` on the standby, until
    pg_stat_wal_receiver there and pg_stat_replication on the primary are
    empty). A session runs ``set synchronous_commit = ...; create table
    ledger (id int); commit``.
    Outcome: asynchronously, COMMIT returns at once; synchronously, it waits
    -- pg_stat_activity shows the session with wait event SyncRep -- until the
    standby comes back (it does here, and COMMIT returns).
    """
    pair = streaming_pair
    pair.set_synchronous(names)
    primary = pair.admin(pair.primary)
    execute(primary, "drop table if exists ledger")
    pair.cut_off_standby()
    session = psycopg2.connect(**pair.primary.info.params())
    execute(session, f"set synchronous_commit = {synchronous_commit}")
    execute(session, "create table ledger (id int)")
    pending = Commit(session)
    try:
        settled = pending.settle(primary)
        pair.reconnect_standby()
        pending.finish()
    finally:
        pending.abandon(primary)
    assert (settled, pending.error) == (commit, None)


@pytest.mark.replication
@pytest.mark.own_server
def test_cancelling_a_synchronous_commit_leaves_it_committed(streaming_pair):
    """The famous subtlety: a cancelled synchronous COMMIT has committed all the same.

    Scenario: the primary names the standby synchronous; the standby is cut
    off. A session inserts row 3 and commits; COMMIT waits (wait event
    SyncRep). Another session runs ``select pg_cancel_backend(pid)`` on it.
    Outcome: COMMIT returns *without an error*; PostgreSQL sends a WARNING
    ("canceling wait for synchronous replication due to user request") with
    DETAIL "The transaction has already committed locally, but might not have
    been replicated to the standby." Row 3 is visible on the primary at once,
    and not on the standby; once the standby is back, there too.
    """
    pair = streaming_pair
    pair.set_synchronous(SYNCHRONOUS)
    primary = pair.admin(pair.primary)
    execute(primary, "drop table if exists ledger; create table ledger (id int)")
    pair.wait_caught_up()
    pair.cut_off_standby()
    session = psycopg2.connect(**pair.primary.info.params())
    execute(session, "insert into ledger values (3)")
    pending = Commit(session)
    try:
        settled = pending.settle(primary)
        execute(primary, "select pg_cancel_backend(%s)", (pending.pid,))
        pending.finish()
        notices = list(session.notices)
        on_primary = one(primary, "select count(*) from ledger")
        on_standby_cut_off = one(pair.admin(pair.standby), "select count(*) from ledger")
        pair.reconnect_standby()
        pair.wait_caught_up()
        on_standby_later = one(pair.admin(pair.standby), "select count(*) from ledger")
    finally:
        pending.abandon(primary)
    assert (settled, pending.error) == (WAITS, None), "COMMIT waited, and did not fail"
    assert notices == [
        "WARNING:  canceling wait for synchronous replication due to user request\n"
        "DETAIL:  The transaction has already committed locally, but might not have been "
        "replicated to the standby.\n"]
    assert (on_primary, on_standby_cut_off, on_standby_later) == (1, 0, 1), (
        "the cancelled COMMIT committed locally; the standby gets it once back")


# --------------------------------------------------------------------------- failover


@pytest.mark.replication
@pytest.mark.own_server
def test_the_old_primary_rewound_loses_the_commits_only_it_had(streaming_pair):
    """After a failover, the old primary comes back -- and must forget what only it had.

    Scenario: asynchronous. The primary commits ``alice pays bob 10``; the
    standby replays it. The standby is cut off; the primary commits ``bob pays
    carol 5`` and ``carol pays dave 7`` (both acknowledged). The primary
    crashes (SIGKILL; its disk survives) and the standby is promoted; the new
    primary commits ``dave pays erin 2``. The old primary is restarted on its
    own (crash recovery replays its WAL), looked at, stopped, then rewound
    (``pg_rewind -R --source-server <new primary>``) and started as the new
    primary's standby.
    Outcome: the two servers have diverged: the old one, on the old timeline,
    holds alice, bob, carol; the new one, on the next timeline, alice and dave.
    After pg_rewind the old primary follows the new one and holds alice and
    dave: the acknowledged commits "bob pays carol 5" and "carol pays dave 7"
    are gone for good.
    """
    pair = streaming_pair
    primary = pair.admin(pair.primary)
    execute(primary, "drop table if exists ledger; create table ledger (id int, note text)")
    execute(primary, "insert into ledger values (1, 'alice pays bob 10')")
    pair.wait_caught_up()
    pair.cut_off_standby()
    for row, note in ((2, "bob pays carol 5"), (3, "carol pays dave 7")):
        session = psycopg2.connect(**pair.primary.info.params())
        execute(session, "insert into ledger values (%s, %s)", (row, note))
        assert Commit(session).settle(primary) == COMMITTED, "asynchronous: COMMIT returns"
        session.close()
    pair.lose_primary(keep_folder=True)
    pair.promote()
    new_primary = pair.admin(pair.primary)
    execute(new_primary, "insert into ledger values (4, 'dave pays erin 2')")
    timeline = "select ('x' || left(pg_walfile_name(pg_current_wal_lsn()), 8))::bit(32)::int"
    old = pair.old_primary
    old.restart()
    with contextlib.closing(admin_connection(old.info)) as on_old:
        old_rows = [note for (note,) in rows(on_old, "select note from ledger order by id")]
        old_timeline = one(on_old, timeline)
    pair.rewind_old_primary()
    pair.wait_caught_up()
    assert old_rows == ["alice pays bob 10", "bob pays carol 5", "carol pays dave 7"]
    assert one(new_primary, timeline) == old_timeline + 1, "promotion starts a new timeline"
    notes = "select note from ledger order by id"
    assert [note for (note,) in rows(new_primary, notes)] == \
        ["alice pays bob 10", "dave pays erin 2"]
    assert [note for (note,) in rows(pair.admin(pair.standby), notes)] == \
        ["alice pays bob 10", "dave pays erin 2"], "the rewound old primary follows the new one"
    assert one(pair.admin(pair.standby), "select pg_is_in_recovery()") is True




@pytest.mark.replication
@pytest.mark.own_server
@pytest.mark.parametrize("names, synchronous_commit, after_cut_off, lost", [
    pytest.param(ASYNCHRONOUS, "on", [COMMITTED] * AFTER_CUT_OFF, "lost 3 of 5",
                 id="asynchronous: lost 3 of 5 acknowledged"),
    pytest.param(SYNCHRONOUS, "remote_write", [WAITS] * AFTER_CUT_OFF, "lost 0 of 2",
                 id="remote_write: lost 0 of 2 acknowledged"),
    pytest.param(SYNCHRONOUS, "on", [WAITS] * AFTER_CUT_OFF, "lost 0 of 2",
                 id="on: lost 0 of 2 acknowledged"),
    pytest.param(SYNCHRONOUS, "remote_apply", [WAITS] * AFTER_CUT_OFF, "lost 0 of 2",
                 id="remote_apply: lost 0 of 2 acknowledged"),
])
def test_failover_after_the_primary_is_lost(streaming_pair, names, synchronous_commit,
                                             after_cut_off, lost):
    """A lost machine: the primary gone for good, the standby promoted.

    Scenario (``acid_lab.lessons.failover.lost_at_failover``, which the ACID report
    runs too): with ``synchronous_standby_names`` and ``synchronous_commit`` as the
    id says, on the primary::

        drop table if exists ledger; create table ledger (setting text, id int);

    rows 1 and 2 are committed, each by a session of its own (``-c
    synchronous_commit=...``), ``insert into ledger values ('on', 1); commit``, while
    the standby streams, and the standby replays them. The standby is cut off
    (``alter system set primary_conninfo = ''; select pg_reload_conf()`` on it).
    Three more sessions insert rows 3, 4, 5 and commit; each COMMIT either returns
    or waits (wait event SyncRep). The primary's machine is lost (SIGKILL of every
    primary process, its folder removed); the standby is promoted (``select
    pg_promote()``) and the rows it has (``select setting, id from ledger``) are
    counted against the COMMITs that returned.
    Outcome: asynchronously all five COMMITs returned and rows 3, 4, 5 are gone
    -- three acknowledged commits lost. Synchronously rows 3, 4, 5 never got
    an answer (their sessions saw the connection drop: in doubt, and absent),
    and nothing acknowledged is lost.
    """
    streaming_pair.set_synchronous(names)
    failover = lost_at_failover(streaming_pair, [synchronous_commit])[synchronous_commit]
    assert failover.settled == after_cut_off
    assert failover.lost_text == lost, (
        f"acknowledged {failover.acknowledged}, present after the failover "
        f"{sorted(failover.present)}")


@pytest.mark.replication
@pytest.mark.own_server
@pytest.mark.parametrize("names, lost_at_least, lost_at_most", [
    pytest.param(ASYNCHRONOUS, FAILOVER_ROUNDS * LOAD_AFTER_CUT_OFF, None,
                 id="asynchronous: at least 10 acknowledged commits lost"),
    pytest.param(SYNCHRONOUS, 0, 0, id="synchronous: no acknowledged commit lost"),
])
def test_writers_through_repeated_failovers(streaming_pair, names, lost_at_least, lost_at_most):
    """Writers under load, the primary lost again and again.

    Scenario: two writer threads commit one row per transaction on the
    primary (table ledger_N, a new one per round), recording each COMMIT that
    returned. Per round: 5 commits acknowledged; the standby cut off; then
    either 5 more acknowledged (asynchronous) or both writers waiting in
    SyncRep (synchronous); the primary's machine lost; the standby promoted; a
    new standby cloned from it. Two rounds.
    Outcome: asynchronously, at least the 5 commits per round acknowledged
    after the cut-off are missing on the promoted standby; synchronously,
    none of the acknowledged commits is missing.
    """
    pair = streaming_pair
    lost, acknowledged = 0, 0
    for round_ in range(1, FAILOVER_ROUNDS + 1):
        if pair.standby is None:
            pair.add_standby()
        pair.set_synchronous(names)
        table = f"ledger_{round_}"
        primary = pair.admin(pair.primary)
        execute(primary, f"drop table if exists {table}; create table {table} (id bigint)")
        pair.wait_caught_up()
        writers = AcknowledgedWriters(pair.primary.dsn, table, threads=WRITERS)
        with writers.running():
            writers.wait_until_acknowledged(LOAD_BEFORE_CUT_OFF)
            pair.cut_off_standby()
            if names == ASYNCHRONOUS:
                writers.wait_until_acknowledged(len(writers.acknowledged) + LOAD_AFTER_CUT_OFF)
            else:
                wait_for(lambda via=primary: one(via, "select count(*) from pg_stat_activity "
                                                      "where wait_event = 'SyncRep'") == WRITERS,
                         "every writer to wait for the standby")
            pair.lose_primary()
        pair.promote()
        present = {row for (row,) in rows(pair.admin(pair.primary), f"select id from {table}")}
        tally = writers.tally(present)
        lost += len(tally.lost)
        acknowledged += tally.acknowledged
        assert tally.never_committed_present == []
    assert lost >= lost_at_least, f"{lost} of {acknowledged} acknowledged commits lost"
    if lost_at_most is not None:
        assert lost <= lost_at_most, f"{lost} of {acknowledged} acknowledged commits lost"


@pytest.fixture(scope="module")
def lossy_pair():
    """A second pair of this module's own, whose primary's data folder is on the power-cut disk."""
    missing = fuse_missing()
    if missing:
        pytest.skip(missing)
    with ReplicationPair(primary_on_lossy_disk=True) as servers:
        yield servers


@pytest.fixture
def pair_with_primary_on_lossy_disk(lossy_pair):
    """The lossy pair, streaming and asynchronous; the power-cut primary back in its role."""
    if lossy_pair.old_primary is not None:
        lossy_pair.return_to_old_primary()
        lossy_pair.set_synchronous(ASYNCHRONOUS)
    lossy_pair.reset()
    return lossy_pair


@pytest.mark.replication
@pytest.mark.own_server
@pytest.mark.parametrize("names, after_cut_off, lost, old_primary_has", [
    pytest.param(ASYNCHRONOUS, [COMMITTED] * AFTER_CUT_OFF, "lost 3 of 3", [1, 2, 3],
                 id="asynchronous: lost 3 of 3 acknowledged, the old primary has them"),
])
def test_failover_after_a_power_cut_of_the_primary(pair_with_primary_on_lossy_disk, names,
                                                    after_cut_off, lost, old_primary_has):
    """A power cut of the primary's machine, the standby promoted; then the power comes back.

    Scenario: the primary's data folder is on the power-cut disk (fsync on,
    ``synchronous_commit = on``), ``synchronous_standby_names`` as the id says.
    The standby is cut off (``primary_conninfo = ''``). Three sessions insert
    rows 1, 2, 3 and commit; each COMMIT either returns or waits (wait event
    SyncRep). The power of the primary's machine is cut: every primary process
    SIGKILLed, every write its disk had not fsynced forgotten. The standby is
    promoted (``select pg_promote()``) and its rows are counted against the
    COMMITs that returned. Then the old primary is started again on what its
    disk kept (crash recovery replays its WAL) and its rows are read.
    Outcome: asynchronously the three COMMITs returned and the promoted standby
    has none of the rows -- three acknowledged commits lost (synchronously none
    would have returned: see test_failover_after_the_primary_is_lost). Unlike a
    lost machine, the old primary comes back -- and holds rows 1, 2, 3: each
    commit record was flushed to its WAL (fsynced) before COMMIT returned. The
    two servers' histories have diverged.
    """
    pair = pair_with_primary_on_lossy_disk
    pair.set_synchronous(names)
    primary = pair.admin(pair.primary)
    execute(primary, "drop table if exists ledger; create table ledger (id int)")
    pair.wait_caught_up()
    pair.cut_off_standby()
    sessions, pending = [], {}
    try:
        for row in range(1, AFTER_CUT_OFF + 1):
            session = psycopg2.connect(**pair.primary.info.params())
            sessions.append(session)
            execute(session, "insert into ledger values (%s)", (row,))
            pending[row] = Commit(session)
        settled = [commit.settle(primary) for commit in pending.values()]
        acknowledged = [row for row, commit in pending.items() if commit.acknowledged]

        pair.power_cut_primary()
        for commit in pending.values():
            commit.finish()  # a waiting COMMIT ends with the connection lost
        pair.promote()
        present = {row for (row,) in rows(pair.admin(pair.primary), "select id from ledger")}
        pair.old_primary.restart()
        with contextlib.closing(admin_connection(pair.old_primary.info)) as on_old:
            on_old_primary = [row for (row,) in rows(on_old, "select id from ledger order by id")]
    finally:
        for session in sessions:
            with contextlib.suppress(psycopg2.Error):
                session.close()
    gone = [row for row in acknowledged if row not in present]
    assert settled == after_cut_off
    assert f"lost {len(gone)} of {len(acknowledged)}" == lost, (
        f"acknowledged {acknowledged}, present after the failover {sorted(present)}")
    assert (on_old_primary, sorted(present)) == (old_primary_has, []), (
        "the old primary, back from the power cut, has what the promoted standby lacks")
