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

The scenarios are the lesson's (:mod:`acid_lab.lessons.failover`), the same the
replication chapter of the tests runs; this module only puts them in rows. With an
existing server (``--dsn``) the section is skipped: it kills servers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from acid_lab.lessons.failover import lost_at_failover, lost_text, stale_read
from acid_lab.servers.replication import STANDBY_NAME, ReplicationPair

# (setting shown, synchronous_standby_names, synchronous_commit)
SETTINGS = (("asynchronous", "", "on"),
            ("synchronous, remote_write", STANDBY_NAME, "remote_write"),
            ("synchronous, on", STANDBY_NAME, "on"),
            ("synchronous, remote_apply", STANDBY_NAME, "remote_apply"))
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
        return lost_text(self.lost, self.acknowledged)

    @property
    def stale_text(self) -> str:
        return "stale" if self.stale_read else "fresh"

    def as_json(self) -> dict:
        return {"setting": self.setting, "acknowledged": self.acknowledged, "lost": self.lost,
                "stale_read": self.stale_read}


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
        found.append(ReplicationRow(shown, len(lost[shown].acknowledged), len(lost[shown].lost),
                                    stale[shown]))
        done(found[-1])
    return found
