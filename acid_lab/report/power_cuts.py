"""The power-cut lines of the ACID report: fsync on keeps acknowledged commits, off loses them.

Both run on a :class:`acid_lab.servers.powercut.PowerCutCluster` of their own:
its data folder is on a FUSE disk that forgets every write not fsynced when the
power is cut (``tests/test_durability_powercut.py`` shows the whole chapter).
Skipped, with one line saying why, with an existing server (``--dsn``) or where
FUSE is missing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import psycopg2

from acid_lab.report.demonstrations import (
    DURABILITY,
    SKIPPED_WITH_DSN,
    Demonstration,
    Shown,
    show_on,
)
from acid_lab.servers.powercut import PowerCutCluster, fuse_missing
from acid_lab.servers.queries import one

COMMITS = 10


def _commit_rows(cluster: PowerCutCluster, table: str) -> None:
    """COMMITS single-row transactions, each acknowledged before the next."""
    with contextlib.closing(psycopg2.connect(**cluster.info.params())) as conn, \
            conn.cursor() as cur:
        for row in range(1, COMMITS + 1):
            cur.execute(f"insert into {table} values (%s)", (row,))
            conn.commit()


def _rows_after_power_cut(cluster: PowerCutCluster, table: str) -> int:
    cluster.power_cut()
    cluster.restart(**cluster.start_settings)
    with contextlib.closing(psycopg2.connect(**cluster.info.params())) as conn:
        return one(conn, f"select count(*) from {table}")


def fsync_on_keeps(cluster: PowerCutCluster) -> tuple[bool, str]:
    """fsync on: 10 acknowledged commits, a power cut, a restart: all 10 are there."""
    kept = _rows_after_power_cut(cluster, _committed(cluster, "kept_notes", fsync="on"))
    return kept == COMMITS, (
        f"{COMMITS} commits acknowledged with fsync = on, then a power cut (every write not "
        f"fsynced forgotten) + restart: {kept} of {COMMITS} kept")


def fsync_off_loses(cluster: PowerCutCluster) -> tuple[bool, str]:
    """fsync off: the same, and the commits are gone: they never left the page cache."""
    kept = _rows_after_power_cut(cluster, _committed(cluster, "lost_notes", fsync="off"))
    return kept < COMMITS, (
        f"{COMMITS} commits acknowledged with fsync = off, then a power cut + restart: "
        f"{COMMITS - kept} of {COMMITS} lost")


def _committed(cluster: PowerCutCluster, table: str, fsync: str) -> str:
    """Create ``table`` durably (fsync on), restart with ``fsync``, commit the rows into it."""
    with contextlib.closing(psycopg2.connect(**cluster.info.params())) as conn, \
            conn.cursor() as cur:
        cur.execute(f"create table {table} (id int)")
        conn.commit()
    cluster.stop()  # a clean shutdown with fsync on: the table is on the platter
    cluster.restart(fsync=fsync)
    _commit_rows(cluster, table)
    return table


ON_A_LOSSY_DISK: tuple[Demonstration, ...] = (
    Demonstration(DURABILITY, "fsync = on: acknowledged commits survive a power cut",
                  fsync_on_keeps),
    Demonstration(DURABILITY, "fsync = off: a power cut loses acknowledged commits",
                  fsync_off_loses),
)


def skip_power_cut_demonstrations(reason: str = SKIPPED_WITH_DSN) -> list[Shown]:
    """The power-cut lines when they cannot run: with --dsn, or without FUSE."""
    return [demonstration.skipped(reason) for demonstration in ON_A_LOSSY_DISK]


def show_on_lossy_disk(done: Callable[[Shown], None] = lambda shown: None) -> list[Shown]:
    """Run the power-cut demonstrations on a PowerCutCluster of their own."""
    missing = fuse_missing()
    if missing:
        shown = skip_power_cut_demonstrations(f"skipped: {missing}")
        for line in shown:
            done(line)
        return shown
    return show_on(lambda: PowerCutCluster(settings={"autovacuum": "off"}), ON_A_LOSSY_DISK,
                   done)
