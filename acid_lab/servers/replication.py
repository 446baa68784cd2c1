"""A primary and its hot standby (streaming replication on 127.0.0.1), and the failures they meet.

The primary is a :class:`~acid_lab.servers.crashable.CrashableCluster` (made with
1 MB WAL segments and wal_log_hints, for cheap clones and pg_rewind); the standby
is another one whose data folder is not made by initdb but cloned from the
running primary with ``pg_basebackup -R -C -S SLOT`` (a physical replication
slot keeps the primary from recycling WAL the standby still needs; ``-R``
writes ``standby.signal`` and ``primary_conninfo``). Both run as the server
account, in private folders, each watched by its own guard process: nothing
outlives the run, however it ends.

What a pair can be made to do (every wait bounded, and decided by the
servers' own views -- pg_stat_replication, pg_stat_wal_receiver,
pg_last_wal_replay_lsn(), pg_stat_activity.wait_event -- never by sleeping):

* ``cut_off_standby()`` / ``reconnect_standby()``: stop and restart the
  standby's WAL receiver (``primary_conninfo`` emptied and restored with
  ALTER SYSTEM + pg_reload_conf(); PostgreSQL 13+ re-reads it);
* ``set_synchronous(names)``: ``synchronous_standby_names`` on the primary;
* ``lose_primary()``: SIGKILL every process of the primary and remove its
  folder -- a lost machine, never to come back (``keep_folder=True``: a
  crash, the machine comes back as ``old_primary``);
* ``power_cut_primary()``: with ``ReplicationPair(primary_on_lossy_disk=True)``
  the primary's data folder sits on the power-cut disk
  (:mod:`acid_lab.servers.powercut`); the power goes: every process SIGKILLed,
  every write not yet fsynced forgotten. The machine comes back as
  ``old_primary``, with what its disk kept (``return_to_old_primary()``: the
  primary again, the promoted server discarded);
* ``promote()``: ``pg_promote()``, the standby becomes the primary;
* ``add_standby()``: clone a new standby from whichever server is primary now;
* ``rewind_old_primary()``: ``pg_rewind -R`` the old primary onto the new one
  and start it as its standby.

The functions below the pair work on plain connections, so that they also
serve a primary and standby of the user's own (``--standby-dsn``).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import threading
import time
from pathlib import Path

import port_for
import psycopg2
import psycopg2.extensions

from acid_lab.servers import ServerError
from acid_lab.servers.accounts import run_as_kwargs
from acid_lab.servers.binaries import Binaries
from acid_lab.servers.cluster import START_TIMEOUT
from acid_lab.servers.connections import CONNECT_TIMEOUT, ConnectionInfo
from acid_lab.servers.crashable import CrashableCluster
from acid_lab.servers.lossy_disk import NOTHING, Writeback
from acid_lab.servers.powercut import PowerCutCluster
from acid_lab.servers.queries import one

STANDBY_NAME = "standby"  # its application_name on the primary
WAIT_TIMEOUT = 15.0       # seconds: the bound of every wait below
POLL = 0.005              # seconds between two looks at a server's view

# The standby asks the primary for WAL again 50 ms after losing it (default 5 s):
# reconnecting after a cut-off is then quick.
STANDBY_SETTINGS = {"wal_retrieve_retry_interval": "50ms"}

_slots = itertools.count(1)


class ReplicationTimeout(AssertionError):
    """A bounded wait on a server's view ran out; the message says what was awaited."""


# --------------------------------------------------------------------------- views, on connections


def admin_connection(info: ConnectionInfo, **params) -> psycopg2.extensions.connection:
    """An autocommit session: each statement reads the views afresh."""
    conn = psycopg2.connect(**info.params(connect_timeout=CONNECT_TIMEOUT, **params))
    conn.autocommit = True
    return conn


def wait_for(check, what: str, timeout: float = WAIT_TIMEOUT, state=None):
    """Call ``check()`` until it returns something truthy; return that (bounded).

    ``state()``, if given, says in the timeout message what the server showed last.
    """
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            shown = f"; last seen: {state()}" if state else ""
            raise ReplicationTimeout(f"waited {timeout:g} s for {what}{shown}")
        time.sleep(POLL)  # sleep-ok: polling the server's view between two looks


