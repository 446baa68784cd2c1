"""The suite's pytest plugin: its options, its server check, its chapter markers, the work
a test module starts in the background, Hypothesis' profiles and each test's own folder.

conftest.py registers it (``pytest_plugins``) and keeps only the fixtures that wire the
suite's parts together.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from acid_lab.servers import ServerError
from acid_lab.servers.run import open_run
from acid_lab.servers.target import DSN_ENVIRONMENT, check_reachable, parse_dsn

CHAPTERS = ("atomicity", "consistency", "isolation", "durability", "replication", "ha",
            "foundation", "engine", "harness")
# The HA chapter (Patroni's ttl, twelve clusters) does not fit the suite's time budget yet:
# it runs only when asked for with this variable set (``ACID_LAB_HA=1 pytest -m ha``).
HA_OPT_IN = "ACID_LAB_HA"

SERVER_LINE = pytest.StashKey[str]()  # what the header says about the server
COLLECTED = pytest.StashKey[list]()    # every test collected, before -k / -m deselect
TMP_PREFIX = "acid_lab-test-"          # each test's own folder, in the system's temp folder


# --------------------------------------------------------------------------- Hypothesis


def register_hypothesis_profiles() -> None:
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


def _profiles_if_hypothesis_runs(config: pytest.Config) -> None:
    """Register the profiles before any test module is imported (``@settings`` copies the
    profile's values when it decorates). Importing Hypothesis costs about 1.5 s; its pytest
    plugin imports it in every run anyway (its terminal summary), so only a run without
    that plugin is spared: the harness's child runs pass ``-p no:hypothesispytest``."""
    if config.pluginmanager.has_plugin("hypothesispytest"):
        register_hypothesis_profiles()


# --------------------------------------------------------------------------- hooks


def pytest_addoption(parser):
    parser.addoption("--dsn", default=os.environ.get(DSN_ENVIRONMENT),
                     help="run against an existing PostgreSQL (libpq DSN or URI); "
                          "default: $ACID_LAB_DSN, else a temporary server")
    parser.addoption("--standby-dsn", default=os.environ.get("ACID_LAB_STANDBY_DSN"),
                     help="with --dsn: a hot standby of that server, for the replication "
                          "tests that read on a standby (nothing is killed); "
                          "default: $ACID_LAB_STANDBY_DSN")


def pytest_configure(config):
    """Fail at once, with one clear line, when there is no server to run against."""
    _profiles_if_hypothesis_runs(config)
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
            run = open_run()  # the run's programs, account and templates, made once here
            config.stash[SERVER_LINE] = f"temporary server: {run.binaries.describe()}"
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
    if not os.environ.get(HA_OPT_IN):
        left_out = [item for item in items if item.get_closest_marker("ha")]
        if left_out:
            config.hook.pytest_deselected(items=left_out)
            items[:] = [item for item in items if not item.get_closest_marker("ha")]


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


# --------------------------------------------------------------------------- fixtures


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
    with tempfile.TemporaryDirectory(prefix=TMP_PREFIX) as folder:
        yield Path(folder)
