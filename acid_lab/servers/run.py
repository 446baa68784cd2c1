"""A run: what every server it starts shares, made once by its caller.

A ``RunContext`` holds the PostgreSQL programs, the account the servers run as (as
root), the folder of initdb templates and the superuser password. Opening the run is
what changes the machine: it may create the account (``useradd``), makes the private
templates folder (watched by a guard, removed at exit) and names it in
$ACID_LAB_TEMPLATES for the programs the run starts. Building a Cluster changes
nothing; starting one uses the run it was given, or the process's run
(``current_run()``), opened on first use.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from acid_lab.servers.accounts import Account, ensure_server_account
from acid_lab.servers.binaries import Binaries, find_binaries
from acid_lab.servers.guard import Guard
from acid_lab.servers.templates import (
    ENVIRONMENT,
    PASSWORD_FILE,
    ROOM_FOR_TEMPLATES,
    RunTemplates,
    in_memory,
    own_and_private,
)


@dataclass(frozen=True)
class RunContext:
    """What the servers of one run share."""

    binaries: Binaries
    account: Account | None
    templates: RunTemplates

    @property
    def password(self) -> str:
        """The superuser password of every cluster of the run (its templates')."""
        return self.templates.password


_opening = threading.Lock()  # clusters may start in several threads at once
_opened: RunContext | None = None


def open_run() -> RunContext:
    """Open this process's run (once: later calls return the same run)."""
    global _opened
    with _opening:
        if _opened is None:
            binaries = find_binaries()
            _opened = RunContext(binaries, ensure_server_account(), _open_templates())
        return _opened


def current_run() -> RunContext:
    """The process's run: the one opened, or opened now."""
    return _opened or open_run()


def _open_templates() -> RunTemplates:
    """The folder named in $ACID_LAB_TEMPLATES (a parent run's), or a new one of ours."""
    named = os.environ.get(ENVIRONMENT)
    if named and own_and_private(Path(named)):
        return RunTemplates(Path(named), (Path(named) / PASSWORD_FILE).read_text())
    where = None if os.environ.get("TMPDIR") else in_memory(ROOM_FOR_TEMPLATES)
    folder = Path(tempfile.mkdtemp(prefix="acid_lab-templates-", dir=where))  # mode 0700
    guard = Guard(folder)
    atexit.register(_remove, folder, guard)
    password = secrets.token_urlsafe(18)
    with open(os.open(folder / PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600),
              "w") as file:
        file.write(password)
    os.environ[ENVIRONMENT] = str(folder)
    return RunTemplates(folder, password)


def _remove(folder: Path, guard: Guard) -> None:
    with contextlib.suppress(KeyError):
        if os.environ[ENVIRONMENT] == str(folder):
            del os.environ[ENVIRONMENT]
    shutil.rmtree(folder, ignore_errors=True)
    guard.release()
