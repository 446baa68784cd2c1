"""Concurrent workloads: several sessions running the same small transaction at once, on threads.

Each worker is a thread with a psycopg2 connection of its own. It runs its
transaction once per *round* (``begin isolation level ...`` ... ``commit``),
retrying it when the server aborts it with a serialization failure (40001) or
a deadlock (40P01), and the driver counts commits, aborts and retries per
SQLSTATE.

Free-running threads make anomalies likely but not certain. To make them
certain, without sleeping, the workers move in *lockstep*: inside a
transaction a worker calls ``turn.wait_for_others()`` at the dangerous point
(for a read-modify-write: after the read, before the write), and nobody goes
on until every worker still trying in this round has got there; they meet
once more when every attempt has ended (committed or rolled back), so a
retry never starts before the winner's commit is complete. So all of them
read before any of them writes, every time, and the outcome is exact:

* read committed: the writes queue on the row lock and each overwrites the
  one before it (N - 1 of N increments per round are lost);
* repeatable read / serializable: the first writer wins, the others are
  aborted with 40001 and retry (they are the only ones left in the round, so
  they meet again among themselves): per round (N-1) + (N-2) + ... + 1 retries.

The workloads prepare the tables, run the caller's transaction (the SQL a
lesson is about stays in the lesson) and return what they observed:
:func:`increments` (N threads x M increments of one counter),
:func:`bank_transfers` (tellers paying out of one shared account),
:func:`on_call_doctors` (doctors leaving a shift only if another stays),
:func:`job_queue` (workers claiming jobs from a table).
Build others from :func:`worker_sessions` and :func:`run_workers`;
:func:`blocked_or_done` asks the server whether a session waits for a lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import errors

from acid_lab.engine.postgres import POSTGRES
from acid_lab.engine.scenario import (
    READ_COMMITTED,
    begin_sql,
)

#: What an application retries: the server gave up on the transaction, not on the data.
RETRYABLE = (errors.SerializationFailure, errors.DeadlockDetected)

#: Bound, in seconds, of every single wait: lockstep, lock waits, statements.
DEFAULT_TIMEOUT = 5.0
MAX_ATTEMPTS = 50
RUNAWAY_FACTOR = 12  # a whole workload may take at most this many timeouts

#: Returned by a transaction when the worker has nothing left to do (e.g. the queue is empty).
STOP = "stop"
#: A worker's outcome for a round whose transaction was aborted and not retried.
ABORTED = "aborted"

ConnectionSource = Callable[[], psycopg2.extensions.connection]


class WorkloadError(Exception):
    """A workload could not run to the end (a worker failed or a wait ran out)."""


class LockstepBroken(WorkloadError):
    """A worker waited in vain for the others: one of them is stuck or failed."""


# -- lockstep -----------------------------------------------------------------

class Lockstep:
    """A reusable barrier that parties may leave (a cut-down Java Phaser).

    A phase ends when every party still in has arrived; a party that leaves
    no longer counts. Every wait is bounded; :meth:`abort` wakes all waiters
    with :class:`LockstepBroken`.
    """

    def __init__(self, parties: int, timeout: float,
                 on_advance: Callable[[], None] | None = None):
        self.parties = parties
        self._timeout = timeout
        self._on_advance = on_advance
        self._arrived = 0
        self._phase = 0
        self._broken: str | None = None
        self._cond = threading.Condition()

    def arrive_and_wait(self) -> None:
        with self._cond:
            self._raise_if_broken()
            phase = self._phase
            self._arrived += 1
            self._advance_if_complete()
            if not self._cond.wait_for(lambda: self._phase != phase or self._broken,
                                       self._timeout):
                self._break(f"not every worker got there within {self._timeout:g} s "
                            "(is one of them blocked on a lock?)")
            if self._phase == phase:
                self._raise_if_broken()

    def leave(self) -> None:
        with self._cond:
            self.parties -= 1
            self._advance_if_complete()

    def reset(self, parties: int) -> None:
        """Start over with ``parties`` (only while nobody waits)."""
        with self._cond:
            self.parties = parties
            self._arrived = 0

    def abort(self, why: str) -> None:
        with self._cond:
            if self._broken is None:
                self._break(why)

    def _advance_if_complete(self) -> None:
        if self._arrived and self._arrived >= self.parties:
            self._arrived = 0
            self._phase += 1
            if self._on_advance is not None:
                self._on_advance()
            self._cond.notify_all()

    def _break(self, why: str) -> None:
        self._broken = why
        self._cond.notify_all()

    def _raise_if_broken(self) -> None:
        if self._broken is not None:
            raise LockstepBroken(self._broken)


class _FreeRunning:
    """The lockstep stand-in when workers run free: nobody waits for anybody."""

    def arrive_and_wait(self) -> None:
        pass

    def leave(self) -> None:
        pass

    def abort(self, why: str) -> None:
        pass


class Turn:
    """What a transaction knows about itself: which worker, which round."""

    def __init__(self, worker: int, round_no: int, gate: Lockstep | _FreeRunning):
        self.worker = worker  # 0-based
        self.round = round_no  # 0-based
        self._gate = gate
        self._met = False

    def wait_for_others(self) -> None:
        """Wait until every worker still trying in this round has reached this point
        (at most once per transaction)."""
        if self._met:
            raise WorkloadError("wait_for_others() called twice in one transaction")
        self._met = True
        self._gate.arrive_and_wait()

    def _make_sure_met(self) -> None:
        # An attempt that failed (or returned) before its meeting still counts as
        # having been there, so the others are not kept waiting for it.
        if not self._met:
            self.wait_for_others()


TransactionBody = Callable[[Any, Turn], Any]  # (cursor, turn) -> outcome, or STOP


# -- results ------------------------------------------------------------------

@dataclasses.dataclass
class Tally:
    """Counts of one workload run. ``aborts``/``retries`` are keyed by :func:`abort_kind`."""

    level: str
    commits: int = 0
    aborts: Counter = dataclasses.field(default_factory=Counter)
    retries: Counter = dataclasses.field(default_factory=Counter)

    def add(self, other: Tally) -> None:
        self.commits += other.commits
        self.aborts.update(other.aborts)
        self.retries.update(other.retries)

    def counts(self) -> str:
        return (f"{self.level}: {self.commits} commits, "
                f"aborts {_by_kind(self.aborts)}, retries {_by_kind(self.retries)}")


def _by_kind(counts: Counter) -> str:
    if not counts:
        return "none"
    return ", ".join(f"{n} x {code} {_error_name(code)}" for code, n in sorted(counts.items()))


def _error_name(kind: str) -> str:
    try:
        return psycopg2.errors.lookup(kind.split()[0]).__name__
    except KeyError:
        return "?"


def abort_kind(exc: psycopg2.Error) -> str:
    """The SQLSTATE, and for 40001 which one: ``"40001 concurrent update"`` (the row
    changed since the snapshot: first updater wins) or ``"40001 read/write dependencies"``
    (serializable's dependency tracking); ``"40P01"`` for a deadlock."""
    code = exc.pgcode or "?"
    if code != "40001":
        return code
    message = (exc.diag.message_primary or "") if exc.diag else ""
    for reason in ("concurrent update", "read/write dependencies"):
        if reason in message:
            return f"{code} {reason}"
    return f"{code} {message}".rstrip()


@dataclasses.dataclass
class CounterResult(Tally):
    """:func:`increments`: ``final`` counter value; ``lost_updates`` = commits not in it."""

    final: int = 0

    @property
    def lost_updates(self) -> int:
        return self.commits - self.final

    def summary(self) -> str:
        return (f"{self.counts()}; counter = {self.final} after {self.commits} committed "
                f"increments ({self.lost_updates} lost)")


@dataclasses.dataclass
class BankResult(Tally):
    """:func:`bank_transfers`: balances by account id (0 is the shared account)."""

    balances: dict = dataclasses.field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.balances.values())

    def summary(self) -> str:
        return f"{self.counts()}; balances {self.balances}, total {self.total}"


