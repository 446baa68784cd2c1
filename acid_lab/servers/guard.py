"""Watchdog: stop a cluster and remove its folder once the process that started it is gone.

Run as ``python -m acid_lab.servers.guard PG_CTL DATADIR WORKDIR`` with a pipe on stdin.
When the parent exits, however it exits (normally, Ctrl-C, SIGKILL), the pipe
closes and the guard cleans up. After a clean teardown there is nothing left to
do and it exits at once.

The parent writes to the pipe only to name a file outside WORKDIR that must not
outlive it: ``+PATH`` (remove it at clean-up) and ``-PATH`` (already removed).
pytest-postgresql writes initdb's password file to the system temp folder; a run
killed during initdb would leave it there.

A cluster on the power-cut disk has a FUSE mount inside WORKDIR, served by a
process of its own (its pid in WORKDIR/lossy_disk.pid): once the server is
stopped, the guard detaches the mount (``fusermount3 -u -z``) and ends that
process before it removes the folder.
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
    """Pids of the run's server programs still working on ``datadir`` (pg_ctl, initdb):
    it is in their command line. (initdb's bootstrap backend ends when initdb does.)"""
    own = str(datadir).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() not in SERVER_PROGRAMS:
                continue
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if any(own in argument for argument in arguments):
            pids.append(int(entry.name))
    return pids


LOSSY_DISK_PIDFILE = "lossy_disk.pid"  # in WORKDIR, while the power-cut disk is mounted
LOSSY_DISK_MODULE = b"acid_lab.servers.lossy_disk"


def _fuse_mounts_under(folder: Path) -> list[str]:
    """Mount points of FUSE filesystems inside ``folder`` (from /proc/self/mountinfo)."""
    inside = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            fields, _, rest = line.partition(" - ")
            mountpoint = fields.split()[4].encode().decode("unicode_escape")  # \040 = space
            if rest.startswith("fuse") and Path(mountpoint).is_relative_to(folder):
                inside.append(mountpoint)
    return inside


def _lossy_disk_pid(workdir: Path) -> int | None:
    """The pid in WORKDIR/lossy_disk.pid, if that process still serves this folder's disk."""
    try:
        pid = int((workdir / LOSSY_DISK_PIDFILE).read_text())
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    own = str(workdir).encode()
    if LOSSY_DISK_MODULE in command_line and any(own in arg for arg in command_line):
        return pid
    return None


def unmount_lossy_disks(workdir: Path) -> None:
    """Detach every FUSE mount in the folder and end the process serving it."""
    for mountpoint in _fuse_mounts_under(workdir):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["fusermount3", "-u", "-z", mountpoint],
                           capture_output=True, timeout=STOP_TIMEOUT, check=False)
    pid = _lossy_disk_pid(workdir)
    if pid is not None and not wait_for_exit(pid, DISK_EXIT_TIMEOUT):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # it outlived its mount; the pid file names it
        wait_for_exit(pid, STOP_TIMEOUT)


DISK_EXIT_TIMEOUT = 5  # seconds a FUSE process gets to end by itself once unmounted


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
    unmount_lossy_disks(workdir)
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
