"""Harness: a run leaves nothing behind, however it ends.

Each case runs pytest in a child process on a probe test that starts a server
(the suite's own, or what its kind names), reports what must not outlive the run
(server processes, folders, mounts), and then passes, fails, hangs until
pytest-timeout fires, is interrupted with Ctrl-C (SIGINT), or is killed outright
(SIGKILL, where no cleanup code of pytest's can run: the suite's guard process
stops the server instead) — even in the middle of initdb, before the probe test
has begun.

Outcome every time: every process the run started has exited, every reported
folder and mount is gone, and the run's temporary folder is empty.

The probe runs take seconds each, mostly waiting: a module fixture starts them
together, a few at a time, and each test waits for its own.
"""

import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from acid_lab.servers.guard import wait_for_exit

pytestmark = [pytest.mark.harness, pytest.mark.own_server]

REPO = Path(__file__).resolve().parent.parent
BOUND = 60  # seconds any single wait may take
# Probe runs at once: mostly waiting, but each starts a pytest and a server; more than
# this only queue for the CPU (and a loaded machine would stretch every bound).
PROBES_AT_ONCE = 2 * (os.cpu_count() or 1)

# Every probe reports with report(...) and then ends as PROBE_MODE says.
PROBE_COMMON = textwrap.dedent('''
    import faulthandler, json, os, signal, threading
    import pytest

    pytestmark = pytest.mark.harness

    def report(pids=(), paths=(), mounts=()):
        """What must not outlive the run; then end the way the case says."""
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # stacks, if it ever hangs
        # Ctrl-C as in a terminal, even when this run inherited SIGINT ignored
        # (as every command started in the background by a shell does)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("PROBE " + json.dumps({"pids": [int(pid) for pid in pids],
                                     "paths": [str(path) for path in paths],
                                     "mounts": [str(mount) for mount in mounts]}), flush=True)
        mode = os.environ["PROBE_MODE"]
        if mode == "fail":
            pytest.fail("failing on purpose")
        if mode == "hang":
            threading.Event().wait()
''')

# kind -> the probe test (after PROBE_COMMON)
PROBES = {
    "suite server": '''
        def test_probe(target, connect):
            connect().cursor().execute("select 1")
            workdir = target.cluster.workdir.path
            postmaster = (workdir / "data" / "postmaster.pid").read_text().split()[0]
            report(pids=[postmaster, target.cluster._guard.process.pid], paths=[workdir])
    ''',
    # the suite's server and a cluster on the power-cut disk (where FUSE is there): the
    # mount and the process serving it must go too, however the run ends
    "suite and power-cut servers": '''
        from acid_lab.servers.powercut import PowerCutCluster, fuse_missing

        @pytest.fixture
        def lossy():  # a fixture: pytest-timeout's timer covers the test, not this start
            if fuse_missing() is not None:
                yield None
                return
            with PowerCutCluster() as server:
                yield server

        def test_probe(target, connect, lossy):
            connect().cursor().execute("select 1")
            suite = target.cluster.workdir.path
            pids = [(suite / "data" / "postmaster.pid").read_text().split()[0],
                    target.cluster._guard.process.pid]
            paths, mounts = [suite], []
            if lossy is not None:
                workdir = lossy.workdir.path
                pids += [(workdir / "data" / "postmaster.pid").read_text().split()[0],
                         lossy._guard.process.pid, lossy.disk.process.pid]
                paths.append(workdir)
                mounts.append(workdir / "data")
            report(pids=pids, paths=paths, mounts=mounts)
    ''',
    # every kind of server the suite starts: the suite's own; a cluster on the power-cut
    # disk (a FUSE mount and the process serving it, too), where FUSE is there; a primary
    # and its hot standby (two servers, two guards, two folders)
    "every kind of server": '''
        import contextlib

        from acid_lab.servers.powercut import PowerCutCluster, fuse_missing
        from acid_lab.servers.replication import ReplicationPair

        def test_probe(target, connect):
            connect().cursor().execute("select 1")
            suite = target.cluster.workdir.path
            pids = [(suite / "data" / "postmaster.pid").read_text().split()[0],
                    target.cluster._guard.process.pid]
            paths, mounts = [suite], []
            with contextlib.ExitStack() as stack:
                pair = stack.enter_context(ReplicationPair())
                for server in (pair.primary, pair.standby):
                    pids += [server.postmaster.pid, server._guard.process.pid]
                    paths.append(server.workdir.path)
                if fuse_missing() is None:
                    lossy = stack.enter_context(PowerCutCluster())
                    workdir = lossy.workdir.path
                    pids += [(workdir / "data" / "postmaster.pid").read_text().split()[0],
                             lossy._guard.process.pid, lossy.disk.process.pid]
                    paths.append(workdir)
                    mounts.append(workdir / "data")
                report(pids=pids, paths=paths, mounts=mounts)
    ''',
}

