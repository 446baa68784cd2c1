"""The one record of what happened in a run of steps, and its renderings.

The :class:`~acid_lab.engine.sessions.Stepper` appends one :class:`Event` each
time it sends a statement, sees it blocked, sees it finish at once (FINISHED)
or later (RESUMED, recorded after the step that released it, in the order the
waiting steps were sent), or gives up on it (STILL_WAITING). Every view is
rendered from that list: the Hermitage transcript, the report's timeline, the
playground's rows, and which step released which.
"""

from __future__ import annotations

import dataclasses
from typing import Any

SENT, BLOCKED_EVENT, FINISHED, RESUMED, STILL_WAITING = (
    "sent", "blocked", "finished", "resumed", "still waiting")


@dataclasses.dataclass(slots=True)
class Event:
    """``result`` is the step's StepResult (final once the step finished);
    ``implicit`` marks the BEGIN the engine sent on its own; ``batch`` numbers the
    Stepper call that noticed it (one request of the playground is one batch)."""

    kind: str
    session: str
    result: Any
    implicit: bool = False
    batch: int = 0


def transcript_lines(events: list[Event]) -> list[str]:
    """The transcript in Hermitage's notation, one line per event::

        update test set value = 12 where id = 1; -- T2, BLOCKS
        commit; -- T1. COMMIT
        -- T2, unblocked: ERROR 40001 could not serialize access due to concurrent update
    """
    lines = []
    for event in events:
        result, name = event.result, event.session
        if event.kind == FINISHED:
            mark = ", " if result.status == "error" else ". "
            lines.append(f"{result.sql}; -- {name}{mark}{result.outcome()}")
        elif event.kind == BLOCKED_EVENT:
            lines.append(f"{result.sql}; -- {name}, BLOCKS")
        elif event.kind == RESUMED:
            lines.append(f"-- {name}, unblocked: {result.outcome()}")
        elif event.kind == STILL_WAITING:
            lines.append(f"-- {name}: still waiting: {result.sql}")
    return lines


def timeline_rows(events: list[Event], *, group: bool) -> list[list[Event]]:
    """Rows of a timeline (one column per session), each a list of events.

    ``group=False``: one row per step sent and one per waiting step resuming.
    ``group=True`` (the playground): a step's row also holds the RESUMES it
    released; what finished on its own, or the step's own late finish (a
    column shows one thing per row), gets a row of its own.
    """
    rows: list[list[Event]] = []
    for event in events:
        if event.implicit or event.kind not in (SENT, RESUMED):
            continue
        if not group or event.kind == SENT:
            rows.append([event])
            continue
        row = rows[-1] if rows else None
        if (row is None or row[0].batch != event.batch
                or any(cell.session == event.session for cell in row)):
            rows.append([event])  # its own row (a RESUMED first: no step in it)
        else:
            row.append(event)
    return rows


def released_after(events: list[Event]) -> dict[int, int]:
    """Which step (index) each blocked step's finish was noticed after."""
    released: dict[int, int] = {}
    last_sent = 0
    for event in events:
        if event.implicit:
            continue
        if event.kind == SENT:
            last_sent = event.result.index
        elif event.kind == RESUMED and event.result.blocked:
            released[event.result.index] = last_sent
    return released
