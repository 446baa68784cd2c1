"""High availability: Patroni on etcd, three PostgreSQL nodes, real faults.

Each scenario runs on a cluster of its own (etcd and three nodes, each on a machine of
its own: a network namespace). Patroni's leader key lives at least ``ttl`` = 20 s after
a machine is lost, so the scenarios start in the background as soon as the run knows
its tests, all at once, beside the other chapters; these tests come last and read
what happened.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable

import pytest

from acid_lab.checkers.history import check
from acid_lab.lessons.ha import (
    DEMOTES,
    FAILSAFE_KEEPS,
    Failover,
    failover_history,
    freeze_leaders_patroni,
    lose_etcd,
    lose_every_replica,
    lose_leader_while_replicas_lag,
    partition_leader,
    switch_over_then_crash,
)
from acid_lab.servers.patroni import PatroniCluster, abandon_waits, ha_missing

MISSING = ha_missing()
pytestmark = [pytest.mark.ha, pytest.mark.own_server,
              pytest.mark.skipif(MISSING is not None, reason=f"HA chapter: {MISSING}")]

BOUND = 180  # seconds a scenario may take: a cluster's start, a failover (ttl), the end


def machine_lost(settings: dict, **lesson) -> Callable[[], Failover]:
    def scenario() -> Failover:
        with PatroniCluster(**settings) as cluster:
            return lose_leader_while_replicas_lag(cluster, **lesson)
    return scenario


# settings, what the lesson does, then what must come of it
FAILOVERS = [
    pytest.param({}, {"replicated": 5, "unshipped": 3},
                 "lost 3 of 8", [6, 7, 8], None, {"G-single-realtime": 1},
                 id="asynchronous (Patroni's default): acknowledged commits lost"),
    pytest.param({"synchronous_mode": True}, {"replicated": 5, "unshipped": 3},
                 "lost 0 of 5", [], "SyncRep", {},
                 id="synchronous_mode: nothing acknowledged lost, the COMMIT waits"),
    pytest.param({"synchronous_mode": True},
                 {"replicated": 5, "unshipped": 1, "cancel_waiting_commit": True},
                 "lost 1 of 6", [6], "SyncRep", {"G-single-realtime": 1},
                 id="synchronous_mode, the waiting COMMIT cancelled: visible, then lost"),
]
NOT_PROMOTED = pytest.param({"maximum_lag_on_failover": 1}, {"replicated": 5, "unshipped": 3},
                            id="maximum_lag_on_failover below the lag: no replica promoted")


def leader_partitioned(settings: dict, **lesson) -> Callable[[], Failover]:
    def scenario() -> Failover:
        with PatroniCluster(**settings) as cluster:
            return partition_leader(cluster, **lesson)
    return scenario


# settings, then what must come of it: lost, the wait event of a COMMIT in the window
PARTITIONS = [
    pytest.param({}, "lost 3 of 8", None,
                 id="asynchronous: writes acknowledged by the cut-off leader lost"),
    pytest.param({"synchronous_mode": True}, "lost 0 of 5", "SyncRep",
                 id="synchronous_mode: the cut-off leader acknowledges nothing"),
]


def etcd_lost(settings: dict) -> Callable[[], object]:
    def scenario():
        with PatroniCluster(**settings) as cluster:
            return lose_etcd(cluster)
    return scenario


# failsafe_mode, then what the leader's Patroni says and whether it still takes writes
ETCD_LOST = [
    pytest.param(False, DEMOTES, False,
                 id="etcd lost, no failsafe_mode: the leader demotes itself"),
    pytest.param(True, FAILSAFE_KEEPS, True,
                 id="etcd lost, failsafe_mode: the leader keeps serving"),
]


def handovers() -> object:
    with PatroniCluster(primary_start_timeout=0) as cluster:
        return switch_over_then_crash(cluster)


HANDOVERS = pytest.param(id="switchover, then the new leader's PostgreSQL crashes")


def split_brain() -> object:
    with PatroniCluster() as cluster:
        return freeze_leaders_patroni(cluster, replicated=5)


SPLIT_BRAIN = "the leader's Patroni frozen: two primaries"


def replicas_lost(settings: dict) -> Callable[[], object]:
    def scenario():
        with PatroniCluster(**settings) as cluster:
            return lose_every_replica(cluster)
    return scenario


# synchronous_mode_strict, then the leader's synchronous_standby_names and its COMMIT
NO_STANDBY = [
    pytest.param(False, "(empty)", "returned",
                 id="synchronous_mode, every replica lost: back to asynchronous"),
    pytest.param(True, "*", "SyncRep",
                 id="synchronous_mode_strict, every replica lost: COMMIT waits"),
]


def _scenarios() -> dict[str, Callable[[], Failover]]:
    scenarios = {case.id: machine_lost(case.values[0], **case.values[1]) for case in FAILOVERS}
    settings, lesson = NOT_PROMOTED.values
    scenarios[NOT_PROMOTED.id] = machine_lost(settings, **lesson, expect_failover=False)
    for case in PARTITIONS:
        scenarios[case.id] = leader_partitioned(case.values[0], replicated=5, in_window=3)
    scenarios[HANDOVERS.id] = handovers
    scenarios[SPLIT_BRAIN] = split_brain
    for case in NO_STANDBY:
        scenarios[case.id] = replicas_lost({"synchronous_mode": True,
                                            "synchronous_mode_strict": case.values[0]})
    for case in ETCD_LOST:
        scenarios[case.id] = etcd_lost({"failsafe_mode": case.values[0]})
    return scenarios


class Scenarios:
    """Every selected scenario's run, started at once in threads of its own."""

    def __init__(self, ids: list[str]):
        scenarios = _scenarios()
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(ids)))
        self.futures = {case_id: self.pool.submit(scenarios[case_id]) for case_id in ids}

    def outcome(self, case_id: str) -> Failover:
        if case_id not in self.futures:  # (under pytest-xdist: started when asked)
            self.futures[case_id] = self.pool.submit(_scenarios()[case_id])
        return self.futures[case_id].result(timeout=BOUND)

    def close(self) -> None:
        """At the run's end: scenarios still under way (Ctrl-C) stop waiting and close."""
        abandon_waits()
        self.pool.shutdown(wait=True, cancel_futures=True)


