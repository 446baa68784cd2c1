"""How fast the history checker is, at Elle's scale, and how fast live histories are recorded.

    python bench/bench_history_checker.py [--runs N] [--sizes 1000,10000,100000,1000000]
                                          [--format-size 10000] [--dsn DSN] [--skip-live]

1. EDN vs JSON lines: one simulated history (--format-size transactions) written both ways;
   the median of N reads of each (``read_history``, as ``check`` reads a file) and their
   ratio. Goal: EDN within 2x of JSON lines.
2. The checker on simulated histories of 1,000 / 10,000 / 100,000 / 1,000,000 transactions:
   a simulated snapshot-isolation database (5 clients at once, first committer wins, 10
   keys in use at a time, each retired after 32 appends) writes a list-append history --
   with write skew (G2-item) here and there, as a real one has -- to a JSON lines file.
   Each run is a fresh process that reads the file as a stream and checks it; printed: the
   medians of N runs of reading, of checking, and of the process's peak memory, and the
   time per 1,000 transactions (growth is linear when that stays flat). Goals: 10,000
   transactions checked in <= 2 s; 1,000,000 read and checked in <= 60 s within 2 GB.
3. Live histories per second: ``list_append_history`` (4 workers x 15 rounds, the
   isolation chapter's size) at each isolation level on a temporary server (or --dsn),
   median of N runs, with transactions per second.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import psycopg2

from acid_lab.checkers.histories import (
    APPEND,
    FAIL,
    INVOKE,
    OK,
    READ,
    Operation,
    read_history,
    write_history,
)
from acid_lab.checkers.history import check
from acid_lab.engine.scenario import READ_COMMITTED, REPEATABLE_READ, SERIALIZABLE
from acid_lab.lessons.list_append import list_append_history
from acid_lab.lessons.schema import HERMITAGE
from acid_lab.servers.places import PlaceKeeper
from acid_lab.servers.target import open_target

GOAL_SIZE, GOAL_SECONDS = 10_000, 2.0
SCALE_SIZE, SCALE_SECONDS, SCALE_MEMORY_MB = 1_000_000, 60.0, 2048
FORMAT_RATIO_GOAL = 2.0
CLIENTS, ACTIVE_KEYS, APPENDS_PER_KEY = 5, 10, 32
MODEL = "snapshot-isolation"


def simulated_history(transactions: int, seed: int = 0) -> Iterator[Operation]:
    """A list-append history of a simulated snapshot-isolation database, as a stream."""
    rng = random.Random(seed)
    state: dict[int, tuple] = {}
    active = list(range(ACTIVE_KEYS))
    appended = dict.fromkeys(active, 0)
    next_key = ACTIVE_KEYS
    written = 0
    running: dict[int, tuple] = {}  # client -> (planned mops, snapshot)

    def record(kind: str, client: int, mops) -> Operation:
        nonlocal written
        written += 1
        return Operation(kind, tuple(mops), process=client, time=written - 1,
                         index=written - 1)

    def start(client: int) -> Operation:
        nonlocal next_key
        mops = []
        for _ in range(rng.randint(1, 4)):
            k = rng.choice(active)
            if rng.random() < 0.5:
                mops.append((READ, k, None))
            else:
                appended[k] += 1
                mops.append((APPEND, k, appended[k]))
                if appended[k] >= APPENDS_PER_KEY:  # retire the key, bring in a fresh one
                    active[active.index(k)] = next_key
                    appended[next_key] = 0
                    next_key += 1
        running[client] = (mops, {k: state.get(k, ()) for _, k, _ in mops})
        return record(INVOKE, client, mops)

    def finish(client: int) -> Operation:
        mops, snapshot = running.pop(client)
        changed = {k for f, k, _ in mops if f == APPEND}
        if any(state.get(k, ()) != snapshot[k] for k in changed):  # first committer wins
            return record(FAIL, client, mops)
        view, done = dict(snapshot), []
        for f, k, v in mops:
            if f == READ:
                done.append((READ, k, view[k]))
            else:
                view[k] = view[k] + (v,)
                done.append((APPEND, k, v))
        for k in changed:
            state[k] = view[k]
        return record(OK, client, done)

    for client in range(CLIENTS):
        yield start(client)
    for _ in range(transactions - CLIENTS):
        client = rng.choice(list(running))
        yield finish(client)
        yield start(client)
    for client in list(running):
        yield finish(client)


def measure(path: str) -> None:
    """One run, in a process of its own: read ``path`` as ``check`` does, check it, and
    print the times and this process's peak memory as one JSON line."""
    started = time.perf_counter()
    operations = read_history(path)
    read = time.perf_counter() - started
    verdict = check(operations, MODEL)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"read": read, "check": verdict.seconds, "peak_mb": peak_mb,
                      "committed": verdict.committed, "counts": verdict.counts()}))


