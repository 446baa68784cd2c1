"""The anomaly catalog: Hermitage's schedules, shared by the isolation chapter and the ACID report.

The schedules themselves are written out in the isolation chapter,
``tests/test_isolation.py``, each one above the test that runs it, so that a
reader sees every statement where the lesson is. That file is the one source:
:func:`load_schedules` collects its ``MATRIX`` and ``VARIANTS`` when the report or
the playground asks (from the chapter next to this package: a checkout, installed
with ``pip install -e``) and this module gives them what they need to run them:

* :class:`Anomaly`: one of Kleppmann's Hermitage scenarios on the table
  ``test(id, value) = (1, 10), (2, 20)``: one statement per step, each tagged
  with its session. Steps whose outcome depends on the isolation level carry a
  *key*; a test plugs in the outcome it expects at each level
  (``G0.steps(t2_update=blocks(...))``), the report passes nothing and runs
  with ``check=False``.
* Whether the anomaly *happened* in a run is decided from what the sessions
  observed (:meth:`Anomaly.happened`), never from the level: the report's matrix
  is built from that verdict, and the chapter asserts it against a literal per
  level, so the verdict logic is checked too.
* :func:`observe`: one cell of the matrix, run and judged.

``Schedules.matrix`` holds the ten anomalies of the report, in Hermitage's order;
``Schedules.variants`` the extra scenarios (write-predicate and predicate variants, the
read-only transaction anomaly and ``SERIALIZABLE READ ONLY DEFERRABLE``).
"""


from __future__ import annotations

import dataclasses
import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from acid_lab.engine.expectations import Expectation, anything, succeeds
from acid_lab.engine.scenario import (
    READ_COMMITTED,
    READ_UNCOMMITTED,
    REPEATABLE_READ,
    ScenarioResult,
    ScenarioRunner,
    Step,
    StepResult,
)

#: A cell of the matrix: the anomaly was observed at that level ...
POSSIBLE = "possible"
#: ... or the server did not let it happen.
PREVENTED = "prevented"

# The SQL standard's phenomena, as PostgreSQL's documentation names them (Transaction
# Isolation, its table of levels), and the levels at which PostgreSQL lets each occur
# ("allowed, but not in PG" counts as not allowed). Every anomaly of the catalog is one
# of them; a dirty write, which is not among the four, PostgreSQL allows at no level.
DIRTY_WRITE = "dirty write"
DIRTY_READ = "dirty read"
NONREPEATABLE_READ = "nonrepeatable read"
PHANTOM_READ = "phantom read"
SERIALIZATION_ANOMALY = "serialization anomaly"
POSTGRESQL_ALLOWS: dict[str, tuple[str, ...]] = {
    DIRTY_WRITE: (),
    DIRTY_READ: (),
    NONREPEATABLE_READ: (READ_UNCOMMITTED, READ_COMMITTED),
    PHANTOM_READ: (READ_UNCOMMITTED, READ_COMMITTED),
    SERIALIZATION_ANOMALY: (READ_UNCOMMITTED, READ_COMMITTED, REPEATABLE_READ),
}

#: Puts Hermitage's table back as it starts, for running several schedules in one place.
RESTORE_HERMITAGE = "delete from test; insert into test (id, value) values (1, 10), (2, 20)"


@dataclasses.dataclass(frozen=True)
class Line:
    """One step of a schedule: a fixed outcome, or a key whose outcome a test supplies."""

    session: str
    sql: str
    expect: Expectation | None = succeeds  # None: the outcome depends on the level
    key: str | None = None


def _line(item: tuple) -> Line:
    """``(session, sql)``, ``(session, sql, expectation)`` or ``(session, sql, "key")``."""
    session, sql, *rest = item
    if not rest:
        return Line(session, sql)
    (third,) = rest
    if isinstance(third, str):
        return Line(session, sql, None, third)
    return Line(session, sql, third)


class Outcomes:
    """A run's step results, looked up by the keys of the schedule."""

    def __init__(self, schedule: tuple[Line, ...], result: ScenarioResult):
        self._by_key = {line.key: step for line, step in zip(schedule, result.steps, strict=True)
                        if line.key is not None}

    def __getitem__(self, key: str) -> StepResult:
        return self._by_key[key]

    def ok(self, key: str) -> bool:
        """The step ran without error."""
        return self[key].status == "ok"

    def blocked(self, key: str) -> bool:
        """The step had to wait for another session."""
        return self[key].blocked

    def committed(self, key: str) -> bool:
        """The ``commit`` step really committed (a failed transaction answers ROLLBACK)."""
        return self[key].committed

    def rows(self, key: str) -> list[list[Any]] | None:
        """The rows the step returned; None when it failed."""
        return self[key].rows if self.ok(key) else None

    def seen(self, key: str) -> set[Any]:
        """Every value in the rows the step returned (empty when it failed)."""
        return {value for row in self.rows(key) or [] for value in row}


