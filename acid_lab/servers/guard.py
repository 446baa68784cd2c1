"""Watchdog: stop a cluster and remove its folder once the process that started it is gone.

Run as ``python -m acid_lab.servers.guard PG_CTL DATADIR WORKDIR`` with a pipe on stdin.
When the parent exits, however it exits (normally, Ctrl-C, SIGKILL), the pipe
closes and the guard cleans up. After a clean teardown there is nothing left to
do and it exits at once.

The parent writes to the pipe only to name a file outside WORKDIR that must not
outlive it: ``+PATH`` (remove it at clean-up) and ``-PATH`` (already removed).
pytest-postgresql writes initdb's password file to the system temp folder; a run
killed during initdb would leave it there.
"""

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

STOP_TIMEOUT = 30


def _postmaster_pid(datadir: Path) -> int | None:
    """The pid in the lock file, if it is still a postmaster of this data folder.

    After a crash the lock file outlives its postmaster; its pid may be reused.
    """
    try:
        pid = int((datadir / "postmaster.pid").read_text().split()[0])
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, IndexError):
        return None
    return pid if str(datadir).encode() in command_line else None


def wait_for_exit(pid: int, timeout: float) -> bool:
    """True once ``pid`` has exited (or never existed), without polling: a pidfd
    becomes readable then; False when ``timeout`` seconds pass first."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # ProcessLookupError included: already gone
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


SERVER_PROGRAMS = {"initdb", "pg_ctl", "postgres", "sh"}  # sh: pg_ctl runs initdb through it


def _programs_on(datadir: Path) -> list[int]:
    """Pids of the run's server programs still working on ``datadir`` (pg_ctl, initdb,
    postgres --boot): it is in their command line or their PGDATA."""
    own = str(datadir).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() not in SERVER_PROGRAMS:
                continue
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours to read
        if any(own in argument for argument in arguments) \
                or b"PGDATA=" + own in environment:
            pids.append(int(entry.name))
    return pids


def clean_up(pg_ctl: str, datadir: Path, workdir: Path, files: set[str] = frozenset()) -> None:
    pid = _postmaster_pid(datadir)
    if pid is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([pg_ctl, "stop", "-D", str(datadir), "-m", "immediate", "-w"],
                           capture_output=True, timeout=STOP_TIMEOUT, check=False)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # pg_ctl failed; this pid is the postmaster we started
        wait_for_exit(pid, STOP_TIMEOUT)
    # killed during initdb: initdb would go on writing into the folder we remove
    for program in _programs_on(datadir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(program, signal.SIGKILL)
        wait_for_exit(program, STOP_TIMEOUT)
    shutil.rmtree(workdir, ignore_errors=True)
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def main() -> None:
    pg_ctl, datadir, workdir = sys.argv[1:4]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C; we outlive it
    files: set[str] = set()
    for line in sys.stdin.buffer:  # ends at EOF: the parent is gone or done
        path = os.fsdecode(line.rstrip(b"\n"))
        if path.startswith("+"):
            files.add(path[1:])
        elif path.startswith("-"):
            files.discard(path[1:])
    clean_up(pg_ctl, Path(datadir), Path(workdir), files)


if __name__ == "__main__":
    main()
