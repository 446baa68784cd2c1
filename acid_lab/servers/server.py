"""Moved (issue 20): the names other packages import from here, until phase 2."""

from acid_lab.servers import ServerError  # noqa: F401 moved (issue 20)
from acid_lab.servers.accounts import ensure_server_account as server_account  # noqa: F401 moved (issue 20)
from acid_lab.servers.binaries import Binaries, find_binaries  # noqa: F401 moved (issue 20)
from acid_lab.servers.cluster import START_TIMEOUT, Cluster  # noqa: F401 moved (issue 20)
from acid_lab.servers.connections import ConnectionInfo  # noqa: F401 moved (issue 20)
from acid_lab.servers.crashable import SLOW_WAL_WRITER, CrashableCluster  # noqa: F401 moved (issue 20)
from acid_lab.servers.queries import server_version  # noqa: F401 moved (issue 20)
