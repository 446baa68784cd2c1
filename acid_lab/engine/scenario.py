"""Hermitage-style multi-session schedules, run deterministically.

A scenario is a list of steps ``(session, sql, expectation)`` run strictly in
the listed order. Each session has its own psycopg2 connection, driven by its
own worker thread. After sending a step the runner waits until the step has
either finished or is *blocked* by another session of the scenario -- and
"blocked" is decided by asking the server, the way PostgreSQL's own isolation
tester does (lock waits and the safe-snapshot wait of ``SERIALIZABLE READ ONLY
DEFERRABLE``; see engine/postgres.py), never by sleeping. The stepping itself
is the session engine's (engine/sessions.py). A blocked step stays pending
while the schedule goes on; before a
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
import types
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from acid_lab.engine.events import Event, transcript_lines
from acid_lab.engine.expectations import Expectation, succeeds
from acid_lab.engine.postgres import (
    POSTGRES,
    ConnectionSource,
    EngineError,
    ServerNotSupported,  # noqa: F401 (part of this module's API)
)
from acid_lab.engine.sessions import (
    Job,
    Monitor,
    Session,
    Stepper,
    StepResult,
    Stuck,
    cancel_then_terminate,
    open_in_parallel,
)

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
    return POSTGRES.begin_sql(level)


#: Level for schedules whose SQL does its own transaction control (scripts).
RAW = None

T1, T2, T3, T4 = "T1", "T2", "T3", "T4"
#: A session that is never inside a transaction: an outside observer.
OBSERVER = "observer"

#: Default bound, in seconds, for every wait of the runner.
DEFAULT_TIMEOUT = 5.0


#: The engine's error: every failure of the runner is one.
ScenarioError = EngineError


class ScheduleStuck(ScenarioError):
    """A step neither finished nor blocked, or a pending step never finished, in time.

    ``transcript`` holds the transcript so far, ``result`` the partial result.
    """

    def __init__(self, message: str, result: ScenarioResult):
        self.message = message
        self.result = result
        self.transcript = result.transcript
        super().__init__(f"{message}\n\ntranscript so far:\n{_indent(self.transcript)}")


class ExpectationFailed(AssertionError):
    """A step's observed outcome is not the one the scenario expected."""


# -- results ------------------------------------------------------------------

@dataclasses.dataclass
class ScenarioResult:
    """Every step's result (in listed order) and the events, rendered as the transcript."""

    level: str | None
    steps: list[StepResult]
    events: list[Event] = dataclasses.field(default_factory=list)

    @property
    def lines(self) -> list[str]:
        return transcript_lines(self.events)

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
        self._sessions: dict[str, Session] = {}
        self._monitor: Monitor | None = None
        self._search_path: str | None = None
        self._stale: set[str] = set()  # reset() was called since their last scenario

    def __enter__(self) -> ScenarioRunner:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __call__(self, level: str | None, steps: Iterable[Any], **options: Any) -> ScenarioResult:
        __tracebackhide__ = True  # a failing demonstration shows the test, not the runner
        return self.run(level, steps, **options)

    @property
    def sessions(self) -> Mapping[str, Session]:
        """The warm sessions by name (read-only)."""
        return types.MappingProxyType(self._sessions)

    @property
    def monitor(self) -> Monitor | None:
        return self._monitor

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
        stepper = Stepper({name: self._sessions[name] for name in names}, self._monitor,
                          timeout=self.timeout)
        result = ScenarioResult(level, [], stepper.events)
        try:
            self._execute(stepper, level, schedule, set(outside) | {OBSERVER}, result)
        except Stuck as stuck:
            self._abandon()
            raise ScheduleStuck(f"schedule stuck: {stuck}", result) from None
        except BaseException:
            self._abandon()
            raise
        self._end_transactions(names)
        if check:
            _check(schedule, result)
        return result

    @staticmethod
    def _execute(stepper: Stepper, level: str | None, schedule: list[Step],
                 outside: set[str], result: ScenarioResult) -> None:
        __tracebackhide__ = True
        for index, step in enumerate(schedule, start=1):
            stepper.finish(step.session, why=f"before {step.session}'s next step (step {index})")
            begin = None
            if (level is not RAW and step.session not in outside
                    and not stepper.sessions[step.session].in_transaction):
                begin = begin_sql(level)
            observed = StepResult(index, step.session, _statement_text(step.sql))
            result.steps.append(observed)
            stepper.send(step.session, step.sql, result=observed, begin=begin)
        for session in stepper.pending():
            stepper.finish(session.name, why="at the end of the scenario")

    def reset(self, search_path: str | None = None) -> None:
        """Make the warm sessions as good as new before their next scenario.

        Each one gets ``discard all`` (settings, temporary tables, prepared
        statements, session locks) and, when ``search_path`` is given, that
        search_path: a long-lived runner can move on to the next test's schema
        without paying for new connections.
        """
        self._search_path = search_path
        self._stale = set(self._sessions)

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
            self._monitor = Monitor(self.source, self.timeout)
        missing = [name for name in names if name not in self._sessions]
        if missing:
            opened = open_in_parallel([lambda: POSTGRES.connect(self.source) for _ in missing])
            for name, conn in zip(missing, opened, strict=True):
                self._sessions[name] = Session(name, conn)
                if self._search_path is not None:
                    self._stale.add(name)
        stale = [self._sessions[name] for name in names if name in self._stale]
        if stale:
            self._housekeep(stale, "discard all")
            if self._search_path is not None:
                self._housekeep(stale, "select pg_catalog.set_config('search_path', %s, false)",
                                (self._search_path,))
            self._stale.difference_update(session.name for session in stale)

    def _end_transactions(self, names: list[str]) -> None:
        """Roll back what a scenario left open, so the next one starts clean."""
        open_ones = [self._sessions[name] for name in names if self._sessions[name].in_transaction]
        if open_ones:
            self._housekeep(open_ones, "rollback")

    def _housekeep(self, sessions: list[Session], sql: str, params: tuple = ()) -> None:
        """Run one statement on each session, all at once, outside any transcript."""
        jobs = []
        for session in sessions:
            job = Job(StepResult(0, session.name, sql), sql, params)
            session.send(job)
            jobs.append((session, job))
        for session, job in jobs:
            if not job.done.wait(self.timeout):
                self._abandon()
                raise ScenarioError(f"{session.name}: `{sql}` did not finish "
                                    f"within {self.timeout:g} s")
            session.report()
            if job.result.status != "ok":
                self._abandon()
                raise ScenarioError(f"{session.name}: `{sql}` failed: {job.result.outcome()}")

    def _abandon(self) -> None:
        """Cancel whatever still runs, then drop every session (they may be mid-statement)."""
        if self._monitor is not None:
            cancel_then_terminate(self._monitor, list(self._sessions.values()))
        self.close()


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
