"""Was a concurrent run equivalent to some serial order? A brute-force oracle.

Serializability means: whatever the interleaving, the committed transactions
leave the database in the state, and see the values, that running them one
after the other in *some* order would have. The oracle takes that literally:
it runs every serial order of the transactions that committed, each on a fresh
copy of the tables, and compares. An aborted transaction counts as never run
(its effects must be gone; that it aborted is the server's way to stay
serializable).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any

from acid_lab.engine.expectations import anything
from acid_lab.engine.interleavings import Interleaver, Interleaving
from acid_lab.engine.scenario import OBSERVER, ScenarioResult, ScenarioRunner, Step, StepResult

#: What the oracle compares at the end of every run.
FINAL_STATE = Step(OBSERVER, "select * from test order by id", anything)


@dataclasses.dataclass(frozen=True)
class TransactionScript:
    """One session's transaction: its statements, the last one ``commit``."""

    session: str
    statements: tuple[str, ...]

    def steps(self) -> list[Step]:
        return [Step(self.session, sql, anything) for sql in self.statements]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a run leaves: the final rows, and what each committed transaction read."""

    committed: frozenset[str]
    final: Any
    reads: tuple[tuple[str, Any], ...]  # (session, rows of each of its reads), committed only

    def describe(self) -> str:
        reads = "; ".join(f"{session} read {rows}" for session, rows in self.reads)
        return f"committed {sorted(self.committed)}, final rows {self.final}" + (
            f"; {reads}" if reads else "")


def outcome(result: ScenarioResult, sessions: Sequence[str]) -> Outcome:
    """The outcome of a run whose last step is :data:`FINAL_STATE`."""
    by_session: dict[str, list[StepResult]] = {session: [] for session in sessions}
    for step in result.steps[:-1]:
        by_session[step.session].append(step)
    committed = frozenset(session for session, steps in by_session.items()
                          if _committed(steps))
    reads = tuple((session, tuple(_rows(step) for step in by_session[session]
                                  if step.rows is not None))
                  for session in sorted(committed))
    return Outcome(committed, _rows(result.steps[-1]), reads)


def _committed(steps: list[StepResult]) -> bool:
    # A commit in a failed transaction answers ROLLBACK, without an error.
    return bool(steps) and all(step.status == "ok" for step in steps) and steps[-1].committed


def _rows(step: StepResult) -> Any:
    return None if step.rows is None else tuple(tuple(row) for row in step.rows)


@dataclasses.dataclass(frozen=True)
class OracleVerdict:
    """The oracle's answer for one run."""

    observed: Outcome
    serial: dict[tuple[str, ...], Outcome]  # the serial orders tried, up to the match
    match: tuple[str, ...] | None           # the serial order it equals, if any

    @property
    def serializable(self) -> bool:
        return self.match is not None

    def explain(self) -> str:
        lines = [f"observed: {self.observed.describe()}"]
        lines += [f"serial {' then '.join(order) or '(none)'}: {found.describe()}"
                  for order, found in self.serial.items()]
        return "\n".join(lines)


class SerialOracle:
    """Runs the serial orders of ``transactions`` on ``runner`` at ``level`` (cached).

    ``reset`` restores the tables before every serial run.
    """

    def __init__(self, runner: ScenarioRunner, level: str | None,
                 transactions: Sequence[TransactionScript], *, reset: Callable[[], None]):
        self.runner = runner
        self.level = level
        self.transactions = {t.session: t for t in transactions}
        self.reset = reset
        self._serial: dict[tuple[str, ...], Outcome] = {}

    def judge(self, result: ScenarioResult) -> OracleVerdict:
        """Compare a concurrent run (ending with FINAL_STATE) with every serial order."""
        observed = outcome(result, list(self.transactions))
        serial: dict[tuple[str, ...], Outcome] = {}
        for order in itertools.permutations(sorted(observed.committed)):
            serial[order] = self._serial_outcome(order)
            if serial[order] == observed:
                return OracleVerdict(observed, serial, order)
        return OracleVerdict(observed, serial, None)

    def _serial_outcome(self, order: tuple[str, ...]) -> Outcome:
        if order not in self._serial:
            steps = [step for session in order for step in self.transactions[session].steps()]
            self.reset()
            result = self.runner.run(self.level, steps + [FINAL_STATE], check=False)
            self._serial[order] = outcome(result, list(order))
        return self._serial[order]


@dataclasses.dataclass
class Judged:
    """One interleaving that was run, and the oracle's verdict on it."""

    interleaving: Interleaving
    verdict: OracleVerdict

    def explain(self) -> str:
        return f"{self.interleaving.transcript}\n\n{self.verdict.explain()}"


class Referee:
    """Runs two transactions interleaved and judges every run against the serial orders.

    ``reset`` restores the tables before every run (concurrent or serial).
    """

    def __init__(self, runner: ScenarioRunner, level: str | None,
                 first: TransactionScript, second: TransactionScript, *, reset: Callable[[], None]):
        self.interleaver = Interleaver(runner, level, first.steps(), second.steps(),
                                       reset=reset, final=FINAL_STATE)
        self.oracle = SerialOracle(runner, level, [first, second], reset=reset)

    def play(self, intended: Sequence[str]) -> Judged:
        """Run the intended order (a blocked session's steps wait) and judge it."""
        interleaving = self.interleaver.realize(intended)
        return Judged(interleaving, self.oracle.judge(interleaving.result))

    def every_interleaving(self) -> tuple[list[Judged], int]:
        """Run and judge every valid merge; also return how many merges were invalid."""
        exploration = self.interleaver.explore()
        judged = [Judged(interleaving, self.oracle.judge(interleaving.result))
                  for interleaving in exploration.interleavings]
        return judged, exploration.invalid
