"""PostgreSQL behind the session engine's small :class:`~acid_lab.engine.sessions.Database`
interface: the only module that knows how PostgreSQL says a session is blocked.

Another engine implements the same few methods: MariaDB would read
``information_schema.INNODB_TRX`` (``trx_state = 'LOCK WAIT'``) in ``is_blocked``;
an engine where a conflicting writer fails at once (SQLite, DuckDB) answers
``is_blocked`` with False and lets the conflict show as the step's outcome.

PostgreSQL's answer is ``pg_isolation_test_session_is_blocked(pid, others)``, the
function its own isolation tester asks: true while ``pid`` waits for a lock held
by one of ``others``, or for a safe snapshot (``SERIALIZABLE READ ONLY
DEFERRABLE``). It exists from PostgreSQL 10 on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from acid_lab.servers.connections import CONNECT_TIMEOUT

#: A libpq DSN, or a factory returning a new connection (called with no arguments).
ConnectionSource = str | Callable[[], Any]

_IS_BLOCKED_SQL = "select pg_catalog.pg_isolation_test_session_is_blocked(%s, %s::int[])"
_HAS_IS_BLOCKED_SQL = (
    "select pg_catalog.to_regprocedure("
    "'pg_catalog.pg_isolation_test_session_is_blocked(integer, integer[])') is not null"
)
_SIGNALS = {"cancel": "pg_cancel_backend", "terminate": "pg_terminate_backend"}


class EngineError(Exception):
    """The session engine could not do what it was asked."""


class ServerNotSupported(EngineError):
    """The server cannot tell whether a session is blocked (PostgreSQL < 10)."""


class PostgreSQL:
    """The session engine's questions, answered by PostgreSQL through psycopg2."""

    name = "PostgreSQL"
    #: What a failed statement raises (any other exception is a bug, not an outcome).
    Error = psycopg2.Error

    def connect(self, source: ConnectionSource) -> psycopg2.extensions.connection:
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

    def begin_sql(self, level: str) -> str:
        """The statement that opens a transaction at ``level`` (e.g. "read committed")."""
        return f"begin transaction isolation level {level}"

    def require_blocked_check(self, conn) -> None:
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

    def is_blocked(self, cursor, pid: int, others: Sequence[int]) -> bool:
        """Does session ``pid`` wait for one of ``others`` (a lock, or a safe snapshot)?"""
        cursor.execute(_IS_BLOCKED_SQL, (pid, list(others)))
        return bool(cursor.fetchone()[0])

    def someone_waits_for(self, cursor, pid: int) -> bool:
        """Does any other session of this database wait for session ``pid``?"""
        cursor.execute("select exists (select from pg_catalog.pg_stat_activity"
                       " where datname = current_database() and pid <> %s"
                       " and pg_catalog.pg_isolation_test_session_is_blocked(pid, array[%s]))",
                       (pid, pid))
        return bool(cursor.fetchone()[0])

    def blocking_pids(self, cursor, pid: int) -> list[int]:
        """The sessions whose locks session ``pid`` waits for (none: it waits for no lock)."""
        cursor.execute("select pg_catalog.pg_blocking_pids(%s)", (pid,))
        return list(cursor.fetchone()[0])

    def waits_for_a_lock(self, pid: int) -> sql.Composable:
        """The SQL condition "session ``pid`` waits for a lock", for a server-side wait loop."""
        return sql.SQL("cardinality(pg_catalog.pg_blocking_pids({})) > 0").format(
            sql.Literal(pid))

    def signal(self, cursor, pid: int, how: str) -> None:
        """``how`` is "cancel" (stop the statement) or "terminate" (end the session)."""
        cursor.execute(f"select pg_catalog.{_SIGNALS[how]}(%s)", (pid,))
        cursor.fetchall()

    def error_text(self, error: BaseException) -> str:
        """A failed statement's message: the server's primary message, else the
        error's first line, whitespace collapsed."""
        diag = getattr(error, "diag", None)
        primary = diag.message_primary if diag is not None else None
        if primary:
            return primary
        lines = str(error).strip().splitlines()
        return " ".join(lines[0].split()) if lines else type(error).__name__

    def sqlstate(self, error: BaseException) -> str | None:
        return getattr(error, "pgcode", None)

    def in_transaction(self, conn) -> bool:
        """Is the connection inside a transaction (open or failed)?"""
        return conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE

    def backend_pid(self, conn) -> int:
        return conn.info.backend_pid


POSTGRES = PostgreSQL()
