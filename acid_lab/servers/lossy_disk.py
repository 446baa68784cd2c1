"""A disk that can lose power: a FUSE filesystem that keeps unsynced writes in memory.

Run as ``python -m acid_lab.servers.lossy_disk BACKING MOUNTPOINT TRASH`` (the
``powercut`` module does it); it mounts MOUNTPOINT over the BACKING folder, says
``{"ready": true}`` on stdout once the kernel talks to it, and takes one JSON
command per line on stdin (``{"cmd": "status"}``, ``{"cmd": "sync"}``,
``{"cmd": "cut", "writeback": {...}}``), answering each with one JSON line. Once
unmounted (``fusermount3 -u``) it says ``{"unmounted": true}`` and mounts again,
with an empty page cache, on ``{"cmd": "mount"}``; it ends at EOF on stdin.

The model, kept simple on purpose, in the terms of a real machine:

* BACKING is the platter: what it holds survives the power cut.
* Reads and metadata (sizes, modes, owners, directory listings) pass through
  to BACKING, seen through the writes still in memory.
* **File data** (``write``, ``truncate``) stays in this process's memory — the
  page cache — until that file is fsynced (``fsync``/``fdatasync``; a write
  through a handle opened with O_SYNC/O_DSYNC is durable when it returns). Only
  then does it reach BACKING (and is fsynced there too).
* **Names** (create, mkdir, unlink, rmdir, rename, link, symlink) are applied
  to BACKING at once but journaled, like ext4's metadata journal: the next fsync
  of any file or directory commits the journal, making every earlier name change
  durable. A power cut before that undoes them (in reverse order; a removed
  file waits in TRASH until then).
* ``cut``: every further request fails with EIO; by default every write still
  in memory is forgotten. A ``Writeback`` lets a chosen part of them reach the
  platter first, in the order they were written — the kernel writes dirty pages
  back in whatever order it likes, and a write can be torn at a sector (512
  bytes) or page (4 KiB) boundary. Truncates and name changes are never written
  back by a cut.

The kernel's own writeback cache is left off, so that every write reaches this
process; the mount is torn down (and the kernel's cache of it dropped) after
every cut.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue
import stat
import sys
import threading
from dataclasses import dataclass, field
from itertools import count

# ------------------------------------------------------------------ what reaches the platter

RULES = ("none", "all", "alternate", "torn-512", "torn-4096")
GROUPS = ("pg_control", "wal", "relations", "other")


@dataclass(frozen=True)
class Writeback:
    """Which unsynced writes reach the platter at a power cut, per group of files.

    Groups: ``pg_control`` (global/pg_control), ``wal`` (pg_wal/), ``relations``
    (base/ and global/: tables, indexes and their forks) and ``other``. Rules:
    ``none``; ``all``; ``alternate`` (the 1st, 3rd, 5th... write of the group:
    written back out of order); ``torn-512`` / ``torn-4096`` (every write, but only
    up to the first 512-byte / 4 KiB boundary after its start: the rest of the
    page never made it; a write inside one such unit arrives whole).

    ``files`` (paths relative to the data folder), when given, narrows it down: the
    writes to any other file are all lost.

    Its repr is a literal to paste into ``@example(...)``.
    """

    pg_control: str = "none"
    wal: str = "none"
    relations: str = "none"
    other: str = "none"
    files: tuple[str, ...] = ()

    def __post_init__(self):
        for group in GROUPS:
            if getattr(self, group) not in RULES:
                raise ValueError(f"{group}={getattr(self, group)!r}: not one of {RULES}")


NOTHING = Writeback()  # what a power cut does when nothing else is said


def group_of(path: str) -> str:
    """The Writeback group of a path relative to the mount (e.g. 'pg_wal/0000...')."""
    if path == "global/pg_control":
        return "pg_control"
    if path.startswith("pg_wal/"):
        return "wal"
    if path.startswith(("base/", "global/")):
        return "relations"
    return "other"


def written_part(rule: str, rank: int, offset: int, length: int) -> int:
    """How many leading bytes of a write reach the platter under ``rule`` (0: none)."""
    if rule == "none" or (rule == "alternate" and rank % 2):
        return 0
    if rule.startswith("torn-"):
        unit = int(rule.removeprefix("torn-"))
        boundary = (offset // unit + 1) * unit  # the first unit boundary after the start
        return min(length, boundary - offset)
    return length


# ------------------------------------------------------------------ the page cache


@dataclass
class _Write:
    seq: int
    offset: int
    data: bytes


@dataclass
class _Truncate:
    seq: int
    length: int


@dataclass
class _File:
    """One file's unsynced data: the writes and truncates since its last fsync, in order."""

    fd: int          # our own descriptor: the inode stays reachable after renames and unlinks
    path: str        # where it is now, relative to the mount
    size: int        # the size the overlay gives it
    ops: list = field(default_factory=list)

    def overlay(self, data: bytes, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` as the file reads with its unsynced changes."""
        end = min(offset + size, self.size)
        if end <= offset:
            return b""
        buf = bytearray(data[: end - offset].ljust(end - offset, b"\0"))
        for op in self.ops:
            if isinstance(op, _Write):
                lo, hi = max(op.offset, offset), min(op.offset + len(op.data), end)
                if lo < hi:
                    buf[lo - offset: hi - offset] = op.data[lo - op.offset: hi - op.offset]
            elif op.length < end:  # a truncate zeroes what lay beyond it
                lo = max(op.length, offset)
                buf[lo - offset:] = bytes(end - lo)
        return bytes(buf)

    def apply(self) -> None:
        """Write every unsynced change to the platter, in order."""
        for op in self.ops:
            if isinstance(op, _Write):
                os.pwrite(self.fd, op.data, op.offset)
            else:
                os.ftruncate(self.fd, op.length)
        self.ops.clear()


class _Journal:
    """Name changes not yet committed (no fsync since), with what undoes each."""

    def __init__(self, trash: str):
        self.trash = trash
        self.entries: list[tuple] = []
        self._names = count()

    def trash_name(self) -> str:
        return os.path.join(self.trash, str(next(self._names)))

    def commit(self) -> list[str]:
        """Make every entry durable; returns the trashed paths, now free to delete."""
        trashed = [entry[-1] for entry in self.entries if entry[0] in ("remove", "rename")
                   and entry[-1] is not None]
        self.entries.clear()
        return trashed

    def undo(self) -> None:
        for kind, *args in reversed(self.entries):
            if kind == "made":                      # create, mkdir, link, symlink
                (path,) = args
                if os.path.isdir(path) and not os.path.islink(path):
                    os.rmdir(path)
                else:
                    os.unlink(path)
            elif kind == "remove":                  # unlink, rmdir: back from the trash
                path, trashed = args
                os.rename(trashed, path)
            else:                                   # rename, maybe over an existing name
                old, new, trashed = args
                os.rename(new, old)
                if trashed is not None:
                    os.rename(trashed, new)
        self.entries.clear()


def _build_operations():
    """The FUSE operations class (mfusepy is imported only where a disk really runs)."""
    import mfusepy

    class LossyDisk(mfusepy.Operations):
        use_ns = True

        def __init__(self, backing: str, trash: str, ready):
            self.root = os.path.realpath(backing)
            self.journal = _Journal(trash)
            self.files: dict[int, _File] = {}     # by inode number on the platter
            self.inode_of: dict[int, int] = {}    # open handle (our fd) -> inode
            self.synchronous: set[int] = set()    # handles opened with O_SYNC or O_DSYNC
            self._mutex = threading.Lock()
            self.seq = count()
            self.powered = True
            self.as_root = os.geteuid() == 0
            self._ready = ready

        # -- helpers

        def _full(self, path: str) -> str:
            return os.path.join(self.root, path.lstrip("/"))

        def _check_power(self):
            if not self.powered:
                raise mfusepy.FuseOSError(errno.EIO)

        def _own(self, full: str) -> None:
            """As root, a new entry belongs to whoever made it (the server's account)."""
            if self.as_root:
                uid, gid, _pid = mfusepy.fuse_get_context()
                os.lchown(full, uid, gid)

        def _file(self, fh: int | None, path: str | None) -> _File:
            """The page-cache entry of an open handle or a path (made on first change)."""
            ino = self.inode_of[fh] if fh is not None else os.lstat(self._full(path)).st_ino
            entry = self.files.get(ino)
            if entry is None:
                fd = os.dup(fh) if fh is not None else os.open(self._full(path), os.O_RDWR)
                entry = _File(fd, (path or "").lstrip("/"), os.fstat(fd).st_size)
                self.files[ino] = entry
            return entry

        def _commit_names(self) -> None:
            for trashed in self.journal.commit():
                gone = os.lstat(trashed)
                self._forget(gone.st_ino)
                if stat.S_ISDIR(gone.st_mode):
                    os.rmdir(trashed)
                else:
                    os.unlink(trashed)

        def _forget(self, ino: int) -> None:
            entry = self.files.pop(ino, None)
            if entry is not None:
                os.close(entry.fd)

        def _renamed(self, old: str, new: str) -> None:
            old, new = old.lstrip("/"), new.lstrip("/")
            for entry in self.files.values():
                if entry.path == old or entry.path.startswith(old + "/"):
                    entry.path = new + entry.path[len(old):]

        # -- start-up

        def init_with_config(self, conn, config):
            if conn is not None:
                conn.want &= ~FUSE_CAP_WRITEBACK_CACHE  # every write must reach us
            self._ready()

        # -- reading

        def getattr(self, path, fh=None):
            with self._mutex:
                self._check_power()
                st = os.fstat(fh) if fh is not None else os.lstat(self._full(path))
                attrs = {key: getattr(st, key) for key in (
                    "st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size",
                    "st_blocks", "st_atime_ns", "st_mtime_ns", "st_ctime_ns")}
                for key in ("atime", "mtime", "ctime"):
                    attrs[f"st_{key}"] = attrs.pop(f"st_{key}_ns")
                entry = self.files.get(st.st_ino)
                if entry is not None and stat.S_ISREG(st.st_mode):
                    attrs["st_size"] = entry.size
                return attrs

        def readdir(self, path, fh):
            with self._mutex:
                self._check_power()
                return [".", "..", *os.listdir(self._full(path))]

        def readlink(self, path):
            with self._mutex:
                self._check_power()
                return os.readlink(self._full(path))

        def statfs(self, path):
            st = os.statvfs(self.root)
            return {key: getattr(st, key) for key in (
                "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                "f_ffree", "f_favail", "f_flag", "f_namemax")}

        def open(self, path, flags):
            with self._mutex:
                self._check_power()
                return self._open(path, flags, truncate=flags & os.O_TRUNC)

        def _open(self, path: str, flags: int, truncate: bool) -> int:
            full = self._full(path)
            try:
                fd = os.open(full, os.O_RDWR)
            except PermissionError:
                fd = os.open(full, os.O_RDONLY)
            self.inode_of[fd] = os.fstat(fd).st_ino
            if flags & os.O_DSYNC:  # O_SYNC includes it
                self.synchronous.add(fd)
            if truncate:
                self._truncate(self._file(fd, path), 0)
            return fd

        def read(self, path, size, offset, fh):
            with self._mutex:
                self._check_power()
                data = os.pread(fh, size, offset)
                entry = self.files.get(self.inode_of[fh])
                if entry is None or not entry.ops:
                    return data
                return entry.overlay(data, offset, size)

        # -- writing into the page cache

        def write(self, path, data, offset, fh):
            with self._mutex:
                self._check_power()
                entry = self._file(fh, path)
                entry.ops.append(_Write(next(self.seq), offset, bytes(data)))
                entry.size = max(entry.size, offset + len(data))
                synchronous = fh in self.synchronous
                if synchronous:  # such a write is durable once it returns
                    entry.apply()
            if synchronous:
                os.fdatasync(fh)
            return len(data)

        def truncate(self, path, length, fh=None):
            with self._mutex:
                self._check_power()
                self._truncate(self._file(fh, path), length)

        def _truncate(self, entry: _File, length: int) -> None:
            entry.ops.append(_Truncate(next(self.seq), length))
            entry.size = length

        def fallocate(self, path, mode, offset, size, fh):
            raise mfusepy.FuseOSError(errno.EOPNOTSUPP)  # PostgreSQL then writes zeros

        # -- making it durable

        def fsync(self, path, datasync, fh):
            with self._mutex:
                self._check_power()
                entry = self.files.get(self.inode_of[fh])
                changed = entry is not None and bool(entry.ops)
                if changed:
                    entry.apply()
                self._commit_names()
            if changed:  # the platter holds the rest already
                (os.fdatasync if datasync else os.fsync)(fh)
            return 0

        def fsyncdir(self, path, datasync, fh):
            with self._mutex:
                self._check_power()
                self._commit_names()
            fd = os.open(self._full(path), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            return 0

        def release(self, path, fh):
            with self._mutex:
                self.inode_of.pop(fh, None)
                self.synchronous.discard(fh)
                os.close(fh)
            return 0

        def flush(self, path, fh):
            return 0

        # -- names (journaled)

        def create(self, path, mode, flags):
            with self._mutex:
                self._check_power()
                full = self._full(path)
                os.close(os.open(full, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode))
                self._own(full)
                self.journal.entries.append(("made", full))
                return self._open(path, flags, truncate=False)

        def mkdir(self, path, mode):
            with self._mutex:
                self._check_power()
                full = self._full(path)
                os.mkdir(full, mode)
                self._own(full)
                self.journal.entries.append(("made", full))

        def symlink(self, target, source):
            with self._mutex:
                self._check_power()
                full = self._full(target)
                os.symlink(source, full)
                self._own(full)
                self.journal.entries.append(("made", full))

        def link(self, target, source):
            with self._mutex:
                self._check_power()
                full = self._full(target)
                os.link(self._full(source), full)
                self.journal.entries.append(("made", full))

        def unlink(self, path):
            self._remove(path)

        def rmdir(self, path):
            with self._mutex:
                self._check_power()
                if os.listdir(self._full(path)):
                    raise mfusepy.FuseOSError(errno.ENOTEMPTY)
            self._remove(path)

        def _remove(self, path):
            with self._mutex:
                self._check_power()
                full, trashed = self._full(path), self.journal.trash_name()
                os.rename(full, trashed)
                self.journal.entries.append(("remove", full, trashed))

        def rename(self, old, new):
            with self._mutex:
                self._check_power()
                old_full, new_full = self._full(old), self._full(new)
                trashed = None
                if os.path.lexists(new_full):
                    trashed = self.journal.trash_name()
                    os.rename(new_full, trashed)
                os.rename(old_full, new_full)
                self.journal.entries.append(("rename", old_full, new_full, trashed))
                self._renamed(old, new)

        # -- attributes (written through at once)

        def chmod(self, path, mode):
            with self._mutex:
                self._check_power()
                os.chmod(self._full(path), mode)

        def chown(self, path, uid, gid):
            with self._mutex:
                self._check_power()
                os.lchown(self._full(path), uid, gid)

        def utimens(self, path, times=None):
            with self._mutex:
                self._check_power()
                os.utime(self._full(path), ns=times, follow_symlinks=False)

        # -- the power cut

        def cut(self, writeback: Writeback) -> dict:
            """Power off: let ``writeback``'s part of the page cache through, forget the rest."""
            with self._mutex:
                self.powered = False
                pending = sorted(
                    ((op.seq, op, entry) for entry in self.files.values() for op in entry.ops
                     if isinstance(op, _Write)), key=lambda item: item[0])
                ranks: dict[str, int] = {}
                tally = {"written": 0, "torn": 0, "lost": 0, "names_undone": 0}
                for _seq, op, entry in pending:
                    group = group_of(entry.path)
                    rank = ranks[group] = ranks.get(group, -1) + 1
                    kept = written_part(getattr(writeback, group), rank, op.offset,
                                        len(op.data))
                    if writeback.files and entry.path not in writeback.files:
                        kept = 0
                    if kept:
                        os.pwrite(entry.fd, op.data[:kept], op.offset)
                    key = "written" if kept == len(op.data) else "torn" if kept else "lost"
                    tally[key] += 1
                tally["names_undone"] = len(self.journal.entries)
                self.journal.undo()
                for ino in list(self.files):
                    self._forget(ino)
                return tally

        def sync(self) -> dict:
            """Make everything durable, as syncfs() would (it never reaches a FUSE daemon)."""
            with self._mutex:
                self._check_power()
                changed = [entry for entry in self.files.values() if entry.ops]
                for entry in changed:
                    entry.apply()
                    os.fsync(entry.fd)
                self._commit_names()
                return {"files": len(changed)}

        def status(self) -> dict:
            with self._mutex:
                writes = [op for entry in self.files.values() for op in entry.ops
                          if isinstance(op, _Write)]
                return {"powered": self.powered, "unsynced_writes": len(writes),
                        "unsynced_bytes": sum(len(op.data) for op in writes),
                        "unjournaled_names": len(self.journal.entries)}

    return mfusepy, LossyDisk


FUSE_CAP_WRITEBACK_CACHE = 1 << 16  # fuse_common.h


# ------------------------------------------------------------------ the process


def _serve_commands(mounted: dict, mounts: queue.Queue, reply) -> None:
    """One JSON command per line on stdin. At EOF (our parent is gone, or done with us)
    the process ends as soon as the disk is not mounted."""
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "mount":
            mounts.put(True)
            continue
        disk = mounted.get("disk")
        try:
            if disk is None:
                answer = {"error": "not mounted"}
            elif command["cmd"] == "cut":
                spec = command.get("writeback", {})
                answer = disk.cut(Writeback(**{**spec, "files": tuple(spec.get("files", ()))}))
            elif command["cmd"] == "sync":
                answer = disk.sync()
            elif command["cmd"] == "status":
                answer = disk.status()
            else:
                answer = {"error": f"unknown command {command['cmd']!r}"}
        except Exception as error:  # noqa: BLE001 - reported to the parent, which raises
            answer = {"error": f"{type(error).__name__}: {error}"}
        reply(answer)
    mounts.put(False)


def main(argv: list[str]) -> int:
    """Mount at once; after each unmount say so and wait for {"cmd": "mount"} or EOF.

    One process serves every mount of a cluster's life: a fresh page cache each
    time, without paying for a new Python process after every power cut.
    """
    backing, mountpoint, trash = argv
    os.umask(0)  # the kernel has applied the caller's umask to every mode we get
    out = sys.stdout
    write_lock = threading.Lock()

    def reply(message: dict) -> None:
        with write_lock, contextlib.suppress(BrokenPipeError):  # (the parent is gone)
            out.write(json.dumps(message) + "\n")
            out.flush()

    mfusepy, LossyDisk = _build_operations()
    mounted: dict = {}
    mounts: queue.Queue = queue.Queue()
    threading.Thread(target=_serve_commands, args=(mounted, mounts, reply), daemon=True).start()
    # one thread: requests are served in order, and Python would serialise them anyway
    options = {"foreground": True, "nothreads": True, "fsname": "acid_lab_lossy_disk",
               "subtype": "lossy_disk", "default_permissions": True, "hard_remove": True}
    if os.geteuid() == 0:
        options["allow_other"] = True  # the server runs as its own account
    while True:
        mounted["disk"] = LossyDisk(backing, trash, ready=lambda: reply({"ready": True}))
        try:
            mfusepy.FUSE(mounted["disk"], mountpoint, **options)
        except Exception as error:  # noqa: BLE001 - the parent is waiting for an answer
            reply({"error": f"mount failed: {type(error).__name__}: {error}"})
            return 1
        finally:
            mounted.pop("disk", None)
        reply({"unmounted": True})
        if not mounts.get():
            return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

