"""Harness: a run leaves nothing behind, however it ends.

Each case runs pytest in a child process on a probe test that starts a server
(the suite's own, or what its kind names), reports what must not outlive the run
(server processes, folders, mounts, the servers' shared memory), and then passes,
fails, hangs until pytest-timeout
fires, is interrupted with Ctrl-C (SIGINT), or is killed outright
(SIGKILL, where no cleanup code of pytest's can run: the suite's guard process
stops the server instead) — even in the middle of initdb, before the probe test
has begun.

Outcome every time: every process the run started has exited, every reported
folder, mount and shared memory segment is gone, and the run's temporary folder is
empty; among them, the shared memory of servers the probe had killed (a SIGKILL leaves
it behind, until the server is restarted or thrown away).

The probe runs take seconds each: they start in the background as soon as the run
knows its tests, a few at a time, beside the other tests (which mostly wait); these
tests come last and read the outcomes. Their servers start from this run's initdb
templates, as in every pytest run the suite starts, except the run killed during
initdb: it makes a templates folder of its own, in its temporary folder, where
nothing may be left. A probe run never outlives this one: it kills itself when this
run's process dies (that is the "sigkill of pytest" case, cleaned up by its guards),
and the probes' folder has a guard too.
"""

import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from acid_lab.servers.cluster import Cluster
from acid_lab.servers.guard import Guard, shared_memory_left, wait_for_exit
from acid_lab.servers.patroni import ha_missing
from acid_lab.servers.powercut import PowerCutCluster, fuse_missing
from acid_lab.servers.replication import Primary
from acid_lab.servers.templates import ENVIRONMENT as TEMPLATES
from acid_lab.servers.templates import in_memory

pytestmark = [pytest.mark.harness, pytest.mark.own_server]

REPO = Path(__file__).resolve().parents[2]
BOUND = 60  # seconds any single wait may take
# Probe runs at once: mostly waiting, but each starts a pytest and a server; more than
# this only queue for the CPU (and a loaded machine would stretch every bound).
PROBES_AT_ONCE = 2 * (os.cpu_count() or 1)
# The probe runs' folders (their servers' too) in memory where there is a tmpfs: they
# show that nothing is left behind, not what reaches a disk, and creating and removing
# a cluster's thousand files costs several times as much on some disks.
MEMORY_FOLDER = in_memory(room=2 * 2**30)  # (a probe's servers take about 100 MB)

