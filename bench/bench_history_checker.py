"""How fast the history checker is, and how fast live histories are recorded.

    python bench/bench_history_checker.py [--dsn DSN] [--runs N] [--sizes 1000,10000,100000]

1. The checker on generated histories of 1,000 / 10,000 / 100,000 transactions:
   a simulated snapshot-isolation database (5 clients at once, first committer
   wins, 10 keys in use at a time, each retired after 32 appends) writes a
   list-append history -- with write skew (G2-item) here and there, as a real one
   has. Printed: the median of N runs of ``check`` (in memory) and of reading the
   history back from JSON lines, and the time per 1,000 transactions (growth is
   linear when that stays flat). Goal: 10,000 transactions in <= 2 s.
2. Live histories per second: ``list_append_history`` (4 workers x 15 rounds, the
   isolation chapter's size) at each isolation level on a temporary server (or
   --dsn), median of N runs, with transactions per second.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import psycopg2

from acid_lab.checkers.history import check
from acid_lab.engine.histories import (
    APPEND,
    FAIL,
    INVOKE,
    OK,
    READ,
    Operation,
    list_append_history,
    read_history,
    write_history,
)
from acid_lab.engine.scenario import READ_COMMITTED, REPEATABLE_READ, SERIALIZABLE
from acid_lab.servers.places import PlaceKeeper
from acid_lab.servers.target import open_target

GOAL_SIZE, GOAL_SECONDS = 10_000, 2.0
CLIENTS, ACTIVE_KEYS, APPENDS_PER_KEY = 5, 10, 32


def simulated_history(transactions: int, seed: int = 0) -> list[Operation]:
    """A list-append history of a simulated snapshot-isolation database."""
    rng = random.Random(seed)
    state: dict[int, tuple] = {}
    active = list(range(ACTIVE_KEYS))
    appended = dict.fromkeys(active, 0)
    next_key = ACTIVE_KEYS
    operations: list[Operation] = []
    running: dict[int, tuple] = {}  # client -> (planned mops, snapshot)

    def record(kind: str, client: int, mops) -> None:
        operations.append(Operation(kind, tuple(mops), process=client,
                                    time=len(operations), index=len(operations)))

    def start(client: int) -> None:
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
        record(INVOKE, client, mops)

    def finish(client: int) -> None:
        mops, snapshot = running.pop(client)
        written = {k for f, k, _ in mops if f == APPEND}
        if any(state.get(k, ()) != snapshot[k] for k in written):  # first committer wins
            record(FAIL, client, mops)
            return
        view, done = dict(snapshot), []
        for f, k, v in mops:
            if f == READ:
                done.append((READ, k, view[k]))
            else:
                view[k] = view[k] + (v,)
                done.append((APPEND, k, v))
        for k in written:
            state[k] = view[k]
        record(OK, client, done)

    for client in range(CLIENTS):
        start(client)
    for _ in range(transactions - CLIENTS):
        client = rng.choice(list(running))
        finish(client)
        start(client)
    for client in list(running):
        finish(client)
    return operations


def bench_checker(sizes: list[int], runs: int) -> None:
    print(f"checker on simulated snapshot-isolation histories, median of {runs} runs:")
    with tempfile.TemporaryDirectory(prefix="acid-lab-bench-") as folder:
        for size in sizes:
            operations = simulated_history(size, seed=size)
            path = Path(folder) / f"history-{size}.jsonl"
            write_history(operations, path)
            checking, reading, verdict = [], [], None
            for _ in range(runs):
                started = time.perf_counter()
                verdict = check(operations, "snapshot-isolation")
                checking.append(time.perf_counter() - started)
                started = time.perf_counter()
                read_history(path)
                reading.append(time.perf_counter() - started)
            seconds = statistics.median(checking)
            goal = ""
            if size == GOAL_SIZE:
                verdict_word = "ok" if seconds <= GOAL_SECONDS else "over"
                goal = f"  (goal <= {GOAL_SECONDS:g} s: {verdict_word})"
            print(f"  {size:>7,} transactions ({verdict.committed:,} committed): check "
                  f"{seconds:6.2f} s = {1000 * seconds / size * 1000:5.1f} ms per 1,000; "
                  f"read JSON lines {statistics.median(reading):5.2f} s; "
                  f"found {verdict.counts()}{goal}")


def bench_live(dsn: str | None, runs: int) -> None:
    print(f"live list-append histories (4 workers x 15 rounds), median of {runs} runs:")
    with ExitStack() as stack:
        target = stack.enter_context(open_target(dsn))
        keeper = PlaceKeeper(psycopg2.connect(**target.info.params()))
        stack.callback(keeper.close)
        connect = stack.enter_context(keeper.place(target.info))
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
    parser.add_argument("--dsn", help="an existing server for part 2 (default: a temporary one)")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure (default 5)")
    parser.add_argument("--sizes", default="1000,10000,100000",
                        help="history sizes in transactions (default 1000,10000,100000)")
    args = parser.parse_args()
    bench_checker([int(size) for size in args.sizes.split(",")], args.runs)
    bench_live(args.dsn, args.runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
