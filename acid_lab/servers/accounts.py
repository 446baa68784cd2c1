"""The unprivileged account servers run as when we are root (PostgreSQL refuses root).

``server_account()`` only looks the account up; ``ensure_server_account()`` may also
create one (``useradd``): called once, by whoever opens the run (see run.py).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from acid_lab.servers import ServerError
from acid_lab.servers.binaries import Binaries
from acid_lab.servers.guard import as_account

SERVICE_ACCOUNTS = ("postgres", "acid_lab")
CREATED_ACCOUNT = "acid_lab"
NO_ACCOUNT = (
    "Running as root, and PostgreSQL refuses to run as root; there is no 'postgres' "
    "account and creating an 'acid_lab' account failed. Create an unprivileged account "
    "named postgres or acid_lab, or run the suite as an ordinary user."
)


@dataclass(frozen=True)
class Account:
    """The unprivileged account the server processes run as when we are root."""

    name: str
    uid: int
    gid: int


def _existing() -> Account | None:
    for name in SERVICE_ACCOUNTS:
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return Account(name, entry.pw_uid, entry.pw_gid)
    return None


def server_account() -> Account | None:
    """None when we are not root; otherwise the existing account PostgreSQL agrees to run
    as (ServerError when there is none: ensure_server_account() makes one)."""
    if os.geteuid() != 0:
        return None
    account = _existing()
    if account is None:
        raise ServerError(NO_ACCOUNT)
    return account


def ensure_server_account() -> Account | None:
    """As server_account(), but as root without an account, create one (``useradd``)."""
    if os.geteuid() != 0:
        return None
    if _existing() is None:
        useradd = shutil.which("useradd")
        if useradd:
            with contextlib.suppress(subprocess.TimeoutExpired):
                subprocess.run([useradd, "--system", "--no-create-home", "--user-group",
                                "--shell", "/usr/sbin/nologin", CREATED_ACCOUNT],
                               capture_output=True, text=True, check=False, timeout=60)
    return server_account()


def run_as_kwargs(account: Account | None) -> dict:
    """``subprocess`` arguments that run a program as ``account``, root's privileges dropped
    in the child (nothing when ``account`` is None: we are that user already)."""
    return as_account(account and (account.uid, account.gid))


def runnable_bindir(binaries: Binaries, account: Account | None, workdir: Path) -> Path:
    """As root, the server account must be able to run the binaries; copy them if not.

    The embedded wheel lives inside the project's .venv, which may sit under a
    folder (such as /root) that the server account cannot enter. The copy is root's
    (readable and runnable by the account, not writable): root runs these programs too.
    """
    if account is None:
        return binaries.bindir
    try:
        probe = subprocess.run(
            [str(binaries.program("postgres")), "--version"],
            capture_output=True, check=False, cwd=workdir, **run_as_kwargs(account),
        )
        if probe.returncode == 0:
            return binaries.bindir
    except PermissionError:
        pass  # the account cannot even reach the program
    # Keep the layout <package>/<install>/bin next to <package>.libs: wheel binaries
    # find their bundled libraries through an RPATH relative to themselves.
    install = binaries.bindir.parent
    package = install.parent
    copy_root = workdir / "binaries"
    shutil.copytree(install, copy_root / package.name / install.name, symlinks=True)
    bundled_libs = package.parent / f"{package.name}.libs"
    if bundled_libs.is_dir():
        shutil.copytree(bundled_libs, copy_root / bundled_libs.name, symlinks=True)
    for folder, _dirs, _files in os.walk(copy_root):
        os.chmod(folder, 0o755)  # root's, entered and read by the account
    return copy_root / package.name / install.name / "bin"
