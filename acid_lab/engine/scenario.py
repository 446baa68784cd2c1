"""Hermitage-style multi-session schedules, run deterministically.

A scenario is a list of steps ``(session, sql, expectation)`` run strictly in
the listed order. Each session has its own psycopg2 connection, driven by its
own worker thread. After sending a step the runner waits until the step has
either finished or is *blocked* by another session of the scenario -- and
"blocked" is decided by asking the server, the way PostgreSQL's own isolation
tester does (``pg_isolation_test_session_is_blocked``: lock waits and the
safe-snapshot wait of ``SERIALIZABLE READ ONLY DEFERRABLE``), never by
sleeping. A blocked step stays pending while the schedule goes on; before a
session's next step its pending step must finish. Every wait is bounded: a
schedule that cannot finish raises :class:`ScheduleStuck` with the transcript
so far, after cancelling the stuck statements.

A test reads like a Hermitage script::

    run(REPEATABLE_READ, [
        (T1, "select value from test where id = 1",     sees(10)),
        (T2, "select value from test where id = 1",     sees(10)),
        (T1, "update test set value = 11 where id = 1"),
        (T2, "update test set value = 12 where id = 1", blocks(then=aborts(SerializationFailure))),
        (T1, "commit"),
        (OBSERVER, "select value from test where id = 1", sees(11)),
    ])

With an isolation level, each session's transaction begins implicitly
(``begin transaction isolation level ...``) whenever the session is not in
one; with :data:`RAW` the SQL does its own transaction control, as in scripts.
:data:`OBSERVER` (and any session named in ``outside=``) never opens a
transaction: it sees what any other client would see.

The transcript uses Hermitage's notation::

    update test set value = 12 where id = 1; -- T2, BLOCKS
    commit; -- T1. COMMIT
    -- T2, unblocked: ERROR 40001 could not serialize access due to concurrent update
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import psycopg2
import psycopg2.errorcodes
import psycopg2.errors
import psycopg2.extensions

from acid_lab.engine.expectations import Expectation, format_rows, succeeds
from acid_lab.servers.connections import CONNECT_TIMEOUT

# -- vocabulary ---------------------------------------------------------------

READ_UNCOMMITTED = "read uncommitted"
READ_COMMITTED = "read committed"
REPEATABLE_READ = "repeatable read"
SERIALIZABLE = "serializable"
LEVELS = (READ_UNCOMMITTED, READ_COMMITTED, REPEATABLE_READ, SERIALIZABLE)



def begin_sql(level: str) -> str:
    """The statement that opens a transaction at ``level``."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    return f"begin transaction isolation level {level}"


#: Level for schedules whose SQL does its own transaction control (scripts).
RAW = None

T1, T2, T3, T4 = "T1", "T2", "T3", "T4"
#: A session that is never inside a transaction: an outside observer.
OBSERVER = "observer"

#: Default bound, in seconds, for every wait of the runner.
DEFAULT_TIMEOUT = 5.0

# A step that finishes within this window is taken as not blocked without a
# server round trip (a blocked step cannot finish at all until another session
# acts). Only slower steps are checked by asking the server.
_FAST_PATH_SECONDS = 0.001
# Pause between two "is it blocked?" questions to the server; it is a wait on
# the step's own done event, so a step that finishes ends it at once.
_POLL_SECONDS = 0.001
# How long a cancelled or terminated backend gets to give its worker back.
_CANCEL_GRACE_SECONDS = 2.0

_IS_BLOCKED_SQL = (
    "select pg_catalog.pg_isolation_test_session_is_blocked(%s, %s::int[])"
)
_HAS_IS_BLOCKED_SQL = (
    "select pg_catalog.to_regprocedure("
    "'pg_catalog.pg_isolation_test_session_is_blocked(integer, integer[])') is not null"
)

ConnectionSource = str | Callable[..., psycopg2.extensions.connection]


class ScenarioError(Exception):
    """A scenario could not be run to the end."""


class ScheduleStuck(ScenarioError):
    """A step neither finished nor blocked, or a pending step never finished, in time.

    ``transcript`` holds the transcript so far, ``result`` the partial result.
    """

    def __init__(self, message: str, result: ScenarioResult):
        self.message = message
        self.result = result
        self.transcript = result.transcript
        super().__init__(f"{message}\n\ntranscript so far:\n{_indent(self.transcript)}")


class ServerNotSupported(ScenarioError):
    """The server cannot tell whether a session is blocked (PostgreSQL < 10)."""


