"""How fast every interleaving runs, and how long the isolation chapter takes.

    python bench/bench_isolation.py [--dsn DSN] [--rounds N] [--chapter-runs N] [--no-chapter]

1. Exhaustive mode: all merges of two 3-step transactions (20 merges) are run
   at serializable with ``acid_lab.engine.interleavings.Interleaver.explore`` on one
   warm ``ScenarioRunner``: the probes that find out which sessions block, then
   every valid merge. Printed: valid interleavings per second (and schedules
   sent per second, probes included), median of N rounds, for a race without
   blocking (write skew) and one with (lost update: 6 merges invalid).
   Without --dsn a temporary server is started.
2. The isolation chapter's wall time: ``pytest -k isolation -q`` in a
   subprocess (it starts its own server), median of --chapter-runs runs.
   Budget: 15 s on the 2-core reference machine.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg2

from acid_lab.checkers.serializability import FINAL_STATE, TransactionScript
from acid_lab.engine.interleavings import Interleaver
from acid_lab.engine.scenario import SERIALIZABLE, T1, T2, ScenarioRunner
from acid_lab.lessons.catalog import RESTORE_HERMITAGE
from acid_lab.lessons.schema import HERMITAGE
from acid_lab.servers.connections import search_path_option
from acid_lab.servers.places import PlaceKeeper

REPO = Path(__file__).resolve().parent.parent
CHAPTER_BUDGET_S = 15.0

# Two races of the chapter's kind (tests/test_isolation_properties.py): one never blocks,
# one does (both write row 1).
RACES = {
    "write skew": (
        TransactionScript(T1, ("select sum(value) from test",
                         "update test set value = (select sum(value) from test) where id = 1",
                         "commit")),
        TransactionScript(T2, ("select sum(value) from test",
                         "update test set value = (select sum(value) from test) where id = 2",
                         "commit"))),
    "lost update": (
        TransactionScript(T1, ("select value from test where id = 1",
                         "update test set value = 11 where id = 1", "commit")),
        TransactionScript(T2, ("select value from test where id = 1",
                         "update test set value = 12 where id = 1", "commit"))),
}


@contextlib.contextmanager
def hermitage_place(dsn: str | None):
    """A DSN whose search_path is a fresh schema holding Hermitage's table."""
    with contextlib.ExitStack() as stack:
        if dsn is None:
            from acid_lab.servers.cluster import Cluster

            dsn = stack.enter_context(Cluster()).dsn
        keeper = PlaceKeeper(psycopg2.connect(dsn))
        stack.callback(keeper.close)
        schema = keeper.create(HERMITAGE)
        stack.callback(keeper.drop, schema)
        params = psycopg2.extensions.parse_dsn(dsn)
        params.update(search_path_option(schema))
        yield psycopg2.extensions.make_dsn(**params)


def bench_exhaustive(dsn: str | None, rounds: int) -> None:
    with hermitage_place(dsn) as place, ScenarioRunner(place) as runner:
        admin = psycopg2.connect(place)
        admin.autocommit = True

        def restore() -> None:
            with admin.cursor() as cursor:
                cursor.execute(RESTORE_HERMITAGE)

        print(f"exhaustive mode at serializable, median of {rounds} rounds:")
        for name, (first, second) in RACES.items():
            per_second, sent_per_second = [], []
            for _ in range(rounds):
                interleaver = Interleaver(runner, SERIALIZABLE, first.steps(), second.steps(),
                                          reset=restore, final=FINAL_STATE)
                started = time.perf_counter()
                exploration = interleaver.explore()
                elapsed = time.perf_counter() - started
                per_second.append(len(exploration.interleavings) / elapsed)
                sent_per_second.append(interleaver.runs / elapsed)
            print(f"  {name:<12} {len(exploration.interleavings):3d} valid + "
                  f"{exploration.invalid} invalid merges, {interleaver.runs} schedules sent: "
                  f"{statistics.median(per_second):6.1f} interleavings/s "
                  f"({statistics.median(sent_per_second):.1f} schedules/s)")
        admin.close()


def bench_chapter(runs: int) -> None:
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-k", "isolation", "-q", "-p", "no:cacheprovider"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
        timings.append(time.perf_counter() - started)
        summary = (done.stdout.strip().splitlines() or ["?"])[-1]
        print(f"  pytest -k isolation: {timings[-1]:5.1f} s  ({summary})")
    median = statistics.median(timings)
    verdict = "ok" if median <= CHAPTER_BUDGET_S else "over"
    print(f"isolation chapter wall time, median of {runs}: {median:.1f} s "
          f"(budget {CHAPTER_BUDGET_S:g} s: {verdict})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="an existing server for part 1 (default: a temporary one)")
    parser.add_argument("--rounds", type=int, default=5, help="exhaustive rounds (default 5)")
    parser.add_argument("--chapter-runs", type=int, default=3, help="chapter runs (default 3)")
    parser.add_argument("--no-chapter", action="store_true", help="skip the chapter timing")
    args = parser.parse_args()
    bench_exhaustive(args.dsn, args.rounds)
    if not args.no_chapter:
        bench_chapter(args.chapter_runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
