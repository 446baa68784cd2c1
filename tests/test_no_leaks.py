"""Foundation: a run leaves nothing behind, however it ends.

Each case runs pytest in a child process on a probe test that starts the
suite's server, reports the postmaster's pid and the server's private folder,
and then passes, fails, hangs until pytest-timeout fires, is interrupted with
Ctrl-C (SIGINT), or is killed outright (SIGKILL, where no cleanup code of
pytest's can run: the suite's guard process stops the server instead).

Outcome every time: the postmaster is gone and so is its folder.
"""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from acid_lab.servers.guard import wait_for_exit

pytestmark = [pytest.mark.foundation, pytest.mark.own_server]

REPO = Path(__file__).resolve().parent.parent
BOUND = 60  # seconds any single wait may take

PROBE = textwrap.dedent('''
    import faulthandler, os, signal, threading
    import pytest

    pytestmark = pytest.mark.foundation

    def test_probe(target, connect):
        faulthandler.register(signal.SIGUSR1, all_threads=True)  # stacks, if it ever hangs
        # Ctrl-C as in a terminal, even when this run inherited SIGINT ignored
        # (as every command started in the background by a shell does)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        connect().cursor().execute("select 1")
        workdir = target.cluster.workdir.path
        postmaster = (workdir / "data" / "postmaster.pid").read_text().split()[0]
        guard = target.cluster._guard.process.pid
        print(f"PROBE {postmaster} {guard} {workdir}", flush=True)
        mode = os.environ["PROBE_MODE"]
        if mode == "fail":
            pytest.fail("failing on purpose")
        if mode == "hang":
            threading.Event().wait()
''')


def _run_probe(mode: str, extra_args: list[str], folder: Path) -> subprocess.Popen:
    probe = folder / "test_probe.py"
    probe.write_text(PROBE)
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "conftest", "-c", str(REPO / "pytest.ini"),
         "--rootdir", str(REPO), "-p", "no:cacheprovider", "-s", "-q", str(probe),
         *extra_args],
        cwd=REPO, env={**os.environ, "PROBE_MODE": mode},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _read_probe_line(run: subprocess.Popen) -> tuple[int, int, Path]:
    seen = []
    for line in run.stdout:  # bounded: the probe either prints or pytest ends
        seen.append(line)
        if line.startswith("PROBE "):
            _, postmaster, guard, workdir = line.split(maxsplit=3)
            return int(postmaster), int(guard), Path(workdir.strip())
    raise AssertionError("the probe never started its server:\n" + "".join(seen))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"  # a zombie has already exited
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("mode, extra_args, interrupt, exit_code", [
    pytest.param("pass", [], None, 0, id="passing run"),
    pytest.param("fail", [], None, 1, id="failing run"),
    # func_only: the timer covers the hanging test, not the server start before it
    pytest.param("hang", ["--timeout", "2", "-o", "timeout_func_only=true"], None, 1,
                 id="pytest-timeout"),
    pytest.param("hang", [], signal.SIGINT, 2, id="ctrl-c"),
    pytest.param("hang", [], signal.SIGKILL, -9, id="sigkill of pytest"),
])
def test_no_server_and_no_folder_outlive_the_run(mode, extra_args, interrupt, exit_code):
    """Scenario: a probe run starts the server, then ends the way the id says.

    Outcome: pytest exits as expected; the postmaster has exited and the
    server's private folder is gone.
    """
    with tempfile.TemporaryDirectory(prefix="acid_lab-probe-") as folder:
        run = _run_probe(mode, extra_args, Path(folder))
        try:
            postmaster, guard, workdir = _read_probe_line(run)
            if interrupt is not None:
                run.send_signal(interrupt)
            output, _ = run.communicate(timeout=BOUND)
        except subprocess.TimeoutExpired:
            run.send_signal(signal.SIGUSR1)  # the probe prints where it is stuck
            try:
                output, _ = run.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                run.kill()
                output, _ = run.communicate(timeout=BOUND)
            pytest.fail(f"the probe run did not end within {BOUND} s:\n{output}")
        finally:
            if run.poll() is None:
                run.kill()
                run.wait(timeout=BOUND)

        assert run.returncode == exit_code, f"pytest ended unexpectedly:\n{output}"
        assert wait_for_exit(guard, BOUND), "the guard process must finish its cleanup"
        assert wait_for_exit(postmaster, BOUND) and not _alive(postmaster), \
            f"a server process (pid {postmaster}) outlived the run"
        assert not workdir.exists(), f"the server folder {workdir} outlived the run"
