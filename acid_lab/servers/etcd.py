"""etcd, the store Patroni keeps its leader key in: one member, in a namespace of its own.

Debian's ``etcd-server`` package provides the program. It runs as the server's account,
from its own folder, and is ready once its /health endpoint says so.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

from acid_lab.servers.guard import as_account
from acid_lab.servers.network import inside

CLIENT_PORT = 2379
PEER_PORT = 2380
REQUEST_TIMEOUT = 2


def etcd_missing() -> str | None:
    """Why etcd cannot run here (None: it can)."""
    if shutil.which("etcd") is None:
        return "install etcd-server (apt-get install etcd-server)"
    return None


class Etcd:
    """One etcd member at ``address`` in ``namespace``, keeping its data in ``folder``."""

    def __init__(self, folder: Path, namespace: str, address: str,
                 account: tuple[int, int] | None, clients: str):
        self.folder = folder
        self.clients = clients  # the namespace our requests come from
        self.namespace = namespace
        self.address = address
        self.account = account
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.address}:{CLIENT_PORT}"

    def start(self) -> None:
        peer = f"http://127.0.0.1:{PEER_PORT}"  # alone: its peer address stays inside its namespace
        command = [shutil.which("etcd"), "--name", "etcd", "--data-dir", str(self.folder / "data"),
                   "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                   "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                   "--initial-cluster", f"etcd={peer}", "--initial-cluster-state", "new",
                   "--logger", "zap", "--log-level", "warn"]
        with open(self.folder / "etcd.log", "ab") as log, inside(self.namespace):
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.folder, start_new_session=True,
                                            **as_account(self.account))

    def healthy(self) -> bool:
        try:
            return self._get("/health").get("health") == "true"
        except OSError:
            return False

    def value(self, key: str) -> str | None:
        """A key's value (etcd's v3 API through its JSON gateway), None when absent."""
        body = json.dumps({"key": base64.b64encode(key.encode()).decode()}).encode()
        answer = self._request("/v3/kv/range", body)
        kvs = answer.get("kvs") or []
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else None

    def _get(self, path: str) -> dict:
        return self._request(path, None)

    def _request(self, path: str, body: bytes | None) -> dict:
        with inside(self.clients), urllib.request.urlopen(self.url + path, data=body,
                                    timeout=REQUEST_TIMEOUT) as answer:
            return json.loads(answer.read())
