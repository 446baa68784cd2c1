"""The session engine: sessions on worker threads, one monitor, and the Stepper.

Everything that sends SQL to several sessions of one database and must know
whether a statement finished or waits for another session uses this module:
the scenario runner, the playground, ``run``'s scripts (through the runner).

* A :class:`Session` is a connection and the worker thread that runs its
  statements in turn (:func:`run_statement` turns one into a :class:`StepResult`).
* The :class:`Monitor` is one more connection that asks the server whether a
  session is blocked, and signals sessions (cancel, then terminate).
* The :class:`Stepper` sends a statement to a session and returns once it is
  DONE or BLOCKED (the server says so, never a timer), or RUNNING when the
  caller's bound ran out; it then settles the other sessions' pending steps.
  It records one list of events (:mod:`acid_lab.engine.events`) from which the
  transcript, the report's timeline and the playground's rows are rendered.

The database itself sits behind :class:`Database`, implemented for PostgreSQL
by :mod:`acid_lab.engine.postgres` (the only module that knows how to ask).
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from acid_lab.engine.events import (
    BLOCKED_EVENT,
    FINISHED,
    RESUMED,
    SENT,
    STILL_WAITING,
    Event,
)
from acid_lab.engine.expectations import format_rows
from acid_lab.engine.postgres import POSTGRES, ConnectionSource, EngineError

DONE, BLOCKED, RUNNING = "done", "blocked", "running"

# A step that finishes within this window is taken as not blocked without a
# server round trip (a blocked step cannot finish at all until another session
# acts). Only slower steps are checked by asking the server.
FAST_PATH_SECONDS = 0.001
# Pause between two "is it blocked?" questions; it is a wait on the step's own
# done event, so a step that finishes ends it at once.
POLL_SECONDS = 0.001
# How long a cancelled or terminated backend gets to give its worker back.
CANCEL_GRACE_SECONDS = 2.0


class Database(Protocol):
    """What the engine asks of a database (see engine/postgres.py for PostgreSQL)."""

    Error: type[BaseException]          # what a failed statement raises

    def connect(self, source: ConnectionSource) -> Any: ...          # autocommit
    def begin_sql(self, level: str) -> str: ...
    def require_blocked_check(self, conn: Any) -> None: ...
    def is_blocked(self, cursor: Any, pid: int, others: Sequence[int]) -> bool: ...
    def signal(self, cursor: Any, pid: int, how: str) -> None: ...  # "cancel" | "terminate"
    def error_text(self, error: BaseException) -> str: ...
    def sqlstate(self, error: BaseException) -> str | None: ...
    def in_transaction(self, conn: Any) -> bool: ...
    def backend_pid(self, conn: Any) -> int: ...


class Stuck(EngineError):
    """A step neither finished nor blocked, or a pending step never finished, in time."""


@dataclasses.dataclass
class StepResult:
    """What one step did. ``rows`` is a list of lists, or None for no result set."""

    index: int
    session: str
    sql: str
    blocked: bool = False
    status: str | None = None  # "ok" or "error"; None while unfinished
    sqlstate: str | None = None
    rows: list[list[Any]] | None = None
    error: str | None = None
    command: str | None = None  # the server's command tag, e.g. "UPDATE 1"
    started: float = 0.0  # seconds from the start of the scenario
    elapsed: float | None = None  # seconds from sending to finishing

    @property
    def committed(self) -> bool:
        """A ``commit`` that really committed (one in a failed transaction answers ROLLBACK)."""
        return self.status == "ok" and (self.command or "").upper() == "COMMIT"

    @property
    def finished(self) -> bool:
        return self.status is not None

    def outcome(self) -> str:
        """The outcome in Hermitage words: ``Shows 10``, ``UPDATE 1``, ``ERROR 40001 ...``."""
        if self.status == "error":
            return f"ERROR {self.sqlstate or '?'} {self.error}"
        if self.rows is not None:
            return "Shows " + format_rows(self.rows)
        return self.command or "OK"

    def as_json(self) -> dict[str, Any]:
        """The step object of the ``run --json`` output."""
        return {
            "session": self.session,
            "sql": self.sql,
            "blocked": self.blocked,
            "status": self.status,
            "sqlstate": self.sqlstate,
            "rows": self.rows,
            "error": self.error,
        }


def _all_rows(cursor) -> list[list[Any]]:
    return [list(row) for row in cursor.fetchall()]


def run_statement(cursor, sql: str, params: Any = None, *, result: StepResult,
                  database: Database = POSTGRES,
                  fetch: Callable[[Any], list[list[Any]]] = _all_rows,
                  max_error_chars: int | None = None) -> StepResult:
    """Execute one statement on ``cursor`` into ``result`` (never raises for SQL errors).

    ``fetch`` reads the result set (the playground keeps a bounded part of it);
    ``max_error_chars`` bounds the error message (a RAISE can carry megabytes).
    ``result.status`` is set last: a result with a status is complete.
    """
    try:
        cursor.execute(sql, params)
        result.command = cursor.statusmessage
        if cursor.description is not None:
            result.rows = fetch(cursor)
        status = "ok"
    except database.Error as error:
        result.sqlstate = database.sqlstate(error)
        result.error, status = database.error_text(error), "error"
    except Exception as error:  # never leave a waiter waiting on a dead worker
        result.error, status = f"{type(error).__name__}: {error}", "error"
    if max_error_chars is not None and result.error and len(result.error) > max_error_chars:
        result.error = result.error[:max_error_chars] + "…"
    result.status = status
    return result


class Job:
    """One statement handed to a session's worker thread."""

    def __init__(self, result: StepResult, sql: str, params: Any = None, *,
                 implicit: bool = False, fetch: Callable[[Any], list[list[Any]]] = _all_rows,
                 max_error_chars: int | None = None):
        self.result = result
        self.max_error_chars = max_error_chars
        self.sql = sql
        self.params = params or None  # None: no %-placeholders in the SQL
        self.implicit = implicit      # an implicit BEGIN, not a step of its own
        self.fetch = fetch
        self.sent = time.perf_counter()
        self.done = threading.Event()
        self.in_transaction = False


