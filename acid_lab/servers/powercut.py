"""A cluster whose data folder sits on a disk that can lose power.

``PowerCutCluster`` is a ``CrashableCluster`` (its postmaster is our child, so
it can be killed and restarted at once) whose data folder is a FUSE mount of
``acid_lab.servers.lossy_disk`` over a backing folder, the platter:

    with PowerCutCluster(settings={"fsync": "off"}) as server:
        ...                              # connect to server.info / server.dsn
        tally = server.power_cut()       # SIGKILL every server process, forget the
                                         # unsynced writes, unmount
        server.restart()                 # PostgreSQL on what the platter kept

``power_cut(writeback)`` lets a chosen part of the unsynced writes reach the
platter first (``lossy_disk.Writeback``). The filesystem runs in a child
process of its own, controlled over a pipe: the test process never serves FUSE
requests itself. That one process serves every mount of the cluster's life
(after a cut it mounts again with an empty page cache) and ends with the cluster.

initdb writes straight onto the platter before the first mount: in this model the
platter is the disk, so the cluster starts from durable data although initdb
runs with --no-sync.

Layout of the cluster's private folder: ``data/`` (the mount point, what the
server uses), ``lossy/disk/`` (the platter), ``lossy/trash/`` (removed files, until
their removal is durable), ``lossy_disk.pid`` (for the guard), ``server.log``.
As root, ``lossy/`` is root's alone: the filesystem (run as root) opens the files
under it, so the server's account must not reach them other than through the
mount, where the kernel checks its rights (it could otherwise swap a file for a
link to any file of root's between the kernel's check and the open).
"""

from __future__ import annotations

import contextlib
import ctypes.util
import dataclasses
import json
import os
import select
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from acid_lab.servers import ServerError
from acid_lab.servers.binaries import Binaries
from acid_lab.servers.cluster import Workdir
from acid_lab.servers.crashable import CrashableCluster
from acid_lab.servers.guard import LOSSY_DISK_PIDFILE, Guard
from acid_lab.servers.lossy_disk import NOTHING, Writeback

WAL_SEGMENT_MB = 1
MOUNT_TIMEOUT = 30        # seconds for the filesystem to come up, answer, or go
INSTALL_HINT = "install FUSE 3 (Debian/Ubuntu: apt-get install fuse3)"


def fuse_missing() -> str | None:
    """None when this machine can mount the lossy disk; otherwise one line saying what to do."""
    if not os.path.exists("/dev/fuse"):
        return f"power cuts need FUSE: /dev/fuse is missing; {INSTALL_HINT}"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "power cuts need FUSE: /dev/fuse is not readable and writable for this user"
    if ctypes.util.find_library("fuse3") is None:
        return f"power cuts need libfuse 3, which is not installed; {INSTALL_HINT}"
    if shutil.which("fusermount3") is None:
        return f"power cuts need fusermount3, which is not installed; {INSTALL_HINT}"
    return None


class DiskError(ServerError):
    """The lossy disk did not mount, answer, or unmount as asked."""


