"""What the playground takes from elsewhere: the catalog's anomalies and pasted scripts.

The whole contact surface with the isolation catalog and the script parser is
here, kept narrow on purpose: the list of anomalies (code, name, legend), an
anomaly's steps as ``(session, sql)`` pairs, and the verdict from what the
sessions observed; and of the script parser, a pasted script's or page's setup
and steps. When either changes shape, this file is the one to mend.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from acid_lab.engine.scenario import LEVELS, OBSERVER, ScenarioResult, StepResult
from acid_lab.engine.script import parse_page, parse_script
from acid_lab.lessons import catalog

__all__ = ["LEVELS", "OBSERVER", "Scenario", "find", "parse_pasted", "scenarios"]

PASTED_PAGE = "<pasted page>"


@dataclass(frozen=True)
class Scenario:
    """One catalog anomaly as the page shows it."""

    code: str
    name: str
    legend: str
    steps: tuple[tuple[str, str], ...]  # (session, sql), in order; the same at every level

    def verdict(self, level: str, results: list[StepResult]) -> str:
        """"prevented" or "possible", judged by the catalog from the steps' results."""
        return _anomaly(self.code).verdict(ScenarioResult(level, results, []))


def _anomaly(code: str) -> catalog.Anomaly:
    return next(anomaly for anomaly in catalog.load_schedules().every if anomaly.code == code)


def scenarios() -> list[Scenario]:
    """Every anomaly of the isolation chapter: the report's matrix first, then the variants."""
    return [Scenario(a.code, a.name, a.legend,
                     tuple((step.session, step.sql) for step in a.steps()))
            for a in catalog.load_schedules().every]


def find(code: str) -> Scenario | None:
    return next((s for s in scenarios() if s.code == code), None)


def parse_pasted(text: str, part: int = 0) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """A pasted Hermitage script, or page (it has ```sql blocks: several scripts; ``part``
    picks one): the setup statements, the ``(session, sql)`` steps, and every script's name.

    Raises the parser's ScriptError (a ValueError naming the line) when it cannot be read.
    """
    if re.search(r"^(```|~~~)", text, re.MULTILINE):
        scripts = parse_page(text, PASTED_PAGE)
    else:
        scripts = [parse_script(text, "<pasted script>")]
    if not 0 <= part < len(scripts):
        raise ValueError(f"the page holds {len(scripts)} scripts; there is no script {part + 1}")
    script = scripts[part]
    names = [s.name.removeprefix(f"{PASTED_PAGE}: ") for s in scripts]
    return ([s.sql for s in script.setup], [(s.session, s.sql) for s in script.steps], names)