def wait_replayed(primary, standby, timeout: float = WAIT_TIMEOUT) -> str:
    """Return once the standby has replayed everything the primary has written so far.

    Compares the primary's pg_current_wal_lsn() with the standby's
    pg_last_wal_replay_lsn(); returns that LSN.
    """
    target = one(primary, "select pg_current_wal_lsn()::text")
    wait_for(lambda: one(
        standby, "select pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)),
        f"the standby to replay the primary's WAL up to {target}", timeout,
        lambda: one(standby, "select pg_last_wal_replay_lsn()::text"))
    return target


def pause_replay(standby, timeout: float = WAIT_TIMEOUT) -> None:
    """pg_wal_replay_pause(), and wait until the standby says replay is paused.

    WAL keeps arriving and being flushed; it is only not applied.
    """
    one(standby, "select pg_wal_replay_pause()")
    wait_for(lambda: one(standby, "select pg_get_wal_replay_pause_state() = 'paused'"),
             "WAL replay to pause on the standby", timeout)


def resume_replay(standby) -> None:
    one(standby, "select pg_wal_replay_resume()")


def backend_wait_event(primary, pid: int) -> str | None:
    """What server process ``pid`` waits for right now (pg_stat_activity.wait_event)."""
    return one(primary, "select wait_event from pg_stat_activity where pid = %s", (pid,))


class Commit:
    """One COMMIT sent in a thread of its own, so that the test can watch it wait.

    ``settle(primary)`` returns "committed" once COMMIT has returned, or
    "waits for the standby" once the server shows that it waits (wait event
    SyncRep) and that nothing will release it:

    * no standby is connected at all (cut off): nobody can answer; or
    * every standby has flushed all the primary's WAL, and a probe COMMIT
      that waits for the standbys' write has returned since -- the WAL sender
      releases waiters in LSN order, so a COMMIT waiting for the standby's
      write or flush would have been released before the probe. What still
      waits, waits for replay (remote_apply while the standby's replay is paused).

    Bounded; an error COMMIT raised is kept in ``error``.
    """

    COMMITTED, WAITING = "committed", "waits for the standby"

    # (standbys connected, streaming ones that have flushed all WAL written so far)
    STANDBYS = ("select count(*), count(*) filter (where state = 'streaming' and "
                "flush_lsn >= pg_current_wal_lsn()) from pg_stat_replication")
    # a transaction with an xid writes a commit record: its COMMIT waits for the standbys
    PROBE = ("begin; set local synchronous_commit = remote_write; "
             "select pg_current_xact_id(); commit")

    def __init__(self, conn: psycopg2.extensions.connection):
        self.conn = conn
        self.pid = conn.info.backend_pid
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._commit, name=f"acid_lab-commit-{self.pid}",
                                       daemon=True)
        self.thread.start()

    def _commit(self) -> None:
        try:
            self.conn.commit()
        except BaseException as error:  # noqa: BLE001 - the test reads it
            self.error = error
        finally:
            self.done.set()

    @property
    def acknowledged(self) -> bool:
        """COMMIT returned without an error: the server said "done"."""
        return self.done.is_set() and self.error is None

    def settle(self, primary, timeout: float = WAIT_TIMEOUT) -> str:
        def seen() -> str | None:
            if self.done.is_set():
                return self.COMMITTED
            if backend_wait_event(primary, self.pid) != "SyncRep":
                return None
            with primary.cursor() as cur:
                cur.execute(self.STANDBYS)
                connected, flushed_all = cur.fetchone()
            if connected == 0:
                return self.WAITING
            if flushed_all < connected:
                return None
            one(primary, self.PROBE)
            if self.done.is_set() or backend_wait_event(primary, self.pid) != "SyncRep":
                return None  # it was being released: the next look finds it committed
            return self.WAITING
        return wait_for(seen, f"COMMIT of server process {self.pid} to return or to wait",
                        timeout, lambda: backend_wait_event(primary, self.pid))

    def abandon(self, primary, timeout: float = WAIT_TIMEOUT) -> None:
        """End a COMMIT that may still wait (its server process terminated), for a clean-up.

        Closing the connection instead would wait for COMMIT to return first.
        """
        if not self.done.is_set():
            with contextlib.suppress(psycopg2.Error):
                one(primary, "select pg_terminate_backend(%s)", (self.pid,))
            self.finish(timeout)
        with contextlib.suppress(psycopg2.Error):
            self.conn.close()

    def finish(self, timeout: float = WAIT_TIMEOUT) -> None:
        """Wait for COMMIT to return (with success or an error; bounded)."""
        if not self.done.wait(timeout):
            raise ReplicationTimeout(f"COMMIT of server process {self.pid} did not return "
                                     f"within {timeout:g} s")


# --------------------------------------------------------------------------- the servers

WAL_SEGMENT_MB = 1  # not 16: a clone copies, and a standby zero-fills, whole segments
# pg_rewind needs to know which pages changed since the timelines split, also for hint bits
PAIR_SETTINGS = {"wal_log_hints": "on"}


