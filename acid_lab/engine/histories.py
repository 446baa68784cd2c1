"""Histories: what the clients saw of many concurrent transactions, one operation a line.

The model is Jepsen's *list append*: every key holds a list; a transaction is a
list of micro-operations, ``["append", k, v]`` (add ``v`` at the end of ``k``'s
list) and ``["r", k, [v1, v2]]`` (read ``k``'s whole list). Every appended value
is unique per key, so a read shows the order in which the values before it were
appended -- the *version order* the checker (:mod:`acid_lab.checkers.history`)
reasons with.

A client records each transaction twice: when it starts (``invoke``, reads not yet
known: ``["r", k, None]``) and when it ends -- ``ok`` (committed, with what it read),
``fail`` (certainly not committed: the server aborted it) or ``info`` (unknown: the
connection was lost around COMMIT). This module

* reads and writes histories in Elle's format, as EDN (one map a line, parsed with
  the ``edn_format`` library) or as JSON (one object a line, same fields)::

      {:type :ok, :f :txn, :process 3, :time 2251, :index 7, :value [[:append 9 2] [:r 9 [1 2]]]}
      {"type": "ok", "f": "txn", "process": 3, "value": [["append", 9, 2], ["r", 9, [1, 2]]]}

* and records such histories from a live PostgreSQL (:func:`list_append_history`):
  a few worker threads, each with its own session, run seeded random transactions over
  the table ``lists(k int primary key, v int[])`` at one isolation level, retries off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import random
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import edn_format
import psycopg2
from psycopg2 import errors

from acid_lab.engine.scenario import begin_sql
from acid_lab.engine.workloads import (
    DEFAULT_TIMEOUT,
    ConnectionSource,
    Lockstep,
    WorkloadError,
    worker_sessions,
)

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"
TYPES = (INVOKE, OK, FAIL, INFO)
APPEND, READ = "append", "r"


class HistoryError(ValueError):
    """A history that cannot be read: the message names the line."""


@dataclasses.dataclass(frozen=True)
class Operation:
    """One line of a history. ``value``: micro-operations ``(f, key, value)``; a read's
    value is a tuple of the elements read, or None when not (yet) known."""

    type: str
    value: tuple
    process: Any = None
    time: int | None = None
    index: int = 0
    f: str = "txn"

    def as_json(self) -> dict:
        line = {"type": self.type, "f": self.f, "value": [
            [f, k, list(v) if isinstance(v, tuple) else v] for f, k, v in self.value]}
        if self.process is not None:
            line["process"] = self.process
        if self.time is not None:
            line["time"] = self.time
        line["index"] = self.index
        return line


# -- reading ------------------------------------------------------------------

def read_history(path: str | Path) -> list[Operation]:
    """A history file: EDN (``.edn``) or JSON lines (``.json``, ``.jsonl``); any other
    name is recognised by its first line (``{"`` is JSON)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise HistoryError(f"cannot read {path}: {error}") from None
    suffix = path.suffix.lower()
    if suffix in (".json", ".jsonl") or (suffix != ".edn" and _looks_like_json(text)):
        return parse_json(text)
    return parse_edn(text)


def _looks_like_json(text: str) -> bool:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(";"):
            return stripped.startswith(("{\"", "[")) or stripped == "{"
    return False


def parse_edn(text: str) -> list[Operation]:
    """Elle's EDN: maps with keyword keys, anywhere in the text (comments allowed)."""
    try:
        forms = edn_format.loads_all(text)
    except Exception as error:  # noqa: BLE001 - edn_format raises several kinds
        raise HistoryError(f"not EDN: {error}") from None
    return [_operation(_plain(form), position) for position, form in enumerate(forms)]


def parse_json(text: str) -> list[Operation]:
    """JSON lines (one object a line), or one JSON array of objects."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            lines = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise HistoryError(f"not JSON: {error}") from None
        return [_operation(line, position) for position, line in enumerate(lines)]
    operations = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError as error:
            raise HistoryError(f"line {number}: not JSON: {error}") from None
        operations.append(_operation(parsed, len(operations), f"line {number}"))
    return operations


def _plain(form: Any) -> Any:
    """EDN values as plain Python: keywords become their names, vectors lists."""
    if isinstance(form, edn_format.Keyword):
        return form.name
    if isinstance(form, Mapping):
        return {_plain(k): _plain(v) for k, v in form.items()}
    if isinstance(form, Sequence) and not isinstance(form, str):
        return [_plain(item) for item in form]
    return form


def _operation(line: Any, position: int, where: str | None = None) -> Operation:
    where = where or f"operation {position + 1}"
    if not isinstance(line, dict):
        raise HistoryError(f"{where}: expected a map, got {line!r}")
    kind = line.get("type")
    if kind not in TYPES:
        raise HistoryError(f"{where}: type must be one of {', '.join(TYPES)}, not {kind!r}")
    f = str(line.get("f", "txn"))
    if f != "txn":  # e.g. a nemesis's operations: not a client's transaction
        return Operation(type=kind, value=(), process=_hashable(line.get("process")),
                         time=line.get("time"), index=line.get("index", position), f=f)
    value = line.get("value")
    if not isinstance(value, list):
        raise HistoryError(f"{where}: value must be a list of micro-operations")
    mops = []
    for mop in value:
        if not (isinstance(mop, list) and len(mop) == 3 and mop[0] in (APPEND, READ)):
            raise HistoryError(f"{where}: {mop!r} is neither [append k v] nor [r k values]")
        f, key, element = mop
        if f == READ:
            if element is not None and not isinstance(element, list):
                raise HistoryError(f"{where}: a read's value must be a list or nil: {mop!r}")
            element = None if element is None else tuple(_hashable(e) for e in element)
        else:
            element = _hashable(element)
        mops.append((f, _hashable(key), element))
    index = line.get("index", position)
    return Operation(type=kind, value=tuple(mops), process=_hashable(line.get("process")),
                     time=line.get("time"), index=index if isinstance(index, int) else position)


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


# -- writing ------------------------------------------------------------------

def to_jsonl(operations: Iterable[Operation]) -> str:
    return "".join(json.dumps(op.as_json()) + "\n" for op in operations)


def to_edn(operations: Iterable[Operation]) -> str:
    out = io.StringIO()
    for op in operations:
        line = op.as_json()
        out.write(edn_format.dumps({edn_format.Keyword(k): _edn_value(k, v)
                                    for k, v in line.items()}))
        out.write("\n")
    return out.getvalue()


def _edn_value(field: str, value: Any) -> Any:
    if field in ("type", "f"):
        return edn_format.Keyword(value)
    if field == "value":
        return [[edn_format.Keyword(f), k, v] for f, k, v in value]
    return value


def write_history(operations: Sequence[Operation], path: str | Path) -> None:
    """As EDN when ``path`` ends in ``.edn``, else as JSON lines."""
    path = Path(path)
    text = to_edn(operations) if path.suffix.lower() == ".edn" else to_jsonl(operations)
    path.write_text(text, encoding="utf-8")


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
