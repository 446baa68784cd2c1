"""Connections to a test's place: psycopg2 sessions and SQLAlchemy engines.

Every connection goes through psycopg2 (SQLAlchemy's ``postgresql+psycopg2``
dialect too), over TCP, with the place's schema first on its search_path.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg2
import psycopg2.extensions

if TYPE_CHECKING:  # imported where used: 0.3 s, which runs that only need psycopg2 save
    from sqlalchemy import URL, Engine

#: The one login bound, in seconds, of every connection the package opens itself.
CONNECT_TIMEOUT = 10


@dataclass(frozen=True)
class ConnectionInfo:
    """Where and how to log in: enough for psycopg2, psycopg and SQLAlchemy.

    ``extra`` holds every other libpq parameter given (sslmode, sslrootcert, passfile,
    service, options, application_name, ...): passed on untouched. Host, port and
    user may be None: libpq's defaults then (environment, service file), not ours.
    """

    host: str | None
    port: int | None
    user: str | None
    password: str | None
    dbname: str | None
    extra: dict[str, str] = field(default_factory=dict)

    def params(self, **overrides) -> dict:
        """libpq keyword parameters; ``options`` given here come after the DSN's own."""
        params = {"host": self.host, "port": self.port, "user": self.user,
                  "password": self.password, "dbname": self.dbname, **self.extra}
        if overrides.get("options") and params.get("options"):
            overrides["options"] = f"{params['options']} {overrides['options']}"
        params.update(overrides)
        return {k: v for k, v in params.items() if v is not None}

    def dsn(self, **overrides) -> str:
        return psycopg2.extensions.make_dsn(**self.params(**overrides))

    def where(self) -> str:
        """Where it points, for messages (never the password)."""
        place = f"{self.host or 'the default host'}:{self.port or 'the default port'}"
        if "service" in self.extra:
            place = f"service {self.extra['service']} ({place})"
        return place + (f" database {self.dbname}" if self.dbname else "")


def search_path_option(schema: str | None) -> dict:
    """libpq ``options`` that make ``schema`` the session's search_path."""
    return {"options": f"-c search_path={schema}"} if schema else {}


class ConnectionFactory:
    """Opens psycopg2 connections to one place and closes them all at the end."""

    def __init__(self, info: ConnectionInfo, schema: str | None = None):
        self.info = info
        self.schema = schema
        self.opened: list[psycopg2.extensions.connection] = []

    def __call__(self, autocommit: bool = False, **params) -> psycopg2.extensions.connection:
        """A new session (its own server process). ``params`` override libpq parameters."""
        conn = psycopg2.connect(**self.info.params(**search_path_option(self.schema), **params))
        conn.autocommit = autocommit
        self.opened.append(conn)
        return conn

    def dsn(self, **params) -> str:
        """The same place as a libpq connection string (for child processes)."""
        return self.info.dsn(**search_path_option(self.schema), **params)

    def backend_pids(self) -> list[int]:
        return [conn.info.backend_pid for conn in self.opened if not conn.closed]

    def close_all(self) -> None:
        for conn in self.opened:
            with contextlib.suppress(psycopg2.Error):
                conn.close()
        self.opened.clear()


def sqlalchemy_url(info: ConnectionInfo) -> URL:
    """An explicit ``postgresql+psycopg2`` URL: a bare ``postgresql://`` means psycopg 3 in 2.1."""
    from sqlalchemy import URL

    return URL.create("postgresql+psycopg2", username=info.user, password=info.password,
                      host=info.host, port=info.port, database=info.dbname, query=info.extra)


def make_engine(info: ConnectionInfo, schema: str | None = None, **engine_options) -> Engine:
    """A SQLAlchemy engine whose every pooled connection uses the place's search_path."""
    from sqlalchemy import create_engine

    connect_args = {**search_path_option(schema), **engine_options.pop("connect_args", {})}
    return create_engine(sqlalchemy_url(info), connect_args=connect_args, **engine_options)
