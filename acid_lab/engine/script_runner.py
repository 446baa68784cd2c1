"""Running one annotated script (:mod:`acid_lab.engine.script`) on a server: its setup in
autocommit, then its schedule on the scenario runner, in a fresh schema of its own; and,
with ``--check``, each step's note compared with what the step did."""

from __future__ import annotations

import dataclasses
from typing import Any

import psycopg2.extensions

from acid_lab.engine.events import Event
from acid_lab.engine.notes import Note, NoteCheck, check_steps, parse_note
from acid_lab.engine.postgres import POSTGRES
from acid_lab.engine.scenario import DEFAULT_TIMEOUT, RAW, ScenarioRunner, ScheduleStuck, StepResult
from acid_lab.engine.script import Script
from acid_lab.engine.sessions import run_statement
from acid_lab.servers.places import PlaceKeeper


@dataclasses.dataclass
class ScriptRun:
    """One script's outcome: its setup results, its steps, and why it stopped early."""

    script: Script
    setup: list[StepResult]
    steps: list[StepResult]
    transcript: str
    stuck: str | None = None  # the error, when the schedule could not finish
    lines: list[str] = dataclasses.field(default_factory=list)  # the steps' transcript
    events: list[Event] = dataclasses.field(default_factory=list)  # the steps' events
    verdicts: list[NoteCheck] | None = None  # with --check: one per step that ran

    def check(self) -> None:
        """Compare every step's note with what the step did."""
        notes = step_notes(self.script)
        ran = len(self.steps)
        self.verdicts = check_steps(self.steps, notes[:ran], self.events)
        self.verdicts += [NoteCheck(False, notes[i].describe(), "never ran (the schedule stopped)")
                          if notes[i].makes_claims else NoteCheck(None)
                          for i in range(ran, len(notes))]

    def counts(self) -> dict[str, int]:
        verdicts = self.verdicts or []
        notes = step_notes(self.script)
        return {"agree": sum(v.agrees is True for v in verdicts),
                "disagree": sum(v.agrees is False and n.unreadable is None
                                for v, n in zip(verdicts, notes, strict=False)),
                "unreadable": sum(n.unreadable is not None for n in notes),
                "no_claim": sum(v.agrees is None for v in verdicts)}

    def as_json(self) -> dict[str, Any]:
        steps = [step.as_json() for step in self.steps]
        if self.verdicts is not None:
            for step, note, verdict in zip(steps, step_notes(self.script), self.verdicts,
                                           strict=False):
                step["expected"] = note.as_json()
                step["agrees"] = verdict.agrees
        return {"script": self.script.name, "steps": steps}

    def check_lines(self) -> list[str]:
        """The steps with their marks, and the script's line."""
        lines = ["-- check: each note read as an expectation"]
        for statement, verdict in zip(self.script.steps, self.verdicts or [], strict=False):
            note = f" {statement.note}" if statement.note else ""
            lines.append(f"{statement.sql}; -- {statement.session}{note}  => {verdict.mark()}")
        counts = self.counts()
        lines.append(f"-- {self.script.name}: {tally(counts)}")
        return lines


def step_notes(script: Script) -> list[Note]:
    """Each step's note as read (empty for all but the last statement of a line)."""
    return [parse_note(statement.note if statement.owns_note else "")
            for statement in script.steps]


def tally(counts: dict[str, int]) -> str:
    return (f"{counts['agree']} agree, {counts['disagree']} DISAGREE, "
            f"{counts['unreadable']} unreadable, {counts['no_claim']} no claim")


def with_search_path(dsn: str, schema: str) -> str:
    """``dsn`` plus libpq options (after its own) that put ``schema`` first on the
    search_path."""
    from acid_lab.servers.target import parse_dsn

    return parse_dsn(dsn).dsn(options=f"-c search_path={schema},public")


def run_script(script: Script, dsn: str, admin: psycopg2.extensions.connection, *,
               timeout: float = DEFAULT_TIMEOUT) -> ScriptRun:
    """Run one script in a fresh schema of its own and drop the schema afterwards;
    ``admin`` (autocommit, on ``dsn``) makes and drops it, and is closed at the end."""
    keeper = PlaceKeeper(admin)
    try:
        schema = keeper.create(setup_sql="")  # the script's own setup fills it
        try:
            place = with_search_path(dsn, schema)
            setup = run_setup(script, place)
            return run_steps(script, place, setup, timeout)
        finally:
            keeper.drop(schema)
    finally:
        keeper.close()


def run_setup(script: Script, place: str) -> list[StepResult]:
    """The untagged statements, in autocommit, before any session connects."""
    results = []
    if not script.setup:
        return results
    conn = POSTGRES.connect(place)
    try:
        with conn.cursor() as cursor:
            for number, statement in enumerate(script.setup, start=1):
                results.append(run_statement(cursor, statement.sql,
                                             result=StepResult(number, "setup", statement.sql)))
    finally:
        conn.close()
    return results


def run_steps(script: Script, place: str, setup: list[StepResult],
               timeout: float) -> ScriptRun:
    setup_lines = [
        f"{result.sql}; -- setup{', ' if result.status == 'error' else '. '}{result.outcome()}"
        for result in setup
    ]
    with ScenarioRunner(place, timeout=timeout) as runner:
        try:
            result = runner.run(RAW, script.schedule(), check=False)
        except ScheduleStuck as stuck:
            return ScriptRun(script, setup, stuck.result.steps,
                             "\n".join(setup_lines + stuck.result.lines),
                             stuck=stuck.message, lines=stuck.result.lines,
                             events=stuck.result.events)
    return ScriptRun(script, setup, result.steps, "\n".join(setup_lines + result.lines),
                     lines=result.lines, events=result.events)
