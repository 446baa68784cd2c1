"""High availability: what a failover run by Patroni keeps of what clients were told.

One sequence, run on a :class:`~acid_lab.servers.patroni.PatroniCluster`: a client
commits rows one by one on the leader; the replicas stop receiving WAL (a partition
drops every packet between the leader and its replicas: WAL already sent would still
arrive, as it would from a frozen receiver's socket); the client commits more; the
leader's machine is lost; Patroni elects a new leader by itself (or refuses to); we
count what the new leader holds of what was acknowledged, and of what another client
had read on the old leader.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from contextlib import closing
from dataclasses import dataclass, field

import psycopg2

from acid_lab.checkers.histories import APPEND, INFO, INVOKE, OK, READ, Operation
from acid_lab.servers.network import inside
from acid_lab.servers.patroni import PG_PORT, SCOPE, Node, PatroniCluster

BOUND = 30  # seconds a step of the lesson may take (a failover: ttl more)
TABLE = "ha_rows"
PEER_TIMEOUT = 1  # seconds a peer's connection attempt waits for an answer
LAGGING = "My wal position exceeds maximum replication lag"  # Patroni's words, in its log


@dataclass
class Failover:
    """What clients were told, what they saw, and what the new leader holds."""

    old_leader: str
    new_leader: str | None
    acknowledged: list[int] = field(default_factory=list)  # COMMIT returned
    seen_on_old_leader: list[int] = field(default_factory=list)  # read by another session
    present: list[int] = field(default_factory=list)  # on the new leader
    waiting_commit: str | None = None  # the wait event of a COMMIT not yet returned
    refused: list[str] = field(default_factory=list)  # replicas too far behind to lead

    @property
    def lost(self) -> list[int]:
        return sorted(set(self.acknowledged) - set(self.present))

    @property
    def read_then_gone(self) -> list[int]:
        """Rows another client read on the old leader that the new one does not hold."""
        return sorted(set(self.seen_on_old_leader) - set(self.present))

    def summary(self) -> str:
        return f"lost {len(self.lost)} of {len(self.acknowledged)}"


def _lsn(cur) -> int:
    cur.execute("select pg_current_wal_lsn() - '0/0'")
    return int(cur.fetchone()[0])


def _wait(cluster: PatroniCluster, condition, what: str, bound: float = BOUND):
    return cluster._until(condition, bound, what)


def lose_leader_while_replicas_lag(cluster: PatroniCluster, *, replicated: int,
                                   unshipped: int, expect_failover: bool = True,
                                   cancel_waiting_commit: bool = False) -> Failover:
    """Commit ``replicated`` rows everywhere, then ``unshipped`` more while no replica
    receives WAL; lose the leader's machine; wait for Patroni's new leader (or, when
    ``expect_failover`` is False, for every replica to say it stays out of the race).

    ``cancel_waiting_commit``: a COMMIT waiting for the synchronous standby is cancelled
    (a client's timeout, Ctrl-C: pg_cancel_backend here). PostgreSQL then ends the wait
    with a WARNING, and the COMMIT returns: committed locally, visible to every session
    on the leader, on no standby. (While it waits, it is not visible: the transaction
    still shows as running.)"""
    old = cluster.wait_until_healthy()
    outcome = Failover(old.name, None)
    writer = _writer(cluster, old)
    replicas = [node for node in cluster.nodes if node is not old]
    cut = False
    try:
        _commit_everywhere(cluster, old, writer, replicated, outcome)
        cluster.network.cut_off(old.name, *(node.name for node in replicas))
        cut = True
        committing = _commit_in_window(cluster, old, writer,
                                       range(replicated + 1, replicated + unshipped + 1),
                                       outcome)
        if outcome.waiting_commit and cancel_waiting_commit:
            with closing(cluster.connect(old)) as admin, admin.cursor() as cur:
                cur.execute("select pg_cancel_backend(%s)", (writer.info.backend_pid,))
            committing.join(BOUND)
        with closing(cluster.connect(old)) as reader, reader.cursor() as cur:
            cur.execute(f"select id from {TABLE} order by id")
            outcome.seen_on_old_leader = [row for (row,) in cur.fetchall()]
            last = _lsn(cur)
        # Patroni compares a replica with the leader's last position it put in etcd
        _wait(cluster, lambda: _leader_position(cluster) >= last,
              "the leader's position in etcd to cover the last commit")

        cluster.lose_machine(old)
        cluster.network.heal(old.name)
        cut = False
        ttl = cluster.settings["ttl"]
        if not expect_failover:
            _wait(cluster, lambda: all(_said(node, LAGGING) for node in replicas),
                  "every replica to stay out of the leader race", ttl + BOUND)
            outcome.refused = [node.name for node in replicas]
            return outcome
        new = cluster.wait_for_new_leader(old, ttl + BOUND)
        outcome.new_leader = new.name
        committing.join(BOUND)  # the last COMMIT's connection broke: not acknowledged
        with closing(cluster.connect(new)) as conn, conn.cursor() as cur:
            cur.execute(f"select id from {TABLE} order by id")
            outcome.present = [row for (row,) in cur.fetchall()]
        return outcome
    finally:
        if cut:
            cluster.network.heal(old.name)
        with contextlib.suppress(psycopg2.Error):
            writer.close()


def _writer(cluster: PatroniCluster, node: Node):
    # keepalives: a lost or cut-off machine answers nothing, not even with a reset
    return cluster.connect(node, keepalives_idle=1, keepalives_interval=1, keepalives_count=2)


def _commit_everywhere(cluster: PatroniCluster, leader: Node, writer, rows: int,
                       outcome: Failover) -> None:
    """The table and rows 1..rows, one COMMIT each, replayed by every replica."""
    with writer.cursor() as cur:
        cur.execute(f"create table {TABLE} (id int primary key)")
        for row in range(1, rows + 1):
            cur.execute(f"insert into {TABLE} values (%s)", (row,))
            outcome.acknowledged.append(row)
        everything = _lsn(cur)
    replicas = len(cluster.nodes) - 1
    _wait(cluster, lambda: _replayed_everywhere(cluster, leader, everything, replicas),
          "every replica to replay the first rows")


def _commit_in_window(cluster: PatroniCluster, leader: Node, writer, rows,
                      outcome: Failover) -> threading.Thread:
    """Commit ``rows`` one by one in a thread; return once all COMMITs returned or one
    waits for a synchronous standby (noted in ``outcome.waiting_commit``)."""
    committing = threading.Thread(target=_commit_rows, daemon=True,
                                  args=(writer, rows, outcome.acknowledged))
    committing.start()
    waited = _wait(cluster, lambda: ("returned" if not committing.is_alive()
                                     else _sync_rep_wait(cluster, leader,
                                                         writer.info.backend_pid)),
                   "the COMMITs to return or to wait for a standby")
    outcome.waiting_commit = None if waited == "returned" else waited
    return committing


@dataclass
class Partition(Failover):
    """A Failover, and what the partition did: packets dropped, a peer's connection
    attempt (timed out: dropped; refused: rejected), how the old leader stopped writing."""

    dropped_packets: int = 0
    peer_connect: str = ""
    old_leader_now: str = ""  # "shutting down", "read-only"


def partition_leader(cluster: PatroniCluster, *, replicated: int, in_window: int) -> Partition:
    """Cut the leader off from etcd and from its replicas (clients still reach it);
    commit ``in_window`` rows on it meanwhile; wait until a replica leads (once the old
    leader's key expired: ttl) and the old leader takes no more writes (Patroni demotes
    it once it cannot renew its key: retry_timeout); write a row (100) on the new one."""
    old = cluster.wait_until_healthy()
    outcome = Partition(old.name, None)
    writer = _writer(cluster, old)
    others = [node for node in cluster.nodes if node is not old]
    try:
        _commit_everywhere(cluster, old, writer, replicated, outcome)
        cluster.network.cut_off(old.name, "etcd", *(node.name for node in others))
        outcome.peer_connect = _connect_from(cluster, others[0], old)
        committing = _commit_in_window(cluster, old, writer,
                                       range(replicated + 1, replicated + in_window + 1),
                                       outcome)
        ttl = cluster.settings["ttl"]
        new = cluster.wait_for_new_leader(old, ttl + BOUND)
        outcome.new_leader = new.name
        outcome.old_leader_now = _wait(cluster, lambda: _not_writable(cluster, old),
                                       "the old leader to stop taking writes")
        committing.join(BOUND)
        with closing(cluster.connect(new)) as conn, conn.cursor() as cur:
            cur.execute(f"insert into {TABLE} values (100)")
            cur.execute(f"select id from {TABLE} order by id")
            outcome.present = [row for (row,) in cur.fetchall()]
        outcome.dropped_packets = cluster.network.dropped(old.name)
        return outcome
    finally:
        cluster.network.heal(old.name)
        with contextlib.suppress(psycopg2.Error):
            writer.close()


def _connect_from(cluster: PatroniCluster, peer: Node, target: Node) -> str:
    """A TCP connection from ``peer``'s machine to ``target``'s PostgreSQL: "connected",
    "refused" (a reset came back) or "timed out" (nothing came back: dropped)."""
    with inside(peer.namespace):
        try:
            socket.create_connection((target.address, PG_PORT), timeout=PEER_TIMEOUT).close()
        except ConnectionRefusedError:
            return "refused"
        except TimeoutError:
            return "timed out"
    return "connected"


def _not_writable(cluster: PatroniCluster, node: Node) -> str | None:
    """How ``node`` refuses writes now: "shutting down" (a demotion under way: a fast
    shutdown waits for its WAL senders), "read-only" (it runs as a standby); None while
    it still is a primary."""
    try:
        conn = cluster.connect(node)
    except psycopg2.OperationalError as error:
        return "shutting down" if "shutting down" in str(error) else None
    with closing(conn), conn.cursor() as cur:
        cur.execute("select pg_is_in_recovery()")
        return "read-only" if cur.fetchone()[0] else None


def _commit_rows(conn, rows, acknowledged: list[int]) -> None:
    """One autocommit INSERT per row; a row counts once its COMMIT returned."""
    try:
        with conn.cursor() as cur:
            for row in rows:
                cur.execute(f"insert into {TABLE} values (%s)", (row,))
                acknowledged.append(row)
    except psycopg2.Error:
        pass  # the leader is gone: this COMMIT was never acknowledged


def _replayed_everywhere(cluster: PatroniCluster, leader: Node, lsn: int, replicas: int) -> bool:
    return len(_replayed_by(cluster, leader, lsn)) == replicas


def _replayed_by(cluster: PatroniCluster, leader: Node, lsn: int) -> set[str]:
    """The replicas (Patroni names their sessions after them) that replayed up to ``lsn``."""
    rows = cluster.query(leader, "select application_name from pg_stat_replication "
                                 "where replay_lsn - '0/0' >= %s", (lsn,))
    return {name for (name,) in rows}


def _sync_rep_wait(cluster: PatroniCluster, leader: Node, backend: int) -> str | None:
    rows = cluster.query(leader, "select wait_event from pg_stat_activity where pid = %s",
                         (backend,))
    return "SyncRep" if rows and rows[0][0] == "SyncRep" else None


def _leader_position(cluster: PatroniCluster) -> int:
    status = cluster.etcd.value(f"/service/{SCOPE}/status")
    return int(json.loads(status).get("optime", 0)) if status else 0


def _said(node: Node, words: str) -> bool:
    try:
        return words in node.log.read_text(errors="replace")
    except OSError:
        return False


FAILSAFE_KEEPS = "continue to run as a leader because failsafe mode is enabled"
DEMOTES = "demoted self because DCS is not accessible"


@dataclass
class EtcdLost:
    """What the leader's Patroni decided once etcd was gone, and whether it still writes."""

    leader: str
    decision: str = ""
    still_writable: bool = False


def lose_etcd(cluster: PatroniCluster) -> EtcdLost:
    """Kill etcd (every member still reaches every other); wait for the leader's Patroni
    to say what it does about it (in its log), then try a write on the leader."""
    leader = cluster.wait_until_healthy()
    outcome = EtcdLost(leader.name)
    logged = leader.log.stat().st_size
    cluster.etcd.process.kill()
    cluster.etcd.process.wait(BOUND)
    outcome.decision = _wait(cluster, lambda: _said_since(leader, logged, FAILSAFE_KEEPS, DEMOTES),
                             "the leader's Patroni to decide without etcd",
                             cluster.settings["retry_timeout"] + BOUND)
    try:  # a demoted leader is stopped ("offline"): no session at all
        with closing(cluster.connect(leader)) as conn, conn.cursor() as cur:
            cur.execute("create table written_without_etcd (id int)")
        outcome.still_writable = True
    except psycopg2.Error:
        outcome.still_writable = False
    return outcome


def _said_since(node: Node, offset: int, *phrases: str) -> str | None:
    with open(node.log, "rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    return next((phrase for phrase in phrases if phrase in text), None)


KEY = "rows"  # the history's one list: the table's ids, in the order they were appended


def failover_history(outcome: Failover) -> list[Operation]:
    """The lesson as a list-append history, in real-time order: the writer's appends
    (ok once its COMMIT returned; info when it never did), the read on the old leader,
    then the read on the new one."""
    operations: list[Operation] = []

    def transaction(process: int, value: tuple, ending: str) -> None:
        invoked = tuple((f, k, None if f == READ else v) for f, k, v in value)
        operations.append(Operation(INVOKE, invoked, process, len(operations),
                                    len(operations)))
        operations.append(Operation(ending, value, process, len(operations), len(operations)))

    attempted = sorted({*outcome.acknowledged, *outcome.seen_on_old_leader})
    for row in attempted:
        transaction(0, ((APPEND, KEY, row),), OK if row in outcome.acknowledged else INFO)
    if outcome.seen_on_old_leader:
        transaction(1, ((READ, KEY, tuple(outcome.seen_on_old_leader)),), OK)
    transaction(2, ((READ, KEY, tuple(outcome.present)),), OK)
    return operations


@dataclass
class Handovers:
    """Who led after each planned or unplanned change."""

    first: str
    after_switchover: str = ""
    after_postgres_crash: str = ""
    frozen_replica_lagged: bool = False  # a write on the leader not replayed by it
    thawed_replica_caught_up: bool = False


def switch_over_then_crash(cluster: PatroniCluster) -> Handovers:
    """A switchover to a chosen replica; then that leader's PostgreSQL SIGKILLed (with
    ``primary_start_timeout`` 0 Patroni gives up the key at once); then a replica frozen
    (SIGSTOP: it replays nothing meanwhile) and thawed (it catches up)."""
    first = cluster.wait_until_healthy()
    outcome = Handovers(first.name)
    candidate = next(node for node in cluster.nodes if node is not first)
    outcome.after_switchover = cluster.switchover(candidate).name
    cluster.wait_until_healthy()
    cluster.kill_postgres(candidate)
    outcome.after_postgres_crash = cluster.wait_for_new_leader(candidate, BOUND).name
    leader = cluster.wait_until_healthy()
    replica = next(node for node in cluster.nodes if node is not leader)
    cluster.freeze(replica)
    try:
        with closing(cluster.connect(leader)) as conn, conn.cursor() as cur:
            cur.execute("create table while_frozen (id int)")
            written = _lsn(cur)
        others = {node.name for node in cluster.nodes} - {leader.name, replica.name}
        # once every other replica has replayed the write, the frozen one still has not
        _wait(cluster, lambda: others <= _replayed_by(cluster, leader, written),
              "the other replicas to replay the write")
        outcome.frozen_replica_lagged = replica.name not in _replayed_by(cluster, leader,
                                                                         written)
    finally:
        cluster.thaw(replica)
    _wait(cluster, lambda: _replayed_everywhere(cluster, leader, written,
                                                len(cluster.nodes) - 1),
          "the thawed replica to catch up")
    outcome.thawed_replica_caught_up = True
    return outcome


@dataclass
class SplitBrain:
    """Two primaries at once: what each took and served."""

    old_leader: str
    new_leader: str | None = None
    replicated: list[int] = field(default_factory=list)
    written_on_new: int = 100
    written_on_old: int = 6
    read_on_old: list[int] = field(default_factory=list)  # after the write on the new one
    read_on_new: list[int] = field(default_factory=list)  # at the end
    read_on_old_at_end: list[int] = field(default_factory=list)

    def history(self) -> list[Operation]:
        """In real-time order: the first appends, the append on the new leader, the read
        on the old one, the append on the old one, the reads on the new and the old one."""
        operations: list[Operation] = []

        def transaction(process: int, value: tuple) -> None:
            invoked = tuple((f, k, None if f == READ else v) for f, k, v in value)
            for ending, micro in ((INVOKE, invoked), (OK, value)):
                operations.append(Operation(ending, micro, process, len(operations),
                                            len(operations)))

        for row in self.replicated:
            transaction(0, ((APPEND, KEY, row),))
        transaction(1, ((APPEND, KEY, self.written_on_new),))
        transaction(2, ((READ, KEY, tuple(self.read_on_old)),))
        transaction(0, ((APPEND, KEY, self.written_on_old),))
        transaction(3, ((READ, KEY, tuple(self.read_on_new)),))
        transaction(2, ((READ, KEY, tuple(self.read_on_old_at_end)),))
        return operations


def freeze_leaders_patroni(cluster: PatroniCluster, *, replicated: int) -> SplitBrain:
    """Commit ``replicated`` rows everywhere; SIGSTOP the leader's Patroni (its PostgreSQL
    runs on); once its key expired and a replica leads, commit a row on the new leader,
    read on the old one, commit a row on the old one, read on the new and the old one."""
    old = cluster.wait_until_healthy()
    outcome = SplitBrain(old.name)
    writer = _writer(cluster, old)
    try:
        failover = Failover(old.name, None)
        _commit_everywhere(cluster, old, writer, replicated, failover)
        outcome.replicated = failover.acknowledged
        cluster.freeze_patroni(old)
        new = cluster.wait_for_new_leader(old, cluster.settings["ttl"] + BOUND)
        outcome.new_leader = new.name
        with closing(cluster.connect(new)) as on_new, on_new.cursor() as cur:
            cur.execute(f"insert into {TABLE} values (%s)", (outcome.written_on_new,))
        with writer.cursor() as cur:
            cur.execute(f"select id from {TABLE} order by id")
            outcome.read_on_old = [row for (row,) in cur.fetchall()]
            cur.execute(f"insert into {TABLE} values (%s)", (outcome.written_on_old,))
        with closing(cluster.connect(new)) as on_new, on_new.cursor() as cur:
            cur.execute(f"select id from {TABLE} order by id")
            outcome.read_on_new = [row for (row,) in cur.fetchall()]
        with writer.cursor() as cur:
            cur.execute(f"select id from {TABLE} order by id")
            outcome.read_on_old_at_end = [row for (row,) in cur.fetchall()]
        return outcome
    finally:
        cluster.thaw(old)
        with contextlib.suppress(psycopg2.Error):
            writer.close()


@dataclass
class NoStandby:
    """What the leader does once no synchronous standby is left."""

    leader: str
    synchronous_standby_names: str = ""  # as Patroni set it on the leader
    commit: str | None = None  # "returned", or the wait event of a COMMIT that waits


def lose_every_replica(cluster: PatroniCluster) -> NoStandby:
    """Lose every replica's machine; wait until Patroni has set the leader's
    synchronous_standby_names for what is left (their member keys expire after ttl);
    then COMMIT a row on the leader."""
    leader = cluster.wait_until_healthy()
    outcome = NoStandby(leader.name)
    writer = _writer(cluster, leader)
    with writer.cursor() as cur:
        cur.execute(f"create table {TABLE} (id int primary key)")
    for node in cluster.nodes:
        if node is not leader:
            cluster.lose_machine(node)

    def decided() -> str | None:  # (before: the lost synchronous standby's name)
        names = cluster.query(leader, "show synchronous_standby_names")[0][0]
        return {"": "(empty)", "*": "*"}.get(names)

    outcome.synchronous_standby_names = _wait(
        cluster, decided, "Patroni to settle the leader's synchronous_standby_names",
        cluster.settings["ttl"] + BOUND)
    failover = Failover(leader.name, None)
    committing = _commit_in_window(cluster, leader, writer, [1], failover)
    outcome.commit = failover.waiting_commit or "returned"
    # a session busy in another thread cannot be closed from this one: end it server-side
    cluster.query(leader, "select pg_terminate_backend(%s)", (writer.info.backend_pid,))
    committing.join(BOUND)
    with contextlib.suppress(psycopg2.Error):
        writer.close()
    return outcome
