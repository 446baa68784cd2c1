"""Harness: who gets in -- other local accounts, the server's own account, and a --dsn.

As root, the suite runs its servers as an unprivileged account. These tests try what
that account, and any other local account, could do against a run: replace something
root runs (nothing of it lies where the account can write), log in to the run's
server without the run's password (refused), reach its socket or read its password
and templates (no: private folders). And a ``--dsn`` is passed on whole: a demand
such as ``sslmode=require`` is kept, so against our server (no SSL) every command
fails to connect instead of quietly logging in without encryption.
"""

import io
import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import psycopg2
import pytest

from acid_lab.commands.play import play_command
from acid_lab.commands.report import report_command
from acid_lab.commands.run import run_command
from acid_lab.commands.spec import spec_command
from acid_lab.servers import ServerError
from acid_lab.servers.connections import ConnectionFactory
from acid_lab.servers.queries import one
from acid_lab.servers.run import current_run
from acid_lab.servers.target import check_reachable, open_target, parse_dsn
from acid_lab.servers.templates import PASSWORD_FILE

pytestmark = pytest.mark.harness

AS_ROOT = pytest.mark.skipif(os.geteuid() != 0,
                             reason="needs root: it switches to other local accounts")
OTHER_ACCOUNT = "nobody"
ATTEMPT_TIMEOUT = 30  # seconds, for any one program run as another account


@pytest.fixture(scope="module")
def cluster(target):
    """The run's own server (the tests look at its folder and processes)."""
    if not target.managed:
        pytest.skip("looks at a server the suite started (--dsn is set)")
    return target.cluster


def _as(account: tuple[int, int], command: list[str], env: dict | None = None,
        ) -> subprocess.CompletedProcess:
    """``command`` run as ``account`` (uid, gid), with root's privileges and groups dropped."""
    return subprocess.run(command, user=account[0], group=account[1], extra_groups=[],
                          cwd="/", env={"PATH": os.defpath, "LC_ALL": "C", **(env or {})},
                          capture_output=True, text=True, timeout=ATTEMPT_TIMEOUT, check=False)


# --------------------------------------------------------------------------- the server's account


def _programs_root_runs(cluster) -> list[Path]:
    """What root runs for a cluster: its guard (python and guard.py, from the guard's own
    command line, and the pg_ctl it stops the server with), pg_ctl and postgres (their
    --version), and cp (copying the run's templates)."""
    guard = Path(f"/proc/{cluster.guard.process.pid}/cmdline").read_bytes().split(b"\0")
    programs = [Path(os.fsdecode(guard[0])), Path(os.fsdecode(guard[2]))]
    if len(guard) > 4 and guard[4]:
        programs.append(Path(os.fsdecode(guard[4])))
    programs += [cluster.pg_ctl, Path(cluster.executor.executable),
                 cluster.bindir / "postgres", Path(shutil.which("cp"))]
    return programs


def _chain(program: Path) -> list[Path]:
    """The program and every folder up to /, as named and as the links resolve."""
    paths = []
    for named in (program, program.resolve()):
        paths += [named, *named.parents]
    return list(dict.fromkeys(paths))


def _writable_by(account: tuple[int, int], paths: list[Path]) -> set[Path]:
    """Those of ``paths`` that ``account`` may write (the kernel's answer, ACLs included)."""
    done = _as(account, ["sh", "-c", 'for p; do [ -w "$p" ] && echo "$p"; done; exit 0', "sh",
                         *map(str, paths)])
    assert done.returncode == 0, done.stderr
    return {Path(line) for line in done.stdout.splitlines()}


def _replaceable(path: Path, writable: set[Path], uid: int) -> bool:
    """The account may change what ``path`` is: it owns it, may write it (a file), or may
    write its folder -- unless that folder is sticky (as /tmp is) and the entry is not
    the account's. (A folder it may write but whose entry on the way is not its own, in
    a sticky folder, it may add to, not change.)"""
    if path.lstat().st_uid == uid or (not path.is_dir() and path in writable):
        return True
    folder = path.parent
    if folder == path or folder not in writable:
        return False
    return not folder.stat().st_mode & stat.S_ISVTX


