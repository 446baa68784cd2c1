"""How long a run waits for its server, and what one test's clean place costs.

    python bench/bench_server.py [--starts 6] [--places 200]

Prints medians (milliseconds) of:
* server start: a temporary cluster started until it accepts connections, and its
  teardown: the run's first (initdb, kept as the run's template) and the later ones
  (copies of that template), with their ratio;
* a test's place: the schema with the demo table, created and dropped (what
  every test pays), against a database created from a template and dropped
  (the alternative, measured at 60-370 ms when the suite was designed).
All figures of one invocation come from the same machine state; rerun to compare.
"""

import argparse
import statistics
import time

import psycopg2
from psycopg2 import sql

from acid_lab.lessons.schema import HERMITAGE
from acid_lab.servers.cluster import Cluster
from acid_lab.servers.places import PlaceKeeper


def ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def time_server_starts(count: int) -> tuple[list[float], list[float]]:
    """The first start of the run runs initdb; the later ones copy its folder."""
    starts, stops = [], []
    for _ in range(count):
        began = time.perf_counter()
        cluster = Cluster()
        cluster.start()
        started = time.perf_counter()
        cluster.destroy()
        starts.append(started - began)
        stops.append(time.perf_counter() - started)
    return starts, stops


def time_places(cluster: Cluster, count: int) -> list[float]:
    keeper = PlaceKeeper(psycopg2.connect(**cluster.info.params()))
    try:
        durations = []
        for _ in range(count):
            began = time.perf_counter()
            name = keeper.create(HERMITAGE)
            keeper.drop(name)
            durations.append(time.perf_counter() - began)
        return durations
    finally:
        keeper.close()


def time_template_databases(cluster: Cluster, count: int) -> list[float]:
    admin = psycopg2.connect(**cluster.info.params())
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute("create database bench_template")
        template = psycopg2.connect(**cluster.info.params(dbname="bench_template"))
        with template, template.cursor() as cur:
            cur.execute(HERMITAGE)
        template.close()
        durations = []
        with admin.cursor() as cur:
            for i in range(count):
                name = sql.Identifier(f"bench_copy_{i}")
                began = time.perf_counter()
                cur.execute(sql.SQL("create database {} template bench_template").format(name))
                cur.execute(sql.SQL("drop database {}").format(name))
                durations.append(time.perf_counter() - began)
        return durations
    finally:
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=6)
    parser.add_argument("--places", type=int, default=200)
    parser.add_argument("--databases", type=int, default=10)
    args = parser.parse_args()
    if args.starts < 2:
        parser.error("--starts: at least 2 (the first runs initdb, the others copy it)")

    starts, stops = time_server_starts(args.starts)
    with Cluster() as cluster:
        print(f"server: {cluster.binaries.describe()}")
        places = time_places(cluster, args.places)
        databases = time_template_databases(cluster, args.databases)

    first, copies = starts[0], statistics.median(starts[1:])
    print(f"server start: the run's first (initdb + start) {ms(first)} ms; the later ones "
          f"(a copy of its folder + start), median of {args.starts - 1}: {ms(copies)} ms "
          f"(ratio {first / copies:.1f}x; stop + cleanup: {ms(statistics.median(stops))} ms)")
    print(f"test place (schema + demo table, create + drop), median of {args.places}: "
          f"{ms(statistics.median(places))} ms")
    print(f"database from template (create + drop), median of {args.databases}: "
          f"{ms(statistics.median(databases))} ms  "
          f"(ratio to a place: {statistics.median(databases) / statistics.median(places):.0f}x)")


if __name__ == "__main__":
    main()
