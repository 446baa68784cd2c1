"""The anomaly catalog: Hermitage's schedules, shared by the isolation tests and the ACID report.

Each :class:`Anomaly` is one of Kleppmann's Hermitage scenarios (hermitage/postgres.md)
on the table ``test(id, value) = (1, 10), (2, 20)``: one statement per step, each
tagged with its session, with a comment saying what that session sees. Steps
whose outcome depends on the isolation level carry a *key*; a test plugs in
the outcome it expects at each level (``G0.steps(t2_update=blocks(...))``),
the report passes nothing and runs with ``check=False``. Steps whose outcome is
the same at every level carry it here.

Whether the anomaly *happened* in a run is decided from what the sessions
observed (:meth:`Anomaly.happened`), never from the level: the report's matrix
is built from that verdict, and the tests assert it against a literal per
level, so the verdict logic is checked too.

``MATRIX`` holds the ten anomalies of the report, in Hermitage's order;
``VARIANTS`` the extra scenarios (write-predicate and predicate variants, the
read-only transaction anomaly and ``SERIALIZABLE READ ONLY DEFERRABLE``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from acid_lab.engine.scenario import (
    OBSERVER,
    T1,
    T2,
    T3,
    Expectation,
    ScenarioResult,
    ScenarioRunner,
    Step,
    StepResult,
    anything,
    sees,
    succeeds,
)

#: A cell of the matrix: the anomaly was observed at that level ...
POSSIBLE = "possible"
#: ... or the server did not let it happen.
PREVENTED = "prevented"

#: Puts Hermitage's table back as it starts, for running several schedules in one place.
RESTORE_HERMITAGE = "delete from test; insert into test (id, value) values (1, 10), (2, 20)"

_FINAL = "select * from test order by id"


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

    def __post_init__(self) -> None:
        lines = tuple(item if isinstance(item, Line) else _line(item) for item in self.schedule)
        object.__setattr__(self, "schedule", lines)

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

# -- G0, G1: what read committed already prevents ------------------------------

G0 = Anomaly(
    code="G0", name="dirty write",
    legend="A transaction overwrites a value that another transaction wrote "
           "but has not committed yet.",
    schedule=(
        (T1, "update test set value = 11 where id = 1"),
        (T2, "update test set value = 12 where id = 1", "t2_update"),  # BLOCKS on T1's write
        (T1, "update test set value = 21 where id = 2"),
        (T1, "commit"),                                                # unblocks T2
        (T2, "update test set value = 22 where id = 2", "t2_second_update"),
        (T2, "commit"),          # answers ROLLBACK when T2 had failed
        (OBSERVER, _FINAL, "final"),
    ),
    # T2 wrote over T1's uncommitted write, or the rows mix the two transactions.
    occurred=lambda o: (o.ok("t2_update") and not o.blocked("t2_update"))
    or o.rows("final") in ([[1, 12], [2, 21]], [[1, 11], [2, 22]]),
)

G1A = Anomaly(
    code="G1a", name="aborted read",
    legend="A transaction reads a value written by another transaction that "
           "later rolls back.",
    schedule=(
        (T1, "update test set value = 101 where id = 1"),
        (T2, _FINAL, "t2_read"),          # during T1: does T2 see 101?
        (T1, "abort"),
        (T2, _FINAL, "t2_read_again"),    # after T1 rolled back
        (T2, "commit"),
    ),
    occurred=lambda o: 101 in o.seen("t2_read") | o.seen("t2_read_again"),
)

G1B = Anomaly(
    code="G1b", name="intermediate read",
    legend="A transaction reads a value that another transaction wrote and then "
           "changed again before committing.",
    schedule=(
        (T1, "update test set value = 101 where id = 1"),
        (T2, _FINAL, "t2_read"),          # T1's intermediate 101, or 10?
        (T1, "update test set value = 11 where id = 1"),
        (T1, "commit"),
        (T2, _FINAL, "t2_read_again"),    # T1's final 11, or still 10?
        (T2, "commit"),
    ),
    occurred=lambda o: 101 in o.seen("t2_read") | o.seen("t2_read_again"),
)

G1C = Anomaly(
    code="G1c", name="circular information flow",
    legend="Two transactions each read a value the other one wrote before "
           "either of them committed.",
    schedule=(
        (T1, "update test set value = 11 where id = 1"),
        (T2, "update test set value = 22 where id = 2"),
        (T1, "select value from test where id = 2", "t1_read"),  # T2's 22, or 20?
        (T2, "select value from test where id = 1", "t2_read"),  # T1's 11, or 10?
        (T1, "commit"),
        (T2, "commit", "t2_commit"),  # serializable: each read what the other overwrote
    ),
    occurred=lambda o: 22 in o.seen("t1_read") and 11 in o.seen("t2_read"),
)

OTV = Anomaly(
    code="OTV", name="observed transaction vanishes",
    legend="A transaction sees one write of a committed transaction, then reads "
           "an older value that this transaction had overwritten.",
    schedule=(
        (T1, "update test set value = 11 where id = 1"),
        (T1, "update test set value = 19 where id = 2"),
        (T2, "update test set value = 12 where id = 1", "t2_update"),  # BLOCKS on T1
        (T1, "commit"),                                                # unblocks T2
        (T3, "select value from test where id = 1", sees(11)),
        (T2, "update test set value = 18 where id = 2", "t2_second_update"),
        (T3, "select value from test where id = 2", sees(19)),          # T2 not committed
        (T2, "commit"),
        (T3, "select value from test where id = 2", "t3_reads_row_2"),  # T2's 18?
        (T3, "select value from test where id = 1", "t3_reads_row_1"),  # then T1's 11?
        (T3, "commit"),
    ),
    # T3 saw T2's 18, then T1's 11 that T2 had overwritten: T2 vanished.
    occurred=lambda o: o.rows("t3_reads_row_2") == [[18]] and o.rows("t3_reads_row_1") == [[11]],
)

# -- PMP, P4, G-single: what repeatable read adds ------------------------------

PMP = Anomaly(
    code="PMP", name="predicate-many-preceders",
    legend="A transaction searches twice and the second search finds a row that "
           "another transaction committed in between.",
    schedule=(
        (T1, "select * from test where value = 30", sees()),
        (T2, "insert into test (id, value) values (3, 30)"),
        (T2, "commit"),
        (T1, "select * from test where value % 3 = 0", "t1_search_again"),  # finds (3, 30)?
        (T1, "commit"),
    ),
    occurred=lambda o: 30 in o.seen("t1_search_again"),
)

PMP_WRITE = Anomaly(
    code="PMP-write", name="predicate-many-preceders, write predicate",
    legend="A waiting DELETE re-checks its condition on the row another "
           "transaction just committed, and leaves behind a row that matches it.",
    schedule=(
        (T1, "update test set value = value + 10"),
        (T2, "delete from test where value = 20 returning *", "t2_delete"),  # BLOCKS on T1
        (T1, "commit"),                                                      # unblocks T2
        (T2, _FINAL, "t2_read"),    # is a row with value 20 still there?
        (T2, "commit"),
    ),
    # T2's "delete where value = 20" went through, yet T2 still sees a value 20.
    occurred=lambda o: o.ok("t2_delete") and 20 in o.seen("t2_read"),
)

P4 = Anomaly(
    code="P4", name="lost update",
    legend="Two transactions read the same value and both write it back; "
           "one of the two updates silently disappears.",
    schedule=(
        (T1, "select value from test where id = 1", sees(10)),
        (T2, "select value from test where id = 1", sees(10)),
        (T1, "update test set value = 11 where id = 1"),               # 10 + 1
        (T2, "update test set value = 12 where id = 1", "t2_update"),  # 10 + 2: BLOCKS on T1
        (T1, "commit"),                                                # unblocks T2
        (T2, "commit"),
        (OBSERVER, "select value from test where id = 1", "final"),   # both: 13
    ),
    # Only T2's write is left: T1's committed update is lost.
    occurred=lambda o: o.rows("final") == [[12]],
)

G_SINGLE = Anomaly(
    code="G-single", name="read skew",
    legend="A transaction sees part of another transaction's changes and misses "
           "the rest, e.g. a total that never existed.",
    schedule=(
        (T1, "select value from test where id = 1", sees(10)),
        (T2, "select value from test where id = 1", sees(10)),
        (T2, "select value from test where id = 2", sees(20)),
        (T2, "update test set value = 12 where id = 1"),   # moves 2 from row 2 to row 1
        (T2, "update test set value = 18 where id = 2"),
        (T2, "commit"),
        (T1, "select value from test where id = 2", "t1_read_row_2"),  # 18: 10 + 18 = 28?
        (T1, "commit"),
    ),
    occurred=lambda o: o.rows("t1_read_row_2") == [[18]],
)

G_SINGLE_PREDICATE = Anomaly(
    code="G-single-predicate", name="read skew, predicate read",
    legend="A transaction's second search sees another transaction's committed "
           "change that its first search did not.",
    schedule=(
        (T1, "select * from test where value % 5 = 0 order by id", sees((1, 10), (2, 20))),
        (T2, "update test set value = 12 where value = 10"),
        (T2, "commit"),
        (T1, "select * from test where value % 3 = 0", "t1_search_again"),  # finds (1, 12)?
        (T1, "commit"),
    ),
    occurred=lambda o: 12 in o.seen("t1_search_again"),
)

G_SINGLE_WRITE_PREDICATE = Anomaly(
    code="G-single-write-predicate", name="read skew, write predicate",
    legend="A transaction reads one row before another transaction commits and "
           "then deletes by a condition judged after it.",
    schedule=(
        (T1, "select value from test where id = 1", sees(10)),
        (T2, _FINAL, sees((1, 10), (2, 20))),
        (T2, "update test set value = 12 where id = 1"),
        (T2, "update test set value = 18 where id = 2"),
        (T2, "commit"),
        (T1, "delete from test where value = 20 returning *", "t1_delete"),  # after T2's 18
        (T1, "commit"),
    ),
    # T1 read row 1 from before T2 and judged row 2 after T2.
    occurred=lambda o: o.ok("t1_delete"),
)

# -- G2: what only serializable prevents ---------------------------------------

G2_ITEM = Anomaly(
    code="G2-item", name="write skew",
    legend="Two transactions read the same rows, then each updates a different "
           "one, so that together they break a rule each of them checked.",
    schedule=(
        (T1, "select * from test where id in (1, 2) order by id", sees((1, 10), (2, 20))),
        (T2, "select * from test where id in (1, 2) order by id", sees((1, 10), (2, 20))),
        (T1, "update test set value = 11 where id = 1"),
        (T2, "update test set value = 21 where id = 2"),
        (T1, "commit"),
        (T2, "commit", "t2_commit"),
        (OBSERVER, _FINAL, "final"),
    ),
    occurred=lambda o: o.rows("final") == [[1, 11], [2, 21]],
)

G2 = Anomaly(
    code="G2", name="anti-dependency cycle",
    legend="Two transactions each search for rows, find none, and each insert a "
           "row that the other's search would have found.",
    schedule=(
        (T1, "select * from test where value % 3 = 0", sees()),
        (T2, "select * from test where value % 3 = 0", sees()),
        (T1, "insert into test (id, value) values (3, 30)"),
        (T2, "insert into test (id, value) values (4, 42)"),
        (T1, "commit"),
        (T2, "commit", "t2_commit"),
        (OBSERVER, "select * from test where value % 3 = 0 order by id", "final"),
    ),
    occurred=lambda o: o.rows("final") == [[3, 30], [4, 42]],
)

# Fekete, O'Neil and O'Neil (2004): under snapshot isolation a transaction that
# only reads can see a state no serial order produces. T1 must come before T2
# (it missed T2's write), T3 saw T2 but not T1: T2 before T3 before T1.
READ_ONLY = Anomaly(
    code="G2-read-only", name="read-only transaction anomaly",
    legend="A transaction that only reads sees a state that no serial order of "
           "the writing transactions could produce.",
    schedule=(
        (T1, _FINAL, sees((1, 10), (2, 20))),
        (T2, "update test set value = value + 5 where id = 2"),
        (T2, "commit"),
        (T3, _FINAL, sees((1, 10), (2, 25))),    # T2 done, T1 not
        (T3, "commit"),
        (T1, "update test set value = 0 where id = 1", "t1_update"),
        (T1, "commit", "t1_commit"),
        (OBSERVER, _FINAL, "final"),
    ),
    # T3's report showed T2 without T1, and T1 (which missed T2) committed anyway.
    occurred=lambda o: o.committed("t1_commit"),
)

READ_ONLY_DEFERRABLE = Anomaly(
    code="G2-read-only-deferrable", name="read-only anomaly, read only deferrable",
    legend="A READ ONLY DEFERRABLE transaction waits for a snapshot on which no "
           "anomaly is possible, instead of seeing one or aborting a writer.",
    schedule=(
        (T1, _FINAL, sees((1, 10), (2, 20))),
        (T2, "update test set value = value + 5 where id = 2"),
        (T2, "commit"),
        (T3, "set transaction read only, deferrable"),
        (T3, _FINAL, "t3_read"),             # serializable: BLOCKS for a safe snapshot
        (T1, "update test set value = 0 where id = 1"),
        (T1, "commit", "t1_commit"),         # unblocks T3
        (T3, "commit"),
    ),
    # The report T3 printed shows T2's deposit but not T1's committed write.
    occurred=lambda o: o.rows("t3_read") == [[1, 10], [2, 25]] and o.committed("t1_commit"),
)

#: The report's matrix columns, in Hermitage's order.
MATRIX: tuple[Anomaly, ...] = (G0, G1A, G1B, G1C, OTV, PMP, P4, G_SINGLE, G2_ITEM, G2)
#: More scenarios of the catalog, not columns of the matrix.
VARIANTS: tuple[Anomaly, ...] = (PMP_WRITE, G_SINGLE_PREDICATE, G_SINGLE_WRITE_PREDICATE,
                                 READ_ONLY, READ_ONLY_DEFERRABLE)
CATALOG: tuple[Anomaly, ...] = MATRIX + VARIANTS


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
