"""A private network for an HA cluster: one network namespace per machine, joined by veth
links to a bridge, and partitions that drop packets (nftables), as Jepsen makes them.

Layout (root only: namespaces need CAP_SYS_ADMIN): a hub namespace holds a bridge and
the clients' address (this process's connections are made from inside it); every
machine (etcd, each PostgreSQL node) has a namespace of its own, with one veth link to
the bridge and one address. The same private addresses serve every cluster: each
cluster's namespaces are a world of their own, and no address exists anywhere else.

A partition is an nftables table in a machine's namespace that drops (not rejects)
every packet to and from the machines cut off: a peer's packets vanish, so TCP waits
and retries as it does when a cable is pulled, where a refused connection would tell
both sides at once. Deleting the namespaces deletes their links and tables with them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

NETNS_FOLDER = Path("/run/netns")  # where `ip netns add` mounts its namespaces
NAME_PREFIX = "acid_lab-"
SUBNET = "10.77.0"
CLIENTS = f"{SUBNET}.1"
CLONE_NEWNET = 0x40000000
TABLE = "acid_lab_partition"
COMMAND_TIMEOUT = 30


def network_missing() -> str | None:
    """Why a cluster's private network cannot be made here (None: it can)."""
    if os.geteuid() != 0:
        return "run as root: each node lives in a network namespace of its own"
    for program, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(program) is None:
            return f"install {package} (apt-get install {package})"
    return None


def _run(*command: str) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                          check=False)
    if done.returncode != 0:
        raise OSError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done.stdout


_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def inside(namespace: str) -> Iterator[None]:
    """Run this thread inside ``namespace`` meanwhile: sockets it opens and processes it
    starts belong there (setns() moves the calling thread only)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(NETNS_FOLDER / namespace, os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {namespace}")
        try:
            yield
        finally:
            if _libc.setns(own, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(target)
        os.close(own)


class Network:
    """The namespaces of one cluster: ``machines`` maps a machine's name to its address."""

    def __init__(self, machines: list[str]):
        self.prefix = f"{NAME_PREFIX}{os.getpid()}-{secrets.token_hex(3)}-"
        self.hub = self.prefix + "hub"
        self.addresses = {name: f"{SUBNET}.{10 + number}"
                          for number, name in enumerate(machines)}
        self.created: list[str] = []

    def namespace(self, machine: str) -> str:
        return self.prefix + machine

    def create(self) -> None:
        """The hub with its bridge, each machine's namespace, link and address."""
        self._add(self.hub)
        hub = ("ip", "-n", self.hub)
        _run(*hub, "link", "add", "br0", "type", "bridge")
        _run(*hub, "addr", "add", f"{CLIENTS}/24", "dev", "br0")
        _run(*hub, "link", "set", "br0", "up")
        _run(*hub, "link", "set", "lo", "up")
        for number, (machine, address) in enumerate(self.addresses.items()):
            namespace = self.namespace(machine)
            self._add(namespace)
            link = f"v{number}"
            _run(*hub, "link", "add", link, "type", "veth", "peer", "name", "eth0",
                 "netns", namespace)
            _run(*hub, "link", "set", link, "master", "br0", "up")
            _run("ip", "-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
            _run("ip", "-n", namespace, "link", "set", "eth0", "up")
            _run("ip", "-n", namespace, "link", "set", "lo", "up")

    def _add(self, namespace: str) -> None:
        _run("ip", "netns", "add", namespace)
        self.created.append(namespace)

    def remove(self) -> None:
        """Delete every namespace (their links and nftables tables go with them)."""
        remove_namespaces(self.prefix)
        self.created.clear()

    # -- partitions

    def cut_off(self, machine: str, *others: str) -> None:
        """Drop every packet between ``machine`` and ``others`` (both ways), from now on;
        the clients' address still reaches it."""
        peers = ", ".join(self.addresses[other] for other in others)
        rules = (f"table inet {TABLE} {{\n"
                 f"  chain input {{ type filter hook input priority 0; "
                 f"ip saddr {{ {peers} }} counter drop; }}\n"
                 f"  chain output {{ type filter hook output priority 0; "
                 f"ip daddr {{ {peers} }} counter drop; }}\n"
                 f"}}\n")
        subprocess.run(["ip", "netns", "exec", self.namespace(machine), "nft", "-f", "-"],
                       input=rules, text=True, check=True, capture_output=True,
                       timeout=COMMAND_TIMEOUT)

    def dropped(self, machine: str) -> int:
        """Packets the partition of ``machine`` has dropped so far (its rules' counters)."""
        out = _run("ip", "netns", "exec", self.namespace(machine), "nft", "list", "table",
                   "inet", TABLE)
        return sum(int(word.split()[1]) for word in out.split("counter")[1:])

    def unplug(self, machine: str) -> None:
        """Take the machine's link down: nothing more leaves it, not even what its kernel
        still holds to send for processes that are gone (a lost machine sends nothing)."""
        _run("ip", "-n", self.namespace(machine), "link", "set", "eth0", "down")

    def plug(self, machine: str) -> None:
        _run("ip", "-n", self.namespace(machine), "link", "set", "eth0", "up")

    def heal(self, machine: str) -> None:
        with contextlib.suppress(OSError):
            _run("ip", "netns", "exec", self.namespace(machine), "nft", "delete", "table",
                 "inet", TABLE)


def remove_namespaces(prefix: str) -> None:
    """Delete every namespace whose name starts with ``prefix`` (used by the guard too)."""
    with contextlib.suppress(OSError):
        for entry in NETNS_FOLDER.iterdir():
            if entry.name.startswith(prefix):
                subprocess.run(["ip", "netns", "delete", entry.name], capture_output=True,
                               timeout=COMMAND_TIMEOUT, check=False)
