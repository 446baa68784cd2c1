"""Watchdog: stop a cluster and remove its folder once the process that started it is gone.

``Guard(folder, pg_ctl, datadir, account)`` starts one: ``python -S guard.py
WORKDIR [PG_CTL DATADIR [UID GID]]`` with a pipe on stdin (this file needs only the
standard library, so no site packages are loaded: a quicker start). When the parent
exits, however it exits (normally, Ctrl-C, SIGKILL), the pipe closes and the guard
cleans up. After a clean teardown there is nothing left to do and it exits at once.
Without PG_CTL and DATADIR it guards a folder with no server of its own (a bare lossy
disk, the run's initdb templates, the harness's probe runs) and stops only the server
programs working in it.
With UID and GID (we are root, the server runs as that account), ``pg_ctl`` runs as
that account (privileges dropped in the child, no script in between), and only a
postmaster of that account is killed.

The parent writes to the pipe only to name what else must not outlive it:
``+NAME`` (remove it at clean-up) and ``-NAME`` (already removed), NAME being a file
outside WORKDIR or shared memory as shared_memory_of() names it. pytest-postgresql
writes initdb's password file to the system temp folder, where a run killed during
initdb would leave it; a server killed by a test leaves its shared memory until it is
restarted or thrown away.

A cluster on the power-cut disk has a FUSE mount inside WORKDIR, served by a
process of its own (its pid in WORKDIR/lossy_disk.pid): once the server is
stopped, the guard detaches the mount (``fusermount3 -u -z``) and ends that
process before it removes the folder.
"""

import contextlib
import ctypes
import os
import select
import shutil
import signal
import subprocess
import sys
from pathlib import Path

STOP_TIMEOUT = 30


def _postmaster_pid(datadir: Path, account: tuple[int, int] | None = None) -> int | None:
    """The pid in the lock file, if it is still a postmaster of this data folder (and,
    as root, of the server's account: the account writes that file).

    After a crash the lock file outlives its postmaster; its pid may be reused.
    """
    try:
        pid = int((datadir / "postmaster.pid").read_text().split()[0])
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        owner = os.stat(f"/proc/{pid}").st_uid
    except (OSError, ValueError, IndexError):
        return None
    if account is not None and owner != account[0]:
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


# sh: pg_ctl runs initdb through it; cp: copies an initdb template (see templates)
SERVER_PROGRAMS = {"initdb", "pg_ctl", "postgres", "sh", "cp"}


def _programs_on(datadir: Path) -> list[int]:
    """Pids of the run's server programs still working on ``datadir``: it is in their
    command line (pg_ctl, initdb, cp), or they work in it (initdb's backends, which find
    the folder in $PGDATA and move into it; left alone, they would end with a PANIC
    once it is gone, without removing their shared memory)."""
    own = str(datadir).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() not in SERVER_PROGRAMS:
                continue
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
            folder = os.readlink(entry / "cwd").encode()
        except OSError:
            continue  # gone meanwhile
        if any(own in argument for argument in arguments) or folder.startswith(own):
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


POSIX_SEGMENTS = "/dev/shm/PostgreSQL."  # dsm_impl.c names them /PostgreSQL.<handle>


def shared_memory_of(pids: list[int]) -> list[str]:
    """The shared memory that these processes have attached and that would outlive them
    (Linux): System V segments as "sysv:SHMID", POSIX segments as their /dev/shm path.

    A SIGKILLed postmaster cannot remove its own: what a server's processes show here
    must be gone with the server. Only PostgreSQL's POSIX segments (PostgreSQL.N): a
    program the server's account ran from SQL may have mapped anyone's file there, and
    root unlinks what is listed here.
    """
    found = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as maps:
                for line in maps:
                    fields = line.split(maxsplit=5)
                    path = fields[5].strip() if len(fields) == 6 else ""
                    if path.startswith("/SYSV"):
                        found.add(f"sysv:{fields[4]}")  # a segment's inode is its shmid
                    elif path.startswith(POSIX_SEGMENTS):
                        found.add(path.removesuffix(" (deleted)"))
        except OSError:
            continue  # gone meanwhile
    return sorted(found)


def _system_v_attachments() -> dict[str, int]:
    """Every System V segment's shmid and how many processes have it attached."""
    with open("/proc/sysvipc/shm") as segments:
        rows = [line.split() for line in list(segments)[1:]]
    return {row[1]: int(row[6]) for row in rows}  # columns: key shmid perms size cpid lpid nattch


