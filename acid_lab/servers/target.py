"""The server a run works against, and the database the run owns there.

Either a temporary cluster we start (the default) or an existing server named
by a DSN. Either way the run creates one database of its own, through
pytest-postgresql's janitor, and drops it at the end; it touches nothing else.
A DSN is passed on whole (sslmode, sslrootcert, passfile, service, options, ...):
only its database is replaced by the run's own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import psycopg2
from pytest_postgresql.janitor import DatabaseJanitor

from acid_lab.servers import ServerError
from acid_lab.servers.cluster import Cluster
from acid_lab.servers.connections import CONNECT_TIMEOUT, ConnectionInfo
from acid_lab.servers.queries import server_version

DSN_ENVIRONMENT = "ACID_LAB_DSN"  # where --dsn's default comes from (suite and report)


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
    """A libpq DSN or URI as ConnectionInfo, every parameter kept; the database named
    there is the maintenance one. The one parser of a --dsn: what is not given is left
    to libpq (its environment variables, service and password files)."""
    try:
        params = psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError as error:
        message = " ".join(str(error).split())
        raise ServerError(f"--dsn is not a valid connection string: {message}") from None
    port = params.pop("port", None)
    try:
        port = None if port is None else int(port)
    except ValueError:
        raise ServerError(f"--dsn is not a valid connection string: port {port!r}") from None
    return ConnectionInfo(
        host=params.pop("host", None), port=port, user=params.pop("user", None),
        password=params.pop("password", None), dbname=params.pop("dbname", None),
        extra=params,
    )


class Unreachable(ServerError):
    """No login to the server: ``where`` it points (and as whom), libpq's ``reason``."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"Cannot reach the server at {where}: {reason}")
        self.where, self.reason = where, reason


def _login(info: ConnectionInfo) -> psycopg2.extensions.connection:
    try:
        return psycopg2.connect(**info.params(connect_timeout=CONNECT_TIMEOUT))
    except psycopg2.OperationalError as error:
        as_whom = f" as {info.user}" if info.user else ""
        raise Unreachable(f"{info.where()}{as_whom}", " ".join(str(error).split())) from None


def check_reachable(info: ConnectionInfo) -> str:
    """Log in once; return the server version or raise ServerError with one clear line."""
    conn = _login(info)
    try:
        return server_version(conn)
    finally:
        conn.close()


class _Janitor(DatabaseJanitor):
    """pytest-postgresql's janitor, logging in with every libpq parameter of ``server``
    (it takes host, port, user and password only)."""

    def __init__(self, server: ConnectionInfo, dbname: str):
        super().__init__(user=server.user, host=server.host, port=server.port,
                         password=server.password, dbname=dbname,
                         maintenance_dbname=server.dbname or "postgres",
                         connection_timeout=CONNECT_TIMEOUT)
        self.server = server

    @contextlib.contextmanager
    def cursor(self, dbname: str | None = None) -> Iterator[psycopg.Cursor]:
        params = self.server.params(dbname=dbname or self.maintenance_dbname,
                                    connect_timeout=CONNECT_TIMEOUT)
        with psycopg.connect(**params, autocommit=True) as conn, conn.cursor() as cursor:
            yield cursor


@contextlib.contextmanager
def own_database(server: ConnectionInfo, prefix: str = "acid_lab") -> Iterator[ConnectionInfo]:
    """A database created for this run and dropped afterwards (the janitor does both);
    only the database differs from ``server``'s parameters."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    janitor = _Janitor(server, name)
    janitor.init()
    try:
        yield dataclasses.replace(server, dbname=name)
    finally:
        janitor.drop()


def _database(server: ConnectionInfo, own: bool) -> contextlib.AbstractContextManager:
    """A database of the run's own on ``server``, or ``server``'s own database as it is."""
    return own_database(server) if own else contextlib.nullcontext(server)


@contextlib.contextmanager
def open_target(dsn: str | None = None, settings: dict[str, str] | None = None, *,
                own_database: bool = True) -> Iterator[Target]:
    """The run's target: an existing server when ``dsn`` is given, else a temporary cluster
    (with ``settings``; an existing server is used as it is). With ``own_database=False``
    the target is the server's own (maintenance) database: the caller makes its own place
    there (``run``'s schemas, ``spec``'s isolation_regression), so no CREATEDB is needed."""
    if dsn:
        server = parse_dsn(dsn)
        conn = _login(server)
        try:
            version = server_version(conn)
            host, port, user = conn.info.host, conn.info.port, conn.info.user
        finally:
            conn.close()
        if server.user is None:  # the one libpq chose (environment, service file)
            server = dataclasses.replace(server, user=user)
        with _database(server, own_database) as info:
            yield Target(info, version, f"existing server {host}:{port} "
                         f"(PostgreSQL {version})", cluster=None)
        return
    with Cluster(settings=settings) as cluster, _database(cluster.info, own_database) as info:
        yield Target(info, cluster.version, cluster.binaries.describe(), cluster)
