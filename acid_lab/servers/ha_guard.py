"""Watchdog of an HA cluster: once the process that started it is gone, end the cluster's
processes (etcd, Patroni, PostgreSQL), delete its network namespaces, remove its folder.

``python -S ha_guard.py WORKDIR UID NETNS_PREFIX`` with a pipe on stdin, as guard.py
(the standard library only; EOF on stdin, however the parent ended, starts the clean-up).
Every process of the cluster runs as the server's account (UID) and works in WORKDIR
(its current folder is in it): those, and only those, are killed. Patroni first, so
that it starts no PostgreSQL again; the shared memory of a killed server is removed.
"""

import contextlib
import os
import shutil
import signal
import sys
from pathlib import Path

from guard import release_shared_memory, shared_memory_of, wait_for_exit
from network import remove_namespaces

EXIT_TIMEOUT = 30
ROUNDS = 5  # a process seen late (a backend forked meanwhile) is caught by the next round


def processes_in(workdir: Path, uid: int) -> list[int]:
    """Pids of the account's processes working in ``workdir``; Patroni's first."""
    own = str(workdir)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            folder = os.readlink(entry / "cwd")
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if folder == own or folder.startswith(own + "/"):
            found.append((b"patroni" not in command, int(entry.name)))
    return [pid for _later, pid in sorted(found)]


def end_processes(workdir: Path, uid: int) -> None:
    for _round in range(ROUNDS):
        pids = processes_in(workdir, uid)
        if not pids:
            return
        for pid in pids:  # frozen first: none forks or restarts another meanwhile
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        memory = shared_memory_of(pids)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in pids:
            wait_for_exit(pid, EXIT_TIMEOUT)
        release_shared_memory(memory)


def clean_up(workdir: Path, uid: int, prefix: str) -> None:
    end_processes(workdir, uid)
    remove_namespaces(prefix)
    shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    workdir, uid, prefix = sys.argv[1:]
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C; we outlive it
    for _line in sys.stdin.buffer:  # ends at EOF: the parent is gone or done
        pass
    clean_up(Path(workdir), int(uid), prefix)


if __name__ == "__main__":
    main()
