"""The failover lesson: what a lost primary takes with it, and what a standby reads after COMMIT.

Written once; the replication chapter (``tests/test_replication.py``, whose
docstrings show every statement) and the ACID report (``acid_lab.report.replication``)
both call it, on a :class:`acid_lab.servers.replication.ReplicationPair`.

* :func:`lost_at_failover`: per ``synchronous_commit`` setting, sessions of its own
  insert and commit rows 1 and 2 while the standby streams; the standby is cut off;
  rows 3, 4 and 5 are inserted and committed (each COMMIT returns or waits for the
  standby); the primary's machine is lost and the standby promoted. What the
  promoted standby holds is counted against the COMMITs that returned.
* :func:`stale_read`: with the standby's replay paused, a row updated and committed
  on the primary, then read on the standby right after COMMIT has returned.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import psycopg2

from acid_lab.servers.queries import execute, one, rows
from acid_lab.servers.replication import Commit, ReplicationPair, pause_replay, resume_replay

BEFORE_CUT_OFF = 2  # commits made while the standby streams
AFTER_CUT_OFF = 3   # commits attempted once the standby is cut off

LEDGER = "drop table if exists ledger; create table ledger (setting text, id int)"
INSERT = "insert into ledger values (%s, %s)"
PRESENT = "select setting, id from ledger"


@dataclass
class Failover:
    """One setting's failover: which rows' COMMIT returned, which rows the promoted standby
    has, and how each COMMIT after the cut-off settled (committed, or waits for the standby)."""

    acknowledged: list[int]
    present: set[int]
    settled: list[str]

    @property
    def lost(self) -> list[int]:
        """Acknowledged rows the promoted standby does not have."""
        return [row for row in self.acknowledged if row not in self.present]

    @property
    def lost_text(self) -> str:
        return lost_text(len(self.lost), len(self.acknowledged))


def lost_text(lost: int, acknowledged: int) -> str:
    """How a failover is told: "lost 3 of 5" (acknowledged commits)."""
    return f"lost {lost} of {acknowledged}"


def session(pair: ReplicationPair, synchronous_commit: str) -> psycopg2.extensions.connection:
    """A new session on the primary with ``synchronous_commit`` set."""
    return psycopg2.connect(**pair.primary.info.params(
        options=f"-c synchronous_commit={synchronous_commit}"))


def lost_at_failover(pair: ReplicationPair, synchronous_commits: list[str]
                     ) -> dict[str, Failover]:
    """{synchronous_commit: Failover}: each setting's sessions commit rows before and after
    the standby is cut off; then one failover for them all. The primary is lost."""
    primary = pair.admin(pair.primary)
    execute(primary, LEDGER)
    sessions, pending = [], {}
    try:
        for row in range(1, BEFORE_CUT_OFF + AFTER_CUT_OFF + 1):
            if row == BEFORE_CUT_OFF + 1:
                pair.wait_caught_up()
                pair.cut_off_standby()
            for setting in synchronous_commits:
                sessions.append(session(pair, setting))
                execute(sessions[-1], INSERT, (setting, row))
                pending[setting, row] = Commit(sessions[-1])
                if row <= BEFORE_CUT_OFF:
                    pending[setting, row].finish()
        settled = {key: commit.settle(primary) for key, commit in pending.items()}
        acknowledged = [key for key, commit in pending.items() if commit.acknowledged]
        pair.lose_primary()
        for commit in pending.values():
            commit.finish()  # a waiting COMMIT ends with the connection lost
        pair.promote()
        present = set(rows(pair.admin(pair.primary), PRESENT))
    finally:
        for commit in pending.values():
            if pair.primary is not None and pair.primary.running:
                commit.abandon(pair.admin(pair.primary))
        for conn in sessions:
            with contextlib.suppress(psycopg2.Error):
                conn.close()
    after_cut_off = range(BEFORE_CUT_OFF + 1, BEFORE_CUT_OFF + AFTER_CUT_OFF + 1)
    return {setting: Failover([row for key, row in acknowledged if key == setting],
                              {row for key, row in present if key == setting},
                              [settled[setting, row] for row in after_cut_off])
            for setting in synchronous_commits}


def stale_read(pair: ReplicationPair, synchronous_commit: str) -> bool:
    """Replay paused; update a row and commit on the primary; read it on the standby right
    after COMMIT has returned (a COMMIT that waits for replay gets replay resumed)."""
    primary, standby = pair.admin(pair.primary), pair.admin(pair.standby)
    execute(primary, "drop table if exists reading; create table reading (value int); "
                     "insert into reading values (10)")
    pair.wait_caught_up()
    pause_replay(standby)
    writer = session(pair, synchronous_commit)
    try:
        execute(writer, "update reading set value = 11")
        pending = Commit(writer)
        if pending.settle(primary) == Commit.WAITING:
            resume_replay(standby)
        pending.finish()
        return one(standby, "select value from reading") != 11
    finally:
        resume_replay(standby)
        writer.close()
