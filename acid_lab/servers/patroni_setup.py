"""Patroni's own environment: a venv of the system's Python holding ``patroni[etcd3]``.

As root, Patroni runs as the server's account (it starts PostgreSQL itself, which refuses
root), and that account cannot run an interpreter living in root's home (a pyenv, the
project's .venv under /root). So Patroni gets a venv of its own, made with a Python every
account can run (``/usr/bin/python3``), in a folder that account can read but not write:
root runs nothing the server's account could have changed. Made once
(``python -m acid_lab.servers.patroni_setup``, which ``make test`` runs), then reused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# Patroni talks to PostgreSQL through psycopg2 (or psycopg 3): not among its own requirements
PATRONI = "patroni[etcd3]==4.1.5"
DRIVER = "psycopg2-binary==2.9.13"
VERSION = PATRONI.split("==")[1]
SYSTEM_PYTHON = "/usr/bin/python3"
INSTALL_TIMEOUT = 600


def patroni_home() -> Path:
    """Where the venv lives: root's under /var/cache (readable by every account), an
    ordinary user's under their cache folder. ``ACID_LAB_PATRONI_HOME`` overrides."""
    if os.environ.get("ACID_LAB_PATRONI_HOME"):
        return Path(os.environ["ACID_LAB_PATRONI_HOME"])
    if os.geteuid() == 0:
        return Path("/var/cache/acid_lab") / f"patroni-{VERSION}"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "acid_lab" / f"patroni-{VERSION}"


def patroni_program() -> Path:
    return patroni_home() / "bin" / "patroni"


def patroni_installed() -> bool:
    return (patroni_home() / ".installed").exists()


def install() -> Path:
    """Make the venv (once; a stamp file, written last, says it is complete)."""
    home = patroni_home()
    if patroni_installed():
        return home
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        raise SystemExit(f"{SYSTEM_PYTHON} is missing: install python3 and python3-venv")
    building = home  # in place: the scripts of a venv name its folder
    shutil.rmtree(building, ignore_errors=True)
    building.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(building.parent, 0o755)
    # --copies: the venv's python is a file of its own (root's), not a link to follow
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--copies", str(building)], check=True,
                   timeout=INSTALL_TIMEOUT)
    subprocess.run([str(building / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", "--no-cache-dir", PATRONI, DRIVER], check=True,
                   timeout=INSTALL_TIMEOUT)
    for folder, _dirs, _files in os.walk(building):
        os.chmod(folder, 0o755)  # entered and read by the server's account, written by no one
    (building / ".installed").write_text(f"{PATRONI} {DRIVER}\n")
    return home


if __name__ == "__main__":
    print(f"Patroni ({PATRONI}) in {install()}", file=sys.stderr)
