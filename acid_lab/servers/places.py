"""A clean, isolated place for each test: a fresh schema that already holds the demo tables.

Measured (bench/bench_server.py): creating a schema with the demo table costs a
few milliseconds, a fresh database from a template 60-370 ms. So a test gets a
schema, first on the search_path of all its sessions, and a whole database
only when it asks for one.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
from collections.abc import Iterator

import psycopg2
from psycopg2 import sql

from acid_lab.servers.connections import ConnectionFactory, ConnectionInfo

DROP_LOCK_TIMEOUT = "5s"
TERMINATE_WAIT_MS = 5000  # at most this long for a terminated session to be gone
_counter = itertools.count(1)


def new_schema_name() -> str:
    return f"t{os.getpid()}_{next(_counter)}_{secrets.token_hex(2)}"


class PlaceKeeper:
    """Creates and drops per-test schemas over one autocommit admin connection."""

    def __init__(self, admin: psycopg2.extensions.connection):
        admin.autocommit = True
        self.admin = admin

    def create(self, setup_sql: str) -> str:
        """A new schema holding ``setup_sql``'s tables; one round trip."""
        name = new_schema_name()
        ident = sql.Identifier(name)
        with self.admin.cursor() as cur:
            cur.execute(
                sql.SQL("create schema {}; set search_path to {}; ").format(ident, ident)
                + sql.SQL(setup_sql) + sql.SQL("; reset search_path")
            )
        return name

    def drop(self, name: str, leftover_pids: list[int] = (), *,
             wait_until_gone: bool = False) -> None:
        """Drop the schema; end sessions of the test that still hold locks on it (and with
        ``wait_until_gone``, wait until they have ended)."""
        with self.admin.cursor() as cur:
            for pid in leftover_pids:
                if wait_until_gone and self.admin.server_version >= 140000:
                    # until the session has really ended (bounded; checked every 100 ms by
                    # the server), so that pg_stat_activity no longer lists it
                    cur.execute("select pg_terminate_backend(%s, %s)", (pid, TERMINATE_WAIT_MS))
                else:
                    cur.execute("select pg_terminate_backend(%s)", (pid,))
            cur.execute(sql.SQL("set lock_timeout = {}").format(sql.Literal(DROP_LOCK_TIMEOUT)))
            cur.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))

    @contextlib.contextmanager
    def place(self, info: ConnectionInfo,
              setup_sql: str) -> Iterator[ConnectionFactory]:
        """Sessions to a new place; afterwards they are closed and the place dropped."""
        name = self.create(setup_sql)
        connect = ConnectionFactory(info, name)
        try:
            yield connect
        finally:
            leftovers = connect.backend_pids()
            connect.close_all()
            self.drop(name, leftovers)

    def close(self) -> None:
        with contextlib.suppress(psycopg2.Error):
            self.admin.close()
