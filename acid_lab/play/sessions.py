"""The playground's database sessions: real connections held between HTTP requests.

HTTP is stateless: every click is a request of its own. A database session is
not: a transaction that one click opened must still be open at the next one,
holding its locks and its snapshot. So the app keeps, for each open page, one
psycopg2 connection per session (T1, T2, ..., observer), each driven by a
worker thread of its own, under a random token that only that page knows.
Each page works in a schema of its own, so pages never see each other's rows.

A step is sent through the session engine's Stepper (engine/sessions.py, as the
scenario runner does); the request then waits, bounded, until the statement
has finished or the server says it is blocked by another session of the page
(asked on the playground's one monitor connection). A blocked step answers
"waiting" at once; the page asks again later (:meth:`Page.poll`, which waits on
an event, never sleeps) or a later step releases it, and its RESUMES shows in
that row. The rows are rendered from the Stepper's events.

Least privilege: where the login may create roles, each page's sessions log in
as a role of that page's own (not a superuser, no server-file or program
rights), owner of the page's schema and nothing else, dropped with the page.
The monitor and the housekeeping (schemas, roles) keep the playground's login.

Bounded everywhere: pages, sessions per page, every wait, every statement
(``statement_timeout``, and a watchdog that cancels it from the app side
should the SQL have SET it away), idle transactions, the rows and bytes a
result keeps, a page's history; pages are closed on reset, when idle too
long, and at shutdown.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql as pgsql

from acid_lab.engine.events import SENT, timeline_rows
from acid_lab.engine.scenario import begin_sql
from acid_lab.engine.sessions import (
    Monitor,
    Session,
    Stepper,
    StepResult,
    cancel_then_terminate,
    open_in_parallel,
    run_statement,
)
from acid_lab.lessons.schema import HERMITAGE
from acid_lab.play import scenarios
from acid_lab.play.entries import (  # noqa: F401 (the bounds are part of this module's API)
    MAX_CELL_CHARS,
    MAX_ERROR_CHARS,
    MAX_RESULT_BYTES,
    MAX_RESULT_ROWS,
    Entry,
    state_of,
)
from acid_lab.servers.connections import CONNECT_TIMEOUT, ConnectionInfo
from acid_lab.servers.places import PlaceKeeper, new_schema_name

MAX_PAGES = 8                # pages open at once (each holds its sessions' connections)
MAX_SESSIONS = 4             # sessions per page, the observer included
STEP_BOUND = 2.0             # seconds a request waits for its statement to finish or block
POLL_BOUND = 1.0             # seconds a poll waits for a waiting statement to finish
LOCK_BOUND = STEP_BOUND + 1  # seconds a request waits for another request of its page
IDLE_TIMEOUT = 600.0         # seconds without a request before a page's sessions are closed
STATEMENT_TIMEOUT = 60.0     # seconds a statement may run (a wait for a lock included)
IDLE_IN_TRANSACTION_TIMEOUT = 600.0  # seconds a session may sit idle inside a transaction
MAX_SQL_CHARS = 4000         # characters of one statement sent in free mode
MAX_HISTORY = 50             # statements a page keeps (the latest, and any still pending)
ANSWER_BOUND = 256 * 1024    # bytes a page's answer stays under (the tests' figure, with
                             # MAX_HISTORY statements of bounded results)

FREE, SCENARIO, SCRIPT = "free", "scenario", "script"


class PlaygroundError(Exception):
    """A request the playground cannot serve; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# -- one statement, one session ----------------------------------------------

def enforce(monitor: Monitor, pids: list[int], statement_bound: float,
            idle_bound: float) -> list[int]:
    """Cancel the statements of ``pids`` that have run longer than ``statement_bound``
    seconds and end the sessions idle in a transaction for longer than ``idle_bound``:
    the server's own timeouts, enforced from here (a page's SQL can SET them away).
    Which sessions were signalled; the server's clock decides."""
    with monitor.cursor() as cursor:
        cursor.execute(
            "select pid, case when state = 'active' then pg_catalog.pg_cancel_backend(pid)"
            " else pg_catalog.pg_terminate_backend(pid) end"
            " from pg_catalog.pg_stat_activity where pid = any(%s::int[]) and"
            " ((state = 'active' and clock_timestamp() - query_start > %s * interval '1 s')"
            " or (state like 'idle in transaction%%'"
            " and clock_timestamp() - state_change > %s * interval '1 s'))",
            (pids, statement_bound, idle_bound))
        return [pid for pid, _ in cursor.fetchall()]


