"""One statement of a playground page, and the bounds its result is kept within."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from acid_lab.engine.sessions import StepResult

MAX_RESULT_ROWS = 100        # rows a result keeps
MAX_CELL_CHARS = 200         # characters a value keeps
MAX_RESULT_BYTES = 4096      # JSON bytes a result keeps
MAX_ERROR_CHARS = 1000       # characters of an error message kept

WAITING, RUNNING, DONE = "waiting", "running", "done"


@dataclass
class Entry:
    """One statement sent by the page, and what it did."""

    id: int
    result: StepResult
    begin: str | None = None          # the transaction the step opened implicitly
    step: int | None = None           # its place in the scenario's schedule
    columns: list[str] | None = None
    truncated: bool = False           # rows or values were left out of ``result.rows``

    @property
    def state(self) -> str:
        return state_of(self.result, self.result.finished)

    def fetch(self, cursor) -> list[list[Any]]:
        """The Stepper's reader of this statement's result set: bounded, with its columns."""
        self.columns = [column.name for column in cursor.description]
        rows, self.truncated = bounded_rows(cursor)
        return rows

    def as_json(self) -> dict[str, Any]:
        result = self.result
        finished = result.finished
        return {
            "id": self.id, "session": result.session, "sql": result.sql, "begin": self.begin,
            "step": self.step, "state": self.state, "blocked": result.blocked,
            "status": result.status if finished else None,
            "command": result.command if finished else None,
            "columns": self.columns if finished else None,
            "rows": result.rows if finished else None,
            "truncated": self.truncated,
            "sqlstate": result.sqlstate if finished else None,
            "error": result.error if finished else None,
            "text": result.outcome() if finished else None,
        }


def state_of(result: StepResult, done: bool) -> str:
    """DONE, WAITING (the server saw it blocked) or RUNNING."""
    if done:
        return DONE
    return WAITING if result.blocked else RUNNING


def bounded_rows(cursor) -> tuple[list[list[Any]], bool]:
    """The result's first rows, values as JSON scalars (long ones cut), within
    MAX_RESULT_ROWS and MAX_RESULT_BYTES; and whether anything was left out."""
    kept: list[list[Any]] = []
    size, truncated = 0, False
    for row in cursor.fetchmany(MAX_RESULT_ROWS + 1):
        if len(kept) == MAX_RESULT_ROWS:
            return kept, True
        values = []
        for value in row:
            if not (value is None or isinstance(value, (bool, int, float, str))):
                value = str(value)
            if isinstance(value, str) and len(value) > MAX_CELL_CHARS:
                value, truncated = value[:MAX_CELL_CHARS] + "…", True
            values.append(value)
        size += len(json.dumps(values))
        if size > MAX_RESULT_BYTES:
            return kept, True
        kept.append(values)
    return kept, truncated
