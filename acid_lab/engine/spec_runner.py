"""Run an isolation-tester spec and print what PostgreSQL's isolationtester prints.

Each session is a libpq connection driven asynchronously (psycopg's low-level
``pq`` layer: send the query, read what arrives, collect every result), plus
a control connection for setup and teardown. Whether a running step is
*blocked* is decided the way the scenario runner decides it: by asking the
server (the engine's blocked check, engine/postgres.py) from the one monitor,
each time the step's socket has been quiet for a poll interval -- never by
sleeping. Every wait is bounded: a step still running after ``timeout``
seconds is cancelled (the tester's own message says so); one still running
after twice that makes the permutation *stuck*, and the spec stops there.

Output rules (the tester's, kept byte for byte):

* ``Parsed test spec with N sessions``; then per permutation a blank line and
  ``starting permutation: s1a s2a ...``;
* ``step NAME: SQL`` when a step completes at once, ``step NAME: SQL <waiting ...>``
  when it is seen blocked (or carries ``(*)``, or completes while a blocker
  mark holds its report back), and ``step NAME: <... completed>`` later;
* each result set as libpq's ``PQprint`` aligns it (``|`` between columns,
  numeric-looking columns right-aligned, ``(N rows)`` and a blank line);
* an error as ``SEVERITY:  primary message`` (no detail: it may hold XIDs);
* each notice as ``SESSION: NOTICE:  ...`` the moment it arrives; NOTIFY
  messages after the step that received them;
* setup and teardown results are printed too; a failing setup ends the spec
  (``setup failed: ...``), a failing teardown is reported and the run goes on;
* with listed permutations, steps that none uses come first: ``unused step name: X``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import select
import time

import psycopg
from psycopg import pq
from psycopg.conninfo import make_conninfo

from acid_lab.engine.sessions import Monitor
from acid_lab.engine.spec import PermutationStep, Spec, SpecStep

#: Default bound, in seconds, on one step (cancelled after it, stuck after twice it).
DEFAULT_STEP_TIMEOUT = 60.0

# How long a step's socket may stay quiet before the server is asked whether
# the step is blocked. This is a bounded wait for the server's reply (select),
# not a sleep: data arriving ends it at once. Same interval as the tester's.
_QUIET_SECONDS = 0.01

_NONBLOCK = 0x1  # return as soon as the step is seen blocked
_RETRY = 0x2  # the step was tried before: its launch line is already printed


class SpecStuck(Exception):
    """A permutation could not finish; the message is the tester's last words."""


class SpecSetupFailed(Exception):
    """The setup (global or a session's) failed; the spec cannot go on."""


@dataclasses.dataclass
class SpecOutcome:
    """The printed output of one spec, and why it stopped early (None: it ran)."""

    spec: Spec
    output: str
    stopped: str | None = None


class _Connection:
    """One libpq connection: the control one (index 0) or a session's."""

    def __init__(self, conninfo: str, name: str, printer: _Printer | None):
        self.name = name
        self.conn = pq.PGconn.connect(conninfo.encode())
        if self.conn.status != pq.ConnStatus.OK:
            message = self.conn.get_error_message()
            self.conn.finish()
            raise ConnectionError(message)
        self.total_notices = 0
        self.active: PermutationStep | None = None
        self.printer = printer
        if printer is None:
            self.conn.notice_handler = lambda result: None  # the control connection hides them
        else:
            self.conn.notice_handler = self._notice
        result = self.conn.exec_params(
            b"SELECT set_config('application_name',\n"
            b"  current_setting('application_name') || '/' || $1,\n  false)",
            [name.encode()])
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise ConnectionError("setting of application name failed: "
                                  + self.conn.get_error_message())
        self.pid = self.conn.backend_pid

    def _notice(self, result: pq.PGresult) -> None:
        message = (result.error_message or b"").decode("utf-8", "replace")
        self.printer.write(f"{self.name}: {message}")
        self.total_notices += 1
        self.printer.any_new_notice = True

    def close(self) -> None:
        self.conn.finish()


class _Printer:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.any_new_notice = False

    def write(self, text: str) -> None:
        self.parts.append(text)

    def text(self) -> str:
        return "".join(self.parts)


