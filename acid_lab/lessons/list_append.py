"""Recording a list-append history from a live server: worker threads append to and read
lists in random transactions (Elle's list-append workload), each operation logged as
:mod:`acid_lab.checkers.histories` writes it, for the checker to judge."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import threading
import time

import psycopg2
from psycopg2 import errors

from acid_lab.checkers.histories import APPEND, FAIL, INFO, INVOKE, OK, READ, Operation
from acid_lab.engine.scenario import begin_sql
from acid_lab.engine.workloads import (
    DEFAULT_TIMEOUT,
    ConnectionSource,
    Lockstep,
    WorkloadError,
    worker_sessions,
)

# -- recording from a live server ----------------------------------------------

LISTS_TABLE = ("create table lists (k int primary key, v int[] not null default '{}');"
               "insert into lists (k) select generate_series(0, %s - 1)")
READ_SQL = "select v from lists where k = %s"
APPEND_SQL = "update lists set v = v || %s where k = %s"
#: What makes a transaction certainly not committed: the server rolled it back.
ABORTS = (errors.SerializationFailure, errors.DeadlockDetected, errors.LockNotAvailable,
          errors.QueryCanceled)


@dataclasses.dataclass
class Recorded:
    """A recorded history and how its transactions ended."""

    level: str
    operations: list[Operation]
    seconds: float
    committed: int = 0
    failed: int = 0
    unknown: int = 0

    def summary(self) -> str:
        return (f"{self.level}: {self.committed + self.failed + self.unknown} transactions "
                f"({self.committed} committed, {self.failed} failed, {self.unknown} unknown) "
                f"in {self.seconds:.2f} s")


@dataclasses.dataclass
class _Planned:
    """One worker's transaction in one round: micro-operations before the first meeting
    (reads only), and after it. A *writer* commits before the second meeting; a
    *straddler* stays open across it, so it sees (at read committed) what the
    writers committed meanwhile."""

    early: list
    late: list
    straddles: bool


def plan_rounds(seed: int, *, workers: int, rounds: int, keys: int) -> list[list[_Planned]]:
    """Seeded random transactions, ``workers`` per round: reads early, then appends
    (in key order, so two writers never deadlock) and reads late; values unique per key."""
    rng = random.Random(seed)
    next_value = [1] * keys
    plan = []
    for _ in range(rounds):
        this_round = []
        for _worker in range(workers):
            early = [(READ, k, None) for k in rng.sample(range(keys), rng.randint(1, 2))]
            appended = sorted(rng.sample(range(keys), rng.randint(1, min(3, keys))))
            late = []
            for k in appended:
                late.append((APPEND, k, next_value[k]))
                next_value[k] += 1
            if rng.random() < 0.5:
                late.append((READ, rng.randrange(keys), None))
            this_round.append(_Planned(early, late, straddles=rng.random() < 0.4))
        plan.append(this_round)
    return plan


def list_append_history(connect: ConnectionSource, *, level: str, workers: int = 4,
                        rounds: int = 20, keys: int = 4, seed: int = 0,
                        max_seconds: float = 30.0,
                        timeout: float = DEFAULT_TIMEOUT) -> Recorded:
    """Record a list-append history at ``level`` on the place ``connect`` opens.

    ``workers`` threads (processes 0 .. workers-1), each on its own session, run
    ``rounds`` rounds of seeded random transactions (:func:`plan_rounds`), no retries.
    Within a round they meet, without sleeping, at three points: after every
    transaction's first reads; after every writer committed; after every transaction
    ended -- so transactions really overlap, in every round. A final transaction
    (process ``workers``) reads every key. Stops early, between rounds, after
    ``max_seconds``; every wait is bounded by ``timeout``.
    """
    plan = plan_rounds(seed, workers=workers, rounds=rounds, keys=keys)
    recorder = _Recorder(level)
    stop = threading.Event()
    deadline = time.monotonic() + max_seconds

    def on_advance() -> None:
        if time.monotonic() > deadline:
            stop.set()

    gate = Lockstep(workers, timeout, on_advance=on_advance)
    failures: list[BaseException] = []

    def work(worker: int, conn) -> None:
        try:
            with conn.cursor() as cur:
                for this_round in plan:
                    recorder.transaction(cur, worker, this_round[worker], gate)
                    gate.arrive_and_wait()  # every transaction of the round has ended
                    if stop.is_set():
                        break
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
            gate.abort(f"worker {worker} failed: {type(exc).__name__}")
            with contextlib.suppress(psycopg2.Error):
                conn.rollback()

    with worker_sessions(connect, workers + 1, timeout) as sessions:
        with sessions[0].cursor() as cur:
            cur.execute("drop table if exists lists; " + LISTS_TABLE, (keys,))
        recorder.start()
        threads = [threading.Thread(target=work, args=(i, sessions[i]), daemon=True,
                                    name=f"history-{i}") for i in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout * (3 * len(plan) + 2))
        if any(thread.is_alive() for thread in threads):
            gate.abort("the history workload is stuck")
            raise WorkloadError("the history workload is stuck")
        if failures:
            raise WorkloadError(f"a history worker failed: {failures[0]!r}") from failures[0]
        final = _Planned([(READ, k, None) for k in range(keys)], [], straddles=False)
        with sessions[workers].cursor() as cur:
            recorder.transaction(cur, workers, final, None)
    return recorder.result()


class _Recorder:
    """Runs planned transactions and writes down what each client saw."""

    def __init__(self, level: str):
        self.level = level
        self.begin = begin_sql(level)
        self.lock = threading.Lock()
        self.operations: list[Operation] = []
        self.counts = {OK: 0, FAIL: 0, INFO: 0}
        self.started = time.monotonic_ns()

    def start(self) -> None:
        self.started = time.monotonic_ns()

    def record(self, kind: str, process: int, value: list) -> None:
        with self.lock:
            self.operations.append(Operation(
                type=kind, value=tuple(value), process=process,
                time=time.monotonic_ns() - self.started, index=len(self.operations)))
            if kind != INVOKE:
                self.counts[kind] += 1

    def transaction(self, cur, process: int, planned: _Planned, gate: Lockstep | None) -> None:
        """One transaction, meeting the others at the round's first two points."""
        self.record(INVOKE, process, planned.early + planned.late)
        done: list = []
        outcome = None  # None while running; then OK, FAIL or INFO
        try:
            cur.execute(self.begin)
            done += self._run(cur, planned.early)
        except ABORTS:
            _rollback(cur)
            outcome = FAIL
        finish_after = 2 if planned.straddles else 1
        for meeting in (1, 2):
            if gate is not None:
                gate.arrive_and_wait()  # 1: all early reads done; 2: all writers ended
            if outcome is None and meeting == finish_after:
                outcome, done = self._finish(cur, planned, done)
        if outcome == OK:
            self.record(OK, process, done)
        else:
            self.record(outcome, process, planned.early + planned.late)

    def _finish(self, cur, planned: _Planned, done: list) -> tuple[str, list]:
        try:
            done = done + self._run(cur, planned.late)
        except ABORTS:
            _rollback(cur)
            return FAIL, done
        try:
            cur.execute("commit")
        except ABORTS:
            return FAIL, done
        except psycopg2.OperationalError:
            return INFO, done  # the connection went away: committed or not, nobody knows
        return OK, done

    @staticmethod
    def _run(cur, mops: list) -> list:
        seen = []
        for f, k, v in mops:
            if f == READ:
                cur.execute(READ_SQL, (k,))
                row = cur.fetchone()
                seen.append((READ, k, tuple(row[0]) if row else ()))
            else:
                cur.execute(APPEND_SQL, ([v], k))
                seen.append((APPEND, k, v))
        return seen

    def result(self) -> Recorded:
        return Recorded(self.level, self.operations,
                        (time.monotonic_ns() - self.started) / 1e9,
                        committed=self.counts[OK], failed=self.counts[FAIL],
                        unknown=self.counts[INFO])


def _rollback(cur) -> None:
    with contextlib.suppress(psycopg2.Error):
        cur.execute("rollback")