# -- one page ------------------------------------------------------------------

@dataclass
class Setup:
    """What a page plays: free SQL, a catalog scenario at a level, or a pasted script."""

    mode: str
    level: str | None = None               # None: the SQL does its own transaction control
    scenario: scenarios.Scenario | None = None
    script_setup: list[str] = field(default_factory=list)
    schedule: list[tuple[str, str]] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)  # a pasted page's scripts, by name
    part: int = 0                                    # the one this page plays


def make_setup(mode: str, *, code: str | None = None, level: str | None = None,
               text: str | None = None, part: int = 0) -> Setup:
    """Check what a page asked for; PlaygroundError(400) says what is wrong."""
    if level is not None and level not in scenarios.LEVELS:
        raise PlaygroundError(400, f"level must be one of {', '.join(scenarios.LEVELS)}")
    if mode == FREE:
        return Setup(FREE, level)
    if mode == SCENARIO:
        scenario = scenarios.find(code or "")
        if scenario is None:
            raise PlaygroundError(400, f"no scenario {code!r} in the catalog")
        if level is None:
            raise PlaygroundError(400, "a scenario runs at an isolation level: choose one")
        return Setup(SCENARIO, level, scenario, schedule=list(scenario.steps))
    if mode == SCRIPT:
        try:
            setup, steps, parts = scenarios.parse_pasted(text or "", part)
        except ValueError as error:
            raise PlaygroundError(400, str(error)) from None
        return Setup(SCRIPT, None, None, setup, steps, parts, part)
    raise PlaygroundError(400, f"mode must be {FREE}, {SCENARIO} or {SCRIPT}")