class ExpectationFailed(AssertionError):
    """A step's observed outcome is not the one the scenario expected."""


# -- results ------------------------------------------------------------------

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


@dataclasses.dataclass
class ScenarioResult:
    """Every step's result (in listed order) and the transcript."""

    level: str | None
    steps: list[StepResult]
    lines: list[str]

    @property
    def transcript(self) -> str:
        return "\n".join(self.lines)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _statement_text(sql: str) -> str:
    return sql.strip().rstrip(";").rstrip()


class Step(NamedTuple):
    """One line of a schedule."""

    session: str
    sql: str
    expect: Expectation = succeeds


def _as_step(item: Any, position: int) -> Step:
    if isinstance(item, Step):
        step = item
    elif isinstance(item, tuple) and len(item) in (2, 3):
        step = Step(*item)
    else:
        raise TypeError(f"step {position}: expected (session, sql[, expectation]), got {item!r}")
    if not isinstance(step.session, str) or not isinstance(step.sql, str):
        raise TypeError(f"step {position}: session and sql must be strings, got {item!r}")
    if not isinstance(step.expect, Expectation):
        raise TypeError(
            f"step {position}: {step.expect!r} is not an expectation "
            "(did you mean sees(...) / aborts(...) / blocks(...)?)"
        )
    return step


# -- sessions -----------------------------------------------------------------

def require_blocked_check(conn: psycopg2.extensions.connection) -> None:
    """Raise ServerNotSupported unless the server can tell blocked sessions (PG >= 10)."""
    try:
        with conn.cursor() as cursor:
            cursor.execute(_HAS_IS_BLOCKED_SQL)
            available = bool(cursor.fetchone()[0])
    except psycopg2.Error:
        available = False  # older than 9.4 (no to_regprocedure) or not PostgreSQL at all
        if not conn.autocommit:
            conn.rollback()
    if not available:
        version = conn.server_version
        major = (f"{version // 10000}" if version >= 100000
                 else f"{version // 10000}.{version % 10000 // 100}")
        raise ServerNotSupported(
            f"this server (PostgreSQL {major}) cannot report "
            "blocked sessions: the scenario runner needs "
            "pg_isolation_test_session_is_blocked (PostgreSQL 10 or later)"
        )


def _connect(source: ConnectionSource) -> psycopg2.extensions.connection:
    """A new connection in autocommit mode (transaction control is explicit)."""
    if isinstance(source, str):
        # libpq would otherwise wait for the operating system's TCP timeout
        limit = {} if "connect_timeout" in psycopg2.extensions.parse_dsn(source) else {
            "connect_timeout": CONNECT_TIMEOUT}
        conn = psycopg2.connect(source, **limit)
    else:
        conn = source()
        if not conn.autocommit:
            conn.commit()  # end whatever the factory may have started
    conn.autocommit = True
    return conn


class _Job:
    """One statement handed to a session's worker thread."""

    def __init__(self, result: StepResult, sql: str, sent: float, params: tuple = ()):
        self.result = result
        self.sql = sql
        self.params = params or None  # None: no %-placeholders in the SQL
        self.sent = sent
        self.done = threading.Event()
        self.in_transaction = False


class _Session:
    """A connection and the thread that drives it; steps arrive through a queue."""

    def __init__(self, name: str, conn: psycopg2.extensions.connection):
        self.name = name
        self.conn = conn
        self.pid = conn.info.backend_pid
        self.pending: _Job | None = None  # a step sent that has not finished
        self.in_transaction = False
        self.stale = False  # reset() was called since this session's last scenario
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # Daemon: if a backend never comes back even after being terminated,
        # the worker must not keep the interpreter alive.
        self._thread = threading.Thread(
            target=self._serve, name=f"scenario-{name}", daemon=True
        )
        self._thread.start()

    def send(self, job: _Job) -> None:
        self.pending = job
        self._jobs.put(job)

    def _serve(self) -> None:
        cursor = self.conn.cursor()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            self._execute(cursor, job)

    def _execute(self, cursor, job: _Job) -> None:
        result = job.result
        try:
            cursor.execute(job.sql, job.params)
            result.command = cursor.statusmessage
            if cursor.description is not None:
                result.rows = [list(row) for row in cursor.fetchall()]
            result.status = "ok"
        except psycopg2.Error as exc:
            result.status = "error"
            result.sqlstate = exc.pgcode
            diag = getattr(exc, "diag", None)
            primary = diag.message_primary if diag is not None else None
            result.error = primary or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        except Exception as exc:  # never leave the runner waiting on a dead worker
            result.status = "error"
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            result.elapsed = time.perf_counter() - job.sent
            try:
                job.in_transaction = (
                    self.conn.info.transaction_status
                    != psycopg2.extensions.TRANSACTION_STATUS_IDLE
                )
            except Exception:
                job.in_transaction = False
            job.done.set()

    def stop(self, timeout: float) -> bool:
        """Stop the worker and close the connection; False if the worker is stuck."""
        self._jobs.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False  # closing under a running execute() could hang; leave it
        self.conn.close()
        return True


