"""How long the ACID report takes, and how many scenarios to run at once.

    python bench/bench_report.py [--runs 3] [--workers 1 2 4 8] [--whole]

On one temporary server: the isolation matrix (40 scenarios, each in a fresh
place) ``--runs`` times for each worker count; prints the median and checks
that every run decided every cell the same way (running cells side by side
must not change what they observe). ``--whole`` also times the complete
``python -m acid_lab report`` (server start, matrix, demonstrations, a crash
server) as a child process, median of ``--runs``.
"""

import argparse
import statistics
import subprocess
import sys
import time

from acid_lab.report.build import observe_matrix
from acid_lab.servers.target import open_target


def cells(observations) -> dict:
    return {cell: observation.possible for cell, observation in observations.items()}


def time_matrix(info, workers: int, runs: int) -> tuple[float, bool]:
    timings, decisions = [], []
    for _ in range(runs):
        began = time.perf_counter()
        decisions.append(cells(observe_matrix(info, workers=workers)))
        timings.append(time.perf_counter() - began)
    return statistics.median(timings), all(d == decisions[0] for d in decisions)


def time_whole(runs: int) -> float:
    timings = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-m", "acid_lab", "report", "--json"], check=True,
                       stdout=subprocess.DEVNULL, timeout=300)
        timings.append(time.perf_counter() - began)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--whole", action="store_true")
    args = parser.parse_args()

    with open_target() as target:
        print(f"server: {target.description}")
        for workers in args.workers:
            median, stable = time_matrix(target.info, workers, args.runs)
            print(f"matrix, {workers} at once: median {median * 1000:.0f} ms of {args.runs}"
                  f"{'' if stable else '  (CELLS DIFFER BETWEEN RUNS)'}")
    if args.whole:
        print(f"whole report: median {time_whole(args.runs):.1f} s of {args.runs}")


if __name__ == "__main__":
    main()