class Page:
    """The sessions, schedule and transcript of one open page."""

    def __init__(self, playground: Playground, token: str, setup: Setup):
        self.playground = playground
        self.token = token
        self.setup = setup
        self.lock = threading.Lock()           # one request of this page at a time
        self.changed = threading.Condition()   # a statement of this page finished
        self.last_used = time.monotonic()
        self.version = 0
        self.schema: str | None = None
        # Names the page's sessions on the server: random, and no part of the token.
        self.name = secrets.token_hex(4)
        self.role: str | None = None           # the page's own login role (where made)
        self.password: str | None = None
        self.earlier = 0                       # statements dropped from the history
        self.sessions: dict[str, Session] = {}
        self.stepper = Stepper(self.sessions, playground.monitor, timeout=STEP_BOUND)
        self.entries: list[Entry] = []
        self.next_step = 0
        self.verdict: str | None = None
        self._ids = itertools.count(1)

    # -- life

    def open(self) -> None:
        """A fresh schema and the sessions the schedule names (free mode opens them on use)."""
        setup = self.setup
        self.role, self.password, self.schema = self.playground.create_place(
            self.name, "" if setup.mode == SCRIPT else HERMITAGE)
        self._run_script_setup(setup.script_setup)
        names = list(dict.fromkeys(session for session, _ in setup.schedule))
        if len(names) > MAX_SESSIONS:
            raise PlaygroundError(400, f"the playground holds at most {MAX_SESSIONS} sessions "
                                       f"per page; this schedule has {len(names)}")
        self._open_sessions(names)

    def _run_script_setup(self, statements: list[str]) -> None:
        """A pasted script's setup, run by the page's own role on a connection of its own."""
        if not statements:
            return
        conn = self._connect()
        try:
            with conn.cursor() as cursor:
                for sql in statements:
                    done = run_statement(cursor, sql, result=StepResult(0, "setup", sql),
                                         max_error_chars=MAX_ERROR_CHARS)
                    if done.status == "error":
                        raise PlaygroundError(400, f"the script's setup `{sql[:200]}` failed: "
                                                   f"{done.sqlstate} {done.error}")
        finally:
            conn.close()

    def _connect(self) -> psycopg2.extensions.connection:
        playground = self.playground
        login = {"user": self.role, "password": self.password} if self.role else {}
        conn = psycopg2.connect(**playground.info.params(
            options=(f"-c search_path={self.schema}"
                     f" -c statement_timeout={round(playground.statement_timeout * 1000)}"
                     " -c idle_in_transaction_session_timeout="
                     f"{round(IDLE_IN_TRANSACTION_TIMEOUT * 1000)}"),
            connect_timeout=CONNECT_TIMEOUT, application_name=f"acid_lab play {self.name}",
            **login))
        conn.autocommit = True
        return conn

    def _open_sessions(self, names: list[str]) -> None:
        missing = [name for name in names if name not in self.sessions]
        if not missing:
            return
        try:
            opened = open_in_parallel([self._connect for _ in missing])
        except psycopg2.Error as error:
            why = " ".join(str(error).split())
            raise PlaygroundError(503, f"cannot open a session: {why}") from None
        for name, conn in zip(missing, opened, strict=True):
            self.sessions[name] = Session(name, conn, self._notify)

    def _notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def close(self) -> None:
        """Stop whatever still runs, close every session, drop the schema."""
        cancel_then_terminate(self.playground.monitor, list(self.sessions.values()),
                              grace=STEP_BOUND)
        pids = [session.pid for session in self.sessions.values()]
        for session in self.sessions.values():
            session.stop(STEP_BOUND)
        self.sessions.clear()
        if self.schema is not None:
            self.playground.drop_place(self.schema, self.role, pids)
            self.schema = self.role = self.password = None
        self._notify()

    # -- what the page asks for (each with self.lock held)

    def next(self) -> None:
        """Send the scenario's next step."""
        if self.setup.mode == FREE:
            raise PlaygroundError(400, "free mode has no schedule: send SQL to a session")
        if self.next_step >= len(self.setup.schedule):
            raise PlaygroundError(409, "the schedule has ended: reset to run it again")
        session, sql = self.setup.schedule[self.next_step]
        self._send(session, sql, step=self.next_step)
        self.next_step += 1
        self._judge()

    def run(self, session: str, sql: str) -> None:
        """Free mode: send the learner's SQL to one session."""
        if self.setup.mode != FREE:
            raise PlaygroundError(400, "this page follows a schedule: use next step")
        if not sql.strip():
            raise PlaygroundError(400, f"{session}: there is no SQL to send")
        if len(sql) > MAX_SQL_CHARS:
            raise PlaygroundError(400, f"a statement sent here has at most {MAX_SQL_CHARS} "
                                       "characters")
        if session not in free_sessions():
            raise PlaygroundError(400, f"sessions are {', '.join(free_sessions())}")
        if session not in self.sessions:
            if len(self.sessions) >= MAX_SESSIONS:
                raise PlaygroundError(400, f"at most {MAX_SESSIONS} sessions per page")
            self._open_sessions([session])
        self._send(session, sql, step=None)

    def cancel(self, name: str) -> None:
        """pg_cancel_backend on the session's statement; its error is its RESUMES."""
        session = self.sessions.get(name)
        if session is None or session.pending is None:
            raise PlaygroundError(409, f"{name} has no statement to cancel")
        self.stepper.cancel(name, STEP_BOUND)
        self.poll()

    def poll(self) -> None:
        """Report what finished since the last request: a row of RESUMES."""
        self.stepper.collect()
        self.stepper.settle(wait=STEP_BOUND)
        self._judge()

    def wait_for_change(self, bound: float) -> None:
        """Wait (without the page's lock) until a pending statement finishes, at most ``bound``."""
        def finished() -> bool:
            return any(s.pending is not None and s.pending.done.is_set()
                       for s in list(self.sessions.values()))
        with self.changed:
            self.changed.wait_for(finished, timeout=bound)

    # -- internals

    def _send(self, name: str, sql: str, *, step: int | None) -> None:
        self.stepper.collect()  # what finished since the last request, in a row of its own
        session = self.sessions[name]
        if session.pending is not None:
            job = session.pending
            raise PlaygroundError(409, f"{name} is still {state_of(job.result, job.done.is_set())}"
                                       f": `{job.result.sql}`; a step of {name} can "
                                       "go only once it finishes (or cancel it)")
        begin = None
        if (self.setup.level is not None and name != scenarios.OBSERVER
                and not session.in_transaction):
            begin = begin_sql(self.setup.level)
        number = next(self._ids)
        entry = Entry(number, StepResult(number, name, sql.strip()), begin=begin, step=step)
        self.entries.append(entry)
        self._forget_history()
        self.stepper.send(name, entry.result.sql, result=entry.result, begin=begin,
                          wait=STEP_BOUND, fetch=entry.fetch, max_error_chars=MAX_ERROR_CHARS)
        # the step just sent may have been seen waiting and finished meanwhile (a deadlock)
        self.stepper.collect()

    def _forget_history(self) -> None:
        """Keep the latest MAX_HISTORY statements (and any still pending), and their events."""
        if len(self.entries) <= MAX_HISTORY:
            return
        pending = {s.pending.result.index for s in self.sessions.values()
                   if s.pending is not None}
        old = self.entries[:-MAX_HISTORY]
        self.entries = [e for e in old if e.id in pending] + self.entries[-MAX_HISTORY:]
        kept = {entry.id for entry in self.entries}
        self.earlier += len(old) - (len(self.entries) - MAX_HISTORY)
        self.stepper.events[:] = [event for event in self.stepper.events
                                  if not event.implicit and event.result.index in kept]

    def rows(self) -> list[dict[str, Any]]:
        """The page's rows, from the Stepper's events: {"step": n | None, "cells": [...]}."""
        steps = {entry.id: entry.step for entry in self.entries}
        return [{"step": steps.get(row[0].result.index) if row[0].kind == SENT else None,
                 "cells": [{"session": event.session,
                            "kind": "step" if event.kind == SENT else "resumes",
                            "entry": event.result.index} for event in row]}
                for row in timeline_rows(self.stepper.events, group=True)]

    def _judge(self) -> None:
        """At the end of a scenario (every step sent and finished): the catalog's verdict."""
        self.version += 1
        setup = self.setup
        if (setup.mode != SCENARIO or self.verdict is not None
                or self.next_step < len(setup.schedule)
                or any(s.pending is not None for s in self.sessions.values())):
            return
        results = [entry.result for entry in self.entries if entry.step is not None]
        self.verdict = setup.scenario.verdict(setup.level, results)

    def as_json(self) -> dict[str, Any]:
        setup = self.setup
        scenario = setup.scenario
        names = list(dict.fromkeys([s for s, _ in setup.schedule] + list(self.sessions)))
        return {
            "token": self.token, "version": self.version, "mode": setup.mode,
            "level": setup.level,
            "scenario": None if scenario is None else {
                "code": scenario.code, "name": scenario.name, "legend": scenario.legend},
            "sessions": sorted(names, key=lambda n: (n == scenarios.OBSERVER, n)),
            "schedule": [{"session": s, "sql": sql} for s, sql in setup.schedule],
            "parts": setup.parts, "part": setup.part,
            "next_step": self.next_step,
            "rows": self.rows(),
            "entries": {entry.id: entry.as_json() for entry in self.entries},
            "pending": {s.name: state_of(s.pending.result, s.pending.done.is_set())
                        for s in self.sessions.values() if s.pending is not None},
            "finished": bool(setup.schedule) and self.next_step >= len(setup.schedule)
            and not any(s.pending is not None for s in self.sessions.values()),
            "verdict": self.verdict,
            "earlier": self.earlier,
        }