@dataclasses.dataclass
class OnCallResult(Tally):
    """:func:`on_call_doctors`: how many doctors are still on call, per shift."""

    on_call: list = dataclasses.field(default_factory=list)

    @property
    def shifts_left_uncovered(self) -> int:
        return sum(1 for n in self.on_call if n == 0)

    def summary(self) -> str:
        return (f"{self.counts()}; on call per shift {self.on_call} "
                f"({self.shifts_left_uncovered} shifts with nobody on call)")


@dataclasses.dataclass
class QueueResult(Tally):
    """:func:`job_queue`: how often each job ran, how many jobs each worker did."""

    runs_per_job: dict = dataclasses.field(default_factory=dict)
    jobs_per_worker: list = dataclasses.field(default_factory=list)

    @property
    def duplicate_runs(self) -> int:
        return sum(n - 1 for n in self.runs_per_job.values() if n > 1)

    @property
    def jobs_never_run(self) -> int:
        return sum(1 for n in self.runs_per_job.values() if n == 0)

    def summary(self) -> str:
        return (f"{self.counts()}; jobs per worker {self.jobs_per_worker}, "
                f"{self.duplicate_runs} duplicate runs, {self.jobs_never_run} jobs never run")


# -- the driver ---------------------------------------------------------------

def run_workers(sessions: list, *, level: str, transaction: TransactionBody,
                rounds: int | None = None, retry: bool = True, lockstep: bool = True,
                timeout: float = DEFAULT_TIMEOUT) -> tuple[Tally, list[list[Any]]]:
    """Run ``transaction`` on one thread per session (see :func:`worker_sessions`), once
    per round each, and count.

    ``rounds``: how many transactions each worker commits (None: until the
    transaction returns STOP). ``retry``: retry on 40001/40P01 (else the
    round's work is dropped and recorded as ABORTED). ``lockstep``: workers
    meet at ``turn.wait_for_others()`` and after every attempt.
    Returns the tally and each worker's outcomes, one per round.
    """
    return _Driver(sessions, level, transaction, rounds, retry, lockstep, timeout).run()


