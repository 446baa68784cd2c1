"""How long a failover takes, and how long the replication chapter of the tests runs.

    python bench/bench_replication.py [--failovers 7] [--chapter-runs 1]

Failover, on a primary + hot standby (ReplicationPair), each round:
* lost: SIGKILL every process of the primary (its folder is left to its guard);
* promoted: ``select pg_promote()`` on the standby returns (it waits for the end
  of recovery);
* first write: a new session on the promoted server commits one row.
The clock starts at the loss. Between rounds a new standby is cloned from the
new primary (not timed). Prints the median of each part (milliseconds).

Chapter: the wall time of ``python -m pytest -q tests/test_replication.py``
(--chapter-runs times; 0 to skip), median.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg2

from acid_lab.servers.replication import ReplicationPair

REPO = Path(__file__).resolve().parent.parent


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def first_write(pair: ReplicationPair) -> None:
    conn = psycopg2.connect(**pair.primary.info.params())
    try:
        with conn, conn.cursor() as cur:
            cur.execute("insert into bench_failover default values")
    finally:
        conn.close()


def time_failovers(failovers: int) -> tuple[str, dict[str, list[float]]]:
    timings: dict[str, list[float]] = {"promoted": [], "first write": []}
    with ReplicationPair() as pair:
        server = pair.binaries.describe()
        with pair.admin(pair.primary).cursor() as cur:
            cur.execute("create table bench_failover (id bigint generated always as identity)")
        for _ in range(failovers):
            if pair.standby is None:
                pair.add_standby()
            pair.wait_caught_up()
            began = time.perf_counter()
            pair.lose_primary()
            pair.promote()
            promoted = time.perf_counter()
            first_write(pair)
            written = time.perf_counter()
            timings["promoted"].append(promoted - began)
            timings["first write"].append(written - began)
    return server, timings


def time_chapter(runs: int) -> list[float]:
    durations = []
    for _ in range(runs):
        began = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "tests/test_replication.py"], cwd=REPO, capture_output=True,
                              text=True, check=False)
        durations.append(time.perf_counter() - began)
        if done.returncode != 0:
            raise SystemExit(f"the chapter failed:\n{done.stdout[-3000:]}")
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failovers", type=int, default=7)
    parser.add_argument("--chapter-runs", type=int, default=1)
    args = parser.parse_args()

    server, timings = time_failovers(args.failovers)
    print(f"server: {server}")
    print(f"failovers: {args.failovers} (clock starts when the primary is lost)")
    for part, values in timings.items():
        print(f"  {part:<12} median {ms(statistics.median(values)):>7} ms   "
              f"(min {ms(min(values))}, max {ms(max(values))})")
    if args.chapter_runs > 0:
        durations = time_chapter(args.chapter_runs)
        print(f"replication chapter (pytest tests/test_replication.py), {args.chapter_runs} "
              f"run(s): median {statistics.median(durations):.1f} s")


if __name__ == "__main__":
    main()
