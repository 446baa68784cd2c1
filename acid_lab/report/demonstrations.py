"""Atomicity, consistency and durability in one line each, for the ACID report.

Each demonstration does the real thing on a real server and says, in one
short line, what it observed -- plus whether that is what the property
promises (``ok``). None of them trusts documentation: a server that did not
keep a promise shows up as ``ok=False`` with what it did instead.

* Atomicity and consistency run in a fresh place holding the lessons' bank
  (:data:`acid_lab.lessons.schema.BANK`: ``accounts`` with a CHECK and a primary
  key, and ``audit`` rows with a foreign key to them; alice 100, bob 50), through
  a ``connect``-like factory
  (:class:`acid_lab.servers.connections.ConnectionFactory`).
* Durability needs a server that may be killed: a
  :class:`acid_lab.servers.crashable.CrashableCluster` of its own (fsync on), crashed with
  SIGKILL of every server process and restarted, so that WAL replay decides
  what is still there. With an existing server (``--dsn``) these are skipped.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2
from psycopg2 import errors

from acid_lab.lessons.bank import balances, execute_each, transfer_statements
from acid_lab.lessons.schema import BANK, BANK_ACCOUNTS
from acid_lab.servers import ServerError
from acid_lab.servers.connections import ConnectionFactory
from acid_lab.servers.crashable import SLOW_WAL_WRITER, CrashableCluster
from acid_lab.servers.places import PlaceKeeper
from acid_lab.servers.queries import one

ATOMICITY, CONSISTENCY, DURABILITY = "atomicity", "consistency", "durability"
SKIPPED_WITH_DSN = "skipped: needs a server the report starts itself"

OPENING_BALANCES = [100, 50]  # alice's and bob's, as BANK_ACCOUNTS opens them


@dataclass(frozen=True)
class Shown:
    """What one demonstration observed. ``ok`` is None when it was skipped."""

    letter: str
    name: str
    outcome: str
    ok: bool | None

    def as_json(self) -> dict:
        """The demonstration object of ``report --json``."""
        return {"letter": self.letter, "name": self.name, "outcome": self.outcome, "ok": self.ok}


@dataclass(frozen=True)
class Demonstration:
    """One property shown by a small program: ``show(where)`` -> (ok, observed outcome)."""

    letter: str
    name: str
    show: Callable[..., tuple[bool, str]]

    def run(self, where) -> Shown:
        try:
            ok, outcome = self.show(where)
        except (psycopg2.Error, ServerError, OSError) as error:
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            ok, outcome = False, f"could not run: {first_line}"
        return Shown(self.letter, self.name, outcome, ok)

    def skipped(self, reason: str = SKIPPED_WITH_DSN) -> Shown:
        return Shown(self.letter, self.name, reason, None)


# --------------------------------------------------------------------------- small verbs


def _balances(connect: ConnectionFactory) -> list[int]:
    """What everyone else sees now (a new autocommit session)."""
    with contextlib.closing(connect(autocommit=True)) as observer:
        return list(balances(observer).values())


def _seen_now(connect: ConnectionFactory, query: str) -> int:
    """One value (a ``select count(*) ...``) as everyone else sees it now."""
    with contextlib.closing(connect(autocommit=True)) as observer:
        return one(observer, query)


def _refused(connect: ConnectionFactory, statement: str) -> psycopg2.Error | None:
    """Run one statement in its own transaction; the error that refused it, or None."""
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
        conn.commit()
        return None
    except psycopg2.Error as error:
        conn.rollback()
        return error
    finally:
        conn.close()


def _said(error: psycopg2.Error | None) -> str:
    return "accepted" if error is None else f"refused with {error.pgcode}"


class _ClientFailed(Exception):
    """The application fails between two statements of a transaction."""


# --------------------------------------------------------------------------- atomicity


def interrupted_transfer(connect: ConnectionFactory) -> tuple[bool, str]:
    """The bank's transfer debits alice, then the client fails before crediting bob: the
    debit is undone."""
    conn = connect()
    debit, *_ = transfer_statements(source=1, target=2, amount=30)
    with contextlib.suppress(_ClientFailed), conn:
        # `with conn`: commit on success, roll back on an exception -- the usual client pattern
        execute_each(conn, [debit])
        raise _ClientFailed("crash between the debit and the credit")
    conn.close()
    after = _balances(connect)
    unchanged = after == OPENING_BALANCES
    return unchanged, (f"the client failed after the debit, the transaction rolled back: "
                       f"balances {after[0]} and {after[1]}, "
                       f"{'as before' if unchanged else 'NOT 100 and 50 as before'}")


def error_aborts_whole_transaction(connect: ConnectionFactory) -> tuple[bool, str]:
    """An insert, then an error: every later statement gets 25P02, COMMIT rolls back."""
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute("insert into accounts (id, owner, balance) values (3, 'carol', 10)")
            failure = _attempt(cur, "select 1 / 0")
            after = _attempt(cur, "update accounts set balance = 0 where id = 2")
            cur.execute("commit")
            answer = cur.statusmessage
    finally:
        conn.close()
    carol = _seen_now(connect, "select count(*) from accounts where owner = 'carol'")
    ok = (isinstance(failure, errors.DivisionByZero)
          and isinstance(after, errors.InFailedSqlTransaction)
          and answer == "ROLLBACK" and carol == 0)
    return ok, (f"error {_code(failure)}, next statement {_code(after)}, COMMIT answered "
                f"{answer}; the insert before the error is {'gone' if carol == 0 else 'STORED'}")


def _attempt(cur, statement: str) -> psycopg2.Error | None:
    try:
        cur.execute(statement)
    except psycopg2.Error as error:
        return error
    return None


def _code(error: psycopg2.Error | None) -> str:
    return "none" if error is None else error.pgcode


# --------------------------------------------------------------------------- consistency


def check_refuses_overdraft(connect: ConnectionFactory) -> tuple[bool, str]:
    """Withdraw more than the balance: the CHECK refuses the update (23514)."""
    error = _refused(connect, "update accounts set balance = balance - 500 where id = 1")
    after = _balances(connect)[0]
    return isinstance(error, errors.CheckViolation) and after == 100, (
        f"withdraw 500 from 100: {_said(error)}; balance {after}")


def foreign_key_refuses_orphan(connect: ConnectionFactory) -> tuple[bool, str]:
    """An audit row for an account that does not exist: the foreign key refuses it (23503)."""
    error = _refused(connect, "insert into audit (account_id, delta) values (99, 5)")
    stored = _seen_now(connect, "select count(*) from audit")
    return isinstance(error, errors.ForeignKeyViolation) and stored == 0, (
        f"audit row for account 99, which does not exist: {_said(error)}; "
        f"audit rows stored: {stored}")


def primary_key_refuses_duplicate(connect: ConnectionFactory) -> tuple[bool, str]:
    """A second account with alice's id: the primary key refuses it (23505)."""
    error = _refused(connect, "insert into accounts (id, owner, balance) values (1, 'carol', 0)")
    owners = _seen_now(connect, "select count(*) from accounts where id = 1")
    return isinstance(error, errors.UniqueViolation) and owners == 1, (
        f"a second account with id 1 (alice's): {_said(error)}; accounts with id 1: {owners}")