class _Driver:
    def __init__(self, sessions, level, transaction, rounds, retry, lockstep, timeout):
        self.begin = begin_sql(level)
        self.level = level
        self.sessions = sessions
        self.workers = workers = len(sessions)
        self.transaction = transaction
        self.rounds = rounds
        self.retry = retry
        self.timeout = timeout
        if lockstep:
            self.attempt_gate = Lockstep(workers, timeout)
            # A new round: everyone still working takes part in its attempts again.
            self.round_gate = Lockstep(
                workers, timeout, on_advance=lambda: self.attempt_gate.reset(
                    self.round_gate.parties))
        else:
            self.attempt_gate = self.round_gate = _FreeRunning()
        self.tallies = [Tally(level) for _ in range(workers)]
        self.outcomes: list[list[Any]] = [[] for _ in range(workers)]
        self.failures: list[tuple[int, BaseException]] = []

    def run(self) -> tuple[Tally, list[list[Any]]]:
        threads = [threading.Thread(target=self._work, args=(i, conn),
                                    name=f"workload-{i}", daemon=True)
                   for i, conn in enumerate(self.sessions)]
        for thread in threads:
            thread.start()
        # Every single wait is bounded by timeout; this only catches a runaway workload.
        stuck = _join(threads, RUNAWAY_FACTOR * self.timeout)
        if stuck:
            self.attempt_gate.abort("the workload is stuck")
            self.round_gate.abort("the workload is stuck")
            stuck = _join(stuck, 2 * self.timeout)
        if stuck:
            raise WorkloadError(f"workers still running: {[t.name for t in stuck]}")
        if self.failures:
            index, first = min(self.failures, key=lambda f: isinstance(f[1], LockstepBroken))
            raise WorkloadError(f"worker {index} failed: {type(first).__name__}: "
                                f"{first}".rstrip()) from first
        total = Tally(self.level)
        for tally in self.tallies:
            total.add(tally)
        return total, self.outcomes

    def _work(self, index: int, conn) -> None:
        try:
            with conn.cursor() as cur:
                round_no = 0
                while self.rounds is None or round_no < self.rounds:
                    outcome = self._one_transaction(cur, index, round_no)
                    self.attempt_gate.leave()
                    if outcome == STOP:
                        break
                    self.outcomes[index].append(outcome)
                    self.round_gate.arrive_and_wait()
                    round_no += 1
            self.round_gate.leave()
        except BaseException as exc:  # noqa: BLE001 - reported by run()
            self.failures.append((index, exc))
            why = f"worker {index} failed: {type(exc).__name__}"
            self.attempt_gate.abort(why)
            self.round_gate.abort(why)
            _rollback(conn)  # frees its locks for the others

    def _one_transaction(self, cur, index: int, round_no: int) -> Any:
        """One round's transaction, retried until it commits. Every attempt has two
        meetings: ``turn.wait_for_others()`` inside it, and one after it ended
        (committed or rolled back), so no retry starts before the winner's
        commit is complete and visible."""
        tally = self.tallies[index]
        for attempt in range(1, MAX_ATTEMPTS + 1):
            turn = Turn(index, round_no, self.attempt_gate)
            try:
                cur.execute(self.begin)
                outcome = self.transaction(cur, turn)
                cur.execute("commit")
                if cur.statusmessage != "COMMIT":  # a failed transaction answers ROLLBACK
                    raise WorkloadError(f"worker {index}: commit answered "
                                        f"{cur.statusmessage}, the transaction had failed")
                tally.commits += 1
                failure = None
            except RETRYABLE as exc:
                _rollback(cur.connection)
                failure = abort_kind(exc)
                tally.aborts[failure] += 1
            turn._make_sure_met()
            self.attempt_gate.arrive_and_wait()  # every attempt of this round has ended
            if failure is None:
                return outcome
            if not self.retry:
                return ABORTED
            if attempt < MAX_ATTEMPTS:
                tally.retries[failure] += 1
        raise WorkloadError(f"worker {index}: round {round_no} still aborted after "
                            f"{MAX_ATTEMPTS} attempts")


