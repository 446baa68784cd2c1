"""Wiring: the server, each test's place, connections and markers, built from acid_lab.

Fixtures, from session to test (each documented in one line):
target -> place_keeper -> connect (and its place) -> observer / engine; run (the
scenario runner); statement_log with logged_connect / logged_engine (what psycopg2
sends); fresh_database for a test that needs a whole database; existing_standby
(--standby-dsn, with --dsn); tmp_path, removed after its test. (The durability and
replication chapters start the servers they crash in their own modules.) Hooks: the
chapter markers, the server line of the header, and work a test module starts in the
background (the no-leak probes).
"""

import dataclasses
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from acid_lab.engine.scenario import ScenarioRunner
from acid_lab.lessons.bank import fleet_rows
from acid_lab.lessons.schema import BANK, BANK_ACCOUNTS, DRIVERS, DRIVERS_ROWS, create
from acid_lab.servers.connections import make_engine
from acid_lab.servers.places import PlaceKeeper
from acid_lab.servers.server import ServerError, find_binaries, server_account
from acid_lab.servers.target import check_reachable, open_target, own_database, parse_dsn

CHAPTERS = ("atomicity", "consistency", "isolation", "durability", "replication", "ha",
            "foundation", "engine", "harness")

@functools.cache
def _hypothesis_profiles() -> None:
    """Register and load the profiles (``ci`` when CI is set): no per-example deadline,
    since database round trips vary with load."""
    from hypothesis import HealthCheck, settings

    settings.register_profile("default", deadline=None,
                              suppress_health_check=[HealthCheck.function_scoped_fixture])
    settings.register_profile("ci", deadline=None, derandomize=True, database=None,
                              print_blob=True,
                              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                     HealthCheck.too_slow])
    settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.hookimpl(tryfirst=True)
def pytest_collect_file(file_path):
    """Importing Hypothesis costs about 1.5 s, so it happens only in runs that collect a
    module using it (not in the harness's child runs), and before that module is imported:
    ``@settings`` copies the profile's values when it decorates."""
    if file_path.suffix == ".py" and "hypothesis" in file_path.read_text(encoding="utf-8"):
        _hypothesis_profiles()


SERVER_LINE = pytest.StashKey[str]()  # what the header says about the server
COLLECTED = pytest.StashKey[list]()    # every test collected, before -k / -m deselect


def pytest_addoption(parser):
    parser.addoption("--dsn", default=os.environ.get("ACID_LAB_DSN"),
                     help="run against an existing PostgreSQL (libpq DSN or URI); "
                          "default: $ACID_LAB_DSN, else a temporary server")
    parser.addoption("--standby-dsn", default=os.environ.get("ACID_LAB_STANDBY_DSN"),
                     help="with --dsn: a hot standby of that server, for the replication "
                          "tests that read on a standby (nothing is killed); "
                          "default: $ACID_LAB_STANDBY_DSN")


def pytest_configure(config):
    """Fail at once, with one clear line, when there is no server to run against."""
    dsn = config.getoption("dsn")
    try:
        if dsn:
            version = check_reachable(parse_dsn(dsn))
            config.stash[SERVER_LINE] = f"existing server (--dsn), PostgreSQL {version}"
            standby = config.getoption("standby_dsn")
            if standby:
                standby_version = check_reachable(parse_dsn(standby))
                config.stash[SERVER_LINE] += (f"; its standby (--standby-dsn), "
                                              f"PostgreSQL {standby_version}")
        else:
            binaries = find_binaries()
            server_account()
            config.stash[SERVER_LINE] = f"temporary server: {binaries.describe()}"
    except ServerError as error:
        raise pytest.UsageError(str(error)) from None


def pytest_report_header(config):
    return f"acid_lab: {config.stash.get(SERVER_LINE, '?')}"


def pytest_collection_modifyitems(config, items):
    """Every test belongs to a chapter; server-crashing tests skip on an existing server.

    (Runs before -k / -m deselect anything: what it keeps is the whole collection.)"""
    config.stash[COLLECTED] = list(items)
    unmarked = [item.nodeid for item in items
                if not any(item.get_closest_marker(name) for name in CHAPTERS)]
    if unmarked:
        raise pytest.UsageError(f"tests without a chapter marker {CHAPTERS}: {unmarked}")
    if config.getoption("dsn"):
        skip = pytest.mark.skip(reason="needs a server the suite starts itself "
                                       "(it crashes or reconfigures it); --dsn is set")
        for item in items:
            if item.get_closest_marker("own_server"):
                item.add_marker(skip)


def pytest_collection_finish(session):
    """A test module may start what its tests only wait for (the no-leak probe runs) as
    soon as the run knows its tests, to go on beside the other tests: its
    ``start_in_background(items)`` gets the module's selected tests and returns the ones
    that wait (they run last) and what ends that work (called as the run ends, however)."""
    if session.config.option.collectonly:
        return
    modules: dict = {}
    for item in session.items:
        start = getattr(getattr(item, "module", None), "start_in_background", None)
        if start is not None:
            modules.setdefault(start, []).append(item)
    waiting = []
    for start, items in modules.items():
        waits, end = start(items)
        session.config.add_cleanup(end)
        waiting += waits
    last = {id(item) for item in waiting}
    session.items[:] = [item for item in session.items if id(item) not in last] + waiting


@pytest.fixture(scope="session")
def whole_suite(pytestconfig) -> list[pytest.Item] | None:
    """Every test of the suite as collected (before -k / -m), when this run collected the
    whole suite (no paths given); None otherwise."""
    if pytestconfig.args_source is not pytest.Config.ArgsSource.TESTPATHS:
        return None
    return pytestconfig.stash.get(COLLECTED, None)


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """A folder of the test's own, removed when the test ends. (pytest's own keeps the
    folders of the last runs in the system's temporary folder.)"""
    with tempfile.TemporaryDirectory(prefix="acid_lab-test-") as folder:
        yield Path(folder)


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
    with place_keeper.place(target.info) as factory:
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
