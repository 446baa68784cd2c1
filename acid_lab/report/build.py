"""The ACID report, made: every cell and demonstration observed live, into one Report.

``python -m acid_lab report [--dsn DSN] [--json] [--out DIR]`` runs, on a
temporary server (or the one ``--dsn`` names):

* the isolation matrix: every anomaly of the isolation chapter's matrix
  (:func:`acid_lab.lessons.catalog.load_schedules`) at every isolation level, each
  cell decided by running that scenario now, in a fresh place of its own (the same
  scenario definitions the isolation tests run, so the report and the tests cannot
  drift apart);
* the atomicity, consistency and durability demonstrations of
  :mod:`acid_lab.report.demonstrations`, one line each with what they observed
  (durability needs a server the report starts itself: skipped with --dsn).

It prints a coloured matrix on a terminal (plain text otherwise), or with
``--json`` one JSON object::

    {"server_version": "15.18",
     "matrix": {"G0": {"read uncommitted": "prevented", ...}, ...},
     "demonstrations": [{"letter": "atomicity", "name": "...",
                         "outcome": "...", "ok": true}, ...]}

``--out DIR`` also writes the report as Markdown and as one self-contained
HTML page with every scenario's timeline (see :mod:`acid_lab.report.files`).

Exit status: 0 when the report was made (whatever it shows), 1 when it could
not be (no usable server, a scenario that could not finish), 2 for bad usage,
130 after Ctrl-C (once everything it started is stopped).
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg2
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from acid_lab.engine.scenario import LEVELS, ScenarioError, ScenarioRunner
from acid_lab.engine.workloads import WorkloadError
from acid_lab.lessons.catalog import (
    POSSIBLE,
    PREVENTED,
    Anomaly,
    Observation,
    load_schedules,
    observe,
)
from acid_lab.lessons.schema import HERMITAGE
from acid_lab.report import demonstrations, power_cuts, replication
from acid_lab.report.demonstrations import Shown
from acid_lab.report.histories import HISTORY_LEVELS, HistoryRow, check_histories
from acid_lab.report.replication import ReplicationRow
from acid_lab.servers import ServerError
from acid_lab.servers.connections import ConnectionFactory, ConnectionInfo
from acid_lab.servers.places import PlaceKeeper
from acid_lab.servers.target import Target, open_target

MARK = {PREVENTED: "✓", POSSIBLE: "✗"}
DEMO_MARK = {True: "✓", False: "✗", None: "–"}
# Scenarios run at once, each in its own place; measured in bench/bench_report.py.
WORKERS = 4
KEY_LINES = (f"{MARK[PREVENTED]} prevented: the scenario ran and the anomaly did not happen "
             "(the server made a session wait, aborted one, or kept its snapshot).",
             f"{MARK[POSSIBLE]} possible: the anomaly happened, just now, on this server.")
KEY = " ".join(KEY_LINES)


class ReportError(Exception):
    """The report cannot be made; the message is the one line to print."""


@dataclass
class Report:
    """Everything the report shows: the server, the matrix cells, the demonstrations."""

    server_version: str
    server: str                                  # which PostgreSQL, version and path
    observations: dict[tuple[str, str], Observation]   # (anomaly code, level) -> cell
    demonstrations: list[Shown]
    seconds: float = 0.0                         # wall time of the whole run
    made_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    histories: list[HistoryRow] = field(default_factory=list)  # one checked history a level
    histories_note: str = ""                     # why there are none, if there are none
    replication: list[ReplicationRow] = field(default_factory=list)  # one row a setting
    replication_note: str = ""                   # why there are none, if there are none

    anomalies: tuple[Anomaly, ...] = ()         # the matrix's columns, in order
    levels: tuple[str, ...] = LEVELS

    def cell(self, code: str, level: str) -> str:
        """"prevented" or "possible", as observed."""
        return self.observations[code, level].verdict

    def matrix(self) -> dict[str, dict[str, str]]:
        return {anomaly.code: {level: self.cell(anomaly.code, level) for level in self.levels}
                for anomaly in self.anomalies}

    def as_json(self) -> dict:
        """The object ``report --json`` prints."""
        return {"server_version": self.server_version,
                "matrix": self.matrix(),
                "demonstrations": [shown.as_json() for shown in self.demonstrations]}

    def summary(self) -> str:
        ran = sum(shown.ok is not None for shown in self.demonstrations)
        return (f"Observed live just now: {len(self.observations)} scenarios and {ran} "
                f"demonstrations in {self.seconds:.1f} s ({self.made_at:%Y-%m-%d %H:%M} UTC).")


# --------------------------------------------------------------------------- making it


class _Progress:
    """Named progress tasks; shown with rich on a terminal, silent elsewhere."""

    def __init__(self, progress: Progress | None):
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def add(self, name: str, total: int) -> None:
        if self.progress is not None:
            self.tasks[name] = self.progress.add_task(name, total=total)

    def advance(self, name: str) -> None:
        if self.progress is not None:
            self.progress.advance(self.tasks[name])


@contextlib.contextmanager
def _progress_display(console: Console | None) -> Iterator[_Progress]:
    if console is None or not console.is_terminal:
        yield _Progress(None)
        return
    with Progress(TextColumn("{task.description:<42}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        yield _Progress(progress)


MATRIX_TASK = "isolation matrix (one scenario per cell)"
PLACE_TASK = "atomicity and consistency"
CRASH_TASK = "durability (a server of its own, crashed)"
POWER_CUT_TASK = "durability (a server on a disk that loses power)"
SERVER_TASK = "starting PostgreSQL"
HISTORY_TASK = "histories (random transactions, checked)"
REPLICATION_TASK = "replication (a primary and a standby, failed over)"


def make_report(dsn: str | None = None, *, workers: int = WORKERS,
                progress_console: Console | None = None,
                server: Callable[[], AbstractContextManager[Target]] | None = None) -> Report:
    """Start (or reach) the server, run everything, return the Report.

    ``server`` opens the report's server (the commands pass theirs, which says in one
    line why it could not); by default ``open_target(dsn)``.

    The durability demonstrations start their own server at once, beside the
    report's: server starts and stops are most of the wall time.
    Raises ReportError when there is no usable server or a scenario cannot finish.
    """
    began = time.perf_counter()
    try:
        matrix = load_schedules().matrix
    except ImportError as error:  # not a checkout: the chapter holding the schedules is absent
        raise ReportError(str(error)) from None
    server_task = SERVER_TASK if dsn is None else "reaching the server"
    with _progress_display(progress_console) as progress, \
            ThreadPoolExecutor(max_workers=5, thread_name_prefix="report-demo") as side:
        for task, total in ((server_task, 1), (MATRIX_TASK, len(matrix) * len(LEVELS)),
                            (PLACE_TASK, len(demonstrations.IN_A_PLACE)),
                            (CRASH_TASK, len(demonstrations.ON_A_CRASHABLE_SERVER)),
                            (POWER_CUT_TASK, len(power_cuts.ON_A_LOSSY_DISK)),
                            (HISTORY_TASK, len(HISTORY_LEVELS)),
                            (REPLICATION_TASK, len(replication.SETTINGS))):
            progress.add(task, total)
        crash = power_cut = failovers = None
        if dsn is None:
            failovers = side.submit(replication.observe_replication,
                                    lambda row: progress.advance(REPLICATION_TASK))
            crash = side.submit(demonstrations.show_on_crashable_server,
                                lambda shown: progress.advance(CRASH_TASK))
            power_cut = side.submit(power_cuts.show_on_lossy_disk,
                                    lambda shown: progress.advance(POWER_CUT_TASK))
        with (server or (lambda: open_target(dsn)))() as target:
            progress.advance(server_task)
            in_places = side.submit(demonstrations.show_in_places, target.info,
                                    lambda shown: progress.advance(PLACE_TASK))
            histories = side.submit(check_histories, target.info,
                                    lambda row: progress.advance(HISTORY_TASK))
            observations = observe_matrix(target.info, matrix, workers=workers,
                                          done=lambda observation: progress.advance(MATRIX_TASK))
            shown = in_places.result()
            rows, note = _histories_or_why_not(histories)
        if crash is None:
            shown += demonstrations.skip_crash_demonstrations()
            progress.advance(CRASH_TASK)
        else:
            shown += crash.result()
        if power_cut is None:
            shown += power_cuts.skip_power_cut_demonstrations()
            progress.advance(POWER_CUT_TASK)
        else:
            shown += power_cut.result()
        replicated, replication_note = _replication_or_why_not(failovers)
    return Report(target.version, target.description, observations, shown,
                  seconds=time.perf_counter() - began, histories=rows, histories_note=note,
                  replication=replicated, replication_note=replication_note,
                  anomalies=matrix)


def _replication_or_why_not(future) -> tuple[list[ReplicationRow], str]:
    """The replication rows; skipped with --dsn; a failure costs this section only."""
    if future is None:
        return [], replication.SKIPPED_WITH_DSN
    try:
        return future.result(), ""
    except (ServerError, AssertionError, psycopg2.Error) as error:
        return [], f"replication could not be observed: {' '.join(str(error).split())}"


def _histories_or_why_not(future) -> tuple[list[HistoryRow], str]:
    """The checked histories; a history that could not be recorded costs its section
    only (one line saying why), not the whole report."""
    try:
        return future.result(), ""
    except (WorkloadError, psycopg2.Error) as error:
        return [], f"histories could not be recorded: {' '.join(str(error).split())}"


def observe_matrix(info: ConnectionInfo, anomalies: tuple[Anomaly, ...] | None = None, *,
                   workers: int = WORKERS,
                   done: Callable[[Observation], None] = lambda observation: None
                   ) -> dict[tuple[str, str], Observation]:
    """Every anomaly (the chapter's matrix unless given) at every level, ``workers`` at a
    time, each in a fresh place on ``info``.

    Raises ReportError naming the cell when a scenario cannot be observed.
    """
    if anomalies is None:
        anomalies = load_schedules().matrix
    idle: queue.Queue[_Worker] = queue.Queue()
    opened = []
    try:
        for _ in range(workers):
            opened.append(_Worker(info))
            idle.put(opened[-1])
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="report-cell") as pool:
            futures = {(anomaly.code, level): pool.submit(_observe_cell, idle, anomaly, level)
                       for anomaly in anomalies for level in LEVELS}
            try:
                observations = {}
                for cell, future in futures.items():
                    observations[cell] = future.result()
                    done(observations[cell])
            except BaseException:
                for future in futures.values():
                    future.cancel()
                raise
    finally:
        for worker in opened:
            worker.close()
    return observations


class _Worker:
    """Warm sessions (a ScenarioRunner) that move from place to place, one cell at a time.

    Reusing the sessions saves a few logins per cell; ``reset`` gives them a
    clean slate (``discard all``) and the new place's search_path each time.
    """

    def __init__(self, info: ConnectionInfo):
        self.keeper = PlaceKeeper(psycopg2.connect(**info.params()))
        self.connect = ConnectionFactory(info)
        self.runner = ScenarioRunner(self.connect)

    def observe(self, anomaly: Anomaly, level: str) -> Observation:
        place = self.keeper.create(HERMITAGE)
        self.runner.reset(search_path=place)
        try:
            return observe(anomaly, level, self.runner)
        finally:
            self.keeper.drop(place)

    def close(self) -> None:
        self.runner.close()
        self.connect.close_all()
        self.keeper.close()


def _observe_cell(idle: queue.Queue[_Worker], anomaly: Anomaly, level: str) -> Observation:
    worker = idle.get(timeout=60)
    try:
        return worker.observe(anomaly, level)
    except (ScenarioError, psycopg2.Error) as error:
        raise ReportError(f"{anomaly.code} at {level} could not be observed: {error}") from None
    finally:
        idle.put(worker)


def legend_lines(report: Report) -> list[tuple[str, str]]:
    """(code, plain words) for each anomaly, with the SQL standard's phenomenon it is."""
    return [(anomaly.code, f"{anomaly.name} — {anomaly.legend} ({anomaly.in_the_sql_standard})")
            for anomaly in report.anomalies]
