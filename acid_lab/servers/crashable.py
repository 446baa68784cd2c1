"""A cluster whose postmaster is our own child: crashed by SIGKILL, restarted at once.

Its postmaster is a direct child of this process, so after a SIGKILL we reap it
ourselves and can restart at once instead of waiting for the system to do it.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time

import psutil

from acid_lab.servers import ServerError
from acid_lab.servers.accounts import run_as_kwargs
from acid_lab.servers.binaries import Binaries, version_key
from acid_lab.servers.cluster import START_TIMEOUT, Cluster
from acid_lab.servers.guard import release_shared_memory, shared_memory_of


class CrashableCluster(Cluster):
    """A cluster whose postmaster is our own child, so that it can be crashed and restarted.

    ``crash()`` SIGKILLs every server process at once: what a process crash (an
    OOM kill, a segfault of the postmaster) does. It is not a power cut: the OS
    page cache survives, so data written but not fsynced is still there.

    Fast and reliable on purpose: we reap the postmaster ourselves (no stale
    lock file), wait for its children by pidfd (no shared memory still attached
    when the next postmaster starts), and know it is ready from its own
    postmaster.pid status line (no client program polling the port).
    """

    # what postmaster.pid's status line says once the server accepts logins
    READY_STATES: tuple[str, ...] = ("ready",)

    def __init__(self, binaries: Binaries | None = None, *, settings: dict | None = None,
                 **kwargs):
        super().__init__(binaries, settings=settings, **kwargs)
        self.postmaster: subprocess.Popen | None = None
        self.start_settings: dict[str, str] = {}  # the extra settings of the current start
        self._start_offset = 0
        self._left_behind: list[str] = []  # the shared memory of the last killed server

    def own_settings(self, binaries: Binaries) -> dict[str, str]:
        # English server messages, so that the log can be read for "recovery"
        own = {**super().own_settings(binaries), "lc_messages": "C"}
        if version_key(binaries.version) >= (14,):
            # Dynamic shared memory (statistics, parallel queries) from a region of the
            # main shared memory, not from segments in /dev/shm: after a SIGKILL, one
            # that no process had attached could not be found (see crash())
            own["min_dynamic_shared_memory"] = "16MB"
        if sys.platform == "linux" and version_key(binaries.version) >= (14,):
            # Before replaying WAL after a crash the server makes the data folder durable:
            # one syncfs() instead of an fsync() per file (seconds on a busy disk)
            own["recovery_init_sync_method"] = "syncfs"
        return own

    def _start_server(self) -> None:
        # initdb through the executor, then run postgres ourselves
        self.executor = self._new_executor()
        self.executor.init_directory()
        self.restart()

    # -- life cycle

    @property
    def running(self) -> bool:
        return self.postmaster is not None and self.postmaster.poll() is None

    def restart(self, **settings: str) -> None:
        """Start the postmaster (after a crash: WAL replay runs first) and wait until it accepts.

        ``settings`` (e.g. ``wal_writer_delay="10s"``) apply to this start only.
        Raises ServerError with the end of the server log if it does not come up.
        """
        if self.running:
            raise ServerError("the server is running: crash() or stop() it before restart()")
        self._start_offset = self._log_size()
        self.start_settings = dict(settings)
        log = open(self.workdir.log, "ab")  # noqa: SIM115 - handed to the child
        try:
            command = [str(self.bindir / "postgres"), "-D", str(self.workdir.data),
                       "-p", str(self.port), "-k", str(self.workdir.socket)]
            for name, value in {**self.settings, **settings}.items():
                command += ["-c", f"{name}={value}"]
            self.postmaster = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir.path,
                start_new_session=True, **run_as_kwargs(self.account),
            )
        finally:
            log.close()
        self._wait_until_accepting()
        self._release_left_behind()

    def crash(self) -> None:
        """SIGKILL the postmaster and all its children at once; return once all are dead.

        PostgreSQL's children make themselves process-group leaders, so one
        ``killpg`` would kill the postmaster alone and leave its children to
        notice later. Instead: freeze the postmaster (SIGSTOP: no new child can
        appear), list its children, SIGKILL them all and the postmaster, reap
        the postmaster and wait for each child's pidfd. What they had attached of
        shared memory is noted first: killed, they cannot remove it; the next
        restart() or dispose() does, if the new postmaster did not.
        """
        if not self.running:
            return
        children: list[psutil.Process] = []
        pidfds: list[int] = []
        try:
            postmaster = psutil.Process(self.postmaster.pid)
            postmaster.send_signal(signal.SIGSTOP)
            children = postmaster.children(recursive=True)
            memory = shared_memory_of([postmaster.pid, *(child.pid for child in children)])
            for name in memory:  # should this process die before it removes them
                self.guard.remove_later(name)
            self._left_behind += memory
            # pidfds while the children cannot be reaped: they still name the right processes
            pidfds = [fd for fd in map(pidfd_or_none, children) if fd is not None]
            for child in children:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass  # the postmaster died by itself just now: its children follow it
        finally:
            self.postmaster.kill()
            self.postmaster.wait(timeout=START_TIMEOUT)
        try:
            wait_until_exited(pidfds, children, START_TIMEOUT)
        finally:
            for fd in pidfds:
                os.close(fd)

    def stop(self) -> None:
        """A clean shutdown (SIGINT: fast mode)."""
        self.postmaster.send_signal(signal.SIGINT)
        self.postmaster.wait(timeout=START_TIMEOUT)

    def dispose(self) -> None:
        """End the server for good, quickly, leaving nothing of it in memory.

        A running server gets an immediate shutdown (SIGQUIT): no checkpoint, but the
        postmaster ends its children and removes its shared memory. A killed one
        (crash(), a power cut) could not: its System V segment and its segments in
        /dev/shm stay, so what it had attached is removed here (see crash()).
        """
        if self.running:
            self.postmaster.send_signal(signal.SIGQUIT)
            self.postmaster.wait(timeout=START_TIMEOUT)
        self._release_left_behind()

    @property
    def left_behind(self) -> list[str]:
        """The shared memory the last kill left (as shared_memory_of() names it), until
        restart() or dispose() removes it."""
        return list(self._left_behind)

    def _release_left_behind(self) -> None:
        """Remove the shared memory a killed server left, if nobody did (see crash())."""
        left, self._left_behind = self._left_behind, []
        release_shared_memory(left)
        for name in left if self.guard is not None else ():
            self.guard.forget(name)

    def _stop_server(self) -> None:
        with contextlib.suppress(Exception):
            self.dispose()  # nothing of this cluster is kept anyway
        if self.executor is not None:
            self.executor._directory_initialised = False
            self.executor = None

    # -- what the server says

    def startup_log(self) -> str:
        """Everything the server logged since the last (re)start began: recovery shows here."""
        try:
            with open(self.workdir.log, "rb") as log:
                log.seek(self._start_offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def _startup_log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.startup_log().splitlines()[-lines:]) or "(nothing logged)"

    # -- readiness

    def _log_size(self) -> int:
        try:
            return self.workdir.log.stat().st_size
        except OSError:
            return 0

    def pidfile_says_ready(self) -> bool:
        """postmaster.pid names our postmaster and its status line is one of READY_STATES.

        The status line is what ``pg_ctl start -w`` waits for; after a crash
        the old file (old pid, "ready") is still there until the new
        postmaster rewrites it, hence the pid check.
        """
        try:
            lines = (self.workdir.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return (len(lines) >= PIDFILE_STATUS_LINE and lines[0].strip() == str(self.postmaster.pid)
                and lines[PIDFILE_STATUS_LINE - 1].strip() in self.READY_STATES)

    def _wait_until_accepting(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with ExitWatch(self.postmaster) as postmaster_exit:
            while not self.pidfile_says_ready():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.crash()
                    raise ServerError(f"PostgreSQL did not become ready within {timeout} s. "
                                      f"Server log:\n{self._startup_log_tail()}")
                # wakes at once if the postmaster exits; otherwise looks at the file again
                if postmaster_exit.wait(min(READY_POLL, remaining)):
                    raise ServerError(
                        f"PostgreSQL exited with {self.postmaster.returncode} while starting. "
                        f"Server log:\n{self._startup_log_tail()}"
                    )


# A WAL writer that wakes every 10 s (the longest allowed, not every 200 ms) makes
# the window in which an asynchronous commit lives only in memory wide enough to
# crash into every time; no autovacuum, whose commits would flush the WAL for us.
SLOW_WAL_WRITER = {"wal_writer_delay": "10s", "autovacuum": "off"}

PIDFILE_STATUS_LINE = 8  # LOCK_FILE_LINE_PM_STATUS in PostgreSQL's miscadmin.h
READY_POLL = 0.005       # seconds between two looks at postmaster.pid while starting


def pidfd_or_none(process: psutil.Process) -> int | None:
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(process.pid)
    except OSError:  # already gone
        return None


class ExitWatch:
    """Waits for our child process to exit: on a pidfd (wakes at once) where Linux has them."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.fd: int | None = None

    def __enter__(self) -> ExitWatch:
        if hasattr(os, "pidfd_open"):
            with contextlib.suppress(OSError):
                self.fd = os.pidfd_open(self.process.pid)
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)

    def wait(self, timeout: float) -> bool:
        """Up to ``timeout`` seconds; True once the process has exited (and is reaped)."""
        if self.fd is not None:
            select.select([self.fd], [], [], timeout)
            return self.process.poll() is not None
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return True


def wait_until_exited(pidfds: list[int], processes: list[psutil.Process],
                       timeout: float) -> None:
    """Return once every process has exited (a zombie counts: it holds no resources)."""
    deadline = time.monotonic() + timeout
    if not hasattr(os, "pidfd_open"):
        _gone, alive = psutil.wait_procs(processes, timeout=timeout)
        if alive:
            raise ServerError(f"server processes survived SIGKILL: {[p.pid for p in alive]}")
        return
    waiting = set(pidfds)
    while waiting:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServerError(f"{len(waiting)} server processes survived SIGKILL")
        readable, _, _ = select.select(list(waiting), [], [], remaining)
        waiting.difference_update(readable)
