"""What the power-cut disk costs: one power cut + restart cycle, and commits through FUSE.

    python bench/bench_powercut.py [--cycles 10] [--rows 20] [--commits 300]

Each cycle commits ``--rows`` single-row transactions (fsync on: each one
fdatasyncs the WAL through the disk), then:
* cut: SIGKILL every server process, forget the unsynced writes, unmount;
* restart: mount the disk again, start the postmaster, WAL replay, until ready;
* first query: log in and count the rows (every acknowledged one must be there).
Prints the median of each part and of the whole cycle (milliseconds).

Then single-row COMMIT throughput (fsync on, synchronous_commit on) on a cluster
whose data folder is the FUSE disk and on one in a plain folder, in the same run,
and their ratio: the price of sending every read, write and fsync through a
filesystem written in Python.
"""

import argparse
import statistics
import time

import psycopg2
from bench_crash import ms, time_cycles  # (this folder is on the path: run as a script)

from acid_lab.servers.crashable import CrashableCluster
from acid_lab.servers.powercut import PowerCutCluster, fuse_missing


def connect(cluster):
    return psycopg2.connect(**cluster.info.params())


def create_table(cluster) -> None:
    conn = connect(cluster)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("create table bench_rows (id bigint generated always as identity)")
    conn.close()


def commit_rows(cluster, rows: int) -> float:
    """``rows`` one-row transactions; returns the seconds they took."""
    conn = connect(cluster)
    try:
        with conn.cursor() as cur:
            began = time.perf_counter()
            for _ in range(rows):
                cur.execute("insert into bench_rows default values")
                conn.commit()
            return time.perf_counter() - began
    finally:
        conn.close()


def throughput(cluster, commits: int) -> float:
    """Single-row commits per second, the median of three rounds."""
    return statistics.median(commits / commit_rows(cluster, commits) for _ in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--commits", type=int, default=300)
    args = parser.parse_args()
    missing = fuse_missing()
    if missing:
        print(f"skipped: {missing}")
        return

    with PowerCutCluster() as cluster:
        print(f"server: {cluster.binaries.describe()}")
        create_table(cluster)
        timings = time_cycles(cluster, args.cycles, args.rows, failure="power_cut",
                              commit=commit_rows)
        on_fuse = throughput(cluster, args.commits)
    with CrashableCluster() as plain:
        create_table(plain)
        on_folder = throughput(plain, args.commits)

    print(f"power cut + restart cycles: {args.cycles}, {args.rows} acknowledged commits before "
          "each cut, none lost")
    for part, values in timings.items():
        print(f"  {part:<12} median {ms(statistics.median(values)):>7} ms   "
              f"(min {ms(min(values))}, max {ms(max(values))})")
    print(f"one-row COMMITs per second (fsync on), median of 3 rounds of {args.commits}:")
    print(f"  FUSE disk     {on_fuse:>8.0f}")
    print(f"  plain folder  {on_folder:>8.0f}")
    print(f"  ratio         {on_fuse / on_folder:>8.2f}")


if __name__ == "__main__":
    main()