# What the case does to the run once the probe has reported (or, for "during initdb",
# once initdb runs: the probe test itself never starts).
DURING_INITDB = "during initdb"

# One row per case: probe kind, mode (pass / fail / hang / during initdb), extra pytest
# arguments, the signal sent to pytest (None: it ends by itself), pytest's exit code.
CASES = [
    # the longest runs first: the probes start in this order, a few at a time
    pytest.param("every kind of server", "pass", [], None, 0, id="passing run"),
    pytest.param("every kind of server", "hang", [], signal.SIGKILL, -9,
                 id="sigkill of pytest"),
    pytest.param("suite and power-cut servers", "fail", [], None, 1, id="failing run"),
    # func_only: the timer covers the hanging test, not the server start before it
    pytest.param("suite and power-cut servers", "hang",
                 ["--timeout", "1", "-o", "timeout_func_only=true"],
                 None, 1, id="pytest-timeout"),
    pytest.param("suite and power-cut servers", "hang", [], signal.SIGINT, 2, id="ctrl-c"),
    # pytest-postgresql writes initdb's 24-byte password file to the temp folder
    pytest.param("suite server", DURING_INITDB, [], signal.SIGKILL, -9,
                 id="sigkill of pytest during initdb"),
]


@dataclass
class ProbeOutcome:
    """What a probe run left: filled in after it ended and its guards finished."""

    exit_code: int | None = None
    output: str = ""
    reported: dict = field(default_factory=lambda: {"pids": [], "paths": [], "mounts": []})
    started: list[psutil.Process] = field(default_factory=list)  # the run's processes
    survivors: list[str] = field(default_factory=list)
    left_in_temp: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