# Every probe reports with report(...) and then ends as PROBE_MODE says.
PROBE_COMMON = textwrap.dedent('''
    import faulthandler, json, os, signal, threading
    import pytest

    pytestmark = pytest.mark.harness

    def _die_with_the_harness(lifeline=int(os.environ["PROBE_LIFELINE"])):
        os.read(lifeline, 1)  # returns (empty) once the harness's end of the pipe closes
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=_die_with_the_harness, daemon=True).start()

    def report(pids=(), paths=(), mounts=(), memory=()):
        """What must not outlive the run (with the shared memory of the processes named
        and of their children: the servers'); then end the way the case says."""
        import psutil
        from acid_lab.servers.guard import shared_memory_of

        faulthandler.register(signal.SIGUSR1, all_threads=True)  # stacks, if it ever hangs
        # Ctrl-C as in a terminal, even when this run inherited SIGINT ignored
        # (as every command started in the background by a shell does)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        pids = [int(pid) for pid in pids]
        processes = list(pids)
        for pid in pids:
            try:
                processes += [child.pid for child in psutil.Process(pid).children(recursive=True)]
            except psutil.NoSuchProcess:
                pass  # a server the probe killed
        print("PROBE " + json.dumps({"pids": pids,
                                     "paths": [str(path) for path in paths],
                                     "mounts": [str(mount) for mount in mounts],
                                     "memory": [*shared_memory_of(processes), *memory]}),
              flush=True)
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
            report(pids=[postmaster, target.cluster.guard.process.pid], paths=[workdir])
    ''',
    # the suite's server and a cluster on the power-cut disk (where FUSE is there): the
    # mount and the process serving it must go too, however the run ends
    "suite and power-cut servers": '''
        from acid_lab.servers.powercut import PowerCutCluster, bare_lossy_disk, fuse_missing

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
                    target.cluster.guard.process.pid]
            paths, mounts = [suite], []
            if lossy is not None:
                workdir = lossy.workdir.path
                pids += [(workdir / "data" / "postmaster.pid").read_text().split()[0],
                         lossy.guard.process.pid, lossy.disk.process.pid]
                paths.append(workdir)
                mounts.append(workdir / "data")
            report(pids=pids, paths=paths, mounts=mounts)
    ''',
    # every kind of server the suite starts, and servers killed by a test: the suite's
    # own; a primary and its hot standby (two servers, two guards, two folders), the
    # standby crashed (a SIGKILL: its shared memory stays until it is thrown away); where
    # FUSE is there, a cluster on the power-cut disk (a FUSE mount and the process
    # serving it, too), crashed as well, after a power cut and a restart (which leaves
    # nothing of the cut server, though the disk comes back as another device)
    "every kind of server": '''
        import contextlib

        from acid_lab.servers.guard import shared_memory_left
        from acid_lab.servers.powercut import PowerCutCluster, bare_lossy_disk, fuse_missing
        from acid_lab.servers.replication import ReplicationPair

        def test_probe(target, connect):
            connect().cursor().execute("select 1")
            suite = target.cluster.workdir.path
            pids = [(suite / "data" / "postmaster.pid").read_text().split()[0],
                    target.cluster.guard.process.pid]
            paths, mounts, killed = [suite], [], []
            with contextlib.ExitStack() as stack:
                pair = stack.enter_context(ReplicationPair())
                for server in (pair.primary, pair.standby):
                    pids += [server.postmaster.pid, server.guard.process.pid]
                    paths.append(server.workdir.path)
                pair.standby.crash()
                killed += pair.standby.left_behind
                if fuse_missing() is None:
                    lossy = stack.enter_context(PowerCutCluster())
                    workdir = lossy.workdir.path
                    pids += [lossy.postmaster.pid, lossy.guard.process.pid,
                             lossy.disk.process.pid]
                    paths.append(workdir)
                    mounts.append(workdir / "data")
                    lossy.power_cut()
                    cut = lossy.left_behind
                    with bare_lossy_disk():  # mounted meanwhile: the disk is another device
                        lossy.restart()
                    assert shared_memory_left(cut) == [], "the restart left the cut server's"
                    pids.append(lossy.postmaster.pid)
                    lossy.crash()
                    killed += lossy.left_behind
                report(pids=pids, paths=paths, mounts=mounts, memory=killed)
    ''',
    # the HA chapter's cluster: etcd, three Patroni nodes and their PostgreSQL, each
    # machine a network namespace (its file in /run/netns; veth links and nftables
    # tables live in the namespaces and go with them), and the guard of it all
    "HA cluster": '''
        from acid_lab.servers.patroni import PatroniCluster

        @pytest.fixture
        def ha():
            with PatroniCluster() as cluster:
                yield cluster

        def test_probe(ha):
            ha.network.cut_off("n1", "n2")  # an nftables table, in a namespace
            pids = [ha._guard.pid, ha.etcd.process.pid]
            for node in ha.nodes:
                pids += [node.patroni.pid, node.postmaster_pid()]
            paths = [ha.workdir] + [f"/run/netns/{name}" for name in ha.network.created]
            report(pids=pids, paths=paths)
    ''',
}

# What the case does to the run once the probe has reported (or, for "during initdb",
# once initdb runs: the probe test itself never starts).
DURING_INITDB = "during initdb"

