"""Wiring: the server, each test's place and connections, built from acid_lab.

Fixtures, from session to test (each documented in one line):
target -> place_keeper -> connect (and its place) -> observer / engine; run (the
scenario runner); statement_log with logged_connect / logged_engine (what psycopg2
sends); fresh_database for a test that needs a whole database; existing_standby
(--standby-dsn, with --dsn). (The durability and replication chapters start the servers
they crash in their own modules.) The options, the hooks (server check, chapter markers,
background starts, Hypothesis' profiles) and tmp_path are the plugin's:
acid_lab.testing.plugin.
"""

import dataclasses
import functools

import psycopg2
import pytest

from acid_lab.engine.scenario import ScenarioRunner
from acid_lab.lessons.bank import fleet_rows
from acid_lab.lessons.schema import BANK, BANK_ACCOUNTS, DRIVERS, DRIVERS_ROWS, HERMITAGE, create
from acid_lab.servers.connections import make_engine
from acid_lab.servers.places import PlaceKeeper
from acid_lab.servers.target import open_target, own_database, parse_dsn

pytest_plugins = ("acid_lab.testing.plugin",)  # options, hooks, markers, tmp_path


@pytest.fixture(scope="session")
def target(pytestconfig):
    """The server of this run and the database the run owns on it."""
    with open_target(pytestconfig.getoption("dsn")) as run_target:
        yield run_target


@pytest.fixture(scope="session")
def place_keeper(target):
    """Creates and drops the per-test schemas."""
    keeper = PlaceKeeper(psycopg2.connect(**target.info.params()))
    yield keeper
    keeper.close()


@pytest.fixture
def connect(target, place_keeper):
    """Factory of psycopg2 connections to this test's place; all closed at teardown."""
    with place_keeper.place(target.info, HERMITAGE) as factory:
        yield factory


@pytest.fixture
def place(connect):
    """This test's fresh schema, holding the demo table test(id, value) = (1, 10), (2, 20)."""
    return connect.schema


@pytest.fixture
def observer(connect):
    """An autocommit connection that stands for everyone else."""
    return connect(autocommit=True)


@pytest.fixture
def engine(target, place):
    """A SQLAlchemy engine (postgresql+psycopg2) on this test's place; disposed at teardown."""
    sa_engine = make_engine(target.info, place)
    yield sa_engine
    sa_engine.dispose()


@pytest.fixture
def statement_log():
    """Records what psycopg2 sends, with the server's answers (and what SQLAlchemy wrote)."""
    from acid_lab.lessons.statement_log import StatementLog  # SQLAlchemy: imported when used

    return StatementLog()


@pytest.fixture
def logged_connect(connect, statement_log):
    """``connect``, but each connection's statements go into ``statement_log``."""
    return functools.partial(connect, connection_factory=statement_log.connection_class)


@pytest.fixture
def logged_engine(target, place, statement_log):
    """``engine``, but its statements go into ``statement_log`` (empty at the start)."""
    sa_engine = statement_log.watch(make_engine(
        target.info, place, connect_args={"connection_factory": statement_log.connection_class}))
    with sa_engine.connect():
        pass  # the dialect's first-connect queries are not the test's
    statement_log.clear()
    yield sa_engine
    sa_engine.dispose()


@pytest.fixture
def bank(observer):
    """The bank in this test's place: alice (1) has 100, bob (2) has 50, no audit rows."""
    create(observer, BANK, BANK_ACCOUNTS)


@pytest.fixture
def fleet(observer):
    """Drivers Ada (1: vehicles 10, 11) and Grace (2: vehicle 20), inspections, one booking.

    Returns the rows of every fleet table, to compare with after a refused change.
    """
    create(observer, DRIVERS, DRIVERS_ROWS)
    return fleet_rows(observer)


@pytest.fixture(scope="session")
def scenario_sessions(target):
    """Scenario sessions kept warm for the whole run: logging in dominates a short scenario."""
    with ScenarioRunner(target.info.dsn()) as runner:
        yield runner


@pytest.fixture
def run(scenario_sessions, place):
    """Runs a schedule on this test's place: ``run(level, steps)`` -> ScenarioResult."""
    scenario_sessions.reset(search_path=place)
    return scenario_sessions


@pytest.fixture
def deadlock_timeout_settable(observer):
    """Skip unless this login may set deadlock_timeout, which picks a deadlock's victim."""
    try:
        with observer.cursor() as cur:
            cur.execute("set deadlock_timeout = '1s'; reset deadlock_timeout")
    except psycopg2.errors.InsufficientPrivilege:
        pytest.skip("setting deadlock_timeout needs a superuser (or GRANT SET) on this server")


@pytest.fixture(scope="session")
def existing_standby(pytestconfig, target):
    """With --dsn: the user's hot standby of it (--standby-dsn), on the run's database."""
    dsn = pytestconfig.getoption("standby_dsn")
    if not dsn:
        pytest.skip("needs a hot standby of the --dsn server: pass --standby-dsn "
                    "(or set ACID_LAB_STANDBY_DSN)")
    return dataclasses.replace(parse_dsn(dsn), dbname=target.info.dbname)


@pytest.fixture
def fresh_database(target):
    """A whole database of this test's own (empty), dropped afterwards."""
    with own_database(target.info, prefix="acid_lab_test") as info:
        yield info