class _Monitor:
    """An autocommit connection that asks the server whether a session is blocked.

    It is opened in the background while the sessions start their first steps:
    most steps finish at once and never need it, and a cold scenario is
    dominated by connection setup.
    """

    def __init__(self, source: ConnectionSource, timeout: float):
        self.timeout = timeout
        self.conn: psycopg2.extensions.connection | None = None
        self.cursor = None
        self._failure: BaseException | None = None
        self._thread = threading.Thread(
            target=self._open, args=(source,), name="scenario-monitor", daemon=True
        )
        self._thread.start()

    def _open(self, source: ConnectionSource) -> None:
        try:
            conn = _connect(source)
        except BaseException as exc:
            self._failure = exc
            return
        self.conn = conn
        try:
            require_blocked_check(conn)
            self.cursor = conn.cursor()
        except BaseException as exc:
            self._failure = exc

    def ready(self) -> _Monitor:
        """Wait (bounded) until the connection is open; raise why it could not be."""
        self._thread.join(self.timeout)
        if self._thread.is_alive():
            raise ScenarioError(f"the monitor connection did not open within {self.timeout:g} s")
        if self._failure is not None:
            raise self._failure
        return self

    def is_blocked(self, pid: int, others: list[int]) -> bool:
        self.ready()
        self.cursor.execute(_IS_BLOCKED_SQL, (pid, others))
        return bool(self.cursor.fetchone()[0])

    def signal(self, function: str, pid: int) -> None:
        """Call pg_cancel_backend or pg_terminate_backend on ``pid``."""
        self.ready()
        self.cursor.execute(f"select pg_catalog.{function}(%s)", (pid,))
        self.cursor.fetchall()

    def close(self) -> None:
        self._thread.join(self.timeout)
        if self.conn is not None and not self._thread.is_alive():
            self.conn.close()


def _open_in_parallel(openers: list[Callable[[], Any]]) -> list[Any]:
    """Run the openers concurrently (connection setup dominates a short scenario)."""
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
        thread.join()  # bounded by libpq's own connect behaviour
    if errors:
        for opened in results:
            if opened is not None:
                opened.close()
        raise errors[0]
    return results


# -- the runner ---------------------------------------------------------------

