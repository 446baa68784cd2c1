"""Failure injection: make a transaction fail at a chosen point, for real.

The tools, from the gentlest failure to the harshest:

* ``InjectedFailure`` — the exception a test raises in Python between two
  statements (the application crashes, the database is fine).
* ``terminate_backend(via, pid)`` — another session asks the server to end the
  server process serving ``pid`` (``pg_terminate_backend``), then waits, asking
  the server, until that process is gone.
* ``ClientProcess`` — a real client program in a child process
  (``python -m acid_lab.lessons.client``) that runs one statement per request and
  reports after each; the test can SIGKILL it at any point and reap it.
* ``wait_until_blocked(via, pid)`` / ``wait_for_backend_exit(via, pid)`` —
  bounded waits that ask the server, never sleep in the client: they order a
  test's steps around a failure.

``via`` is always a connection of the test's own, best an autocommit one (the
``observer``): waits run as one server-side statement and raise
``FaultTimeout`` with a clear message when their bound passes. Crashing the
whole server lives on ``acid_lab.servers.crashable.CrashableCluster.crash()``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import psycopg2
from psycopg2 import errors, sql

from acid_lab.engine.postgres import POSTGRES
from acid_lab.servers.connections import CONNECT_TIMEOUT

WAIT_TIMEOUT = 10.0   # seconds; every wait below is bounded by this unless told otherwise
POLL_INTERVAL = 0.002  # seconds between two looks inside the server-side wait loop


class InjectedFailure(Exception):
    """Raised by a test between two statements: the client fails, not the database."""


class FaultTimeout(AssertionError):
    """A bounded wait of the failure-injection tools ran out."""


# --------------------------------------------------------------------------- server-side waits


def _wait_on_server(via, condition: sql.Composable, timeout: float, what: str) -> None:
    """Loop inside the server (one statement) until ``condition`` holds; bounded by ``timeout``.

    The loop refreshes the statistics snapshot each turn, so pg_stat_activity is
    read fresh even when ``via`` is inside a transaction.
    """
    body = sql.SQL("""
        do $wait$
        declare deadline timestamptz := clock_timestamp() + {timeout} * interval '1 second';
        begin
          perform pg_stat_clear_snapshot();
          while not ({condition}) loop
            if clock_timestamp() > deadline then
              raise exception 'acid_lab wait timed out' using errcode = 'AL001';
            end if;
            perform pg_sleep({poll});
            perform pg_stat_clear_snapshot();
          end loop;
        end
        $wait$""").format(timeout=sql.Literal(timeout), condition=condition,
                          poll=sql.Literal(POLL_INTERVAL))
    try:
        with via.cursor() as cur:
            cur.execute(body)
    except psycopg2.Error as error:
        if error.pgcode == "AL001":
            raise FaultTimeout(f"waited {timeout:g} s, asking the server, for {what}") from None
        raise


def wait_for_backend_exit(via, pid: int, timeout: float = WAIT_TIMEOUT) -> None:
    """Return once server process ``pid`` is gone from pg_stat_activity (bounded)."""
    _wait_on_server(
        via,
        sql.SQL("not exists (select from pg_stat_activity where pid = {})").format(
            sql.Literal(pid)),
        timeout, f"server process {pid} to exit")


def wait_until_blocked(via, pid: int, timeout: float = WAIT_TIMEOUT) -> list[int]:
    """Return, once server process ``pid`` waits for a lock, the pids it waits for (bounded)."""
    _wait_on_server(via, POSTGRES.waits_for_a_lock(pid), timeout,
                    f"server process {pid} to wait for a lock")
    with via.cursor() as cur:
        return POSTGRES.blocking_pids(cur, pid)


def terminate_backend(via, pid: int, timeout: float = WAIT_TIMEOUT) -> None:
    """End the server process ``pid`` from another session and wait until it is gone.

    The server rolls back whatever transaction that process had open; its
    client finds out at its next request (``errors.AdminShutdown``, 57P01, or
    a closed connection). Needs the same role as ``pid``'s session or
    pg_signal_backend.
    """
    with via.cursor() as cur:
        cur.execute("select pg_terminate_backend(%s)", (pid,))
        if not cur.fetchone()[0]:
            raise FaultTimeout(f"server process {pid} could not be signalled (already gone?)")
    wait_for_backend_exit(via, pid, timeout)


# --------------------------------------------------------------------------- a client process


@dataclass
class StatementReport:
    """What the child client reported after one statement."""

    index: int                 # 1 for the first statement the client ran
    sql: str
    status: str                # "ok" or "error"
    sqlstate: str | None
    error: str | None
    rows: list | None
    transaction: str           # after the statement: "idle", "in transaction", "failed"

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class ClientProcess:
    """A real client program in a child process, one statement per request.

    Usage::

        with ClientProcess(connect.dsn()) as client:      # started, connected
            client.execute("begin")
            client.execute("update test set value = 0 where id = 1")
            client.kill()                                 # SIGKILL, reaped
        wait_for_backend_exit(observer, client.backend_pid)

    The child runs in autocommit mode: the statements carry their own
    ``begin``/``commit``. ``execute`` waits (bounded) for the report of one
    statement; ``send`` only sends it (for a statement that will block, or be
    killed while it runs) and ``wait_report`` collects its report later. The
    process never outlives the ``with`` block: ``close()`` kills and reaps it.
    """

    def __init__(self, dsn: str, timeout: float = WAIT_TIMEOUT):
        self.dsn = dsn
        self.timeout = timeout
        self.backend_pid: int | None = None   # the server process serving this client
        self.returncode: int | None = None    # set once reaped: 0 after quit(), -9 after kill()
        self.stderr = ""
        self._process: subprocess.Popen | None = None
        self._buffer = b""
        self._pending = 0

    # -- life cycle

    def start(self) -> ClientProcess:
        """Spawn the child and wait (bounded) until it has connected."""
        self._process = subprocess.Popen(
            [sys.executable, "-m", "acid_lab.lessons.client"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._write({"dsn": self.dsn})
        message = self._read_message("the client to connect")
        self.backend_pid = message["backend_pid"]
        return self

    def __enter__(self) -> ClientProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self._process is not None and self.returncode is None

    def kill(self) -> int:
        """SIGKILL the client now, wherever it is, and reap it; returns its exit status (-9)."""
        if self.alive and self._process.poll() is None:
            self._process.kill()
        return self._reap()

    def quit(self) -> int:
        """Let the client close its connection cleanly and exit; returns its exit status (0)."""
        if self.alive:
            self._write({"quit": True})
        return self._reap()

    def close(self) -> None:
        """Kill and reap the child if it still runs; idempotent."""
        if self.alive:
            self.kill()

    # -- statements

    def send(self, statement: str) -> None:
        """Send one statement without waiting for its report."""
        self._write({"sql": statement})
        self._pending += 1

    def wait_report(self) -> StatementReport:
        """The report of the oldest statement sent and not yet reported (bounded wait)."""
        if not self._pending:
            raise RuntimeError("no statement is waiting for its report")
        message = self._read_message("the client's report")
        self._pending -= 1
        message.pop("event")
        return StatementReport(**message)

    def execute(self, statement: str) -> StatementReport:
        """Run one statement in the child and return its report (SQL errors included)."""
        self.send(statement)
        return self.wait_report()

    def run(self, statements: list[str]) -> list[StatementReport]:
        """Run statements one after another; returns their reports."""
        return [self.execute(statement) for statement in statements]

    # -- pipes

    def _write(self, message: dict) -> None:
        self._process.stdin.write((json.dumps(message) + "\n").encode())
        self._process.stdin.flush()

    def _read_message(self, what: str) -> dict:
        deadline = time.monotonic() + self.timeout
        stdout = self._process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([stdout], [], [], max(remaining, 0))
            if not ready:
                self.kill()
                raise FaultTimeout(f"waited {self.timeout:g} s for {what}")
            chunk = os.read(stdout, 65536)
            if not chunk:
                status = self._reap()
                raise RuntimeError(f"the client exited ({status}) before {what}: "
                                   f"{self.stderr.strip()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def _reap(self) -> int:
        if not self.alive:
            return self.returncode
        process = self._process
        with contextlib.suppress(OSError):
            process.stdin.close()
        try:
            process.wait(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            process.kill()  # it would not quit; it is ours, so end it
            process.wait(timeout=self.timeout)
        self.stderr = process.stderr.read().decode(errors="replace")
        process.stdout.close()
        process.stderr.close()
        self.returncode = process.returncode
        return self.returncode


CONNECTION_LOST = (errors.AdminShutdown, psycopg2.OperationalError, psycopg2.InterfaceError)
"""What a client may see when its server process was ended under it (for ``pytest.raises``)."""


# --------------------------------------------------------------------------- durability chapter
# (tools the durability chapter adds go below this line)


class AcknowledgedWriters:
    """Writer threads that commit one row per transaction and record what the server acknowledged.

    A commit is *acknowledged* once ``commit()`` has returned: the server said
    "done". When the server crashes, each writer's next request fails and the
    writer stops. The row it was busy with is then *in doubt* (COMMIT was sent,
    no answer came: it may or may not have committed) or *never committed*
    (the failure came before COMMIT was sent: it must not exist).

    Usage::

        writers = AcknowledgedWriters(dsn, "ledger", threads=4)  # table ledger(id bigint)
        with writers.running():
            writers.wait_until_acknowledged(100)   # bounded
            server.crash()                         # every writer stops on its next request
        server.restart()
        tally = writers.tally(present_ids)

    ``running()`` may be entered again after a restart; row ids never repeat.
    """

    def __init__(self, dsn: str, table: str, threads: int = 4, timeout: float = WAIT_TIMEOUT):
        self.dsn = dsn
        self.threads = threads
        self.timeout = timeout
        self.acknowledged: set[int] = set()
        self.in_doubt: set[int] = set()
        self.never_committed: set[int] = set()
        self.failures: list[BaseException] = []
        self._insert = sql.SQL("insert into {} (id) values (%s)").format(sql.Identifier(table))
        self._ids = itertools.count(1)
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._running = 0
        self._connected = 0

    @contextlib.contextmanager
    def running(self):
        """Start the writers; on leaving, tell them to stop and join them (bounded)."""
        self._stop.clear()
        workers = [threading.Thread(target=self._write, name=f"acid_lab-writer-{n}", daemon=True)
                   for n in range(self.threads)]
        with self._changed:
            self._running = len(workers)
            self._connected = 0
        for worker in workers:
            worker.start()
        try:
            self._wait_until_connected(len(workers))
            yield self
        finally:
            self._stop.set()  # writers whose server did not crash end after their transaction
            deadline = time.monotonic() + self.timeout
            for worker in workers:
                worker.join(max(deadline - time.monotonic(), 0))
            stuck = [worker.name for worker in workers if worker.is_alive()]
            if stuck:
                raise FaultTimeout(f"writer threads did not stop within {self.timeout:g} s: "
                                   f"{stuck}")
        if self.failures:
            raise RuntimeError(f"a writer failed unexpectedly: {self.failures[0]!r}") \
                from self.failures[0]

    def _wait_until_connected(self, count: int) -> None:
        """Every writer is connected and writing: the load is on before the test goes on."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._connected >= count or self._running < count, self.timeout)
            if self._connected < count:
                raise FaultTimeout(f"{self._connected} of {count} writers connected after "
                                   f"{self.timeout:g} s (failures: {self.failures!r})")

    def wait_until_acknowledged(self, count: int) -> None:
        """Return once at least ``count`` commits were acknowledged in all (bounded)."""
        with self._changed:
            self._changed.wait_for(
                lambda: len(self.acknowledged) >= count or self._running == 0, self.timeout)
            if len(self.acknowledged) < count:
                raise FaultTimeout(
                    f"{len(self.acknowledged)} of {count} commits acknowledged after "
                    f"{self.timeout:g} s ({self._running} writers running; "
                    f"failures: {self.failures!r})")

    def tally(self, present: set[int]) -> WriteTally:
        """Compare what the writers were told with the rows ``present`` after the crashes."""
        return WriteTally(
            acknowledged=len(self.acknowledged),
            lost=sorted(self.acknowledged - present),
            in_doubt=len(self.in_doubt),
            in_doubt_present=len(self.in_doubt & present),
            never_committed_present=sorted(self.never_committed & present),
        )

    def _write(self) -> None:
        failure = None
        try:
            self._write_until_stopped()
        except Exception as error:  # noqa: BLE001 - handed to the test by running()
            failure = error
        finally:
            self._finish(failure)

    def _write_until_stopped(self) -> None:
        conn = psycopg2.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT)
        with self._changed:
            self._connected += 1
            self._changed.notify_all()
        try:
            with conn.cursor() as cur:
                while not self._stop.is_set():
                    row_id = self._next_id()
                    try:
                        cur.execute(self._insert, (row_id,))
                    except CONNECTION_LOST:
                        self._record(self.never_committed, row_id)
                        return
                    try:
                        conn.commit()
                    except CONNECTION_LOST:
                        self._record(self.in_doubt, row_id)
                        return
                    self._record(self.acknowledged, row_id)
        finally:
            with contextlib.suppress(psycopg2.Error):
                conn.close()

    def _next_id(self) -> int:
        with self._changed:
            return next(self._ids)

    def _record(self, outcome: set[int], row_id: int) -> None:
        with self._changed:
            outcome.add(row_id)
            self._changed.notify_all()

    def _finish(self, failure: BaseException | None) -> None:
        with self._changed:
            if failure is not None:
                self.failures.append(failure)
            self._running -= 1
            self._changed.notify_all()


@dataclass(frozen=True)
class WriteTally:
    """What crashes did to the writes of ``AcknowledgedWriters``."""

    acknowledged: int                 # commits the server acknowledged
    lost: list[int]                   # acknowledged, yet missing afterwards: must be empty
    in_doubt: int                     # COMMIT sent, the crash came before the answer
    in_doubt_present: int             # ... of which committed after all
    never_committed_present: list[int]  # COMMIT never sent, yet present: must be empty

    def __str__(self) -> str:
        return (f"acknowledged commits: {self.acknowledged}, lost: {len(self.lost)}, "
                f"in doubt at the crashes: {self.in_doubt} ({self.in_doubt_present} present), "
                f"never committed yet present: {len(self.never_committed_present)}")


def wait_until_wal_writer_sleeps(via, timeout: float = WAIT_TIMEOUT) -> None:
    """Return once the WAL writer waits in its main loop (its first round is done; bounded).

    After that it writes WAL again only when its wal_writer_delay has passed,
    when it is woken, or when a full WAL page is waiting.
    """
    _wait_on_server(
        via,
        sql.SQL("exists (select from pg_stat_activity where backend_type = 'walwriter'"
                " and wait_event = 'WalWriterMain')"),
        timeout, "the WAL writer to sleep")