# --------------------------------------------------------------------------- durability


def _session(cluster: CrashableCluster, **settings: str) -> psycopg2.extensions.connection:
    options = " ".join(f"-c {name}={value}" for name, value in settings.items())
    conn = psycopg2.connect(**cluster.info.params(**({"options": options} if options else {})))
    conn.autocommit = True
    return conn


def _rows_after_restart(cluster: CrashableCluster, table: str) -> list[str]:
    with contextlib.closing(_session(cluster)) as conn, conn.cursor() as cur:
        cur.execute(f"select note from {table} order by note")
        return [note for (note,) in cur.fetchall()]


def committed_survives_crash(cluster: CrashableCluster) -> tuple[bool, str]:
    """A commit, an unfinished transaction, SIGKILL, restart: WAL replay keeps exactly the first."""
    with contextlib.closing(_session(cluster)) as conn, conn.cursor() as cur:
        cur.execute("create table crash_notes (note text)")
        conn.autocommit = False
        cur.execute("insert into crash_notes values ('committed')")
        conn.commit()
    in_flight = _session(cluster)
    try:
        with in_flight.cursor() as cur:
            cur.execute("begin; insert into crash_notes values ('in flight')")
        cluster.crash()
    finally:
        in_flight.close()
    cluster.restart()
    replayed = "redo starts" in cluster.startup_log()
    notes = _rows_after_restart(cluster, "crash_notes")
    ok = notes == ["committed"] and replayed
    return ok, (f"after SIGKILL of every server process and a restart "
                f"({'WAL replayed' if replayed else 'NO WAL replay in the log'}): "
                f"committed row {'there' if 'committed' in notes else 'LOST'}, "
                f"unfinished transaction's row {'STILL THERE' if 'in flight' in notes else 'gone'}")