def measured_run(path: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--measure", str(path)],
                            capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(result.stdout)


def bench_formats(size: int, runs: int, folder: Path) -> None:
    print(f"EDN vs JSON lines, the same history of {size:,} transactions, median of {runs} "
          "reads:")
    operations = list(simulated_history(size, seed=size))
    seconds = {}
    for suffix in (".jsonl", ".edn"):
        path = folder / f"formats{suffix}"
        write_history(operations, path)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            assert len(read_history(path)) == len(operations)
            times.append(time.perf_counter() - started)
        seconds[suffix] = statistics.median(times)
        print(f"  {suffix:<7} {path.stat().st_size / 2**20:6.1f} MB  {seconds[suffix]:6.2f} s "
              f"({1e6 * seconds[suffix] / len(operations):5.1f} us an operation)")
    ratio = seconds[".edn"] / seconds[".jsonl"]
    verdict = "ok" if ratio <= FORMAT_RATIO_GOAL else "over"
    print(f"  EDN / JSON lines: {ratio:.2f}x  (goal <= {FORMAT_RATIO_GOAL:g}x: {verdict})")


def bench_checker(sizes: list[int], runs: int, folder: Path) -> None:
    print(f"checker on simulated snapshot-isolation histories (JSON lines), each run a fresh "
          f"process, median of {runs} runs:")
    per_thousand = {}
    for size in sizes:
        path = folder / f"history-{size}.jsonl"
        write_history(simulated_history(size, seed=size), path)
        results = [measured_run(path) for _ in range(runs)]
        path.unlink()
        read = statistics.median(r["read"] for r in results)
        checking = statistics.median(r["check"] for r in results)
        peak = statistics.median(r["peak_mb"] for r in results)
        per_thousand[size] = 1000 * checking / size
        goal = ""
        if size == GOAL_SIZE:
            goal = f"  (goal check <= {GOAL_SECONDS:g} s: " \
                   f"{'ok' if checking <= GOAL_SECONDS else 'over'})"
        if size == SCALE_SIZE:
            fits = read + checking <= SCALE_SECONDS and peak <= SCALE_MEMORY_MB
            goal = f"  (goal <= {SCALE_SECONDS:g} s, <= {SCALE_MEMORY_MB} MB: " \
                   f"{'ok' if fits else 'over'})"
        print(f"  {size:>9,} transactions ({results[0]['committed']:,} committed): read "
              f"{read:6.2f} s, check {checking:6.2f} s = {1000 * per_thousand[size]:5.1f} ms "
              f"per 1,000; peak {peak:6.0f} MB; found {results[0]['counts']}{goal}")
    if len(per_thousand) > 1:
        smallest, largest = min(per_thousand), max(per_thousand)
        print(f"  growth {smallest:,} -> {largest:,}: checking time per transaction x"
              f"{per_thousand[largest] / per_thousand[smallest]:.2f} (1.00 = linear)")


def bench_live(dsn: str | None, runs: int) -> None:
    print(f"live list-append histories (4 workers x 15 rounds), median of {runs} runs:")
    with ExitStack() as stack:
        target = stack.enter_context(open_target(dsn))
        keeper = PlaceKeeper(psycopg2.connect(**target.info.params()))
        stack.callback(keeper.close)
        connect = stack.enter_context(keeper.place(target.info, HERMITAGE))
        for level in (READ_COMMITTED, REPEATABLE_READ, SERIALIZABLE):
            seconds, counts = [], None
            for seed in range(runs):
                started = time.perf_counter()
                recorded = list_append_history(connect, level=level, workers=4, rounds=15,
                                               keys=4, seed=seed)
                seconds.append(time.perf_counter() - started)
                counts = recorded
            median = statistics.median(seconds)
            total = counts.committed + counts.failed + counts.unknown
            print(f"  {level:<16} {1 / median:5.1f} histories/s  "
                  f"({total / median:6.0f} transactions/s; {median * 1000:.0f} ms a history)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="an existing server for part 3 (default: a temporary one)")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument("--sizes", default="1000,10000,100000,1000000",
                        help="history sizes in transactions (default 1000,10000,100000,1000000)")
    parser.add_argument("--format-size", type=int, default=10_000,
                        help="transactions of the EDN vs JSON history (default 10000)")
    parser.add_argument("--skip-live", action="store_true", help="leave out part 3")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # one run, in a child process
    args = parser.parse_args()
    if args.measure:
        measure(args.measure)
        return 0
    with tempfile.TemporaryDirectory(prefix="acid-lab-bench-") as folder:
        bench_formats(args.format_size, args.runs, Path(folder))
        bench_checker([int(size) for size in args.sizes.split(",")], args.runs, Path(folder))
    if not args.skip_live:
        bench_live(args.dsn, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