# One row per case: probe kind, mode (pass / fail / hang / during initdb), extra pytest
# arguments, the signal sent to pytest (None: it ends by itself), pytest's exit code.
CASES = [
    # the probes start in this order, a few at a time: first the one that needs no initdb
    # template (it runs initdb), then the longest
    # pytest-postgresql writes initdb's 24-byte password file to the temp folder
    pytest.param("suite server", DURING_INITDB, [], signal.SIGKILL, -9,
                 id="sigkill of pytest during initdb"),
    pytest.param("every kind of server", "pass", [], None, 0, id="passing run"),
    pytest.param("every kind of server", "hang", [], signal.SIGKILL, -9,
                 id="sigkill of pytest"),
    pytest.param("suite and power-cut servers", "fail", [], None, 1, id="failing run"),
    # func_only: the timer covers the hanging test, not the server start before it
    pytest.param("suite and power-cut servers", "hang",
                 ["--timeout", "1", "-o", "timeout_func_only=true"],
                 None, 1, id="pytest-timeout"),
    pytest.param("suite and power-cut servers", "hang", [], signal.SIGINT, 2, id="ctrl-c"),
    pytest.param("HA cluster", "hang", [], signal.SIGKILL, -9, id="sigkill of pytest, HA cluster",
                 marks=[pytest.mark.ha,
                        pytest.mark.skipif(ha_missing() is not None, reason=f"{ha_missing()}")]),
    pytest.param("HA cluster", "fail", [], None, 1, id="failing run, HA cluster",
                 marks=[pytest.mark.ha,
                        pytest.mark.skipif(ha_missing() is not None, reason=f"{ha_missing()}")]),
]


@dataclass
class ProbeOutcome:
    """What a probe run left: filled in after it ended and its guards finished."""

    exit_code: int | None = None
    output: str = ""
    reported: dict = field(default_factory=lambda: {"pids": [], "paths": [], "mounts": [],
                                                    "memory": []})
    started: list[psutil.Process] = field(default_factory=list)  # the run's processes
    survivors: list[str] = field(default_factory=list)
    left_in_temp: list[str] = field(default_factory=list)
    mounted: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    memory_left: list[str] = field(default_factory=list)


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
    raise AssertionError(f"the probe never started its server:\n{outcome.output}")


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _mounts() -> set[str]:
    with open("/proc/self/mounts") as mounts:
        return {line.split()[1] for line in mounts}


