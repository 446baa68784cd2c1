"""Replication for the ACID report: per setting, what a failover kept and what a standby read.

On a primary and hot standby of its own (:class:`acid_lab.servers.replication.ReplicationPair`),
for each setting -- asynchronous, and synchronous with ``synchronous_commit`` =
remote_write / on / remote_apply -- it observes, live:

* **lost at failover**: two rows committed while the standby streams, the
  standby cut off, three more sessions commit (each COMMIT returns or waits
  for the standby), the primary's machine lost, the standby promoted:
  how many of the acknowledged commits are missing ("lost 3 of 5"); the
  three synchronous settings share one failover, each with sessions of its own;
* **stale read**: with the standby's replay paused, a row updated and
  committed on the primary, then read on the standby right after COMMIT has
  returned (a COMMIT that waits for replay gets it resumed): was the read stale?

The same scenarios as the replication chapter of the tests. With an existing
server (``--dsn``) the section is skipped: it kills servers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2

from acid_lab.servers.replication import (
    STANDBY_NAME,
    Commit,
    ReplicationPair,
    pause_replay,
    query_value,
    resume_replay,
)

# (setting shown, synchronous_standby_names, synchronous_commit)
SETTINGS = (("asynchronous", "", "on"),
            ("synchronous, remote_write", STANDBY_NAME, "remote_write"),
            ("synchronous, on", STANDBY_NAME, "on"),
            ("synchronous, remote_apply", STANDBY_NAME, "remote_apply"))
BEFORE_CUT_OFF, AFTER_CUT_OFF = 2, 3
SKIPPED_WITH_DSN = "skipped: needs a primary and a standby the report starts itself (--dsn)"


@dataclass(frozen=True)
class ReplicationRow:
    """One setting: acknowledged commits lost at failover; a standby read after COMMIT."""

    setting: str
    acknowledged: int
    lost: int
    stale_read: bool

    @property
    def lost_text(self) -> str:
        return f"lost {self.lost} of {self.acknowledged}"

    @property
    def stale_text(self) -> str:
        return "stale" if self.stale_read else "fresh"

    def as_json(self) -> dict:
        return {"setting": self.setting, "acknowledged": self.acknowledged, "lost": self.lost,
                "stale_read": self.stale_read}


def _session(pair: ReplicationPair, synchronous_commit: str):
    return psycopg2.connect(**pair.primary.info.params(
        options=f"-c synchronous_commit={synchronous_commit}"))


def stale_read(pair: ReplicationPair, synchronous_commit: str) -> bool:
    """Replay paused; update a row and commit on the primary; read it on the standby."""
    primary, standby = pair.admin(pair.primary), pair.admin(pair.standby)
    query_value(primary, "drop table if exists reading; create table reading (value int); "
                         "insert into reading values (10)")
    pair.wait_caught_up()
    pause_replay(standby)
    writer = _session(pair, synchronous_commit)
    try:
        query_value(writer, "update reading set value = 11")
        pending = Commit(writer)
        if pending.settle(primary) == Commit.WAITING:
            resume_replay(standby)
        pending.finish()
        return query_value(standby, "select value from reading") != 11
    finally:
        resume_replay(standby)
        writer.close()


def lost_at_failover(pair: ReplicationPair, settings: list[str]) -> dict[str, tuple[int, int]]:
    """Per synchronous_commit setting: (acknowledged, lost) across one failover.

    For each setting, sessions with it commit BEFORE_CUT_OFF rows while the
    standby streams, and AFTER_CUT_OFF more once it is cut off; then the
    primary is lost and the standby promoted.
    """
    primary = pair.admin(pair.primary)
    query_value(primary, "drop table if exists ledger; create table ledger (id int)")
    sessions, pending = [], {}  # row id -> (setting, Commit)

    def commit_rows(first: int, count: int) -> None:
        for setting in settings:
            for row in range(first, first + count):
                row_id = len(settings) * row + settings.index(setting)
                sessions.append(_session(pair, setting))
                query_value(sessions[-1], "insert into ledger values (%s)", (row_id,))
                pending[row_id] = (setting, Commit(sessions[-1]))

    try:
        commit_rows(0, BEFORE_CUT_OFF)
        for _, commit in pending.values():
            commit.finish()
        pair.wait_caught_up()
        pair.cut_off_standby()
        commit_rows(BEFORE_CUT_OFF, AFTER_CUT_OFF)
        for _, commit in pending.values():
            commit.settle(primary)
        acknowledged = {row_id: setting for row_id, (setting, commit) in pending.items()
                        if commit.acknowledged}
        pair.lose_primary()
        for _, commit in pending.values():
            commit.finish()
        pair.promote()
        with pair.admin(pair.primary).cursor() as cur:
            cur.execute("select id from ledger")
            present = {row for (row,) in cur.fetchall()}
    finally:
        for _, commit in pending.values():
            if pair.primary is not None and pair.primary.running:
                commit.abandon(pair.admin(pair.primary))
        for session in sessions:
            with contextlib.suppress(psycopg2.Error):
                session.close()
    return {setting: (sum(1 for s in acknowledged.values() if s == setting),
                      sum(1 for row_id, s in acknowledged.items()
                          if s == setting and row_id not in present))
            for setting in settings}


def observe_replication(done: Callable[[ReplicationRow], None] = lambda row: None
                        ) -> list[ReplicationRow]:
    """Every setting on one pair: the stale reads first, then one failover per
    synchronous_standby_names (the synchronous settings share theirs)."""
    with ReplicationPair() as pair:
        stale = {}
        for setting, names, synchronous_commit in SETTINGS:
            pair.set_synchronous(names)
            stale[setting] = stale_read(pair, synchronous_commit)
        found = {}
        for names in dict.fromkeys(names for _, names, _ in SETTINGS):
            pair.reset()
            pair.set_synchronous(names)
            group = [(setting, commit) for setting, n, commit in SETTINGS if n == names]
            losses = lost_at_failover(pair, [commit for _, commit in group])
            for setting, commit in group:
                found[setting] = ReplicationRow(setting, *losses[commit], stale[setting])
                done(found[setting])
    return [found[setting] for setting, _, _ in SETTINGS]