@contextlib.contextmanager
def worker_sessions(connect: ConnectionSource, count: int,
                    timeout: float = DEFAULT_TIMEOUT) -> Iterator[list]:
    """``count`` sessions from ``connect`` (opened at once, on threads), in autocommit
    mode (the workers' transactions are explicit) and with every lock wait and
    statement bounded; all closed at the end."""
    opened: list = [None] * count
    problems: list[BaseException] = []

    def open_one(i: int) -> None:
        try:
            opened[i] = _bounded_session(connect(), timeout)
        except BaseException as exc:  # noqa: BLE001 - raised below
            problems.append(exc)

    openers = [threading.Thread(target=open_one, args=(i,), daemon=True) for i in range(count)]
    for opener in openers:
        opener.start()
    late = _join(openers, 2 * timeout)
    try:
        if problems or late:
            raise WorkloadError(f"could not open {count} sessions: {problems or 'timed out'}")
        yield opened
    finally:
        for conn in opened:
            if conn is not None:
                with contextlib.suppress(psycopg2.Error):
                    conn.close()


def _bounded_session(conn, timeout: float):
    if not conn.autocommit:
        conn.rollback()
    conn.autocommit = True
    millis = int(timeout * 1000)
    with conn.cursor() as cur:
        cur.execute(f"set lock_timeout = {millis}; set statement_timeout = {2 * millis}")
    return conn


def _rollback(conn) -> None:
    with contextlib.suppress(psycopg2.Error), conn.cursor() as cur:
        cur.execute("rollback")


def _join(threads: list[threading.Thread], timeout: float) -> list[threading.Thread]:
    """Join within one overall deadline; return the threads still alive."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return [thread for thread in threads if thread.is_alive()]


def _execute(conn, sql: str, params: Any = None) -> None:
    with conn.cursor() as cur:
        cur.execute(sql, params)


def _fetch(conn, sql: str, params: Any = None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def blocked_or_done(observer, pid: int, done: Callable[[], bool],
                    timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Wait until session ``pid`` either waits for a lock (True; the server says so)
    or ``done()`` (False), whichever comes first; WorkloadError after ``timeout``."""
    deadline = time.monotonic() + timeout
    with observer.cursor() as cur:
        while time.monotonic() < deadline:
            if done():
                return False
            if POSTGRES.blocking_pids(cur, pid):
                return True
    raise WorkloadError(f"session {pid} neither finished nor waited for a lock "
                        f"within {timeout:g} s")


# -- the workloads ------------------------------------------------------------
#
# Each one prepares its tables, runs the caller's transaction on every worker
# and reads back what is left. The transaction -- the SQL the lesson is about --
# is the caller's: ``transaction(cur, turn)`` runs inside ``begin``/``commit``
# on the worker's cursor and calls ``turn.wait_for_others()`` where all workers
# must meet (for a read-modify-write: after the read, before the write).