@AS_ROOT
def test_nothing_root_runs_lies_where_the_server_account_can_write(cluster):
    """Scenario: as root, list every program root runs for the run's cluster (its guard,
    pg_ctl, postgres, cp) and every folder from each up to /; ask the kernel, as the
    server's account, which of them it may write.

    Outcome: none of them can be replaced by the account (a sticky /tmp is writable, but
    not the entries of others in it): the account has no way to make root run its code.
    """
    account = (cluster.account.uid, cluster.account.gid)
    paths = [path for program in _programs_root_runs(cluster) for path in _chain(program)]
    writable = _writable_by(account, paths)
    replaceable = sorted({str(path) for path in paths
                          if _replaceable(path, writable, account[0])})
    assert replaceable == [], f"the server's account ({cluster.account.name}) may replace these"


@AS_ROOT
def test_the_server_account_owns_only_its_data_socket_and_log(cluster):
    """Scenario: as root, walk the cluster's folder (not into data/ and socket/, the
    server's own) and note what belongs to the server's account.

    Outcome: data/, socket/ and the log file server.log, nothing else; the folder itself
    is root's, so the account can neither add entries nor replace these.
    """
    uid = cluster.account.uid
    owned = []
    for folder, folders, files in os.walk(cluster.workdir.path):
        for name in folders + files:
            if (Path(folder) / name).lstat().st_uid == uid:
                owned.append(str((Path(folder) / name).relative_to(cluster.workdir.path)))
        folders[:] = [name for name in folders if name not in ("data", "socket")]
    assert sorted(owned) == ["data", "server.log", "socket"]
    assert cluster.workdir.path.stat().st_uid == 0
    assert stat.S_ISREG(cluster.workdir.log.lstat().st_mode)


# --------------------------------------------------------------------------- other accounts


def _psql(cluster) -> str:
    for candidate in (cluster.bindir / "psql", shutil.which("psql")):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    pytest.skip("no psql program to log in with as another account")


def _attempt(cluster, what: str, account: tuple[int, int]) -> subprocess.CompletedProcess:
    """One attempt of the table below, as ``account``."""
    tcp = f"host=127.0.0.1 port={cluster.port} user=acid_lab dbname=postgres"
    login = [_psql(cluster), "-X", "-w", "-A", "-t", "-c", "select 1"]
    templates = current_run().templates.folder
    attempts = {
        "tcp without a password": (login + [tcp], {}),
        "tcp with a wrong password": (login + [tcp], {"PGPASSWORD": "not-the-password"}),
        "tcp with the run's password": (login + [tcp], {"PGPASSWORD": cluster.password}),
        "the socket": (login + [f"host={cluster.workdir.socket} port={cluster.port} "
                                "user=acid_lab dbname=postgres"], {}),
        "the run's password file": (["cat", str(templates / PASSWORD_FILE)], {}),
        "the run's templates": (["ls", str(templates)], {}),
        "the cluster's folder": (["ls", str(cluster.workdir.path)], {}),
        "the server log": (["cat", str(cluster.workdir.log)], {}),
    }
    command, env = attempts[what]
    return _as(account, command, env)


def _account(who: str, cluster) -> tuple[int, int]:
    if who == "the server's account":
        return cluster.account.uid, cluster.account.gid
    try:
        entry = pwd.getpwnam(OTHER_ACCOUNT)
    except KeyError:
        pytest.skip(f"no local account named {OTHER_ACCOUNT} to try with")
    return entry.pw_uid, entry.pw_gid