class Session:
    """A connection and the thread that drives it; statements arrive through a queue.

    ``on_finish`` is called on the worker thread after each statement (the
    playground wakes its pollers with it).
    """

    def __init__(self, name: str, conn: Any, on_finish: Callable[[], None] | None = None,
                 *, database: Database = POSTGRES):
        self.name = name
        self.conn = conn
        self.database = database
        self.pid = database.backend_pid(conn)
        self.pending: Job | None = None  # a statement sent and not yet reported finished
        self.in_transaction = False
        self.on_finish = on_finish
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        # Daemon: if a backend never comes back even after being terminated,
        # the worker must not keep the interpreter alive.
        self.thread = threading.Thread(target=self._serve, name=f"session-{name}", daemon=True)
        self.thread.start()

    def send(self, job: Job) -> None:
        self.pending = job
        self._jobs.put(job)

    def report(self) -> Job:
        """The pending job, which has finished, taken off the session."""
        job = self.pending
        self.pending = None
        self.in_transaction = job.in_transaction
        return job

    def _serve(self) -> None:
        cursor = self.conn.cursor()
        while (job := self._jobs.get()) is not None:
            try:
                run_statement(cursor, job.sql, job.params, result=job.result,
                              database=self.database, fetch=job.fetch,
                              max_error_chars=job.max_error_chars)
            finally:
                job.result.elapsed = time.perf_counter() - job.sent
                try:
                    job.in_transaction = self.database.in_transaction(self.conn)
                except Exception:
                    job.in_transaction = False
                job.done.set()
                if self.on_finish is not None:
                    self.on_finish()

    def stop(self, bound: float) -> bool:
        """Stop the worker and close the connection; False if the worker is stuck."""
        self._jobs.put(None)
        self.thread.join(bound)
        if self.thread.is_alive():
            return False  # closing under a running execute() could hang; leave it
        with contextlib.suppress(Exception):
            self.conn.close()
        return True