def _consume(pgconn: pq.PGconn) -> bool:
    """Read what the server sent; False when the connection broke (the error
    then waits as the step's result, as libpq delivers it)."""
    try:
        pgconn.consume_input()
        return True
    except psycopg.OperationalError:
        return False


def _text(value: bytes | None) -> str:
    return "" if value is None else value.decode("utf-8", "replace")


def format_result(result: pq.PGresult) -> str:
    """A result set as PQprint prints it with header, align and fieldSep "|"."""
    nfields, ntuples = result.nfields, result.ntuples
    if nfields == 0:
        return ""
    names = [_text(result.fname(j)) for j in range(nfields)]
    width = [len(name.encode()) for name in names]
    not_numeric = [False] * nfields
    cells = [[_text(result.get_value(i, j)) for j in range(nfields)] for i in range(ntuples)]
    for row in cells:
        for j, value in enumerate(row):
            if not value:
                continue  # NULL or empty: printed blank, decides nothing
            if not not_numeric[j]:
                last = "0"
                for char in value:
                    last = char
                    if not (char.isascii() and (char.isdigit() or char in ".Ee -")):
                        not_numeric[j] = True
                        break
                if value[0] in "Ee" or not (last.isascii() and last.isdigit()):
                    not_numeric[j] = True
            width[j] = max(width[j], len(value.encode()))

    def cell(value: str, j: int) -> str:
        pad = " " * (width[j] - len(value.encode()))
        return value + pad if not_numeric[j] else pad + value

    lines = ["|".join(cell(name, j) for j, name in enumerate(names)),
             "+".join("-" * w for w in width)]
    lines += ["|".join(cell(value, j) for j, value in enumerate(row)) for row in cells]
    return "\n".join(lines) + f"\n({ntuples} row{'' if ntuples == 1 else 's'})\n\n"


class SpecRunner:
    """Runs specs on one database: ``conninfo`` is a libpq connection string."""

    def __init__(self, conninfo: str, *, timeout: float = DEFAULT_STEP_TIMEOUT,
                 application_name: str = "isolation"):
        self.conninfo = conninfo
        self.timeout = timeout
        self.application_name = application_name

    def run(self, spec: Spec) -> SpecOutcome:
        return _SpecRun(self, spec).execute()