_background: Scenarios | None = None


def start_in_background(items: list[pytest.Item]) -> tuple[list[pytest.Item],
                                                          Callable[[], None]]:
    """Called by conftest once the run knows its tests: start the selected scenarios."""
    global _background
    if MISSING is not None or "PYTEST_XDIST_WORKER" in os.environ:
        return [], lambda: None
    waiting = [item for item in items if item.get_closest_marker("skip") is None
               and hasattr(item, "callspec")]
    if not waiting:
        return [], lambda: None
    _background = Scenarios([item.callspec.id for item in waiting])
    return waiting, _background.close


@pytest.fixture(scope="module")
def scenarios():
    if _background is not None:
        yield _background
        return
    runs = Scenarios([])
    try:
        yield runs
    finally:
        runs.close()


@pytest.mark.parametrize("settings, lesson, lost, read_then_gone, commit_waited, anomalies",
                         FAILOVERS)
def test_leader_machine_lost_while_replicas_lag(scenarios, request, settings, lesson, lost,
                                                read_then_gone, commit_waited, anomalies):
    """Scenario: five rows committed and replayed everywhere; then a partition drops every
    packet between the leader and its replicas, and the client commits more (one row per
    COMMIT); the leader's machine is lost (unplugged, Patroni and PostgreSQL SIGKILLed);
    Patroni elects a new leader once the old one's key expires (ttl).

    Outcome: asynchronous (Patroni's default), every COMMIT after the partition was
    acknowledged and is gone. synchronous_mode: the first COMMIT after it waits for the
    synchronous standby (wait event SyncRep) and is never acknowledged; nothing
    acknowledged is lost. But a waiting COMMIT that the client cancels returns (a
    WARNING: committed locally, not replicated), another client reads its row on the
    leader, and the new leader does not have it.

    As a history (appends of the row ids, the read on the old leader, the read on the new
    one, in real-time order), our checker with real-time order (strict-serializable)
    names the loss a G-single-realtime: the new leader's read misses a write that ended
    before it began. Without real-time edges (serializable) the same history is valid:
    the read could have come first.
    """
    outcome = scenarios.outcome(request.node.callspec.id)
    history = failover_history(outcome)
    assert check(history, "strict-serializable").counts() == anomalies
    assert check(history, "serializable").valid
    assert outcome.new_leader not in (None, outcome.old_leader)
    assert outcome.summary() == lost
    assert outcome.lost == read_then_gone
    assert outcome.read_then_gone == read_then_gone
    assert outcome.waiting_commit == commit_waited


@pytest.mark.parametrize("settings, lesson", [NOT_PROMOTED])
def test_lagging_replicas_are_not_promoted(scenarios, request, settings, lesson):
    """Scenario: as above, asynchronous, with maximum_lag_on_failover (bytes) below what
    the replicas lack when the leader's machine is lost.

    Outcome: each replica logs that its WAL position "exceeds maximum replication lag"
    and stays out of the leader race: nobody leads (the 8 acknowledged rows are not
    lost, nor can anything be written).
    """
    outcome = scenarios.outcome(request.node.callspec.id)
    assert outcome.acknowledged == [1, 2, 3, 4, 5, 6, 7, 8]
    assert outcome.new_leader is None
    assert len(outcome.refused) == 2