class Monitor:
    """One connection that asks the server about sessions (thread-safe, one lock).

    It is opened in the background while the sessions start their first steps:
    most steps finish at once and never need it.
    """

    def __init__(self, source: ConnectionSource, timeout: float, *,
                 database: Database = POSTGRES):
        self.timeout = timeout
        self.database = database
        self.conn: Any = None
        self._cursor: Any = None
        self._lock = threading.Lock()
        self._failure: BaseException | None = None
        self.thread = threading.Thread(target=self._open, args=(source,),
                                       name="session-monitor", daemon=True)
        self.thread.start()

    def _open(self, source: ConnectionSource) -> None:
        try:
            self.conn = self.database.connect(source)
            self.database.require_blocked_check(self.conn)
            self._cursor = self.conn.cursor()
        except BaseException as exc:
            self._failure = exc

    def ready(self) -> Monitor:
        """Wait (bounded) until the connection is open; raise why it could not be."""
        self.thread.join(self.timeout)
        if self.thread.is_alive():
            raise EngineError(f"the monitor connection did not open within {self.timeout:g} s")
        if self._failure is not None:
            raise self._failure
        return self

    @contextlib.contextmanager
    def cursor(self) -> Iterator[Any]:
        """The monitor's cursor, with its lock held (for a question of the caller's own)."""
        self.ready()
        with self._lock:
            yield self._cursor

    def is_blocked(self, pid: int, others: Sequence[int]) -> bool:
        with self.cursor() as cursor:
            return self.database.is_blocked(cursor, pid, others)

    def signal(self, how: str, pid: int) -> None:
        """``how``: "cancel" the session's statement, or "terminate" the session."""
        with self.cursor() as cursor:
            self.database.signal(cursor, pid, how)

    def close(self) -> None:
        self.thread.join(self.timeout)
        if self.conn is not None and not self.thread.is_alive():
            with contextlib.suppress(Exception):
                self.conn.close()