class _SpecRun:
    def __init__(self, runner: SpecRunner, spec: Spec):
        self.runner = runner
        self.spec = spec
        self.out = _Printer()
        self.steps = spec.steps()
        self.conns: list[_Connection] = []
        self.monitor: Monitor | None = None
        # per launched step: (session connection, notice count to reach) of its notice marks
        self.targets: dict[int, list[tuple[_Connection, int]]] = {}
        self.pids: list[int] = []  # the sessions' backends, for the blocked question

    # -- the whole spec

    def execute(self) -> SpecOutcome:
        for name in self.spec.unused_steps():
            self.out.write(f"unused step name: {name}\n")
        self.out.write(f"Parsed test spec with {len(self.spec.sessions)} sessions\n")
        stopped = None
        try:
            self.connect()
            for permutation in self.spec.all_permutations():
                self.run_permutation(permutation)
        except (SpecStuck, SpecSetupFailed, psycopg.Error) as error:
            stopped = str(error) if not isinstance(error, psycopg.Error) else \
                f"{type(error).__name__}: {error}"
            self.out.write(stopped if stopped.endswith("\n") else stopped + "\n")
            self.clean_up_after_stop()
        finally:
            self.close()
        return SpecOutcome(self.spec, self.out.text(), stopped)

    def connect(self) -> None:
        conninfo = make_conninfo(
            self.runner.conninfo,
            application_name=f"{self.runner.application_name}/{self.spec.name}")
        names = ["control connection"] + [session.name for session in self.spec.sessions]
        for index, name in enumerate(names):
            try:
                self.conns.append(_Connection(conninfo, name, self.out if index else None))
            except ConnectionError as error:
                raise SpecSetupFailed(f"Connection {index} failed: {error}") from None
        self.monitor = Monitor(self.runner.conninfo, self.runner.timeout)
        self.pids = [conn.pid for conn in self.conns[1:]]

    def close(self) -> None:
        for conn in self.conns:
            conn.close()
        self.conns = []
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None

    def clean_up_after_stop(self) -> None:
        """Cancel what still runs and end every transaction, so the next spec starts clean.

        Best effort: a connection may be broken already (that may be why we stopped).
        """
        for conn in self.conns[1:]:
            pgconn = conn.conn
            if pgconn.status != pq.ConnStatus.OK:
                continue
            with contextlib.suppress(psycopg.Error):
                if pgconn.is_busy():
                    pgconn.get_cancel().cancel()
                    deadline = time.monotonic() + self.runner.timeout
                    while pgconn.is_busy() and time.monotonic() < deadline:
                        select.select([pgconn.socket], [], [], _QUIET_SECONDS)
                        _consume(pgconn)
                while pgconn.get_result() is not None:
                    pass
                pgconn.exec_(b"ROLLBACK")
        if self.spec.teardown and self.conns and self.conns[0].conn.status == pq.ConnStatus.OK:
            with contextlib.suppress(psycopg.Error):
                self.conns[0].conn.exec_(self.spec.teardown.encode())

    # -- one permutation

    def exec_block(self, conn: _Connection, sql: str) -> pq.PGresult:
        # A block may hold several statements: PQexec keeps the last result.
        try:
            result = conn.conn.exec_(sql.encode())
        except psycopg.Error:  # no result at all: the connection is gone
            raise SpecSetupFailed(f"{conn.name}: {conn.conn.get_error_message()}") from None
        if result.status == pq.ExecStatus.TUPLES_OK:
            self.out.write(format_result(result))
        return result

    def run_permutation(self, permutation: list[PermutationStep]) -> None:
        out = self.out
        out.write("\nstarting permutation:" + "".join(f" {p.name}" for p in permutation) + "\n")
        for sql in self.spec.setup:
            result = self.exec_block(self.conns[0], sql)
            if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
                raise SpecSetupFailed("setup failed: " + self.conns[0].conn.get_error_message())
        for index, session in enumerate(self.spec.sessions):
            if session.setup:
                conn = self.conns[index + 1]
                result = self.exec_block(conn, session.setup)
                if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
                    raise SpecSetupFailed(f"setup of session {session.name} failed: "
                                          + conn.conn.get_error_message())
        waiting: list[PermutationStep] = []
        for pstep in permutation:
            step = self.steps[pstep.name]
            conn = self.conns[step.session + 1]
            started = time.monotonic()
            while conn.active is not None:
                old = conn.active
                if not self.try_complete(old, _RETRY):
                    waiting.remove(old)
                waiting = self.try_complete_all(waiting, _NONBLOCK | _RETRY)
                if conn.active is not None and time.monotonic() - started > 2 * self.runner.timeout:
                    active = " ".join(c.active.name for c in self.conns[1:] if c.active)
                    raise SpecStuck(f"step {conn.active.name} timed out after "
                                    f"{int(time.monotonic() - started)} seconds\n"
                                    f"active steps are: {active}")
            try:
                conn.conn.send_query(step.sql.encode())
            except psycopg.Error:
                raise SpecStuck(f"failed to send query for step {step.name}: "
                                + conn.conn.get_error_message()) from None
            conn.active = pstep
            self.targets[id(pstep)] = self.notice_targets(pstep)
            must_wait = self.try_complete(pstep, _NONBLOCK)
            waiting = self.try_complete_all(waiting, _NONBLOCK | _RETRY)
            if must_wait:
                waiting.append(pstep)
        waiting = self.try_complete_all(waiting, _RETRY)
        if waiting:
            raise SpecStuck("failed to complete permutation due to mutually-blocking steps")
        for index, session in enumerate(self.spec.sessions):
            if session.teardown:
                conn = self.conns[index + 1]
                result = self.exec_block(conn, session.teardown)
                if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
                    out.write(f"teardown of session {session.name} failed: "
                              + conn.conn.get_error_message())
        if self.spec.teardown:
            result = self.exec_block(self.conns[0], self.spec.teardown)
            if result.status not in (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK):
                out.write("teardown failed: " + self.conns[0].conn.get_error_message())

    def notice_targets(self, pstep: PermutationStep) -> list[tuple[_Connection, int]]:
        """For each ``(other notices N)`` mark: the session and the notice count to reach."""
        return [(self.conns[self.steps[b.step].session + 1],
                 self.conns[self.steps[b.step].session + 1].total_notices + b.notices)
                for b in pstep.blockers if b.step is not None and b.notices is not None]

    def has_blocker(self, pstep: PermutationStep) -> bool:
        for blocker in pstep.blockers:
            if blocker.step is None:
                continue
            other = self.conns[self.steps[blocker.step].session + 1]
            if (blocker.notices is None and other.active is not None
                    and other.active.name == blocker.step):
                return True
        return any(conn.total_notices < target
                   for conn, target in self.targets.get(id(pstep), []))

    def try_complete_all(self, waiting: list[PermutationStep], flags: int) -> list[PermutationStep]:
        while True:
            self.out.any_new_notice = False
            before = len(waiting)
            have_blocker = False
            still = []
            for pstep in waiting:
                if self.try_complete(pstep, flags):
                    have_blocker = have_blocker or bool(pstep.blockers)
                    still.append(pstep)
            waiting = still
            if not (have_blocker and (len(waiting) < before or self.out.any_new_notice)):
                return waiting

    def try_complete(self, pstep: PermutationStep, flags: int) -> bool:
        """True while the step is not reported complete (blocked, or held by a mark)."""
        step: SpecStep = self.steps[pstep.name]
        conn = self.conns[step.session + 1]
        pgconn = conn.conn
        out = self.out
        if not flags & _RETRY and any(b.step is None for b in pstep.blockers):
            out.write(f"step {step.name}: {step.sql} <waiting ...>\n")
            return True
        started = time.monotonic()
        canceled = False
        while pgconn.is_busy():
            readable, _, _ = select.select([pgconn.socket], [], [], _QUIET_SECONDS)
            if readable:
                if not _consume(pgconn) and pgconn.status == pq.ConnStatus.BAD:
                    break
                continue
            if flags & _NONBLOCK and self.monitor.is_blocked(conn.pid, self.pids):
                # Notices may have arrived while we asked: take them first.
                _consume(pgconn)
                if not pgconn.is_busy():
                    break
                if not flags & _RETRY:
                    out.write(f"step {step.name}: {step.sql} <waiting ...>\n")
                return True
            waited = time.monotonic() - started
            if waited > self.runner.timeout and not canceled:
                try:
                    pgconn.get_cancel().cancel()
                    out.write(f"isolationtester: canceling step {step.name} "
                              f"after {int(waited)} seconds\n")
                except Exception as error:  # the tester reports it and goes on waiting
                    out.write(f"PQcancel failed: {error}\n")
                canceled = True
            if waited > 2 * self.runner.timeout:
                raise SpecStuck(f"step {step.name} timed out after {int(waited)} seconds")
        if self.has_blocker(pstep):
            if not flags & _RETRY:
                out.write(f"step {step.name}: {step.sql} <waiting ...>\n")
            return True
        if flags & _RETRY:
            out.write(f"step {step.name}: <... completed>\n")
        else:
            out.write(f"step {step.name}: {step.sql}\n")
        while (result := pgconn.get_result()) is not None:
            status = result.status
            if status in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.EMPTY_QUERY):
                pass
            elif status == pq.ExecStatus.TUPLES_OK:
                out.write(format_result(result))
            elif status == pq.ExecStatus.FATAL_ERROR:
                severity = result.error_field(pq.DiagnosticField.SEVERITY)
                message = result.error_field(pq.DiagnosticField.MESSAGE_PRIMARY)
                if severity and message:
                    out.write(f"{_text(severity)}:  {_text(message)}\n")
                else:
                    out.write(_text(result.error_message) + "\n")
            else:
                out.write(f"unexpected result status: PGRES_{status.name}\n")
        _consume(pgconn)
        while (notify := pgconn.notifies()) is not None:
            sender = next((c.name for c in self.conns[1:] if c.pid == notify.be_pid),
                          f"PID {notify.be_pid}")
            out.write(f'{conn.name}: NOTIFY "{_text(notify.relname)}" with payload '
                      f'"{_text(notify.extra)}" from {sender}\n')
            _consume(pgconn)
        conn.active = None
        return False
