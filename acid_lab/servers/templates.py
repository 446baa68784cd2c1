"""initdb once per run: every later cluster made the same way starts from a copy.

initdb costs over a second of CPU; copying the folder it made, a fraction of that. A
run of the suite starts dozens of clusters, and the pytest runs of its harness start
more, several at once. (PostgreSQL's own test suites keep an "initdb template" too.)

A template is the data folder initdb made, before any server ran on it, kept under a key
of what made it: the PostgreSQL programs, the account the server runs as, and initdb's
options (WAL segment size, data checksums, ...). The first cluster of a kind runs initdb
and keeps a copy; the next ones copy that (``cp -a``: owners and modes kept). Copies of
one template share its system identifier, as clusters cloned by pg_basebackup do.

The templates live in one private folder per run: in memory where there is room
(``/dev/shm``: keeping a template then costs little, even where creating a thousand
files on disk does not), unless $TMPDIR says where temporary files go. The run
(acid_lab.servers.run) makes that folder and names it in $ACID_LAB_TEMPLATES, so that
the programs it starts (pytest runs, acid_lab commands) use it too; a folder named
there is used only if it is this user's own and private.

Every cluster of a run has the same superuser password, the one its templates were
made with: a secret of the run, kept in that folder and readable by its owner only.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

ENVIRONMENT = "ACID_LAB_TEMPLATES"
PASSWORD_FILE = "password"
COPY_TIMEOUT = 60
MEMORY = Path("/dev/shm")  # a tmpfs on Linux (where it exists)
ROOM_FOR_TEMPLATES = 512 * 2**20  # bytes: a few templates of about 40 MB, and to spare


def in_memory(room: int) -> str | None:
    """A folder in memory (a tmpfs) with ``room`` bytes free, if there is one; else None."""
    try:
        status = os.statvfs(MEMORY)
    except OSError:
        return None
    if status.f_bavail * status.f_frsize < room or not os.access(MEMORY, os.W_OK | os.X_OK):
        return None
    return str(MEMORY)


class RunTemplates:
    """The run's folder of initdb templates, and the run's superuser password."""

    def __init__(self, folder: Path, password: str):
        self.folder = folder
        self.password = password
        # per template: one thread makes it, the others wait for it and copy it
        self._making: dict[Path, threading.Lock] = {}
        self._locks = threading.Lock()

    def template(self, made_by: list[str]) -> Path:
        """Where the template of clusters made by ``made_by`` (programs, account, initdb
        options) is, or will be."""
        return self.folder / hashlib.sha256(json.dumps(made_by).encode()).hexdigest()[:16]

    def data_folder(self, datadir: Path, made_by: list[str], initdb: Callable[[], None],
                    only_template: bool = False) -> Path:
        """Make ``datadir`` as ``initdb()`` would: a copy of the template if there is one,
        else by ``initdb()``, kept as the template for the next. ``only_template``: only
        make sure that the template exists (``datadir`` is given up). Returns the
        template."""
        template = self.template(made_by)
        with self._locks:
            making = self._making.setdefault(template, threading.Lock())
        with making:
            if not template.is_dir():
                self._make(template, datadir, initdb)
                return template
        if not only_template:
            _copy(template, datadir)
        return template

    def _make(self, template: Path, datadir: Path, initdb: Callable[[], None]) -> None:
        initdb()
        # kept under a name of its own, then renamed: a template is there whole or not
        # at all, and of two processes that made the same one the first keeps it
        partial = self.folder / f".{template.name}.{os.getpid()}.{secrets.token_hex(4)}"
        try:
            _copy(datadir, partial)
            partial.rename(template)
        except OSError:  # kept by another process meanwhile; or no room: not kept
            shutil.rmtree(partial, ignore_errors=True)


def _copy(source: Path, destination: Path) -> None:
    # cp -a keeps the server account's ownership (we may be root) and the modes, and
    # takes half the time of copytree plus a chown of every file
    done = subprocess.run(["cp", "-a", str(source), str(destination)], capture_output=True,
                          text=True, timeout=COPY_TIMEOUT, check=False)
    if done.returncode != 0:
        raise OSError(f"copying {source} to {destination} failed: {done.stderr.strip()}")


def own_and_private(folder: Path) -> bool:
    """A templates folder of this user's that nobody else may enter (one a run named)."""
    try:
        status = folder.lstat()
        return (stat.S_ISDIR(status.st_mode) and status.st_uid == os.geteuid()
                and status.st_mode & 0o077 == 0 and (folder / PASSWORD_FILE).is_file())
    except OSError:
        return False
