"""Replication for the ACID report: per setting, what a failover kept and what a standby read.

On a primary and hot standby of its own (:class:`acid_lab.servers.replication.ReplicationPair`),
for each setting -- asynchronous, and synchronous with ``synchronous_commit`` =
remote_write / on / remote_apply -- it observes, live:

* **lost at failover**: two rows committed while the standby streams, the
  standby cut off, three more sessions commit (each COMMIT returns or waits
  for the standby), the primary's machine lost, the standby promoted:
  how many of the acknowledged commits are missing ("lost 3 of 5"). The three
  synchronous settings share one failover, each with sessions of its own;
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

from acid_lab.servers.queries import one
from acid_lab.servers.replication import (
    STANDBY_NAME,
    Commit,
    ReplicationPair,
    pause_replay,
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
    one(primary, "drop table if exists reading; create table reading (value int); "
                         "insert into reading values (10)")
    pair.wait_caught_up()
    pause_replay(standby)
    writer = _session(pair, synchronous_commit)
    try:
        one(writer, "update reading set value = 11")
        pending = Commit(writer)
        if pending.settle(primary) == Commit.WAITING:
            resume_replay(standby)
        pending.finish()
        return one(standby, "select value from reading") != 11
    finally:
        resume_replay(standby)
        writer.close()


def lost_at_failover(pair: ReplicationPair, synchronous_commits: list[str]
                     ) -> dict[str, tuple[int, int]]:
    """{synchronous_commit: (acknowledged, lost)}: for each setting, its own sessions commit
    rows before and after the standby is cut off; then one failover for them all."""
    primary = pair.admin(pair.primary)
    one(primary, "drop table if exists ledger; create table ledger (setting text, id int)")
    sessions, pending = [], {}
    try:
        for row in range(1, BEFORE_CUT_OFF + AFTER_CUT_OFF + 1):
            if row == BEFORE_CUT_OFF + 1:
                pair.wait_caught_up()
                pair.cut_off_standby()
            for setting in synchronous_commits:
                sessions.append(_session(pair, setting))
                one(sessions[-1], "insert into ledger values (%s, %s)", (setting, row))
                pending[setting, row] = Commit(sessions[-1])
                if row <= BEFORE_CUT_OFF:
                    pending[setting, row].finish()
        for commit in pending.values():
            commit.settle(primary)
        acknowledged = {key for key, commit in pending.items() if commit.acknowledged}
        pair.lose_primary()
        for commit in pending.values():
            commit.finish()
        pair.promote()
        with pair.admin(pair.primary).cursor() as cur:
            cur.execute("select setting, id from ledger")
            present = set(cur.fetchall())
    finally:
        for commit in pending.values():
            if pair.primary is not None and pair.primary.running:
                commit.abandon(pair.admin(pair.primary))
        for session in sessions:
            with contextlib.suppress(psycopg2.Error):
                session.close()
    return {setting: (sum(key[0] == setting for key in acknowledged),
                      sum(key[0] == setting for key in acknowledged - present))
            for setting in synchronous_commits}


def observe_replication(done: Callable[[ReplicationRow], None] = lambda row: None
                        ) -> list[ReplicationRow]:
    """Every setting on one pair: the stale reads one by one, then one failover for the
    asynchronous setting and one for the synchronous ones together (each with sessions of
    its own), a new standby cloned after each."""
    stale, lost = {}, {}
    with ReplicationPair() as pair:
        for names in dict.fromkeys(names for _, names, _ in SETTINGS):
            together = [(shown, commit) for shown, setting_names, commit in SETTINGS
                        if setting_names == names]
            pair.reset()
            pair.set_synchronous(names)
            for shown, synchronous_commit in together:
                stale[shown] = stale_read(pair, synchronous_commit)
            counts = lost_at_failover(pair, [commit for _, commit in together])
            for shown, synchronous_commit in together:
                lost[shown] = counts[synchronous_commit]
    found = []
    for shown, _, _ in SETTINGS:
        acknowledged, missing = lost[shown]
        found.append(ReplicationRow(shown, acknowledged, missing, stale[shown]))
        done(found[-1])
    return found