def open_in_parallel(openers: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run the openers concurrently (connection setup dominates a short scenario);
    on any failure close what opened and raise the first error."""
    if len(openers) == 1:
        return [openers[0]()]
    results: list[Any] = [None] * len(openers)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = openers[i]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(openers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()  # bounded by the connect timeout
    if errors:
        for opened in results:
            if opened is not None:
                with contextlib.suppress(Exception):
                    opened.close()
        raise errors[0]
    return results


def cancel_then_terminate(monitor: Monitor, sessions: Sequence[Session],
                          grace: float = CANCEL_GRACE_SECONDS) -> None:
    """Stop each session's running statement: cancel it, then end the session, bounded."""
    for session in sessions:
        job = session.pending
        for how in ("cancel", "terminate"):
            if job is None or job.done.is_set():
                break
            try:
                monitor.signal(how, session.pid)
            except Exception:
                break  # the monitor itself is gone; stop() stays bounded
            job.done.wait(grace)


class Stepper:
    """Sends statements to named sessions in the caller's order; records the events.

    ``timeout`` bounds every wait that has no bound of the caller's: a step that
    neither finishes nor blocks in time, or a pending step that never finishes,
    raises :class:`Stuck` (after noting the steps still waiting).
    """

    def __init__(self, sessions: Mapping[str, Session], monitor: Monitor, *, timeout: float):
        self.sessions = sessions
        self.monitor = monitor
        self.timeout = timeout
        self.events: list[Event] = []
        self.started = time.perf_counter()
        self._batch = 0
        self._order: list[Session] = []  # sessions with a pending statement, in sending order

    # -- what callers ask

    def send(self, name: str, sql: str, *, result: StepResult | None = None,
             params: Any = None, begin: str | None = None, wait: float | None = None,
             fetch: Callable[[Any], list[list[Any]]] = _all_rows,
             max_error_chars: int | None = None) -> str:
        """Send ``sql`` to session ``name`` (which has nothing pending): DONE or BLOCKED,
        or RUNNING when ``wait`` seconds ran out first (without ``wait``: Stuck after
        ``timeout``). ``begin`` runs first as a job of its own (the implicit BEGIN).
        Then the other sessions' pending statements are settled."""
        __tracebackhide__ = True
        self._batch += 1
        session = self.sessions[name]
        deadline = time.perf_counter() + (self.timeout if wait is None else wait)
        if begin is not None:
            self._perform(session, Job(StepResult(0, name, begin), begin, implicit=True),
                          deadline, wait)
            self._finish_pending(session, "before its statement", RESUMED)
        if result is None:
            result = StepResult(0, name, sql.strip())
        job = Job(result, sql, params, fetch=fetch, max_error_chars=max_error_chars)
        return self._perform(session, job, deadline, wait)

    def settle(self, *, wait: float | None = None) -> None:
        """Settle every pending statement: a blocked one until it finishes or is
        blocked again (bounded by ``wait``), a running one only looked at."""
        __tracebackhide__ = True
        self._batch += 1
        deadline = time.perf_counter() + (self.timeout if wait is None else wait)
        self._settle(None, deadline, wait)

    def collect(self) -> list[Event]:
        """Statements that finished on their own since last asked (a deadlock check,
        a timeout, a cancel): their RESUMED events, in the order they were sent."""
        self._batch += 1
        found = []
        for session in list(self._order):
            if session.pending.done.is_set():
                found.append(self._record_finish(session, RESUMED))
        return found

    def finish(self, name: str, *, why: str) -> StepResult | None:
        """Wait (bounded by ``timeout``) for the session's pending statement, if any."""
        __tracebackhide__ = True
        self._batch += 1
        return self._finish_pending(self.sessions[name], why, RESUMED)

    def pending(self) -> list[Session]:
        """The sessions with a statement pending, in the order it was sent."""
        return list(self._order)

    def cancel(self, name: str, bound: float) -> None:
        """Cancel the session's pending statement; wait for it, at most ``bound``."""
        session = self.sessions[name]
        if session.pending is not None:
            self.monitor.signal("cancel", session.pid)
            session.pending.done.wait(bound)

    def abandon(self) -> None:
        """Stop whatever still runs: cancel, then terminate (bounded)."""
        cancel_then_terminate(self.monitor, list(self.sessions.values()))

    def others(self, session: Session) -> list[int]:
        return [s.pid for s in self.sessions.values() if s is not session]

    # -- internals

    def _perform(self, session: Session, job: Job, deadline: float,
                 wait: float | None) -> str:
        __tracebackhide__ = True
        now = time.perf_counter()
        job.result.started = now - self.started
        self._add(SENT, session, job)
        session.send(job)
        self._order.append(session)
        state = self._done_or_blocked(session, job, deadline, wait)
        if state == DONE:
            self._record_finish(session, FINISHED)
        elif state == BLOCKED:
            job.result.blocked = True
            self._add(BLOCKED_EVENT, session, job)
        self._settle(session, deadline, wait)
        return state

    def _settle(self, sent: Session | None, deadline: float, wait: float | None) -> None:
        __tracebackhide__ = True
        for session in list(self._order):
            if session is sent:
                continue
            job = session.pending
            # a waiting statement may have been released: wait until it finishes
            # or blocks again; one that was only running is looked at
            until = deadline if job.result.blocked else time.perf_counter()
            state = self._done_or_blocked(session, job, until,
                                          wait if job.result.blocked else 0.0)
            if state == DONE:
                self._record_finish(session, RESUMED)
            elif state == BLOCKED and not job.result.blocked:
                job.result.blocked = True
                self._add(BLOCKED_EVENT, session, job)

    def _done_or_blocked(self, session: Session, job: Job, deadline: float,
                         wait: float | None) -> str:
        """DONE, BLOCKED (the server saw it waiting, even if it finishes a moment
        later, e.g. by lock_timeout or deadlock detection), or RUNNING past
        ``deadline`` (Stuck instead when the caller gave no bound)."""
        __tracebackhide__ = True
        if job.done.wait(FAST_PATH_SECONDS):
            return DONE
        if wait is None:  # the runner's bound holds for each wait on its own
            deadline = time.perf_counter() + self.timeout
        others = self.others(session)
        while True:
            if self.monitor.is_blocked(session.pid, others):
                return BLOCKED
            if job.done.wait(POLL_SECONDS):
                return DONE
            if time.perf_counter() > deadline:
                if wait is None:
                    self._stuck(f"{session.name}: `{job.result.sql}` neither finished nor "
                                f"blocked within {self.timeout:g} s")
                return RUNNING

    def _finish_pending(self, session: Session, why: str, kind: str) -> StepResult | None:
        __tracebackhide__ = True
        job = session.pending
        if job is None:
            return None
        if not job.done.wait(self.timeout):
            self._stuck(f"{session.name}: `{job.result.sql}` has not finished after "
                        f"{self.timeout:g} s (waited for it {why})")
        return self._record_finish(session, kind).result

    def _record_finish(self, session: Session, kind: str) -> Event:
        job = session.report()
        self._order.remove(session)
        return self._add(kind, session, job)

    def _add(self, kind: str, session: Session, job: Job) -> Event:
        event = Event(kind, session.name, job.result, job.implicit, self._batch)
        self.events.append(event)
        return event

    def _stuck(self, message: str) -> None:
        __tracebackhide__ = True
        for session in self._order:
            if session.pending.result.blocked:
                self._add(STILL_WAITING, session, session.pending)
        raise Stuck(message)
