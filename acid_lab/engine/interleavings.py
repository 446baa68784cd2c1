"""Every interleaving of two sessions' steps, as PostgreSQL's isolation tester runs them.

When an isolation spec lists no permutation, PostgreSQL's isolation tester runs
every *merge* of the sessions' steps (each session's own steps keep their
order). Some merges cannot happen in real life: once a session's statement is
blocked, that client cannot send its next statement until another session
unblocks it. The isolation tester calls such a merge an *invalid permutation*
and skips it; so do we. A merge is invalid when a step is due while its
session is still blocked and the other session is not (when both are blocked,
it is a deadlock: the server's deadlock detector ends one of them within
``deadlock_timeout``, so the merge goes on).

Whether a step blocks is decided by the server, not guessed: each run is made
by the deterministic :class:`~acid_lab.engine.scenario.ScenarioRunner`, and what every
run observed (which sessions were blocked after each prefix of steps) is
remembered. A schedule is only ever sent when it is known to be valid, so no
run waits on an impossible step:

* a prefix of one session's steps leaves nothing blocked (the other session
  holds nothing yet);
* to learn what a new prefix ``P + s`` leaves blocked (``P`` known, ``s`` a
  step of session X that may go after ``P``), run a *probe*: ``P + s``, then
  both sessions roll back, the one that cannot be blocked first: if the other
  session Y was blocked after ``P``, X (which at worst now waits in a deadlock
  the server breaks); otherwise Y (idle, so not blocked), which also releases
  X should ``s`` have blocked;
* :meth:`Interleaver.explore` goes through :func:`merges` in order, checking
  each prefix (probing the new ones): every valid merge is run once, every
  invalid one counted without being run;
* :meth:`Interleaver.realize` runs one *intended* merge the way two real
  clients would: a blocked session's next steps wait until it is unblocked.

Each session's steps must end its transaction (``commit``/``rollback``), so
that once one session has run out of steps the other cannot be blocked.

A session counts as still blocked before step ``j`` when its blocked step
finished after step ``j`` was sent (the runner settles every pending step
before it sends the next one, so this is causal, not a race).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence

from acid_lab.engine.expectations import anything
from acid_lab.engine.scenario import ScenarioResult, ScenarioRunner, Step, StepResult

Order = tuple[str, ...]  # the session of each step, in the order the steps are sent


def merges(first: Sequence, second: Sequence) -> Iterator[tuple]:
    """Every merge of two sequences that keeps the order within each one."""
    if not first or not second:
        yield tuple(first) + tuple(second)
        return
    for rest in merges(first[1:], second):
        yield (first[0], *rest)
    for rest in merges(first, second[1:]):
        yield (second[0], *rest)


@dataclasses.dataclass
class Interleaving:
    """One merge that was run: the session of each step, in order, and the run's result."""

    order: Order
    result: ScenarioResult

    @property
    def transcript(self) -> str:
        return self.result.transcript


@dataclasses.dataclass
class Exploration:
    """Every merge of two sessions' steps: the valid ones run, the invalid ones counted."""

    interleavings: list[Interleaving]
    invalid: int  # merges never run: a step was due while its session was blocked