class Member(CrashableCluster):
    """A server of a pair, primary or hot standby (a standby's postmaster.pid says "standby")."""

    name = STANDBY_NAME                  # its application_name on a primary, when a standby
    primary_conninfo: str | None = None  # where it streams from, when a standby

    READY_STATES = ("ready", "standby")  # a hot standby's status line says "standby"

    def read_primary_conninfo(self) -> None:
        with contextlib.closing(admin_connection(self.info)) as conn:
            self.primary_conninfo = one(conn, "show primary_conninfo")

    def as_account(self, command: list[str], env: dict[str, str]) -> None:
        """Run one of the PostgreSQL programs on this server's folder, as the server's account."""
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=START_TIMEOUT, check=False,
            cwd=self.workdir.path, env={**os.environ, **env},
            **run_as_kwargs(self.account))
        if done.returncode != 0:
            raise ServerError(f"{Path(command[0]).name} failed ({done.returncode}): "
                              f"{done.stderr.strip()}")


class Primary(Member):
    """A crashable cluster made by initdb with 1 MB WAL segments: cheap to clone."""

    OWN_INITDB_OPTIONS = (f"--wal-segsize={WAL_SEGMENT_MB}",)

    def __init__(self, binaries: Binaries | None = None, *, settings: dict | None = None,
                 **kwargs):
        super().__init__(binaries, settings={**PAIR_SETTINGS, **(settings or {})}, **kwargs)


class LossyPrimary(PowerCutCluster, Primary):
    """A primary whose data folder is on the power-cut disk.

    PowerCutCluster comes first: its mounting restart(), crash() and stop win; Primary
    adds the pair's settings, Member the "standby" status line. Its initdb options are
    both kinds' (Cluster.initdb_options()): a primary's and the power-cut disk's.
    """


class Standby(Member):
    """A hot standby: cloned from a running primary by pg_basebackup, then started.

    It logs in with the primary's password (the clone carries the primary's
    roles). ``pg_basebackup -R`` writes the application_name it connected with
    into primary_conninfo: that is the standby's name on the primary.
    """

    def __init__(self, primary: CrashableCluster, name: str = STANDBY_NAME):
        super().__init__(primary.binaries, settings={**primary.settings, **STANDBY_SETTINGS},
                         run=primary.run)
        self.source = primary
        self.name = name
        self.password = primary.password
        self.slot = f"acid_lab_{name}_{os.getpid()}_{next(_slots)}"

    def _start_server(self) -> None:
        self.port = port_for.select_random()
        self._clone()
        self.restart()
        self.read_primary_conninfo()

    def _clone(self) -> None:
        source = self.source.info
        self.workdir.make_data_folder()
        self.as_account(
            [str(self.bindir / "pg_basebackup"), "-D", str(self.workdir.data),
             "-h", source.host, "-p", str(source.port), "-U", source.user,
             "-R",                       # standby.signal + primary_conninfo
             "-C", "-S", self.slot,      # a new physical slot on the primary
             "-c", "fast",               # an immediate checkpoint, not a spread one
             "-X", "stream",             # the WAL of the copy period, streamed along
             "--no-manifest",            # no checksum list: the copy is used at once
             "--no-sync"],               # the standby syncs its folder as it starts
            env={"PGPASSWORD": source.password, "PGAPPNAME": self.name})


def discard(server: CrashableCluster) -> None:
    """Dispose of the server and leave the removal of its folder to its guard (quicker)."""
    try:
        server.dispose()
        if isinstance(server, PowerCutCluster) and server.disk is not None:
            server.disk.close()  # unmounted and its process ended before the folder goes
    finally:
        server.give_folder_to_guard()


# --------------------------------------------------------------------------- the pair


