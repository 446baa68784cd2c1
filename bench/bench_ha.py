"""Time to a new leader, per fault, on a Patroni cluster (the HA chapter's), and the
chapter's own wall and CPU time.

Faults: the leader's PostgreSQL crashes (SIGKILL) with ``primary_start_timeout: 0``
(Patroni gives up the leader key at once); the leader's machine is lost (unplugged,
everything SIGKILLed: the key expires after ``ttl``); the leader is partitioned from etcd
and its replicas (nftables drops: it cannot renew its key; it expires after ``ttl``).
Each fault REPEATS times on one cluster (the old leader brought back between two, and
the cluster healthy again), medians printed. Needs what the chapter needs (root, etcd,
nftables, Patroni's venv).

    python bench/bench_ha.py [REPEATS]
"""

from __future__ import annotations

import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from acid_lab.servers.patroni import PatroniCluster, ha_missing  # noqa: E402

BOUND = 90


def _crash_postgres(cluster, leader):
    cluster.kill_postgres(leader)
    return lambda: None  # Patroni starts it again itself, as a replica


def _lose_machine(cluster, leader):
    cluster.lose_machine(leader)
    return lambda: cluster.restore_machine(leader)


def _partition(cluster, leader):
    cluster.network.cut_off(leader.name, *(name for name in cluster.network.addresses
                                           if name != leader.name))
    return lambda: cluster.network.heal(leader.name)


FAULTS = [
    ("PostgreSQL crash, primary_start_timeout 0", {"primary_start_timeout": 0},
     _crash_postgres),
    ("machine lost (ttl 20 s)", {}, _lose_machine),
    ("partition of the leader (ttl 20 s)", {}, _partition),
]


def time_to_new_leader(settings: dict, fault, repeats: int) -> list[float]:
    times = []
    with PatroniCluster(**settings) as cluster:
        for _ in range(repeats):
            old = cluster.wait_until_healthy(BOUND)
            started = time.monotonic()
            restore = fault(cluster, old)
            cluster.wait_for_new_leader(old, BOUND)
            times.append(time.monotonic() - started)
            restore()
        cluster.wait_until_healthy(BOUND)
    return times


def chapter_time() -> tuple[float, float]:
    """Wall and CPU time (this pytest and every process it waited for) of `-m ha`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "ha"],
                   cwd=Path(__file__).resolve().parent.parent, check=True,
                   stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.monotonic() - started, cpu


def main() -> None:
    missing = ha_missing()
    if missing:
        raise SystemExit(f"bench_ha: {missing}")
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for name, settings, fault in FAULTS:
        times = time_to_new_leader(settings, fault, repeats)
        print(f"{name}: median {statistics.median(times):.1f} s to a new leader "
              f"({', '.join(f'{t:.1f}' for t in times)})", flush=True)
    wall, cpu = chapter_time()
    print(f"pytest -m ha: {wall:.1f} s wall, {cpu:.1f} s CPU (pytest and the processes it "
          "waited for; not the servers Patroni started)")


if __name__ == "__main__":
    main()
