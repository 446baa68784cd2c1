"""How long one crash + restart cycle of a CrashableCluster takes (the durability chapter's unit).

    python bench/bench_crash.py [--cycles 15] [--rows 100] [--commits 200]

Each cycle commits ``--rows`` rows (so that recovery has WAL to replay), then:
* crash: SIGKILL every server process, reap them all;
* restart: start the postmaster, WAL replay, end-of-recovery checkpoint, until
  postmaster.pid says "ready";
* first query: log in and count the rows (they must all be there).
Prints the median of each part and of the whole cycle (milliseconds).

Then the price of durability: the median time of a one-row commit with
synchronous_commit on (COMMIT waits for the WAL flush, fsync on) and off (it
does not; a crash may lose it), as the durability chapter's synchronous_commit
test explains.
"""

import argparse
import statistics
import time

import psycopg2

from acid_lab.servers.crashable import CrashableCluster


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def commit_rows(cluster: CrashableCluster, rows: int) -> None:
    conn = psycopg2.connect(**cluster.info.params())
    try:
        with conn, conn.cursor() as cur:
            cur.execute("insert into bench_rows select from generate_series(1, %s)", (rows,))
    finally:
        conn.close()


def count_rows(cluster: CrashableCluster) -> int:
    conn = psycopg2.connect(**cluster.info.params())
    try:
        with conn.cursor() as cur:
            cur.execute("select count(*) from bench_rows")
            return cur.fetchone()[0]
    finally:
        conn.close()


def time_cycles(cluster: CrashableCluster, cycles: int, rows: int, *, failure: str = "crash",
                commit=commit_rows) -> dict[str, list[float]]:
    """``cycles`` times: ``commit(cluster, rows)``, then ``cluster.<failure>()`` (crash, or a
    power cut of bench_powercut.py), restart, count; every committed row must be there."""
    timings: dict[str, list[float]] = {failure: [], "restart": [], "first query": [], "cycle": []}
    for cycle in range(1, cycles + 1):
        commit(cluster, rows)
        began = time.perf_counter()
        getattr(cluster, failure)()
        failed = time.perf_counter()
        cluster.restart()
        restarted = time.perf_counter()
        found = count_rows(cluster)
        answered = time.perf_counter()
        if found != cycle * rows:
            raise SystemExit(f"cycle {cycle}: {found} rows after the {failure}, "
                             f"{cycle * rows} committed: a committed row was lost")
        timings[failure].append(failed - began)
        timings["restart"].append(restarted - failed)
        timings["first query"].append(answered - restarted)
        timings["cycle"].append(answered - began)
    return timings


def time_commits(cluster: CrashableCluster, commits: int, synchronous_commit: str) -> list[float]:
    conn = psycopg2.connect(**cluster.info.params())
    try:
        with conn.cursor() as cur:
            cur.execute("set synchronous_commit = %s", (synchronous_commit,))
            conn.commit()
            durations = []
            for _ in range(commits):
                cur.execute("insert into bench_rows default values")
                began = time.perf_counter()
                conn.commit()
                durations.append(time.perf_counter() - began)
        return durations
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=15)
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--commits", type=int, default=200)
    args = parser.parse_args()

    with CrashableCluster() as cluster:
        print(f"server: {cluster.binaries.describe()}")
        conn = psycopg2.connect(**cluster.info.params())
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("create table bench_rows (id bigint generated always as identity)")
        conn.close()
        timings = time_cycles(cluster, args.cycles, args.rows)
        commits = {mode: time_commits(cluster, args.commits, mode) for mode in ("on", "off")}

    print(f"crash + restart cycles: {args.cycles}, {args.rows} committed rows before each crash")
    for part, values in timings.items():
        print(f"  {part:<12} median {ms(statistics.median(values)):>7} ms   "
              f"(min {ms(min(values))}, max {ms(max(values))})")
    print(f"one-row COMMIT, median of {args.commits}:")
    for mode, values in commits.items():
        print(f"  synchronous_commit {mode:<3} {statistics.median(values) * 1000:>7.3f} ms")


if __name__ == "__main__":
    main()
