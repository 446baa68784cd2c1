"""What psycopg2 sends to the server: SQLAlchemy writes SQL, the DBAPI sends it.

psycopg2 sends SQL three ways, and a :class:`StatementLog` records all three,
each with the server's answer (its command tag, e.g. ``UPDATE 1``: proof that
the statement reached the server and ran there):

* ``cursor.execute()`` sends one statement -- with the parameters already
  merged in, because psycopg2 quotes them into the text on the client side
  (``cursor.query`` holds the exact bytes sent);
* ``conn.commit()`` / ``conn.rollback()`` send ``COMMIT`` / ``ROLLBACK``, but
  only while a transaction is open (otherwise they send nothing). The COMMIT
  of a failed transaction is answered ``ROLLBACK``; psycopg2 does not raise;
* ``BEGIN`` is sent by psycopg2 itself, through no cursor, just before the
  first statement whenever the connection is not in autocommit mode and no
  transaction is open (``BEGIN ISOLATION LEVEL ...`` after ``set_session()``).
  It is logged at that moment, from that rule: psycopg2 offers no hook for it
  (tests/test_atomicity.py checks the rule against the server's own log).

SQLAlchemy sits on top: :meth:`StatementLog.watch` also records the SQL that
SQLAlchemy *wrote* (with its placeholders), before psycopg2 fills them in.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg2.extensions as ext
from sqlalchemy import Engine, event

from acid_lab.engine.scenario import READ_COMMITTED, READ_UNCOMMITTED, REPEATABLE_READ, SERIALIZABLE


@dataclass(frozen=True)
class Sent:
    """One statement psycopg2 sent, and what the server answered."""

    sql: str
    answer: str  # the command tag, or "ERROR <sqlstate>"


class StatementLog:
    """Records what psycopg2 connections of :attr:`connection_class` send."""

    def __init__(self) -> None:
        self.entries: list[Sent] = []
        self.written: list[str] = []  # SQLAlchemy's text, placeholders and all
        self.connection_class = _logging_connection_class(self)

    @property
    def sent(self) -> list[str]:
        """The statements sent, in order."""
        return [entry.sql for entry in self.entries]

    @property
    def answers(self) -> list[str]:
        """The server's answer to each statement sent, in order."""
        return [entry.answer for entry in self.entries]

    @property
    def transcript(self) -> list[tuple[str, str]]:
        """(statement, the server's answer) pairs, in order."""
        return [(entry.sql, entry.answer) for entry in self.entries]

    def clear(self) -> None:
        self.entries.clear()
        self.written.clear()

    def watch(self, engine: Engine) -> Engine:
        """Also record the SQL text SQLAlchemy hands to psycopg2 on ``engine``."""
        @event.listens_for(engine, "before_cursor_execute")
        def written(conn, cursor, statement, parameters, context, executemany):
            self.written.append(statement)
        return engine

    def _record(self, sql: str, answer: str) -> None:
        self.entries.append(Sent(" ".join(sql.split()), answer))


def _answer(cursor: ext.cursor, error: BaseException | None) -> str:
    if error is not None:
        return f"ERROR {getattr(error, 'pgcode', None) or type(error).__name__}"
    return cursor.statusmessage or ""


# psycopg2's level numbers, and the engine's one spelling of each level
_LEVELS = {ext.ISOLATION_LEVEL_READ_UNCOMMITTED: READ_UNCOMMITTED,
           ext.ISOLATION_LEVEL_READ_COMMITTED: READ_COMMITTED,
           ext.ISOLATION_LEVEL_REPEATABLE_READ: REPEATABLE_READ,
           ext.ISOLATION_LEVEL_SERIALIZABLE: SERIALIZABLE}


def _begin_statement(conn: ext.connection) -> str:
    """The BEGIN psycopg2 sends: plain, or with the session's characteristics
    (``conn.set_session()``, which SQLAlchemy's isolation_level uses)."""
    words = ["BEGIN"]
    if conn.isolation_level is not None:
        # psycopg2 writes the level in capitals
        words.append(f"ISOLATION LEVEL {_LEVELS[conn.isolation_level].upper()}")
    if conn.readonly is not None:
        words.append("READ ONLY" if conn.readonly else "READ WRITE")
    if conn.deferrable is not None:
        words.append("DEFERRABLE" if conn.deferrable else "NOT DEFERRABLE")
    return " ".join(words)


def _logging_connection_class(log: StatementLog) -> type:
    class LoggingCursor(ext.cursor):
        def execute(self, query, vars=None):
            self.connection.note_begin()
            error = None
            try:
                return super().execute(query, vars)
            except BaseException as failure:
                error = failure
                raise
            finally:
                sent = self.query if self.query is not None else self.mogrify(query, vars)
                log._record(sent.decode(), _answer(self, error))

        def executemany(self, query, vars_list):
            # psycopg2 sends one statement per parameter set; the answer is the last one's
            vars_list = list(vars_list)
            self.connection.note_begin()
            error = None
            try:
                return super().executemany(query, vars_list)
            except BaseException as failure:
                error = failure
                raise
            finally:
                for vars in vars_list:
                    log._record(self.mogrify(query, vars).decode(), _answer(self, error))

    class LoggingConnection(ext.connection):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.cursor_factory = LoggingCursor

        def note_begin(self) -> None:
            if not self.autocommit and self.info.transaction_status == ext.TRANSACTION_STATUS_IDLE:
                log._record(_begin_statement(self), "BEGIN")

        def _in_transaction(self) -> bool:
            return not self.autocommit and \
                self.info.transaction_status != ext.TRANSACTION_STATUS_IDLE

        def commit(self):
            if self._in_transaction():
                failed = self.info.transaction_status == ext.TRANSACTION_STATUS_INERROR
                super().commit()
                log._record("COMMIT", "ROLLBACK" if failed else "COMMIT")
            else:
                super().commit()

        def rollback(self):
            if self._in_transaction():
                super().rollback()
                log._record("ROLLBACK", "ROLLBACK")
            else:
                super().rollback()

    return LoggingConnection