@pytest.mark.parametrize("settings, lost, commit_waited", PARTITIONS)
def test_leader_partitioned(scenarios, request, settings, lost, commit_waited):
    """Scenario: five rows committed everywhere; then nftables in the leader's machine drop
    every packet to and from etcd and the replicas (clients still reach it); the client
    commits three more rows on it; Patroni demotes it once it cannot renew its leader key
    (retry_timeout) and a replica leads once the key expires (ttl); a row (100) is
    committed on the new leader.

    Outcome: the partition drops packets (a replica's connection attempt times out, it
    is not refused; the rules' counters count what they dropped). Asynchronous: the
    three rows were acknowledged by the cut-off leader and are lost. synchronous_mode:
    the first waits for the standby (SyncRep) and is never acknowledged: nothing is lost.
    The old leader takes no more writes (its fast shutdown waits for WAL senders that
    cannot reach their standbys: it stays "shutting down").
    """
    outcome = scenarios.outcome(request.node.callspec.id)
    assert outcome.peer_connect == "timed out"
    assert outcome.dropped_packets > 0
    assert outcome.new_leader not in (None, outcome.old_leader)
    assert outcome.old_leader_now in ("shutting down", "read-only")  # (once WAL senders time out)
    assert outcome.summary() == lost
    assert outcome.waiting_commit == commit_waited
    assert outcome.present == [1, 2, 3, 4, 5, 100]


@pytest.mark.parametrize("failsafe_mode, decision, still_writable", ETCD_LOST)
def test_etcd_lost(scenarios, request, failsafe_mode, decision, still_writable):
    """Scenario: etcd is killed; every node still reaches every other.

    Outcome: without failsafe_mode the leader, unable to renew its key, demotes itself:
    no more writes anywhere, though nothing else failed. With failsafe_mode (Patroni
    3.0+) it asks every member over their REST APIs instead, all answer, and it keeps
    running as the leader: a write succeeds.
    """
    outcome = scenarios.outcome(request.node.callspec.id)
    assert outcome.decision == decision
    assert outcome.still_writable is still_writable


@pytest.mark.parametrize("case", [HANDOVERS.id], ids=[HANDOVERS.id])
def test_switchover_and_postgres_crash(scenarios, case):
    """Scenario: a switchover (Patroni's REST API) to a chosen replica; then that new
    leader's PostgreSQL is SIGKILLed, Patroni alive, with primary_start_timeout 0; then a
    replica is frozen (SIGSTOP) and thawed.

    Outcome: the chosen replica leads; after the crash Patroni does not restart it as
    the primary but gives up the key at once, and another node leads; the frozen replica
    does not replay a write made meanwhile on the leader; thawed, it catches up.
    """
    outcome = scenarios.outcome(case)
    assert outcome.after_switchover != outcome.first
    assert outcome.after_postgres_crash not in (None, outcome.after_switchover)
    assert outcome.frozen_replica_lagged
    assert outcome.thawed_replica_caught_up


# model, then what our checker finds in the split brain's history
SPLIT_BRAIN_VERDICTS = {
    "serializable": {"incompatible-order": 1},
    "strict-serializable": {"G-single-realtime": 1, "G0-realtime": 1, "incompatible-order": 1},
}


@pytest.mark.parametrize("case", [SPLIT_BRAIN], ids=[SPLIT_BRAIN])
def test_frozen_patroni_makes_two_primaries(scenarios, case):
    """Scenario: five rows committed everywhere; the leader's Patroni is frozen
    (SIGSTOP), its PostgreSQL runs on. Its key expires (ttl) and a replica leads. A
    client commits row 100 on the new leader, then another reads on the old one and
    commits row 6 there; then each leader is read.

    Outcome: two primaries. The read on the old leader misses row 100, committed before
    it began (a stale read: the read split brain); row 6 is acknowledged by the old
    leader and the new one never has it. Our checker, given the history: in any model,
    the two leaders' lists diverge (incompatible-order); only with real-time order
    (strict-serializable) is the stale read named (G-single-realtime: the read misses a
    write that ended before it began).
    """
    outcome = scenarios.outcome(case)
    assert outcome.new_leader not in (None, outcome.old_leader)
    assert outcome.read_on_old == [1, 2, 3, 4, 5]
    assert outcome.read_on_new == [1, 2, 3, 4, 5, 100]
    assert outcome.read_on_old_at_end == [1, 2, 3, 4, 5, 6]
    found = {model: check(outcome.history(), model).counts() for model in SPLIT_BRAIN_VERDICTS}
    assert found == SPLIT_BRAIN_VERDICTS


@pytest.mark.parametrize("strict, standby_names, commit", NO_STANDBY)
def test_no_synchronous_standby_left(scenarios, request, strict, standby_names, commit):
    """Scenario: synchronous_mode; both replicas' machines are lost, the leader stays.

    Outcome: once their member keys expire, Patroni settles the leader's
    synchronous_standby_names. Not strict: it empties it, and a COMMIT returns at once,
    replicated nowhere (availability first). synchronous_mode_strict: it sets "*" (any
    standby, none there), and a COMMIT waits for one (SyncRep) until one comes back.
    """
    outcome = scenarios.outcome(request.node.callspec.id)
    assert outcome.synchronous_standby_names == standby_names
    assert outcome.commit == commit