def _descendants(run: subprocess.Popen) -> list[psutil.Process]:
    try:
        return psutil.Process(run.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _wait_for_initdb(run: subprocess.Popen) -> list[psutil.Process]:
    """The run's processes, once one of them runs initdb (its password file exists then)."""
    deadline = time.monotonic() + BOUND
    while time.monotonic() < deadline and run.poll() is None:
        processes = _descendants(run)
        for process in processes:
            try:
                if any("--pwfile=" in arg for arg in process.cmdline()):
                    return processes
            except psutil.Error:
                continue
        time.sleep(0.01)  # sleep-ok: polls the process table; initdb runs for about a second
    raise AssertionError("the probe run never ran initdb")


def _read_probe_line(run: subprocess.Popen, outcome: ProbeOutcome) -> None:
    for line in run.stdout:  # bounded: the probe either prints or pytest ends
        outcome.output += line
        if line.startswith("PROBE "):
            outcome.reported = json.loads(line.split(maxsplit=1)[1])
            return
    raise AssertionError("the probe never started its server")


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _mounts() -> set[str]:
    with open("/proc/self/mounts") as mounts:
        return {line.split()[1] for line in mounts}


def run_probe(kind, mode, extra_args, interrupt, exit_code, folder: Path) -> ProbeOutcome:
    """Run one case to its end, wait for everything it started, look at what is left."""
    temp = folder / "temp"  # the run's TMPDIR: it must be empty afterwards
    temp.mkdir()
    for private in (folder.parent, folder, temp):
        private.chmod(0o711)  # as root, the server's account must reach its folder in temp
    probe = folder / "test_probe.py"
    probe.write_text(PROBE_COMMON + textwrap.dedent(PROBES[kind]))
    outcome = ProbeOutcome()
    run = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-c", str(REPO / "pytest.ini"),
         "--rootdir", str(REPO), "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
         "-s", "-q", str(probe),
         *extra_args],
        cwd=REPO, env={**os.environ, "PROBE_MODE": mode, "TMPDIR": str(temp)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        if mode == DURING_INITDB:
            outcome.started = _wait_for_initdb(run)
        else:
            _read_probe_line(run, outcome)
            outcome.started = _descendants(run)
        if interrupt is not None:
            run.send_signal(interrupt)
        output, _ = run.communicate(timeout=BOUND)
        outcome.output += output
    except subprocess.TimeoutExpired:
        run.send_signal(signal.SIGUSR1)  # the probe prints where it is stuck
        try:
            output, _ = run.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            run.kill()
            output, _ = run.communicate(timeout=BOUND)
        raise AssertionError(f"the probe run did not end within {BOUND} s:\n"
                             f"{outcome.output}{output}") from None
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(timeout=BOUND)
    outcome.exit_code = run.returncode

    # the guards work after pytest is gone: wait for every process the run had started
    for pid in outcome.reported["pids"]:
        wait_for_exit(pid, BOUND)
    for process in outcome.started:
        if _alive(process):  # (its pid may be another process's by now)
            wait_for_exit(process.pid, BOUND)
    outcome.survivors = [f"{process.pid} {process.name()}"
                         for process in outcome.started if _alive(process)]
    outcome.survivors += [str(pid) for pid in outcome.reported["pids"]
                          if psutil.pid_exists(pid) and _alive(psutil.Process(pid))]
    outcome.existing = [path for path in outcome.reported["paths"] if Path(path).exists()]
    outcome.mounted = sorted(set(outcome.reported["mounts"]) & _mounts())
    outcome.left_in_temp = sorted(str(path.relative_to(temp)) for path in temp.rglob("*"))
    return outcome


class ProbeRuns:
    """Probe runs in a pool of PROBES_AT_ONCE threads, each case's run started once."""

    def __init__(self, folder: Path, pool: concurrent.futures.Executor):
        self.folder = folder
        self.pool = pool
        self.futures: dict[str, concurrent.futures.Future] = {}

    def start(self, case) -> None:
        if case.id not in self.futures:
            case_folder = self.folder / str(len(self.futures))
            case_folder.mkdir()
            self.futures[case.id] = self.pool.submit(run_probe, *case.values, case_folder)

    def outcome(self, case_id: str) -> ProbeOutcome:
        self.start(next(case for case in CASES if case.id == case_id))
        return self.futures[case_id].result(timeout=3 * BOUND)


def _will_run(item) -> bool:
    return item.get_closest_marker("skip") is None and not any(
        mark.args and mark.args[0] is True for mark in item.iter_markers("skipif"))


@pytest.fixture(scope="module")
def probe_runs(request):
    """The selected cases' runs, all started at once, PROBES_AT_ONCE at a time in table
    order. (Under pytest-xdist a worker cannot know which cases it will get: there each
    case starts when its test asks.)"""
    with tempfile.TemporaryDirectory(prefix="acid_lab-probes-") as folder, \
            concurrent.futures.ThreadPoolExecutor(max_workers=PROBES_AT_ONCE) as pool:
        runs = ProbeRuns(Path(folder), pool)
        if "PYTEST_XDIST_WORKER" not in os.environ:
            selected = {item.callspec.id for item in request.session.items
                        if item.module is request.module and _will_run(item)}
            for case in CASES:
                if case.id in selected:
                    runs.start(case)
        yield runs


@pytest.mark.parametrize("kind, mode, extra_args, interrupt, exit_code", CASES)
def test_nothing_outlives_the_run(probe_runs, request, kind, mode, extra_args, interrupt,
                                  exit_code):
    """Scenario: a probe run starts a server, then ends the way the id says.

    Outcome: pytest exits as expected; every process it started (server, guard,
    initdb) has exited; the reported folders and mounts are gone; nothing is
    left in the run's temporary folder (pytest-postgresql's password file included).
    """
    outcome = probe_runs.outcome(request.node.callspec.id)
    assert outcome.exit_code == exit_code, f"pytest ended unexpectedly:\n{outcome.output}"
    assert outcome.survivors == [], "processes outlived the run"
    assert outcome.existing == [], "folders outlived the run"
    assert outcome.mounted == [], "mounts outlived the run"
    assert outcome.left_in_temp == [], "files were left in the run's temporary folder"