def increments(connect: ConnectionSource, transaction: TransactionBody, *, level: str,
               threads: int, increments: int, retry: bool = True, lockstep: bool = True,
               timeout: float = DEFAULT_TIMEOUT) -> CounterResult:
    """``threads`` workers each run ``transaction`` -- meant to add 1 to the counter in
    table ``counter (id, value)``, row ``id = 1``, from 0 -- ``increments`` times."""
    with worker_sessions(connect, threads, timeout) as sessions:
        _execute(sessions[0], "create table counter (id int primary key, value int not null);"
                              "insert into counter values (1, 0)")
        tally, _ = run_workers(sessions, level=level, transaction=transaction,
                               rounds=increments, retry=retry, lockstep=lockstep,
                               timeout=timeout)
        (final,), = _fetch(sessions[0], "select value from counter where id = 1")
    return CounterResult(**_fields(tally), final=final)


def bank_transfers(connect: ConnectionSource, transfer: TransactionBody, *, level: str,
                   tellers: int, transfers: int, opening: int = 1000, retry: bool = True,
                   lockstep: bool = True, timeout: float = DEFAULT_TIMEOUT) -> BankResult:
    """Table ``accounts (id, balance)``: the shared account 0 holds ``opening``, customer
    accounts 1 .. ``tellers`` hold 0. Teller ``turn.worker`` runs ``transfer`` (meant to
    pay from account 0 into account ``turn.worker + 1``) ``transfers`` times."""
    with worker_sessions(connect, tellers, timeout) as sessions:
        _execute(sessions[0], "create table accounts (id int primary key, balance int not null);"
                              "insert into accounts select 0, %s;"
                              "insert into accounts select g, 0 from generate_series(1, %s) g",
                 (opening, tellers))
        tally, _ = run_workers(sessions, level=level, transaction=transfer, rounds=transfers,
                               retry=retry, lockstep=lockstep, timeout=timeout)
        balances = dict(_fetch(sessions[0], "select id, balance from accounts order by id"))
    return BankResult(**_fields(tally), balances=balances)


def on_call_doctors(connect: ConnectionSource, go_off_call: TransactionBody, *, level: str,
                    shifts: int, doctors: tuple[str, ...], retry: bool = True,
                    lockstep: bool = True, timeout: float = DEFAULT_TIMEOUT) -> OnCallResult:
    """Table ``doctors (shift, name, on_call)``: in every shift 0 .. ``shifts - 1`` all
    ``doctors`` are on call. Doctor ``doctors[turn.worker]`` runs ``go_off_call`` once per
    shift (``turn.round``); its result (e.g. "goes off call") is the worker's outcome."""
    with worker_sessions(connect, len(doctors), timeout) as sessions:
        _execute(sessions[0], "create table doctors (shift int, name text, on_call bool not null,"
                              " primary key (shift, name));"
                              "insert into doctors select s, d, true "
                              "from generate_series(0, %s - 1) s, unnest(%s::text[]) d",
                 (shifts, list(doctors)))
        tally, _ = run_workers(sessions, level=level, transaction=go_off_call, rounds=shifts,
                               retry=retry, lockstep=lockstep, timeout=timeout)
        rows = _fetch(sessions[0], "select shift, count(*) filter (where on_call) from doctors "
                                   "group by shift order by shift")
    return OnCallResult(**_fields(tally), on_call=[n for _, n in rows])


def job_queue(connect: ConnectionSource, take_job: TransactionBody, *, workers: int, jobs: int,
              level: str = READ_COMMITTED, lockstep: bool = True,
              timeout: float = DEFAULT_TIMEOUT) -> QueueResult:
    """Tables ``jobs (id, done)`` with jobs 1 .. ``jobs`` not done, and ``job_runs (job_id,
    worker)``, empty. Each worker runs ``take_job`` until it returns :data:`STOP`; what it
    returns otherwise (the job's id) is recorded as a job that worker did."""
    with worker_sessions(connect, workers, timeout) as sessions:
        _execute(sessions[0], "create table jobs (id int primary key, "
                              "done bool not null default false);"
                              "create table job_runs (job_id int references jobs, worker int);"
                              "insert into jobs (id) select generate_series(1, %s)", (jobs,))
        tally, outcomes = run_workers(sessions, level=level, transaction=take_job,
                                      lockstep=lockstep, timeout=timeout)
        runs = dict(_fetch(sessions[0], "select j.id, count(r.job_id) from jobs j "
                                        "left join job_runs r on r.job_id = j.id group by j.id"))
    return QueueResult(**_fields(tally), runs_per_job=runs,
                       jobs_per_worker=[len(done) for done in outcomes])


def _fields(tally: Tally) -> dict:
    return {field.name: getattr(tally, field.name) for field in dataclasses.fields(Tally)}
