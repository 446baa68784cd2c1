"""A private PostgreSQL cluster, started and stopped by pytest-postgresql's executor.

Every cluster lives in one private folder (data, Unix socket, log) that no
other account can enter. As root, the server runs as an unprivileged account,
because PostgreSQL refuses to run as root: every server program is started with
root's privileges dropped in the child (``subprocess``'s user/group), and that
account owns only the data folder, the socket folder and the log file.

Building a ``Cluster`` changes nothing on the machine: ``start()`` (or ``with``)
makes its folder and its guard, in the run it was given or the process's run
(acid_lab.servers.run). Crash demonstrations use acid_lab.servers.crashable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import port_for
from mirakuru import TCPExecutor
from mirakuru.exceptions import ProcessFinishedWithError
from mirakuru.exceptions import TimeoutExpired as MirakuruTimeout
from pytest_postgresql.executors import PostgreSQLExecutor

from acid_lab.servers import ServerError
from acid_lab.servers.accounts import Account, run_as_kwargs, runnable_bindir
from acid_lab.servers.binaries import Binaries
from acid_lab.servers.connections import ConnectionInfo
from acid_lab.servers.guard import Guard
from acid_lab.servers.run import RunContext, current_run
from acid_lab.servers.templates import RunTemplates

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


class Workdir:
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


class TemplateExecutor(PostgreSQLExecutor):
    """pytest-postgresql's executor with a quick, password-protected initdb, run once per
    run and kind of cluster, and copied after that (see templates)."""

    def __init__(self, *args, account: Account | None, workdir: Workdir, guard: Guard,
                 templates: RunTemplates, initdb_options: tuple[str, ...], made_by: list[str],
                 **kwargs):
        self._account = account
        self._templates = templates
        self._guard = guard
        self._initdb_options = initdb_options
        self._made_by = made_by  # the programs and the account: the template key's start
        self._template_key: list[str] = []  # with initdb's options: set as its command is built
        self._password_file: str | None = None
        self.only_template = False  # init_directory() only makes sure the template exists
        self.template: Path | None = None  # the data folder's template, once made
        super().__init__(*args, **kwargs)
        # every pg_ctl it runs drops root's privileges in the child: no wrapper script
        self._as_account = {"cwd": str(workdir.path), **run_as_kwargs(account)}
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
        self.template = self._templates.data_folder(
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

    def stop(self, sig: int | None = None, exp_sig: int | None = None) -> TemplateExecutor:
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

    # initdb's options beyond the suite's own: what this class adds to the kinds made
    # from it (initdb_options() composes them over the class's bases)
    OWN_INITDB_OPTIONS: tuple[str, ...] = ()

    def __init__(self, binaries: Binaries | None = None, *, settings: dict | None = None,
                 run: RunContext | None = None):
        # nothing here touches the machine: the run and its account are resolved by start()
        self.run = run
        self.binaries = binaries
        self.account: Account | None = None
        self.password: str | None = None
        self.given_settings = dict(settings or {})
        self.settings = {**SERVER_SETTINGS, **self.given_settings}
        self.workdir: Workdir | None = None
        self.port: int | None = None
        self.guard: Guard | None = None
        self.executor: TemplateExecutor | None = None

    @classmethod
    def initdb_options(cls) -> tuple[str, ...]:
        """This kind's initdb options: each class's own, bases first, each option once.

        A kind made of two (``class LossyPrimary(PowerCutCluster, Primary)``) gets what
        both add. Two classes asking for different values of one option is an error.
        """
        options: dict[str, str] = {}
        for kind in reversed(cls.__mro__):
            for option in vars(kind).get("OWN_INITDB_OPTIONS", ()):
                name = option.split("=", 1)[0]
                if options.setdefault(name, option) != option:
                    raise ServerError(f"{cls.__name__}: initdb options {options[name]} and "
                                      f"{option} disagree")
        return tuple(options.values())

    def own_settings(self, binaries: Binaries) -> dict[str, str]:
        """Server settings this kind adds to the suite's (the caller's still win)."""
        return {}

    # -- public face

    @property
    def info(self) -> ConnectionInfo:
        return ConnectionInfo(HOST, self.port, SUPERUSER, self.password, "postgres")

    @property
    def dsn(self) -> str:
        return self.info.dsn()

    @property
    def version(self) -> str:
        return (self.binaries or current_run().binaries).version

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
            cluster.executor = cluster._new_executor()
            cluster.executor.only_template = True
            cluster.executor.init_directory()
            return cluster.executor.template
        finally:
            cluster.destroy()

    def _resolve(self) -> None:
        """Take the run's programs, account and password, and this kind's settings."""
        self.run = self.run or current_run()
        self.binaries = self.binaries or self.run.binaries
        self.account = self.run.account
        self.password = self.password or self.run.password
        self.settings = {**SERVER_SETTINGS, **self.own_settings(self.binaries),
                         **self.given_settings}

    def _make_folder(self) -> None:
        self._resolve()
        self.workdir = Workdir(self.account)
        self.bindir = runnable_bindir(self.binaries, self.account, self.workdir.path)
        self.pg_ctl = self.bindir / "pg_ctl"
        self.guard = Guard(self.workdir.path, self.pg_ctl, self.workdir.data,
                            account=self.account and (self.account.uid, self.account.gid))

    def destroy(self) -> None:
        """Stop the server (if running) and remove everything it left on disk."""
        try:
            self._stop_server()
        finally:
            if self.workdir is not None:
                self.workdir.remove()
            if self.guard is not None:
                self.guard.release()
                self.guard = None

    def give_folder_to_guard(self) -> None:
        """Leave the removal of the folder to the guard, once the server is gone.

        Removing a cluster folder (about a thousand files) takes seconds on some disks;
        the guard, already there for the case that this process dies, does it in the
        background instead (and exits), while the tests go on.
        """
        executor, self.executor = self.executor, None
        if executor is not None:
            # pytest-postgresql's executor removes its data folder when collected
            executor.datadir = os.devnull
        guard, self.guard = self.guard, None
        if guard is not None and guard.process.stdin:
            guard.process.stdin.close()  # the guard finds the server gone and removes the folder

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server log, for failure messages."""
        try:
            text = self.workdir.log.read_text(errors="replace")
        except (OSError, AttributeError):
            return "(no server log)"
        return "\n".join(text.splitlines()[-lines:])

    # -- the executor

    def _new_executor(self) -> TemplateExecutor:
        """pytest-postgresql's executor for this cluster, on a newly chosen free port."""
        self.port = port_for.select_random()
        options = " ".join(f"-c {name}={value}" for name, value in self.settings.items())
        return TemplateExecutor(
            executable=str(self.pg_ctl), host=HOST, port=self.port,
            datadir=str(self.workdir.data), unixsocketdir=str(self.workdir.socket),
            logfile=str(self.workdir.log), startparams=f"-w -t {START_TIMEOUT}",
            dbname="postgres", user=SUPERUSER, password=self.password,
            postgres_options=options, timeout=START_TIMEOUT, account=self.account,
            workdir=self.workdir, guard=self.guard, templates=self.run.templates,
            initdb_options=self.initdb_options(),
            made_by=[str(self.binaries.bindir), self.account and self.account.name],
        )

    def _start_server(self) -> None:
        last_error: Exception | None = None
        for _attempt in range(3):  # a free port can be taken between choice and bind
            self.executor = self._new_executor()
            try:
                self.executor.start()
                # mirakuru returns once the port is open; `pg_ctl start -w` exits when
                # the server accepts logins ("the database system is starting up" before)
                if self.executor.process.wait(timeout=START_TIMEOUT) == 0:
                    return
                last_error = ServerError(f"pg_ctl start exited {self.executor.process.returncode}")
            except Exception as error:  # noqa: BLE001 - reported with the log below
                last_error = error
                log = self.log_tail()
                if "could not bind" not in log and "in use" not in log:
                    break
        raise ServerError(
            f"PostgreSQL did not start ({last_error}). Server log:\n{self.log_tail()}"
        )

    def _stop_server(self) -> None:
        if self.executor is None:
            return
        executor, self.executor = self.executor, None
        with contextlib.suppress(Exception):
            if executor.running():
                executor.stop()
        executor._directory_initialised = False  # its __del__ must not touch the data again