class ReplicationPair:
    """A primary and a hot standby, both started here; a context manager.

    ``primary`` and ``standby`` name the servers in their current roles: after
    ``lose_primary()`` + ``promote()`` the old standby is the primary and there
    is no standby until ``add_standby()``.
    """

    def __init__(self, binaries: Binaries | None = None, *, settings: dict | None = None,
                 primary_on_lossy_disk: bool = False):
        self.binaries = binaries  # None: the run's
        self.settings = dict(settings or {})
        # the first primary's data folder on the power-cut disk (needs FUSE: fuse_missing())
        self.primary_class = LossyPrimary if primary_on_lossy_disk else Primary
        self.primary: Member | None = None
        self.standby: Member | None = None
        self.old_primary: Member | None = None  # crashed by lose_primary(keep_folder=True)
        self._admins: dict[int, psycopg2.extensions.connection] = {}

    def __enter__(self) -> ReplicationPair:
        try:
            self.primary = self.primary_class(self.binaries, settings=self.settings)
            self.primary.__enter__()
            self.add_standby()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop both servers (standby first); their guards remove the folders."""
        for conn in self._admins.values():
            with contextlib.suppress(psycopg2.Error):
                conn.close()
        self._admins.clear()
        for server in (self.standby, self.primary, self.old_primary):
            if server is not None:
                discard(server)
        self.standby = self.primary = self.old_primary = None

    # -- sessions

    def admin(self, server: CrashableCluster) -> psycopg2.extensions.connection:
        """A kept autocommit session to ``server``'s postgres database (re-opened if lost)."""
        conn = self._admins.get(id(server))
        if conn is None or conn.closed:
            conn = self._admins[id(server)] = admin_connection(server.info)
        return conn

    def _forget(self, server: CrashableCluster) -> None:
        conn = self._admins.pop(id(server), None)
        if conn is not None:
            with contextlib.suppress(psycopg2.Error):
                conn.close()

    # -- what the primary shows about the standby

    def replication_row(self) -> dict | None:
        """The standby's row of pg_stat_replication on the primary, or None."""
        with self.admin(self.primary).cursor() as cur:
            cur.execute("select state, sync_state, sent_lsn::text, flush_lsn::text, "
                        "replay_lsn::text from pg_stat_replication where application_name = %s",
                        (self.standby.name,))
            row = cur.fetchone()
        if row is None:
            return None
        return dict(zip(("state", "sync_state", "sent_lsn", "flush_lsn", "replay_lsn"), row,
                        strict=True))

    def wait_streaming(self) -> None:
        """Return once the primary shows the standby's WAL sender in state streaming."""
        wait_for(lambda: (self.replication_row() or {}).get("state") == "streaming",
                 "the standby to stream from the primary", state=self.replication_row)

    def wait_caught_up(self) -> str:
        """Return once the standby has replayed all WAL the primary has; that LSN."""
        return wait_replayed(self.admin(self.primary), self.admin(self.standby))

    # -- failures and repairs

    def add_standby(self) -> Standby:
        """Clone a new hot standby from the current primary and wait until it streams."""
        if self.standby is not None:
            raise ServerError("the pair has a standby already")
        standby = Standby(self.primary)
        standby.__enter__()
        self.standby = standby
        self.wait_streaming()
        return standby

    def cut_off_standby(self) -> None:
        """Stop the standby's WAL receiver; return once neither server shows the stream."""
        standby = self.admin(self.standby)
        one(standby, "alter system set primary_conninfo = ''")
        one(standby, "select pg_reload_conf()")
        wait_for(lambda: one(standby, "select count(*) = 0 from pg_stat_wal_receiver"),
                 "the standby's WAL receiver to stop")
        wait_for(lambda: self.replication_row() is None,
                 "the primary's WAL sender for the standby to end", state=self.replication_row)

    def reconnect_standby(self) -> None:
        """Give the standby its primary_conninfo back; return once it streams again."""
        standby = self.admin(self.standby)
        with standby.cursor() as cur:
            cur.execute("alter system set primary_conninfo = %s", (self.standby.primary_conninfo,))
            cur.execute("select pg_reload_conf()")
        self.wait_streaming()

    def receiving(self) -> bool:
        """The standby's WAL receiver is connected (pg_stat_wal_receiver has its row)."""
        return bool(one(self.admin(self.standby),
                                "select count(*) > 0 from pg_stat_wal_receiver"))

    def set_synchronous(self, names: str) -> None:
        """synchronous_standby_names on the primary ('' = asynchronous), in force on return.

        ALTER SYSTEM + pg_reload_conf(), then wait until a new session sees the
        value (the postmaster has re-read it and signalled every process), until
        the standby's row shows the matching sync_state (its WAL sender has
        re-read it), and run a CHECKPOINT: the checkpointer handles its pending
        reload before a requested checkpoint, and it is the checkpointer that
        tells committing sessions whether any synchronous standby is named.
        """
        primary = self.admin(self.primary)
        if one(primary, "show synchronous_standby_names") == names:
            return  # set (and waited for) before: a new standby reads it as it connects
        with primary.cursor() as cur:
            cur.execute("alter system set synchronous_standby_names = %s", (names,))
            cur.execute("select pg_reload_conf()")

        def new_session_sees() -> bool:
            with contextlib.closing(admin_connection(self.primary.info)) as fresh:
                return one(fresh, "show synchronous_standby_names") == names
        wait_for(new_session_sees, f"synchronous_standby_names = {names!r} to take effect")
        if self.standby is not None and self.replication_row() is not None:
            expected = "sync" if names else "async"
            wait_for(lambda: (self.replication_row() or {}).get("sync_state") == expected,
                     f"the standby's sync_state to become {expected}", state=self.replication_row)
        one(primary, "checkpoint")

    def lose_primary(self, *, keep_folder: bool = False) -> None:
        """The primary's machine is gone: SIGKILL all its processes, remove its folder.

        ``keep_folder``: the machine comes back later (``old_primary``), as it was
        when it died -- a crash, not a lost disk.
        """
        lost, self.primary = self.primary, None
        self._forget(lost)
        if keep_folder:
            lost.crash()
            self.old_primary = lost
        else:
            discard(lost)

    def power_cut_primary(self, writeback: Writeback = NOTHING) -> dict:
        """The primary's machine loses power: SIGKILL of every process, and its disk
        forgets what was not fsynced (``writeback``: the part that reached the
        platter anyway). The primary is down; ``old_primary.restart()`` brings it
        back on what the disk kept. Returns the disk's tally (``power_cut()``).
        """
        if not isinstance(self.primary, PowerCutCluster):
            raise ServerError("power_cut_primary() needs a primary on the lossy disk: "
                              "ReplicationPair(primary_on_lossy_disk=True)")
        cut, self.primary = self.primary, None
        self._forget(cut)
        self.old_primary = cut
        return cut.power_cut(writeback)

    def return_to_old_primary(self) -> None:
        """Undo a failover the cheap way: the current primary (and any standby) discarded,
        the old primary, started again, is the primary; no standby until add_standby()."""
        for server in (self.standby, self.primary):
            if server is not None:
                self._forget(server)
                discard(server)
        self.primary, self.standby, self.old_primary = self.old_primary, None, None
        if not self.primary.running:
            self.primary.restart()

    def rewind_old_primary(self) -> None:
        """Make the old primary a standby of the current one: pg_rewind, then start it.

        pg_rewind finds where the old primary's timeline left the new one's,
        copies over what the new primary changed since, and throws away what
        only the old primary had. ``-R`` makes it a standby (standby.signal,
        primary_conninfo). The old primary must be stopped cleanly first.
        """
        old, self.old_primary = self.old_primary, None
        if old.running:
            old.stop()
        # pg_rewind reads the new timeline from the source's control file, which a
        # promoted server updates at its first checkpoint
        one(self.admin(self.primary), "checkpoint")
        source = self.primary.info
        old.as_account(
            [str(old.bindir / "pg_rewind"), "-D", str(old.workdir.data), "-R",
             "--source-server", psycopg2.extensions.make_dsn(
                 host=source.host, port=source.port, user=source.user, dbname=source.dbname,
                 application_name=old.name)],
            env={"PGPASSWORD": source.password})
        # pg_rewind copied the configuration of the source, whose slot name was for a
        # standby of the old primary: the old primary streams through a slot of its own
        slot = f"acid_lab_rewound_{os.getpid()}_{next(_slots)}"
        one(self.admin(self.primary),
                    "select pg_create_physical_replication_slot(%s, true)", (slot,))
        old.restart(**STANDBY_SETTINGS, primary_slot_name=slot)
        old.read_primary_conninfo()
        self.standby = old
        self.wait_streaming()

    def promote(self) -> None:
        """pg_promote() on the standby; return once it has left recovery: it is the primary now.

        (pg_promote(wait => true) would look every 100 ms; pg_is_in_recovery()
        is asked here at a shorter interval.) Its synchronous_standby_names is
        emptied: it has no standby to wait for yet.
        """
        standby = self.admin(self.standby)
        one(standby, "select pg_promote(wait => false)")
        wait_for(lambda: not one(standby, "select pg_is_in_recovery()"),
                 "the standby to finish its promotion", START_TIMEOUT,
                 lambda: self.standby.log_tail(5))
        self.primary, self.standby = self.standby, None
        if one(standby, "show synchronous_standby_names"):
            self.set_synchronous("")

    def reset(self) -> None:
        """Back to the usual state between tests: a standby streaming, asynchronous, replaying."""
        if self.standby is None:
            self.add_standby()
        elif not self.receiving():
            self.reconnect_standby()
        resume_replay(self.admin(self.standby))
        if one(self.admin(self.primary), "show synchronous_standby_names"):
            self.set_synchronous("")
        self.wait_streaming()