class ScenarioRunner:
    """Runs scenarios on warm connections: one per session, reused between runs.

    ``source`` is a connection factory (called with no arguments, e.g. the
    suite's ``connect`` fixture; it may be called from several threads at once)
    or a libpq DSN. ``timeout`` bounds every single wait, in seconds.
    Use as a context manager, or call :meth:`close`. One runner serves one
    thread at a time; run scenarios in parallel with one runner each.
    """

    def __init__(self, source: ConnectionSource, *, timeout: float = DEFAULT_TIMEOUT):
        self.source = source
        self.timeout = timeout
        self._sessions: dict[str, _Session] = {}
        self._monitor: _Monitor | None = None
        self._search_path: str | None = None

    def __enter__(self) -> ScenarioRunner:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __call__(self, level: str | None, steps: Iterable[Any], **options: Any) -> ScenarioResult:
        __tracebackhide__ = True  # a failing demonstration shows the test, not the runner
        return self.run(level, steps, **options)

    def run(
        self,
        level: str | None,
        steps: Iterable[Any],
        *,
        outside: Iterable[str] = (),
        check: bool = True,
    ) -> ScenarioResult:
        """Run ``steps`` in order; raise ExpectationFailed on any mismatch.

        ``level``: one of LEVELS, each session's transactions begin implicitly
        at it; or RAW, the SQL does its own transaction control. Sessions in
        ``outside`` (and OBSERVER) never open a transaction. ``check=False``
        returns the result without checking the expectations.
        """
        __tracebackhide__ = True
        if level is not RAW and level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS} or RAW, not {level!r}")
        schedule = [_as_step(item, i + 1) for i, item in enumerate(steps)]
        names = list(dict.fromkeys(step.session for step in schedule))
        self._open(names)
        run = _Run(self, level, schedule, names, set(outside) | {OBSERVER})
        try:
            result = run.execute()
        except BaseException:
            self._abandon()
            raise
        self._end_transactions(names)
        if check:
            _check(schedule, result)
        return result

    def reset(self, search_path: str | None = None) -> None:
        """Make the warm sessions as good as new before their next scenario.

        Each one gets ``discard all`` (settings, temporary tables, prepared
        statements, session locks) and, when ``search_path`` is given, that
        search_path: a long-lived runner can move on to the next test's schema
        without paying for new connections.
        """
        self._search_path = search_path
        for session in self._sessions.values():
            session.stale = True

    def close(self) -> None:
        """Stop every worker and close every connection."""
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            session.stop(self.timeout)
        if self._monitor is not None:
            self._monitor.close()
            self._monitor = None

    # -- internals --

    def _open(self, names: list[str]) -> None:
        """Make sure every named session is connected and clean; start the monitor."""
        if self._monitor is None:
            self._monitor = _Monitor(self.source, self.timeout)
        missing = [name for name in names if name not in self._sessions]
        if missing:
            opened = _open_in_parallel([lambda: _connect(self.source) for _ in missing])
            for name, conn in zip(missing, opened, strict=True):
                self._sessions[name] = _Session(name, conn)
                self._sessions[name].stale = self._search_path is not None
        stale = [self._sessions[name] for name in names if self._sessions[name].stale]
        if stale:
            self._housekeep(stale, "discard all")
            if self._search_path is not None:
                self._housekeep(stale, "select pg_catalog.set_config('search_path', %s, false)",
                                (self._search_path,))
            for session in stale:
                session.stale = False

    def _end_transactions(self, names: list[str]) -> None:
        """Roll back what a scenario left open, so the next one starts clean."""
        open_ones = [self._sessions[name] for name in names if self._sessions[name].in_transaction]
        if open_ones:
            self._housekeep(open_ones, "rollback")

    def _housekeep(self, sessions: list[_Session], sql: str, params: tuple = ()) -> None:
        """Run one statement on each session, all at once, outside any transcript."""
        jobs = []
        for session in sessions:
            job = _Job(StepResult(0, session.name, sql), sql, time.perf_counter(), params)
            session.send(job)
            jobs.append((session, job))
        for session, job in jobs:
            if not job.done.wait(self.timeout):
                self._abandon()
                raise ScenarioError(f"{session.name}: `{sql}` did not finish "
                                    f"within {self.timeout:g} s")
            session.pending = None
            session.in_transaction = job.in_transaction
            if job.result.status != "ok":
                self._abandon()
                raise ScenarioError(f"{session.name}: `{sql}` failed: {job.result.outcome()}")

    def _abandon(self) -> None:
        """Cancel whatever still runs, then drop every session (they may be mid-statement)."""
        for session in self._sessions.values():
            job = session.pending
            if job is None or job.done.is_set():
                continue
            for function in ("pg_cancel_backend", "pg_terminate_backend"):
                try:
                    self._monitor.signal(function, session.pid)
                except Exception:
                    break  # the monitor itself is gone; stop() stays bounded
                if job.done.wait(_CANCEL_GRACE_SECONDS):
                    break
        self.close()