def asynchronous_commit_lost(cluster: CrashableCluster) -> tuple[bool, str]:
    """Two acknowledged commits just before a crash: synchronous_commit on keeps its row, off not.

    With ``off`` the server answers COMMIT before the commit's WAL is written;
    it sits in shared memory until the WAL writer's next round (10 s here), and
    SIGKILL takes shared memory with it. The synchronous commit goes first: its
    WAL flush would also carry any earlier asynchronous commit to disk.
    """
    with contextlib.closing(_session(cluster)) as conn, conn.cursor() as cur:
        cur.execute("create table async_notes (note text)")
    for mode in ("on", "off"):
        with contextlib.closing(_session(cluster, synchronous_commit=mode)) as conn, \
                conn.cursor() as cur:
            cur.execute("insert into async_notes values (%s)", (f"synchronous_commit={mode}",))
    cluster.crash()
    cluster.restart()
    notes = _rows_after_restart(cluster, "async_notes")
    kept_on, kept_off = "synchronous_commit=on" in notes, "synchronous_commit=off" in notes
    return kept_on and not kept_off, (
        f"both commits acknowledged, then SIGKILL + restart: synchronous_commit = on "
        f"{'kept' if kept_on else 'LOST'}, synchronous_commit = off "
        f"{'kept (the WAL writer flushed it first)' if kept_off else 'lost'}")


# --------------------------------------------------------------------------- the catalog

IN_A_PLACE: tuple[Demonstration, ...] = (
    Demonstration(ATOMICITY, "a transfer interrupted after its debit leaves both balances "
                             "as they were", interrupted_transfer),
    Demonstration(ATOMICITY, "an error mid-transaction aborts the whole transaction",
                  error_aborts_whole_transaction),
    Demonstration(CONSISTENCY, "CHECK (balance >= 0) refuses an overdraft",
                  check_refuses_overdraft),
    Demonstration(CONSISTENCY, "a foreign key refuses an audit row for a missing account",
                  foreign_key_refuses_orphan),
    Demonstration(CONSISTENCY, "the primary key refuses a second account with the same id",
                  primary_key_refuses_duplicate),
)

ON_A_CRASHABLE_SERVER: tuple[Demonstration, ...] = (
    Demonstration(DURABILITY, "committed data survives a crash of every server process",
                  committed_survives_crash),
    Demonstration(DURABILITY, "synchronous_commit = off can lose an acknowledged commit; "
                              "on keeps it", asynchronous_commit_lost),
)


def show_in_places(info, done: Callable[[Shown], None] = lambda shown: None) -> list[Shown]:
    """Run the atomicity and consistency demonstrations, each in a fresh place on ``info``."""
    keeper = PlaceKeeper(psycopg2.connect(**info.params()))
    shown = []
    try:
        for demonstration in IN_A_PLACE:
            with keeper.place(info, BANK + BANK_ACCOUNTS) as connect:
                shown.append(demonstration.run(connect))
            done(shown[-1])
    finally:
        keeper.close()
    return shown


def show_on(make_cluster: Callable[[], CrashableCluster], demonstrations,
            done: Callable[[Shown], None]) -> list[Shown]:
    """Run ``demonstrations`` in turn on one cluster of their own, ``make_cluster()``; when
    the cluster fails, the ones not yet shown say why."""
    shown: list[Shown] = []
    try:
        with make_cluster() as cluster:
            for demonstration in demonstrations:
                if not cluster.running:  # the one before failed between its failure and restart
                    cluster.restart()
                shown.append(demonstration.run(cluster))
                done(shown[-1])
    except ServerError as error:
        reason = f"could not run: {str(error).splitlines()[0]}"
        for demonstration in demonstrations[len(shown):]:
            shown.append(Shown(demonstration.letter, demonstration.name, reason, False))
            done(shown[-1])
    return shown


def show_on_crashable_server(done: Callable[[Shown], None] = lambda shown: None) -> list[Shown]:
    """Run the durability demonstrations on a CrashableCluster of their own."""
    return show_on(lambda: CrashableCluster(settings=SLOW_WAL_WRITER), ON_A_CRASHABLE_SERVER,
                   done)


def skip_crash_demonstrations() -> list[Shown]:
    """The durability lines when the report runs on an existing server."""
    return [demonstration.skipped() for demonstration in ON_A_CRASHABLE_SERVER]