class LossyDiskProcess:
    """The parent's handle on the lossy disk's process: one process, mounted again and
    again (a fresh page cache each time), ended by ``close()``."""

    def __init__(self, backing: Path, mountpoint: Path, trash: Path, pidfile: Path):
        self.backing, self.mountpoint, self.trash, self.pidfile = (
            backing, mountpoint, trash, pidfile)
        self.process: subprocess.Popen | None = None
        self.mounted = False
        self._buffer = b""

    def mount(self) -> None:
        if self.mounted:
            return
        if self.process is None:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "acid_lab.servers.lossy_disk", str(self.backing),
                 str(self.mountpoint), str(self.trash)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True,
            )
            self.pidfile.write_text(str(self.process.pid))
        else:
            self._send({"cmd": "mount"})
        self.mounted = True  # from now on, unmount() must run
        try:
            self._answer("mount")
        except BaseException:
            self.close()
            raise

    def status(self) -> dict:
        return self._ask({"cmd": "status"})

    def sync(self) -> dict:
        """Make every write durable (what syncfs() would do)."""
        return self._ask({"cmd": "sync"})

    def cut(self, writeback: Writeback) -> dict:
        """Power off the disk (``writeback`` reaches the platter first), then unmount it."""
        try:
            return self._ask({"cmd": "cut", "writeback": dataclasses.asdict(writeback)})
        finally:
            self.unmount()

    def unmount(self) -> None:
        """Unmount; the process says so and waits to be mounted again (or closed)."""
        if not self.mounted:
            return
        self.mounted = False
        for lazy in ([], ["-z"]):  # -z: detach even if something still holds it
            done = subprocess.run(["fusermount3", "-u", *lazy, str(self.mountpoint)],
                                  capture_output=True, check=False, timeout=MOUNT_TIMEOUT)
            if done.returncode == 0 or not os.path.ismount(self.mountpoint):
                break
        try:
            self._answer("unmount")
        except DiskError:
            self.close()  # it did not come back: end it
            raise

    def close(self) -> None:
        """Unmount if need be and end the process (EOF on its stdin); kill it if it lingers."""
        if self.process is None:
            return
        with contextlib.suppress(DiskError):
            self.unmount()
        process, self.process = self.process, None
        self.mounted = False
        with contextlib.suppress(OSError):
            process.stdin.close()
        try:
            process.wait(timeout=MOUNT_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=MOUNT_TIMEOUT)
        finally:
            with contextlib.suppress(OSError):
                process.stdout.close()
            self.pidfile.unlink(missing_ok=True)
            self._buffer = b""

    # -- the pipe

    def _send(self, command: dict) -> None:
        if self.process is None:
            raise DiskError("the lossy disk's process is not running")
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        self.process.stdin.flush()

    def _ask(self, command: dict) -> dict:
        if not self.mounted:
            raise DiskError("the lossy disk is not mounted")
        self._send(command)
        return self._answer(command["cmd"])

    def _answer(self, what: str) -> dict:
        """The next JSON line from the child, within MOUNT_TIMEOUT."""
        deadline = time.monotonic() + MOUNT_TIMEOUT
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            readable, _, _ = select.select([fd], [], [], max(remaining, 0))
            chunk = os.read(fd, 65536) if readable else b""
            if not chunk:
                reason = "timed out" if not readable else f"exited {self.process.poll()}"
                raise DiskError(f"the lossy disk {reason} during {what}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        answer = json.loads(line)
        if "error" in answer:
            raise DiskError(f"the lossy disk failed {what}: {answer['error']}")
        return answer


@contextlib.contextmanager
def bare_lossy_disk() -> Iterator[LossyDiskProcess]:
    """A lossy disk with no server on it, to look at the disk itself: mounted on
    ``disk.mountpoint`` over ``disk.backing`` in a private folder that the guard
    unmounts and removes should this process die."""
    workdir = Workdir(account=None)
    guard = Guard(workdir.path)  # no server: it only unmounts and removes
    for folder in (workdir.data, workdir.path / "disk", workdir.path / "trash"):
        folder.mkdir()
    disk = LossyDiskProcess(workdir.path / "disk", workdir.data, workdir.path / "trash",
                            workdir.path / LOSSY_DISK_PIDFILE)
    try:
        disk.mount()
        yield disk
    finally:
        try:
            disk.close()
        finally:
            workdir.remove()
            guard.release()


class PowerCutCluster(CrashableCluster):
    """A crashable cluster on the lossy disk: ``power_cut()`` then ``restart()``."""

    # 1 MB WAL segments, not 16: every new segment is zero-filled through the disk.
    # Data checksums: a page torn by the power cut is detected when it is read.
    OWN_INITDB_OPTIONS = (f"--wal-segsize={WAL_SEGMENT_MB}", "--data-checksums")

    def __init__(self, binaries: Binaries | None = None, *, settings: dict | None = None,
                 **kwargs):
        super().__init__(binaries, settings=settings, **kwargs)
        self.disk: LossyDiskProcess | None = None
        self._crashed_on_power = False

    def _start_server(self) -> None:
        # initdb writes straight onto the platter; the disk is mounted over it afterwards
        self.executor = self._new_executor()
        self.executor.init_directory()
        platter, trash = self.platter, self.platter.parent / "trash"
        platter.parent.mkdir(mode=stat.S_IRWXU)  # root's alone (see the module's doc)
        self.workdir.data.rename(platter)
        trash.mkdir(mode=stat.S_IRWXU)
        self.workdir.make_data_folder()  # the mount point
        self.disk = LossyDiskProcess(platter, self.workdir.data, trash,
                                     self.workdir.path / LOSSY_DISK_PIDFILE)
        self.restart()

    def restart(self, **settings: str) -> None:
        """Mount the disk again if the power was cut, then start the server on it.

        After a crash() with the power on, crash recovery begins by making the whole
        data folder durable (with fsync on; ``recovery_init_sync_method = syncfs`` on
        PostgreSQL 14 and later). syncfs() never reaches a FUSE daemon, so the disk
        is told to do just that here, before the server starts (an fsync of every
        file through FUSE would take seconds).
        """
        if not self.disk.mounted:
            self.disk.mount()
        elif self._crashed_on_power and {**self.settings, **settings}.get("fsync") == "on":
            self.disk.sync()
        self._crashed_on_power = False
        super().restart(**settings)

    def crash(self) -> None:
        """SIGKILL every server process; the disk keeps its unsynced writes (a process crash)."""
        self._crashed_on_power = self.running or self._crashed_on_power
        super().crash()

    @property
    def platter(self) -> Path:
        """The backing folder: what the disk keeps when the power goes."""
        return self.workdir.path / "lossy" / "disk"

    def power_cut(self, writeback: Writeback = NOTHING) -> dict:
        """SIGKILL every server process, then power the disk off: only what was fsynced
        (and ``writeback``'s part of the rest) stays. Returns what became of the
        unsynced writes: {"written", "torn", "lost", "names_undone"}."""
        self.crash()
        return self.disk.cut(writeback)

    def _stop_server(self) -> None:
        # the executor, once dropped, removes the data folder: by then it must be unmounted
        try:
            with contextlib.suppress(Exception):
                self.dispose()
        finally:
            if self.disk is not None:
                self.disk.close()
            super()._stop_server()
