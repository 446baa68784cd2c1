"""The server a run works against, and the database the run owns there.

Either a temporary cluster we start (the default) or an existing server named
by a DSN. Either way the run creates one database of its own, through
pytest-postgresql's janitor, and drops it at the end; it touches nothing else.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg2
from pytest_postgresql.janitor import DatabaseJanitor

from acid_lab.servers.server import Cluster, ConnectionInfo, ServerError, server_version

CONNECT_TIMEOUT = 5


@dataclass
class Target:
    """A server plus the database this run owns on it."""

    info: ConnectionInfo          # logs in to the run's own database
    version: str
    description: str
    cluster: Cluster | None       # None for an existing server: nothing may be crashed

    @property
    def managed(self) -> bool:
        """True when we started the server ourselves (so it may be crashed or reconfigured)."""
        return self.cluster is not None


def parse_dsn(dsn: str) -> ConnectionInfo:
    """A libpq DSN or URI as ConnectionInfo; the database named there is the maintenance one."""
    try:
        params = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError as error:
        raise ServerError(f"--dsn is not a valid connection string: {error}") from None
    return ConnectionInfo(
        host=params.get("host", "localhost"),
        port=int(params.get("port", 5432)),
        user=params.get("user") or _default_user(),
        password=params.get("password"),
        dbname=params.get("dbname", "postgres"),
    )


def _default_user() -> str:
    import getpass

    return getpass.getuser()


def check_reachable(info: ConnectionInfo) -> str:
    """Log in once; return the server version or raise ServerError with one clear line."""
    try:
        conn = psycopg2.connect(**info.params(connect_timeout=CONNECT_TIMEOUT))
    except psycopg2.OperationalError as error:
        message = " ".join(str(error).split())
        raise ServerError(
            f"Cannot reach the server at {info.host}:{info.port} as {info.user}: {message}"
        ) from None
    try:
        return server_version(conn)
    finally:
        conn.close()


@contextlib.contextmanager
def own_database(server: ConnectionInfo, prefix: str = "acid_lab") -> Iterator[ConnectionInfo]:
    """A database created for this run and dropped afterwards (the janitor does both)."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    janitor = DatabaseJanitor(
        user=server.user, host=server.host, port=server.port, password=server.password,
        dbname=name, maintenance_dbname=server.dbname, connection_timeout=CONNECT_TIMEOUT,
    )
    janitor.init()
    try:
        yield ConnectionInfo(server.host, server.port, server.user, server.password, name)
    finally:
        janitor.drop()


@contextlib.contextmanager
def open_target(dsn: str | None = None) -> Iterator[Target]:
    """The run's target: an existing server when ``dsn`` is given, else a temporary cluster."""
    if dsn:
        server = parse_dsn(dsn)
        version = check_reachable(server)
        with own_database(server) as info:
            yield Target(info, version, f"existing server {server.host}:{server.port} "
                         f"(PostgreSQL {version})", cluster=None)
        return
    with Cluster() as cluster, own_database(cluster.info) as info:
        yield Target(info, cluster.version, cluster.binaries.describe(), cluster)