@AS_ROOT
@pytest.mark.parametrize("who, what, outcome, says", [
    pytest.param("another account", "tcp without a password", "refused",
                 "no password supplied", id="other-tcp-no-password"),
    pytest.param("another account", "tcp with a wrong password", "refused",
                 "password authentication failed", id="other-tcp-wrong-password"),
    pytest.param("another account", "tcp with the run's password", "allowed", "",
                 id="other-tcp-with-the-password"),  # the control: the password is the key
    pytest.param("another account", "the socket", "refused", "Permission denied",
                 id="other-socket"),
    pytest.param("another account", "the run's password file", "refused",
                 "Permission denied", id="other-password-file"),
    pytest.param("another account", "the run's templates", "refused", "Permission denied",
                 id="other-templates"),
    pytest.param("another account", "the cluster's folder", "refused", "Permission denied",
                 id="other-cluster-folder"),
    pytest.param("another account", "the server log", "refused", "Permission denied",
                 id="other-server-log"),
    pytest.param("the server's account", "the run's password file", "refused",
                 "Permission denied", id="server-account-password-file"),
    pytest.param("the server's account", "the run's templates", "refused",
                 "Permission denied", id="server-account-templates"),
])
def test_a_local_account_gets_in_only_with_the_runs_password(cluster, who, what, outcome,
                                                             says):
    """Scenario: as root, switch to another local account (nobody) and try to log in to
    the run's server over TCP (no password, a wrong one, the right one), through its Unix
    socket, and to read the run's password, its templates, the cluster's folder and log;
    switch to the server's own account and try to read the run's password and templates.

    Outcome: only a login with the run's password gets in (over TCP: the socket's folder
    is closed to others); the password and the templates are root's alone (the server's
    account never needs them after initdb: a template is copied for it by root).
    """
    done = _attempt(cluster, what, _account(who, cluster))
    assert ("allowed" if done.returncode == 0 else "refused") == outcome, \
        done.stdout + done.stderr
    assert says in done.stderr, done.stderr


@AS_ROOT
def test_the_runs_password_is_on_no_command_line(cluster):
    """Scenario: read the command line of every process on the machine (as ``ps`` shows
    them to every local account) while the run's servers are up.

    Outcome: the run's password is in none of them.
    """
    showing = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if cluster.password.encode() in (entry / "cmdline").read_bytes():
                    showing.append(entry.name)
            except OSError:
                continue  # gone meanwhile
    assert showing == [], "processes showing the run's password to everyone"


# --------------------------------------------------------------------------- --dsn, kept whole


@pytest.fixture
def dsn(target):
    """The DSN of the run's server, maintenance database postgres; the server has no SSL."""
    with psycopg2.connect(**target.info.params()) as conn:
        if one(conn, "show ssl") != "off":
            pytest.skip("the server speaks SSL: sslmode=require would connect")
    conn.close()
    return target.info.dsn(dbname="postgres")


def _try_open_target(dsn: str) -> tuple[int, str]:
    try:
        with open_target(dsn):
            return 0, ""
    except ServerError as error:
        return 1, str(error)