@dataclasses.dataclass(frozen=True)
class Anomaly:
    """One anomaly: its name, a legend in plain words, and its Hermitage schedule."""

    code: str
    name: str
    legend: str
    schedule: tuple[Line, ...]
    # Did the anomaly happen? Decided from the observed step results.
    occurred: Callable[[Outcomes], bool] = dataclasses.field(repr=False)
    # Which of the SQL standard's phenomena it is (a key of POSTGRESQL_ALLOWS).
    phenomenon: str = ""

    def __post_init__(self) -> None:
        if self.phenomenon and self.phenomenon not in POSTGRESQL_ALLOWS:
            raise ValueError(f"{self.code}: {self.phenomenon!r} is none of "
                             f"{sorted(POSTGRESQL_ALLOWS)}")
        lines = tuple(item if isinstance(item, Line) else _line(item) for item in self.schedule)
        object.__setattr__(self, "schedule", lines)

    @property
    def in_the_sql_standard(self) -> str:
        """Which of the SQL standard's phenomena this is, in words for a legend."""
        if self.phenomenon == DIRTY_WRITE:
            return "none of the SQL standard's four phenomena; PostgreSQL allows it at no level"
        return f"SQL standard: {self.phenomenon}" if self.phenomenon else ""

    @property
    def keys(self) -> tuple[str, ...]:
        """The names of the steps whose outcome depends on the isolation level."""
        return tuple(line.key for line in self.schedule if line.key is not None)

    def steps(self, **expected: Expectation) -> list[Step]:
        """The schedule, with the outcome expected at each keyed step.

        Give every key (a test) or none (the report: each keyed step expects
        ``anything``), so that a test cannot leave a step unchecked by accident.
        """
        unknown = set(expected) - set(self.keys)
        missing = set(self.keys) - set(expected) if expected else set()
        if unknown or missing:
            raise TypeError(f"{self.code}: unknown steps {sorted(unknown)}, missing "
                            f"{sorted(missing)}; its per-level steps are {list(self.keys)}")
        return [Step(line.session, line.sql,
                     line.expect if line.key is None else expected.get(line.key, anything))
                for line in self.schedule]

    def happened(self, result: ScenarioResult) -> bool:
        """Did the anomaly occur in this run of :meth:`steps`?"""
        if len(result.steps) != len(self.schedule):
            raise ValueError(f"{self.code}: the result has {len(result.steps)} steps, "
                             f"the schedule {len(self.schedule)}")
        return bool(self.occurred(Outcomes(self.schedule, result)))

    def verdict(self, result: ScenarioResult) -> str:
        """POSSIBLE when the anomaly happened in this run, else PREVENTED."""
        return POSSIBLE if self.happened(result) else PREVENTED


# -- the schedules: the isolation chapter's own ------------------------------------

#: The chapter whose schedules these are (a checkout: tests/ beside acid_lab/).
CHAPTER = Path(__file__).resolve().parents[2] / "tests" / "test_isolation.py"


@dataclasses.dataclass(frozen=True)
class Schedules:
    """The chapter's anomalies: ``matrix``, the report's ten columns in Hermitage's order;
    ``variants``, more scenarios that are not columns."""

    matrix: tuple[Anomaly, ...]
    variants: tuple[Anomaly, ...]

    @property
    def every(self) -> tuple[Anomaly, ...]:
        """The matrix first, then the variants."""
        return self.matrix + self.variants


_lock = threading.Lock()
_chapter: list[ModuleType] = []  # the loaded chapter, once loaded


def chapter_module() -> ModuleType:
    """The isolation chapter, imported by its path once per process, under a name of its own.

    Raises ImportError (one line saying what to do) outside a checkout.
    """
    with _lock:
        if not _chapter:
            if not CHAPTER.is_file():
                raise ImportError(
                    f"the isolation schedules are written in the chapter itself, "
                    f"tests/test_isolation.py, which is not at {CHAPTER}: run from a "
                    f"checkout of ACID Lab (make report, make play; pip install -e .)")
            spec = importlib.util.spec_from_file_location("acid_lab_isolation_chapter",
                                                          CHAPTER)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            _chapter.append(module)
        return _chapter[0]


def load_schedules() -> Schedules:
    """The chapter's ``MATRIX`` and ``VARIANTS``: asked for by the report and the playground
    only (nothing is loaded at import)."""
    chapter = chapter_module()
    return Schedules(tuple(chapter.MATRIX), tuple(chapter.VARIANTS))


# -- observing an anomaly live ---------------------------------------------------

@dataclasses.dataclass
class Observation:
    """One cell of the matrix: what the anomaly's schedule did at one level."""

    anomaly: Anomaly
    level: str
    possible: bool
    result: ScenarioResult

    @property
    def verdict(self) -> str:
        return POSSIBLE if self.possible else PREVENTED


def observe(anomaly: Anomaly, level: str, runner: ScenarioRunner) -> Observation:
    """Run the anomaly's schedule at ``level`` (``check=False``) and judge it.

    ``runner``: a :class:`ScenarioRunner` on a fresh place holding Hermitage's table.
    """
    result = runner.run(level, anomaly.steps(), check=False)
    return Observation(anomaly, level, anomaly.happened(result), result)