def run_probe(kind, mode, extra_args, interrupt, exit_code, folder: Path,
              templates_made: list[concurrent.futures.Future]) -> ProbeOutcome:
    """Run one case to its end, wait for everything it started, look at what is left."""
    for made in templates_made[:1] if mode == DURING_INITDB else templates_made:
        made.result(timeout=BOUND)  # (the first: no more initdb runs at once than needed)
    env = {**os.environ, "PROBE_MODE": mode}  # (naming the templates folder, once made)
    if mode == DURING_INITDB:
        env.pop(TEMPLATES, None)  # it runs initdb, in a templates folder of its own
    temp = folder / "temp"  # the run's TMPDIR: it must be empty afterwards
    temp.mkdir()
    for private in (folder.parent, folder, temp):
        private.chmod(0o711)  # as root, the server's account must reach its folder in temp
    probe = folder / "test_probe.py"
    probe.write_text(PROBE_COMMON + textwrap.dedent(PROBES[kind]))
    outcome = ProbeOutcome()
    # the probe run kills itself once the other end closes: when it has ended, or when
    # this process has died (os.pipe's ends are not inherited by the other runs)
    lifeline, keep_alive = os.pipe()
    try:
        run = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "conftest", "-c", str(REPO / "pytest.ini"),
             "--rootdir", str(REPO), "-p", "no:cacheprovider", "-p", "no:hypothesispytest",
             "-s", "-q", str(probe),
             *extra_args],
            cwd=REPO, pass_fds=[lifeline],
            env={**env, "TMPDIR": str(temp), "PROBE_LIFELINE": str(lifeline)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
    finally:
        os.close(lifeline)
    try:
        _end(run, mode, interrupt, outcome)
    finally:
        os.close(keep_alive)
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
    outcome.memory_left = shared_memory_left(outcome.reported["memory"])
    outcome.left_in_temp = sorted(str(path.relative_to(temp)) for path in temp.rglob("*"))
    return outcome


def _end(run: subprocess.Popen, mode: str, interrupt, outcome: ProbeOutcome) -> None:
    """Wait for the probe's report (or for initdb), end the run as the case says and
    collect its output; a run that does not end within BOUND prints where it is stuck."""
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


def _after(first: concurrent.futures.Future, then: Callable[[], object]) -> object:
    first.result()
    return then()


class ProbeRuns:
    """Probe runs in a pool of PROBES_AT_ONCE threads, each case's run started once, in
    a folder of their own (which a guard removes, should this process die). Their
    servers start from this run's initdb templates, made first, once (rather than by
    several probe runs at once)."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="acid_lab-probes-", dir=MEMORY_FOLDER))
        self.guard = Guard(self.folder)
        # the suite server's first: this run's own waits for it, too
        self.templates = concurrent.futures.ThreadPoolExecutor(max_workers=2)
        suite = self.templates.submit(Cluster.prepare_template)
        self.templates_made = [suite] + [
            self.templates.submit(_after, suite, kind.prepare_template)
            for kind in [Primary] + ([PowerCutCluster] if fuse_missing() is None else [])]
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=PROBES_AT_ONCE)
        self.futures: dict[str, concurrent.futures.Future] = {}

    def start(self, case) -> None:
        if case.id not in self.futures:
            case_folder = self.folder / str(len(self.futures))
            case_folder.mkdir()
            self.futures[case.id] = self.pool.submit(run_probe, *case.values, case_folder,
                                                     self.templates_made)

    def outcome(self, case_id: str) -> ProbeOutcome:
        self.start(next(case for case in CASES if case.id == case_id))
        return self.futures[case_id].result(timeout=3 * BOUND)

    def close(self) -> None:
        """Wait for the runs under way (each ends within its bounds); drop the others."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.templates.shutdown(wait=True)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.guard.release()


def _will_run(item) -> bool:
    return item.get_closest_marker("skip") is None and not any(
        mark.args and mark.args[0] is True for mark in item.iter_markers("skipif"))


_background: ProbeRuns | None = None  # what start_in_background started


def start_in_background(items: list[pytest.Item]) -> tuple[list[pytest.Item],
                                                          Callable[[], None]]:
    """Called (by conftest) once the run knows its tests: start the selected cases' runs
    in table order; returns their tests, to run last, and what closes the runs when the
    run ends. (Under pytest-xdist a worker cannot know which cases it will get: there
    each starts when its test asks.)"""
    global _background
    waiting = [item for item in items
               if item.originalname == test_nothing_outlives_the_run.__name__]
    selected = {item.callspec.id for item in waiting if _will_run(item)}
    if "PYTEST_XDIST_WORKER" in os.environ or not selected:
        return [], lambda: None
    _background = ProbeRuns()
    for case in CASES:
        if case.id in selected:
            _background.start(case)
    return waiting, _background.close


@pytest.fixture(scope="module")
def probe_runs():
    """The runs started in the background; or (under pytest-xdist) a pool of this module's."""
    if _background is not None:
        yield _background
        return
    runs = ProbeRuns()
    try:
        yield runs
    finally:
        runs.close()


@pytest.mark.parametrize("kind, mode, extra_args, interrupt, exit_code", CASES)
def test_nothing_outlives_the_run(probe_runs, request, kind, mode, extra_args, interrupt,
                                  exit_code):
    """Scenario: a probe run starts a server, then ends the way the id says.

    Outcome: pytest exits as expected; every process it started (server, guard,
    initdb) has exited; the reported folders, mounts and shared memory are gone;
    nothing is left in the run's temporary folder (pytest-postgresql's password file
    and, killed during initdb, its initdb templates folder included).
    """
    outcome = probe_runs.outcome(request.node.callspec.id)
    assert outcome.exit_code == exit_code, f"pytest ended unexpectedly:\n{outcome.output}"
    assert outcome.survivors == [], "processes outlived the run"
    assert outcome.existing == [], "folders outlived the run"
    assert outcome.mounted == [], "mounts outlived the run"
    assert outcome.memory_left == [], "shared memory outlived the run"
    assert outcome.left_in_temp == [], "files were left in the run's temporary folder"