class Interleaver:
    """Runs merges of two sessions' steps on ``runner`` at ``level``.

    ``first`` and ``second`` are each one session's steps. ``reset`` restores
    the tables before every run; ``final`` (optional) is a step appended to
    every run, e.g. an OBSERVER reading the final state.
    """

    def __init__(self, runner: ScenarioRunner, level: str | None,
                 first: Sequence[Step], second: Sequence[Step], *,
                 reset: Callable[[], None], final: Step | None = None):
        self.runner = runner
        self.level = level
        self.steps = {}
        for steps in (first, second):
            names = {step.session for step in steps}
            if len(names) != 1:
                raise ValueError(f"each step list must belong to one session, got {names}")
            self.steps[names.pop()] = list(steps)
        if len(self.steps) != 2:
            raise ValueError("the two step lists must belong to two different sessions")
        self.sessions: tuple[str, str] = tuple(self.steps)
        self.reset = reset
        self.final = final
        self.runs = 0  # how many schedules were sent to the server
        # What each known prefix leaves blocked, learnt from the runs.
        self._blocked: dict[Order, frozenset[str]] = {}
        self._results: dict[Order, ScenarioResult] = {}

    # -- the two ways to use it --

    def explore(self) -> Exploration:
        """Run every valid merge once; count the invalid ones."""
        first, second = ([session] * len(self.steps[session]) for session in self.sessions)
        found: list[Interleaving] = []
        invalid = 0
        for order in merges(first, second):
            if self._valid(order):
                found.append(Interleaving(order, self._full_run(order)))
            else:
                invalid += 1
        return Exploration(found, invalid)

    def realize(self, intended: Sequence[str]) -> Interleaving:
        """Run ``intended`` (the session of each step) as two real clients would:
        a blocked session's next steps wait until it is unblocked."""
        if sorted(intended) != sorted(s for s in self.sessions for _ in self.steps[s]):
            raise ValueError(f"{list(intended)} is not a merge of the sessions' steps")
        done: Order = ()
        waiting = list(intended)
        while waiting:
            stuck = self._stuck_after(done)
            pick = next((i for i, s in enumerate(waiting) if s not in stuck), 0)
            done += (waiting.pop(pick),)
        return Interleaving(done, self._full_run(done))

    # -- knowledge of blocked sessions --

    def _left(self, prefix: Order, session: str) -> int:
        return len(self.steps[session]) - prefix.count(session)

    def _other(self, session: str) -> str:
        return self.sessions[1] if session == self.sessions[0] else self.sessions[0]

    def _valid(self, order: Order) -> bool:
        """No step of ``order`` is due while its session is stuck (prefixes checked in turn)."""
        return all(order[p] not in self._stuck_after(order[:p]) for p in range(len(order)))

    def _stuck_after(self, prefix: Order) -> frozenset[str]:
        """Sessions that cannot send a step after ``prefix`` (blocked, partner not)."""
        if len(set(prefix)) < 2 or not all(self._left(prefix, s) for s in self.sessions):
            return frozenset()  # one session alone, or one that has ended: no one waits
        if prefix not in self._blocked:
            self._probe(prefix)
        blocked = self._blocked[prefix]
        return frozenset() if len(blocked) == len(self.sessions) else blocked

    def _probe(self, prefix: Order) -> None:
        """Run ``prefix``, then end both transactions in an order that cannot get stuck."""
        last, earlier = prefix[-1], prefix[:-1]
        other = self._other(last)
        first_out = last if other in self._stuck_after(earlier) else other
        endings = [Step(session, "rollback", anything)
                   for session in (first_out, self._other(first_out))]
        self._run(prefix, endings)

    def _full_run(self, order: Order) -> ScenarioResult:
        if order not in self._results:
            self._results[order] = self._run(order, [self.final] if self.final else [])
        return self._results[order]

    def _run(self, order: Order, tail: list[Step]) -> ScenarioResult:
        cursor = {session: 0 for session in self.sessions}
        schedule = []
        for session in order:
            schedule.append(self.steps[session][cursor[session]])
            cursor[session] += 1
        self.reset()
        result = self.runner.run(self.level, schedule + tail, check=False)
        self.runs += 1
        self._learn(order, result.steps)
        return result

    def _learn(self, order: Order, steps: list[StepResult]) -> None:
        """Record which sessions each prefix of this run left blocked."""
        latest: dict[str, StepResult] = {}
        for p in range(1, min(len(steps), len(order) + 1)):
            latest[steps[p - 1].session] = steps[p - 1]
            sent = steps[p].started
            self._blocked[order[:p]] = frozenset(
                session for session, step in latest.items()
                if step.blocked and step.started + (step.elapsed or 0.0) > sent)
