"""How long an 8-step, two-session scenario takes with the scenario runner.

    python bench/bench_scenario.py [--dsn DSN] [--runs N] [--rounds R]

Without --dsn it starts a temporary server. The scenario is Hermitage's lost
update at repeatable read (one step blocks, then aborts with 40001). It is
timed three ways, each as the median of N runs, repeated R rounds:

* cold: ``run_scenario`` on fresh connections: two sessions plus the monitor
  are opened and closed every time (with the temporary server's
  scram-sha-256 logins, each connection costs about 10 ms of CPU);
* reset: one long-lived ``ScenarioRunner``, ``reset(search_path=...)`` before
  every run, as a session-scoped runner moving from one test's place to the
  next does (``discard all`` plus ``set_config`` per session);
* warm: the same runner reused as it is, so only the steps themselves count.

The table is restored between runs, outside the timed part. Target: median
<= 15 ms on the 2-core reference machine.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time

import psycopg2
from psycopg2 import sql

from acid_lab.engine.expectations import aborts, blocks, sees
from acid_lab.engine.scenario import REPEATABLE_READ, T1, T2, ScenarioRunner, run_scenario
from acid_lab.servers.places import new_schema_name

TARGET_MS = 15.0

LOST_UPDATE = [
    (T1, "select value from test where id = 1", sees(10)),
    (T2, "select value from test where id = 1", sees(10)),
    (T1, "update test set value = 11 where id = 1"),
    (T2, "update test set value = 12 where id = 1", blocks(then=aborts("40001"))),
    (T1, "commit"),
    (T2, "rollback"),
    (T1, "select value from test where id = 1", sees(11)),
    (T2, "select value from test where id = 1", sees(11)),
]


@contextlib.contextmanager
def bench_place(dsn: str | None):
    """A DSN whose search_path starts at a fresh schema holding the test table."""
    with contextlib.ExitStack() as stack:
        if dsn is None:
            from acid_lab.servers.cluster import Cluster

            dsn = stack.enter_context(Cluster()).dsn
        admin = psycopg2.connect(dsn)
        admin.autocommit = True
        stack.callback(admin.close)
        schema = new_schema_name()
        ident = sql.Identifier(schema)
        with admin.cursor() as cur:
            cur.execute(sql.SQL("create schema {}").format(ident))
            cur.execute(sql.SQL("create table {}.test (id int primary key, value int)")
                        .format(ident))
        stack.callback(lambda: admin.cursor().execute(
            sql.SQL("drop schema {} cascade").format(ident)))
        params = psycopg2.extensions.parse_dsn(dsn)
        params["options"] = f"{params.get('options', '')} -c search_path={schema}".strip()
        place_dsn = psycopg2.extensions.make_dsn(**params)

        def reset() -> None:
            with admin.cursor() as cur:
                cur.execute(sql.SQL("truncate {0}.test; insert into {0}.test values "
                                    "(1, 10), (2, 20)").format(ident))

        yield place_dsn, schema, reset


def median_ms(run_once, reset, runs: int) -> float:
    timings = []
    for _ in range(runs):
        reset()
        started = time.perf_counter()
        run_once()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", help="an existing server (default: a temporary one)")
    parser.add_argument("--runs", type=int, default=50, help="runs per round (default 50)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    args = parser.parse_args()

    with bench_place(args.dsn) as (dsn, schema, reset):
        modes: dict[str, list[float]] = {"cold": [], "reset": [], "warm": []}
        with ScenarioRunner(dsn) as runner:

            def after_reset() -> None:
                runner.reset(search_path=schema)
                runner.run(REPEATABLE_READ, LOST_UPDATE)

            for _ in range(args.rounds):
                modes["cold"].append(median_ms(
                    lambda: run_scenario(dsn, REPEATABLE_READ, LOST_UPDATE), reset, args.runs))
                modes["reset"].append(median_ms(after_reset, reset, args.runs))
                modes["warm"].append(median_ms(
                    lambda: runner.run(REPEATABLE_READ, LOST_UPDATE), reset, args.runs))
    print(f"8-step two-session scenario, median of {args.runs} runs, per round (ms):")
    for mode, medians in modes.items():
        overall = statistics.median(medians)
        verdict = "ok" if overall <= TARGET_MS else "over"
        print(f"  {mode:<6}" + "".join(f"{m:8.1f}" for m in medians)
              + f"   median {overall:5.1f}  (target {TARGET_MS:g}: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