def shared_memory_left(names: list[str]) -> list[str]:
    """Those of ``names`` (from shared_memory_of) that still exist."""
    shmids = _system_v_attachments()
    return [name for name in names
            if (name.removeprefix("sysv:") in shmids if name.startswith("sysv:")
                else os.path.exists(name))]


IPC_RMID = 0  # shmctl's "remove" (sys/ipc.h)


def release_shared_memory(names: list[str]) -> None:
    """Remove what a killed server left of ``names`` (from shared_memory_of, taken before
    the kill) and nobody has attached: PostgreSQL cannot, and a server started on the
    same folder removes it only if it finds that folder on the same device (a FUSE disk
    mounted again is on another one). The other names (/dev/shm's too) are files: unlinked."""
    attached = _system_v_attachments()
    libc = ctypes.CDLL(None, use_errno=True)
    for name in names:
        if name.startswith("sysv:"):
            if attached.get(name.removeprefix("sysv:")) == 0:
                libc.shmctl(int(name.removeprefix("sysv:")), IPC_RMID, None)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)


def as_account(account: tuple[int, int] | None) -> dict:
    """subprocess's arguments that drop root's privileges in the child (none without one)."""
    if account is None:
        return {}
    return {"user": account[0], "group": account[1], "extra_groups": []}


def clean_up(pg_ctl: str | None, datadir: Path, workdir: Path,
             leftovers: set[str] = frozenset(),
             account: tuple[int, int] | None = None) -> None:
    pid = _postmaster_pid(datadir, account) if pg_ctl is not None else None
    if pid is not None:
        memory = shared_memory_of([pid])  # an immediate shutdown removes it; a SIGKILL not
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([pg_ctl, "stop", "-D", str(datadir), "-m", "immediate", "-w"],
                           capture_output=True, timeout=STOP_TIMEOUT, check=False,
                           cwd=workdir, **as_account(account))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # pg_ctl failed; this pid is the postmaster we started
        wait_for_exit(pid, STOP_TIMEOUT)
        release_shared_memory(memory)
    # killed during initdb: initdb would go on writing into the folder we remove (and its
    # backend, killed, cannot remove its shared memory)
    programs = _programs_on(datadir)
    memory = shared_memory_of(programs)
    for program in programs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(program, signal.SIGKILL)
        wait_for_exit(program, STOP_TIMEOUT)
    release_shared_memory(memory)
    unmount_lossy_disks(workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    release_shared_memory(sorted(leftovers))  # (files are unlinked)


class Guard:
    """The parent's end: a guard process for ``folder`` (and the server of ``datadir``,
    stopped with ``pg_ctl``), told of outside files and shared memory by ``remove_later``
    and ``forget``."""

    def __init__(self, folder: Path, pg_ctl: Path | None = None, datadir: Path | None = None,
                 account: tuple[int, int] | None = None):
        server = [] if pg_ctl is None else [str(pg_ctl), str(datadir)]
        if server and account is not None:
            server += [str(account[0]), str(account[1])]
        self.process = subprocess.Popen(
            [sys.executable, "-S", __file__, str(folder), *server],
            stdin=subprocess.PIPE, start_new_session=True,
        )

    def remove_later(self, name: str) -> None:
        """Have the guard remove ``name`` (a file, shared memory) too, if this process
        dies before it does."""
        self._tell(f"+{name}")

    def forget(self, name: str) -> None:
        """``name`` is removed already: nothing for the guard to do about it."""
        self._tell(f"-{name}")

    def _tell(self, line: str) -> None:
        self.process.stdin.write(os.fsencode(line) + b"\n")
        self.process.stdin.flush()

    def release(self) -> None:
        """The folder is gone already: let the guard exit."""
        if self.process.stdin:
            self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=30)


def main() -> None:
    workdir, *server = sys.argv[1:]
    pg_ctl, datadir = server[:2] if server else (None, workdir)
    account = (int(server[2]), int(server[3])) if len(server) == 4 else None
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C; we outlive it
    leftovers: set[str] = set()
    for line in sys.stdin.buffer:  # ends at EOF: the parent is gone or done
        name = os.fsdecode(line.rstrip(b"\n"))
        if name.startswith("+"):
            leftovers.add(name[1:])
        elif name.startswith("-"):
            leftovers.discard(name[1:])
    clean_up(pg_ctl, Path(datadir), Path(workdir), leftovers, account)


if __name__ == "__main__":
    main()