class _Run:
    """The state of one scenario run: results, transcript, pending steps."""

    def __init__(self, runner: ScenarioRunner, level: str | None,
                 schedule: list[Step], names: list[str], outside: set[str]):
        self.runner = runner
        self.level = level
        self.schedule = schedule
        self.sessions = {name: runner._sessions[name] for name in names}
        self.outside = outside
        self.others = {
            name: [s.pid for other, s in self.sessions.items() if other != name]
            for name in names
        }
        self.result = ScenarioResult(level, [], [])
        self.started = time.perf_counter()
        self.waiting: list[_Session] = []  # sessions whose step is blocked, in order

    def execute(self) -> ScenarioResult:
        __tracebackhide__ = True
        for index, step in enumerate(self.schedule, start=1):
            session = self.sessions[step.session]
            why = f"before {step.session}'s next step (step {index})"
            self._await(session, why)
            if self._begins_implicitly(session):
                self._perform(session, StepResult(0, session.name, begin_sql(self.level)))
                self._await(session, why)
            result = StepResult(index, step.session, _statement_text(step.sql))
            self.result.steps.append(result)
            self._perform(session, result, sql=step.sql)
        for session in list(self.waiting):
            self._await(session, "at the end of the scenario")
        return self.result

    def _begins_implicitly(self, session: _Session) -> bool:
        return (self.level is not RAW and session.name not in self.outside
                and not session.in_transaction)

    def _perform(self, session: _Session, result: StepResult, sql: str | None = None) -> None:
        """Send one statement; return once it finished or is blocked, then settle the others."""
        __tracebackhide__ = True
        now = time.perf_counter()
        result.started = now - self.started
        job = _Job(result, sql if sql is not None else result.sql, now)
        session.send(job)
        if self._finishes_or_blocks(session, job):
            self._finish(session, job, unblocked=False)
        else:
            result.blocked = True
            self.result.lines.append(f"{result.sql}; -- {session.name}, BLOCKS")
            self.waiting.append(session)
        for other in list(self.waiting):
            if other is not session:
                self._settle(other)

    def _finishes_or_blocks(self, session: _Session, job: _Job) -> bool:
        """True when the job finished, False when the server says it is blocked."""
        __tracebackhide__ = True
        if job.done.wait(_FAST_PATH_SECONDS):
            return True
        deadline = time.perf_counter() + self.runner.timeout
        monitor = self.runner._monitor
        while True:
            if monitor.is_blocked(session.pid, self.others[session.name]):
                # The server saw it waiting: it is blocked even if it finishes
                # a moment later (e.g. by lock_timeout or deadlock detection).
                return False
            if job.done.wait(_POLL_SECONDS):
                return True
            if time.perf_counter() > deadline:
                self._stuck(f"{session.name}: `{job.result.sql}` neither finished nor "
                            f"blocked within {self.runner.timeout:g} s")

    def _settle(self, session: _Session) -> None:
        """A pending step after another step ran: note it if it finished, or
        wait until it finishes or is blocked again (so the transcript is
        deterministic)."""
        __tracebackhide__ = True
        job = session.pending
        if self._finishes_or_blocks(session, job):
            self._finish(session, job, unblocked=True)

    def _await(self, session: _Session, why: str) -> None:
        """Wait (bounded) for the session's pending step, if it has one, to finish."""
        __tracebackhide__ = True
        job = session.pending
        if job is None:
            return
        if not job.done.wait(self.runner.timeout):
            self._stuck(f"{session.name}: `{job.result.sql}` has not finished after "
                        f"{self.runner.timeout:g} s (waited for it {why})")
        self._finish(session, job, unblocked=True)

    def _finish(self, session: _Session, job: _Job, *, unblocked: bool) -> None:
        session.pending = None
        session.in_transaction = job.in_transaction
        result = job.result
        mark = ", " if result.status == "error" else ". "
        if unblocked:
            self.waiting.remove(session)
            self.result.lines.append(f"-- {session.name}, unblocked: {result.outcome()}")
        else:
            self.result.lines.append(f"{result.sql}; -- {session.name}{mark}{result.outcome()}")

    def _stuck(self, message: str) -> None:
        __tracebackhide__ = True
        for session in self.waiting:
            waiting_sql = session.pending.result.sql
            self.result.lines.append(f"-- {session.name}: still waiting: {waiting_sql}")
        raise ScheduleStuck(f"schedule stuck: {message}", self.result)


def _check(schedule: list[Step], result: ScenarioResult) -> None:
    __tracebackhide__ = True  # the mismatch and the transcript are the message
    problems = []
    for step, observed in zip(schedule, result.steps, strict=True):
        problem = step.expect.mismatch(observed)
        if problem is not None:
            problems.append(
                f"step {observed.index} ({step.session}: {observed.sql}):\n"
                f"    expected: {step.expect.describe()}\n"
                f"    observed: {problem}"
            )
    if problems:
        level = "own transaction control" if result.level is RAW else result.level
        raise ExpectationFailed(
            f"scenario at {level} did not go as expected\n"
            + "\n".join(problems)
            + f"\n\ntranscript:\n{_indent(result.transcript)}"
        )


def run_scenario(
    source: ConnectionSource,
    level: str | None,
    steps: Iterable[Any],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    outside: Iterable[str] = (),
    check: bool = True,
) -> ScenarioResult:
    """Run one scenario on fresh connections from ``source`` and close them."""
    __tracebackhide__ = True
    with ScenarioRunner(source, timeout=timeout) as runner:
        return runner.run(level, steps, outside=outside, check=check)
