"""A Patroni cluster on etcd, started by the suite: three PostgreSQL nodes, each run by
Patroni, each on a machine of its own (a network namespace), and the faults an HA setup
meets: a crashed PostgreSQL, a crashed Patroni, a machine lost, a machine frozen, a
partition that drops packets.

As root, Patroni runs as the server's account (it starts PostgreSQL itself), from the
venv of :mod:`acid_lab.servers.patroni_setup`. Patroni's own settings are the ones it
documents (``ttl``, ``loop_wait``, ``retry_timeout``, ``maximum_lag_on_failover``,
``primary_start_timeout``, ``synchronous_mode``, ``synchronous_mode_strict``,
``failsafe_mode``, ``postgresql.use_pg_rewind``). Every wait asks Patroni's REST API,
etcd or PostgreSQL, up to a bound. A guard process (:mod:`acid_lab.servers.ha_guard`)
ends everything, namespaces included, however this process ends.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import psycopg2

from acid_lab.servers.accounts import ensure_server_account as server_account
from acid_lab.servers.binaries import find_binaries
from acid_lab.servers.connections import ConnectionInfo
from acid_lab.servers.etcd import Etcd, etcd_missing
from acid_lab.servers.guard import as_account, release_shared_memory, shared_memory_of
from acid_lab.servers.network import CLIENTS, Network, inside, network_missing
from acid_lab.servers.patroni_setup import patroni_home, patroni_installed, patroni_program
from acid_lab.servers.templates import in_memory

SCOPE = "acid_lab"
SUPERUSER = "acid_lab"
REPLICATOR = "replicator"
PG_PORT = 5432
API_PORT = 8008
REQUEST_TIMEOUT = 2
SWITCHOVER_BOUND = 60
START_BOUND = 90  # seconds for three nodes to bootstrap, clone and stream
HA_GUARD = Path(__file__).with_name("ha_guard.py")  # run as a script (standard library only)
CLUSTER_ROOM = 512 * 2**20  # bytes: three data folders, their WAL, etcd's
POLL = 0.2  # seconds between two looks at the REST API / etcd

# Patroni's documented defaults, but the shortest loop it allows: decisions come sooner
DEFAULT_SETTINGS = {
    "ttl": 20,  # the least Patroni accepts
    "loop_wait": 1,
    "retry_timeout": 5,
    "maximum_lag_on_failover": 1048576,
    "primary_start_timeout": 300,
    "synchronous_mode": False,
    "synchronous_mode_strict": False,
    "failsafe_mode": False,
}
PARAMETERS = {
    "max_connections": 50,
    "shared_buffers": "16MB",
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "wal_keep_size": "64MB",
    "lc_messages": "C",
    "password_encryption": "scram-sha-256",
}


def ha_missing() -> str | None:
    """Why the HA chapter cannot run here, as one line saying what to do (None: it can)."""
    for missing in (network_missing(), etcd_missing()):
        if missing:
            return missing
    if not patroni_installed():
        return (f"install Patroni: `python -m acid_lab.servers.patroni_setup` "
                f"(`make test` runs it; it makes {patroni_home()})")
    return None


_ABANDONED = threading.Event()  # the run is ending: every wait gives up at once


def abandon_waits() -> None:
    """Make every cluster's wait (in any thread) fail at once: the run is ending (Ctrl-C),
    and the clusters are to be closed rather than waited for."""
    _ABANDONED.set()


class ClusterError(RuntimeError):
    """The cluster did not do what was waited for; the message says what, with the logs."""


@dataclass
class Node:
    """One machine: its namespace, address, folder, and the Patroni that runs PostgreSQL."""

    name: str
    namespace: str
    address: str
    folder: Path
    patroni: subprocess.Popen | None = None
    frozen: list[int] = field(default_factory=list)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "patroni.log"

    def postmaster_pid(self) -> int | None:
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            process = psutil.Process(pid)
            if str(self.data) in " ".join(process.cmdline()):
                return pid
        except (OSError, ValueError, IndexError, psutil.Error):
            pass
        return None

    def processes(self) -> list[psutil.Process]:
        """Patroni, the postmaster and its children (those alive)."""
        found = []
        for pid in (self.patroni and self.patroni.pid, self.postmaster_pid()):
            with contextlib.suppress(psutil.Error, TypeError):
                process = psutil.Process(pid)
                found += [process, *process.children(recursive=True)]
        unique = {process.pid: process for process in found}
        return list(unique.values())


class PatroniCluster:
    """etcd and ``size`` Patroni nodes; ``settings`` override DEFAULT_SETTINGS.

    Used as a context manager: started on entry, everything ended and removed on exit.
    """

    def __init__(self, size: int = 3, **settings):
        unknown = set(settings) - set(DEFAULT_SETTINGS) - {"use_pg_rewind"}
        if unknown:
            raise ValueError(f"not a Patroni setting of ours: {sorted(unknown)}")
        self.use_pg_rewind = settings.pop("use_pg_rewind", True)
        self.settings = {**DEFAULT_SETTINGS, **settings}
        self.size = size
        self.password = secrets.token_urlsafe(18)
        self.replication_password = secrets.token_urlsafe(18)
        self.api_password = secrets.token_urlsafe(18)
        self.nodes: list[Node] = []
        self.network: Network | None = None
        self.etcd: Etcd | None = None
        self.workdir: Path | None = None
        self._guard: subprocess.Popen | None = None
        self._sessions: dict[str, psycopg2.extensions.connection] = {}

    # -- life cycle

    def __enter__(self) -> PatroniCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        missing = ha_missing()
        if missing:
            raise ClusterError(missing)
        account = server_account()
        self.account = (account.uid, account.gid)
        self.bindir = find_binaries().bindir
        self.workdir = Path(tempfile.mkdtemp(prefix="acid_lab-ha-", dir=_memory_folder()))
        os.chown(self.workdir, 0, account.gid)
        os.chmod(self.workdir, stat.S_IRWXU | stat.S_IXGRP)
        machines = ["etcd"] + [f"n{number}" for number in range(1, self.size + 1)]
        self.network = Network(machines)
        self._guard = subprocess.Popen(
            [sys.executable, "-S", str(HA_GUARD), str(self.workdir), str(account.uid),
             self.network.prefix], stdin=subprocess.PIPE, start_new_session=True)
        self.network.create()
        self.etcd = Etcd(self._own_folder("etcd"), self.network.namespace("etcd"),
                         self.network.addresses["etcd"], self.account, self.network.hub)
        self.etcd.start()
        self._until(self.etcd.healthy, 30, "etcd to be healthy")
        for name in machines[1:]:
            node = Node(name, self.network.namespace(name), self.network.addresses[name],
                        self._own_folder(name))
            self._write_configuration(node)
            self.nodes.append(node)
        for node in self.nodes:
            self.start_patroni(node)
        self.wait_until_healthy()

    def close(self) -> None:
        """End everything (the guard does it: processes, namespaces, folder)."""
        for conn in self._sessions.values():
            with contextlib.suppress(psycopg2.Error):
                conn.close()
        self._sessions.clear()
        if self._guard is not None:
            self._guard.stdin.close()
            self._guard.wait(timeout=120)
            self._guard = None
        for node in self.nodes:
            if node.patroni is not None and node.patroni.poll() is None:
                node.patroni.wait(timeout=30)

    def _own_folder(self, name: str) -> Path:
        folder = self.workdir / name
        folder.mkdir(mode=stat.S_IRWXU)
        os.chown(folder, *self.account)
        return folder

    # -- configuration

    def _write_configuration(self, node: Node) -> None:
        dcs = {key: value for key, value in self.settings.items()}
        dcs["postgresql"] = {"use_pg_rewind": self.use_pg_rewind, "use_slots": True,
                             "parameters": PARAMETERS}
        subnet = f"{CLIENTS.rsplit('.', 1)[0]}.0/24"
        configuration = {
            "scope": SCOPE,
            "name": node.name,
            "log": {"level": "INFO"},
            "restapi": {"listen": f"{node.address}:{API_PORT}",
                        "connect_address": f"{node.address}:{API_PORT}",
                        "authentication": {"username": "patroni",
                                           "password": self.api_password}},
            "etcd3": {"hosts": [f"{self.etcd.address}:2379"]},
            "bootstrap": {"dcs": dcs, "initdb": [{"encoding": "UTF8"}, "no-sync"]},
            "postgresql": {
                "listen": f"{node.address}:{PG_PORT}",
                "connect_address": f"{node.address}:{PG_PORT}",
                "data_dir": str(node.data),
                "bin_dir": str(self.bindir),
                "pgpass": str(node.folder / "pgpass"),
                "authentication": {
                    "superuser": {"username": SUPERUSER, "password": self.password},
                    "replication": {"username": REPLICATOR,
                                    "password": self.replication_password},
                    "rewind": {"username": SUPERUSER, "password": self.password},
                },
                "parameters": {"unix_socket_directories": str(node.folder)},
                "pg_hba": ["local all all scram-sha-256",
                           f"host all all {subnet} scram-sha-256",
                           f"host replication {REPLICATOR} {subnet} scram-sha-256"],
            },
        }
        path = node.folder / "patroni.yml"
        # JSON is YAML; the file holds passwords: the account's alone
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            os.fchown(out.fileno(), *self.account)
            json.dump(configuration, out, indent=1)

    # -- processes

    def start_patroni(self, node: Node) -> None:
        """Start (again) the node's Patroni, inside its machine, as the server's account."""
        command = [str(patroni_home() / "bin" / "python"), str(patroni_program()),
                   str(node.folder / "patroni.yml")]
        with open(node.log, "ab") as log, inside(node.namespace):
            node.patroni = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=node.folder, start_new_session=True,
                                            **as_account(self.account))

    # -- what Patroni says

    def api(self, node: Node, path: str = "/patroni", method: str = "GET",
            body: dict | None = None, timeout: float = REQUEST_TIMEOUT) -> tuple[int, dict]:
        """A request to the node's REST API: (HTTP status, JSON answer)."""
        request = urllib.request.Request(
            f"http://{node.address}:{API_PORT}{path}", method=method,
            data=None if body is None else json.dumps(body).encode())
        if method != "GET":
            token = base64.b64encode(f"patroni:{self.api_password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with inside(self.network.hub):
            try:
                with urllib.request.urlopen(request, timeout=timeout) as answer:
                    return answer.status, _json(answer.read())
            except urllib.error.HTTPError as error:
                return error.code, _json(error.read())

    def members(self) -> list[dict]:
        """The cluster as etcd holds it (Patroni's /cluster, asked of any node that answers)."""
        for node in self.nodes:
            with contextlib.suppress(OSError):
                return self.api(node, "/cluster")[1].get("members", [])
        return []

    def leader(self) -> Node | None:
        """The node etcd's leader key names, once its Patroni says its PostgreSQL runs as
        the primary. (etcd itself: a member cut off from etcd still shows its old view.)"""
        name = self.etcd.value(f"/service/{SCOPE}/leader")
        if name is None or name not in {node.name for node in self.nodes}:
            return None
        node = self.node(name)
        status, answer = self.api(node)
        if status == 200 and answer.get("role") == "primary" and answer.get("state") == "running":
            return node
        return None

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def replicas(self) -> list[Node]:
        leader = self.leader()
        return [node for node in self.nodes if node is not leader]

    def healthy(self) -> bool:
        """One leader running, every replica streaming, and in synchronous mode a
        synchronous standby named in etcd (until then no replica may be promoted)."""
        members = self.members()
        roles = [member.get("role") for member in members]
        return (len(members) == self.size
                and sum(m.get("role") == "leader" and m.get("state") == "running"
                        for m in members) == 1
                and all(m.get("state") == "streaming" for m in members
                        if m.get("role") != "leader")
                and (not self.settings["synchronous_mode"] or "sync_standby" in roles))

    def wait_until_healthy(self, bound: float = START_BOUND) -> Node:
        self._until(self.healthy, bound, "a leader and every replica streaming")
        return self.leader()

    def wait_for_new_leader(self, old: Node, bound: float) -> Node:
        """The node that leads once another than ``old`` does (etcd's leader key, its
        PostgreSQL running as primary)."""
        def new_leader():
            leader = self.leader()
            return leader if leader is not None and leader is not old else None
        return self._until(new_leader, bound, f"a leader other than {old.name}")

    def _until(self, condition, bound: float, what: str):
        deadline = time.monotonic() + bound
        while True:
            with contextlib.suppress(OSError, psycopg2.Error):  # not up (yet, again)
                result = condition()
                if result:
                    return result
            if _ABANDONED.is_set():
                raise ClusterError(f"abandoned while waiting for {what}: the run is ending")
            if time.monotonic() > deadline:
                raise ClusterError(f"waited {bound} s for {what}; members: {self.members()}"
                                   f"\n{self.log_tails()}")
            time.sleep(POLL)  # sleep-ok: polling Patroni's REST API / etcd between two looks

    def log_tails(self, lines: int = 8) -> str:
        tails = []
        for node in self.nodes:
            with contextlib.suppress(OSError):
                text = node.log.read_text(errors="replace").splitlines()[-lines:]
                tails.append(f"--- {node.name}:\n" + "\n".join(text))
        return "\n".join(tails)

    # -- clients

    def info(self, node: Node, dbname: str = "postgres") -> ConnectionInfo:
        return ConnectionInfo(node.address, PG_PORT, SUPERUSER, self.password, dbname)

    def connect(self, node: Node, autocommit: bool = True, **params):
        """A psycopg2 session to the node's PostgreSQL (from the clients' address)."""
        with inside(self.network.hub):
            conn = psycopg2.connect(**self.info(node).params(connect_timeout=5, **params))
        conn.autocommit = autocommit
        return conn

    def query(self, node: Node, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of a query on the node, over a session kept for such questions (a new
        session per look would cost a login, scram included, each time: polls ask often).
        A broken session is dropped and the error raised: the next look opens another."""
        conn = self._sessions.get(node.name)
        if conn is None or conn.closed:
            conn = self._sessions[node.name] = self.connect(node)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        except psycopg2.Error:
            del self._sessions[node.name]
            with contextlib.suppress(psycopg2.Error):
                conn.close()
            raise

    # -- operations

    def switchover(self, candidate: Node) -> Node:
        """Patroni's switchover to ``candidate``; returns once it leads."""
        old = self.leader()
        # Patroni answers once the switchover is done (or failed)
        status, answer = self.api(old, "/switchover", "POST",
                                  {"leader": old.name, "candidate": candidate.name},
                                  timeout=SWITCHOVER_BOUND)
        if status != 200:
            raise ClusterError(f"switchover refused ({status}): {answer}")
        return self.wait_for_new_leader(old, SWITCHOVER_BOUND)

    # -- faults

    def kill_postgres(self, node: Node) -> None:
        """SIGKILL the node's postmaster and its children (Patroni lives on)."""
        pid = node.postmaster_pid()
        if pid is None:
            raise ClusterError(f"{node.name} runs no PostgreSQL")
        self._kill(_family(pid))

    def kill_patroni(self, node: Node) -> None:
        """SIGKILL the node's Patroni alone (its PostgreSQL goes on running)."""
        self._kill([psutil.Process(node.patroni.pid)])

    def lose_machine(self, node: Node) -> None:
        """The machine lost: its link down, then Patroni and PostgreSQL SIGKILLed together.
        (Unplugged first: WAL still queued in its kernel must not reach anyone later.)"""
        self.network.unplug(node.name)
        self._kill(node.processes())

    def restore_machine(self, node: Node) -> None:
        """The lost machine back: its link up, its Patroni started; Patroni makes its
        PostgreSQL a replica of the new leader (pg_rewind first, if it diverged)."""
        self.network.plug(node.name)
        self.start_patroni(node)

    def freeze(self, node: Node) -> None:
        """SIGSTOP every process of the node (a VM paused); ``thaw`` goes on."""
        processes = node.processes()
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.send_signal(signal.SIGSTOP)
        node.frozen = [process.pid for process in processes]

    def freeze_patroni(self, node: Node) -> None:
        """SIGSTOP the node's Patroni alone (a stalled agent; its PostgreSQL runs on,
        still the primary if it was: nothing demotes it while Patroni sleeps)."""
        os.kill(node.patroni.pid, signal.SIGSTOP)
        node.frozen = [node.patroni.pid]

    def thaw(self, node: Node) -> None:
        for pid in node.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        node.frozen = []

    def _kill(self, processes: list[psutil.Process]) -> None:
        for process in processes:  # frozen first: nothing forks or restarts meanwhile
            with contextlib.suppress(psutil.Error):
                process.send_signal(signal.SIGSTOP)
        memory = shared_memory_of([process.pid for process in processes])
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.send_signal(signal.SIGKILL)
        psutil.wait_procs(processes, timeout=30)
        for node in self.nodes:
            if node.patroni is not None:
                node.patroni.poll()  # reaped, if it was one of them
        release_shared_memory(memory)


def _memory_folder() -> str | None:
    """In memory (a tmpfs) unless $TMPDIR says where temporary files go: etcd syncs its log
    at every write (each member's key, every loop) and the servers theirs; this chapter
    shows failovers, not what reaches a disk."""
    return None if os.environ.get("TMPDIR") else in_memory(room=CLUSTER_ROOM)


def _family(pid: int) -> list[psutil.Process]:
    process = psutil.Process(pid)
    return [process, *process.children(recursive=True)]


def _json(raw: bytes) -> dict:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