def _try_command(command, argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    status = command(argv, out=out, err=err)
    return status, err.getvalue()


def _try_play(dsn: str, capsys) -> tuple[int, str]:
    # on a port already taken: should it log in after all, it stops instead of serving
    with socket.create_server(("127.0.0.1", 0)) as taken:
        status = play_command(["--dsn", dsn, "--port", str(taken.getsockname()[1])])
    return status, capsys.readouterr().err


SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "dirty_write.sql"
SPEC_TEXT = 'setup { create table t (x int); }\nteardown { drop table t; }\n' \
            'session s1\nstep r { select 1; }\npermutation r\n'


@pytest.mark.parametrize("how", [
    pytest.param("open_target", id="open_target"),
    pytest.param("run", id="run"),
    pytest.param("spec", id="spec"),
    pytest.param("report", id="report"),
    pytest.param("play", id="play"),
])
def test_sslmode_require_is_kept_and_refused_by_a_server_without_ssl(dsn, how, tmp_path,
                                                                     capsys):
    """Scenario: each command (and the suite's open_target) is given the run's server's
    DSN plus ``sslmode=require``; that server has no SSL.

    Outcome: each fails to connect, saying that the server does not support SSL: the
    demand reached libpq (dropped, libpq's default ``prefer`` would have logged in in
    clear text). Exit status 1 for the commands.
    """
    demanding = f"{dsn} sslmode=require"
    spec = tmp_path / "one.spec"
    spec.write_text(SPEC_TEXT)
    tries = {
        "open_target": lambda: _try_open_target(demanding),
        "run": lambda: _try_command(run_command, [str(SCRIPT), "--dsn", demanding]),
        "spec": lambda: _try_command(spec_command, [str(spec), "--dsn", demanding]),
        "report": lambda: _try_command(report_command, ["--dsn", demanding]),
        "play": lambda: _try_play(demanding, capsys),
    }
    status, message = tries[how]()
    assert status == 1, message
    assert "server does not support SSL, but SSL was required" in message


def _own_settings(conn) -> tuple[str, str, str]:
    return (one(conn, "show application_name"), one(conn, "show work_mem"),
            one(conn, "show search_path"))


def test_parameters_given_in_the_dsn_reach_the_server(dsn, target):
    """Scenario: open_target on the run's server's DSN plus ``application_name`` and
    ``options='-c work_mem=1234kB'``; log in with what it gives, and through a place's
    connection factory (which adds a search_path of its own to the options).

    Outcome: the server shows the application_name and work_mem asked for, in both
    sessions; the place's session has its schema first as well.
    """
    given = f"{dsn} application_name=acid_lab_given options='-c work_mem=1234kB'"
    with open_target(given) as opened:
        plain = psycopg2.connect(**opened.info.params())
        try:
            assert _own_settings(plain)[:2] == ("acid_lab_given", "1234kB")
        finally:
            plain.close()
        place = ConnectionFactory(opened.info, "pg_catalog")
        try:
            assert _own_settings(place()) == ("acid_lab_given", "1234kB", "pg_catalog")
        finally:
            place.close_all()


def test_run_passes_the_dsn_on_whole(dsn, tmp_path):
    """Scenario: ``python -m acid_lab run`` a script whose session reads its
    application_name and work_mem, both given in --dsn (the script's schema is added to
    the DSN's options).

    Outcome: the session shows both: the DSN reached it whole.
    """
    script = tmp_path / "show.sql"
    script.write_text("select current_setting('application_name'), "
                      "current_setting('work_mem'); -- T1\n")
    out, err = io.StringIO(), io.StringIO()
    given = f"{dsn} application_name=acid_lab_run options='-c work_mem=1234kB'"
    status = run_command([str(script), "--dsn", given, "--json"], out=out, err=err)
    assert status == 0, err.getvalue()
    assert json.loads(out.getvalue())["scripts"][0]["steps"][0]["rows"] == \
        [["acid_lab_run", "1234kB"]]


@pytest.mark.parametrize("how", [
    pytest.param("PGPASSWORD", id="pgpassword"),
    pytest.param("passfile", id="passfile"),
    pytest.param("service", id="service-file"),
])
def test_the_password_need_not_be_on_the_command_line(target, how, tmp_path, monkeypatch):
    """Scenario: the suite's check of a --dsn (the parser every command uses, then one
    login) with a DSN that has no password (or, with a service file, nothing but
    ``service=``), the password given the ways libpq reads it: $PGPASSWORD, a password
    file (``passfile=``), a service file ($PGSERVICEFILE).

    Outcome: it logs in each way: libpq's own defaults are left to libpq, never
    overridden by ours (a dropped ``passfile`` or ``service`` fails: no password).
    """
    if not target.managed:
        pytest.skip("needs the password of a server the suite started")
    info = target.info
    monkeypatch.delenv("PGPASSWORD", raising=False)
    no_password = info.dsn(password=None, dbname="postgres")
    if how == "PGPASSWORD":
        monkeypatch.setenv("PGPASSWORD", info.password)
        dsn = no_password
    elif how == "passfile":
        passfile = tmp_path / "pgpass"
        passfile.write_text(f"{info.host}:{info.port}:*:{info.user}:{info.password}\n")
        passfile.chmod(0o600)
        dsn = f"{no_password} passfile={passfile}"
    else:
        services = tmp_path / "services"
        services.write_text(f"[acid_lab_run]\nhost={info.host}\nport={info.port}\n"
                            f"user={info.user}\npassword={info.password}\ndbname=postgres\n")
        monkeypatch.setenv("PGSERVICEFILE", str(services))
        dsn = "service=acid_lab_run"
    assert check_reachable(parse_dsn(dsn)) == target.version