def free_sessions() -> list[str]:
    return [f"T{n}" for n in range(1, MAX_SESSIONS + 1)]


# -- every page ----------------------------------------------------------------

class Playground:
    """The open pages, keyed by their tokens, over one server database."""

    def __init__(self, info: ConnectionInfo, *, max_pages: int = MAX_PAGES,
                 idle_timeout: float = IDLE_TIMEOUT,
                 statement_timeout: float = STATEMENT_TIMEOUT):
        self.info = info
        self.max_pages = max_pages
        self.idle_timeout = idle_timeout
        self.statement_timeout = statement_timeout
        self.monitor = Monitor(lambda: psycopg2.connect(**info.params(
            connect_timeout=CONNECT_TIMEOUT)), CONNECT_TIMEOUT).ready()
        self.keeper = PlaceKeeper(psycopg2.connect(**info.params(connect_timeout=CONNECT_TIMEOUT)))
        self._keeper_lock = threading.Lock()
        self.superuser, self.sandboxed = self._login_rights()
        self._pages: dict[str, Page] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap, name="play-reaper", daemon=True)
        self._reaper.start()
        self._watchdog = threading.Thread(target=self._watch, name="play-watchdog", daemon=True)
        self._watchdog.start()

    def __enter__(self) -> Playground:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- pages

    def open_page(self, setup: Setup) -> Page:
        with self._lock:
            if self._stop.is_set():
                raise PlaygroundError(503, "the playground is shutting down")
            if len(self._pages) >= self.max_pages:
                raise PlaygroundError(503, f"{self.max_pages} pages are open already; close "
                                           "one (or wait until an idle one is closed)")
            page = Page(self, secrets.token_urlsafe(16), setup)
            self._pages[page.token] = page
        try:
            page.open()
        except BaseException:
            self.close_page(page.token)
            raise
        return page

    def page(self, token: str) -> Page:
        with self._lock:
            page = self._pages.get(token)
        if page is None:
            raise PlaygroundError(404, "this page's sessions are closed (reset, idle for "
                                       f"{self.idle_timeout / 60:g} minutes, or the app "
                                       "restarted): start again")
        page.last_used = time.monotonic()
        return page

    def close_page(self, token: str) -> None:
        with self._lock:
            page = self._pages.pop(token, None)
        if page is not None:
            page.close()

    @contextlib.contextmanager
    def holding(self, token: str):
        """The page, with its lock held (bounded): one request of a page at a time."""
        page = self.page(token)
        if not page.lock.acquire(timeout=LOCK_BOUND):
            raise PlaygroundError(409, "another request of this page is still running")
        try:
            if self._pages.get(token) is not page:
                raise PlaygroundError(404, "this page's sessions were closed meanwhile")
            yield page
        finally:
            page.last_used = time.monotonic()
            page.lock.release()

    def reset_page(self, token: str) -> Page:
        """Close the page's sessions and schema, and start its setup afresh under a new token."""
        with self.holding(token) as page:
            setup = page.setup
        self.close_page(token)
        return self.open_page(setup)

    def page_count(self) -> int:
        with self._lock:
            return len(self._pages)

    # -- the server

    def _login_rights(self) -> tuple[bool, bool]:
        """(Is the login a superuser, may it create roles: can pages get roles of their own?)"""
        with self._keeper_lock, self.keeper.admin.cursor() as cursor:
            cursor.execute("select rolsuper, rolsuper or rolcreaterole from pg_catalog.pg_roles"
                           " where rolname = current_user")
            found = cursor.fetchone()
        return (bool(found[0]), bool(found[1])) if found else (False, False)

    def create_place(self, name: str, setup_sql: str) -> tuple[str | None, str | None, str]:
        """A page's own login role (where the login may make one) and a schema it owns,
        holding ``setup_sql``'s tables (ours, never a page's: made here as the role):
        (role, password, schema). Without a role the schema belongs to the login."""
        schema = new_schema_name()
        role = password = None
        with self._keeper_lock, self.keeper.admin.cursor() as cursor:
            owner = pgsql.SQL("current_user")
            if self.sandboxed:
                role, password = f"acid_lab_play_{name}", secrets.token_urlsafe(24)
                owner = pgsql.Identifier(role)
            try:
                if role is not None:
                    self._create_role(cursor, role, password)
                cursor.execute(pgsql.SQL("create schema {} authorization {}").format(
                    pgsql.Identifier(schema), owner))
                if setup_sql:
                    self._make_tables(cursor, schema, role, setup_sql)
            except BaseException:
                with contextlib.suppress(psycopg2.Error):
                    cursor.execute("rollback")  # a setup that failed inside its transaction
                if role is not None:  # nothing of the page outlives it
                    for drop in ("drop owned by {}", "drop role if exists {}"):
                        with contextlib.suppress(psycopg2.Error):
                            cursor.execute(pgsql.SQL(drop).format(owner))
                raise
        return role, password, schema

    @staticmethod
    def _make_tables(cursor, schema: str, role: str | None, setup_sql: str) -> None:
        """Our own setup SQL, owned by the page's role: made as it, on this connection."""
        become = pgsql.SQL("set local role {}; ").format(pgsql.Identifier(role)) if role \
            else pgsql.SQL("")
        cursor.execute(pgsql.SQL("begin; ") + become + pgsql.SQL(
            "set local search_path to {}; ").format(pgsql.Identifier(schema))
            + pgsql.SQL(setup_sql) + pgsql.SQL("; commit"))

    def _create_role(self, cursor, role: str, password: str) -> None:
        # No SUPERUSER, no CREATEROLE or CREATEDB, no membership in any role (so none of
        # pg_execute_server_program, pg_read/write_server_files).
        ident = pgsql.Identifier(role)
        cursor.execute(pgsql.SQL(
            "create role {} login password {} nosuperuser nocreatedb nocreaterole"
            " noinherit noreplication nobypassrls connection limit {}").format(
            ident, pgsql.Literal(password), pgsql.Literal(MAX_SESSIONS + 1)))
        if not self.superuser:  # a CREATEROLE login gives a schema only to its members
            cursor.execute(pgsql.SQL("grant {} to current_user").format(ident))
        elif self.keeper.admin.server_version >= 150000:
            # a lesson shortens the deadlock check (a superuser's setting otherwise)
            cursor.execute(pgsql.SQL("grant set on parameter deadlock_timeout to {}")
                           .format(ident))

    def drop_place(self, schema: str, role: str | None, pids: list[int]) -> None:
        """Drop the page's schema, then everything its role owns and the role itself."""
        with self._keeper_lock, contextlib.suppress(psycopg2.Error):
            # a closed page's sessions must be gone when the page answers
            self.keeper.drop(schema, pids, wait_until_gone=True)
            if role is not None:
                with self.keeper.admin.cursor() as cursor:
                    # its sessions first: a DROP ROLE fails while one is still logged in
                    cursor.execute("select pg_catalog.pg_terminate_backend(pid)"
                                   " from pg_catalog.pg_stat_activity where usename = %s",
                                   (role,))
                    ident = pgsql.Identifier(role)
                    cursor.execute(pgsql.SQL("drop owned by {}; drop role {}").format(
                        ident, ident))

    # -- the end

    def _reap(self) -> None:
        """Close pages nobody asked anything of for ``idle_timeout`` seconds."""
        interval = min(30.0, self.idle_timeout / 4)
        while not self._stop.wait(interval):
            self.close_idle()

    def _watch(self) -> None:
        """Enforce the statement and idle-transaction bounds from the app side."""
        interval = min(1.0, self.statement_timeout / 2)
        while not self._stop.wait(interval):
            self.enforce_bounds()

    def enforce_bounds(self) -> list[int]:
        """Cancel page statements past ``statement_timeout`` (even when the SQL SET the
        server's own away), end sessions idle in a transaction too long; their pids."""
        with self._lock:
            pages = list(self._pages.values())
        pids = [s.pid for page in pages for s in list(page.sessions.values())]
        if not pids:
            return []
        with contextlib.suppress(psycopg2.Error):
            return enforce(self.monitor, pids, self.statement_timeout,
                           IDLE_IN_TRANSACTION_TIMEOUT)
        return []

    def close_idle(self, now: float | None = None) -> list[str]:
        """Close the pages idle for longer than ``idle_timeout`` at ``now``; their tokens."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [token for token, page in self._pages.items()
                    if now - page.last_used > self.idle_timeout and not page.lock.locked()]
        for token in idle:
            self.close_page(token)
        return idle

    def close(self) -> None:
        """Close every page (sessions and schemas), then the monitor and the admin connection."""
        self._stop.set()
        self._reaper.join(STEP_BOUND)
        self._watchdog.join(STEP_BOUND)
        with self._lock:
            tokens = list(self._pages)
        for token in tokens:
            self.close_page(token)
        self.monitor.close()
        self.keeper.close()
