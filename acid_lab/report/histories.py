"""The report's histories section: random transactions recorded live, then checked.

At read committed, repeatable read and serializable, one small list-append history
(:func:`acid_lab.lessons.list_append.list_append_history`: 4 threads, seeded random
transactions, retries off) is recorded on the report's server and checked
(:func:`acid_lab.checkers.history.check`) against the model that level promises.
A row per level: transactions checked, anomalies found by kind, one cycle explained
-- and, for the HTML page, that cycle drawn as inline SVG (no script, no fonts).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass

import psycopg2

from acid_lab.checkers.anomalies import Finding
from acid_lab.checkers.history import LEVEL_MODELS, check
from acid_lab.engine.scenario import READ_COMMITTED, REPEATABLE_READ, SERIALIZABLE
from acid_lab.lessons.list_append import list_append_history
from acid_lab.lessons.schema import HERMITAGE
from acid_lab.servers.connections import ConnectionInfo
from acid_lab.servers.places import PlaceKeeper

HISTORY_LEVELS = (READ_COMMITTED, REPEATABLE_READ, SERIALIZABLE)
SEED, WORKERS, ROUNDS, KEYS = 3, 4, 10, 4  # 41 transactions a history


@dataclass
class HistoryRow:
    """One level's history, checked."""

    level: str
    model: str                        # the model the level promises
    transactions: int
    committed: int
    counts: dict[str, int]            # anomaly kind -> how many
    valid: bool                       # does the level keep its model's promise?
    cycle: Finding | None             # one explained cycle, the shortest found

    def found(self) -> str:
        if not self.counts:
            return "no anomaly"
        return ", ".join(f"{kind} x {n}" for kind, n in self.counts.items())

    def checked(self) -> str:
        return f"{self.transactions} transactions ({self.committed} committed)"


def check_histories(info: ConnectionInfo,
                    done: Callable[[HistoryRow], None] = lambda row: None) -> list[HistoryRow]:
    """Record and check one history per level, in a place of its own on ``info``."""
    keeper = PlaceKeeper(psycopg2.connect(**info.params()))
    rows = []
    try:
        with keeper.place(info, HERMITAGE) as connect:
            for level in HISTORY_LEVELS:
                rows.append(_row(level, list_append_history(
                    connect, level=level, workers=WORKERS, rounds=ROUNDS, keys=KEYS,
                    seed=SEED)))
                done(rows[-1])
    finally:
        keeper.close()
    return rows


def _row(level: str, recorded) -> HistoryRow:
    model = LEVEL_MODELS[level]
    verdict = check(recorded.operations, model)
    cycles = [anomaly for anomaly in verdict.anomalies if anomaly.steps]
    shortest = min(cycles, key=lambda anomaly: len(anomaly.steps), default=None)
    return HistoryRow(level, model, verdict.transactions, verdict.committed, verdict.counts(),
                      verdict.valid, shortest)


# --------------------------------------------------------------------------- drawing

EDGE_COLOURS = {"ww": "#0969da", "wr": "#1a7f37", "rw": "#cf222e"}


def cycle_svg(anomaly: Finding) -> str:
    """The cycle as a ring of transactions, one arrow per dependency, labelled ww/wr/rw
    (rw dashed: what a transaction did *not* see)."""
    count = len(anomaly.steps)
    radius = 55 + 14 * count
    size = 2 * radius + 90
    centre = size / 2
    points = [(centre + radius * math.sin(2 * math.pi * i / count),
               centre - radius * math.cos(2 * math.pi * i / count)) for i in range(count)]
    parts = [f'<svg class="cycle" width="{size:.0f}" '
             f'height="{size:.0f}" viewBox="0 0 {size:.0f} {size:.0f}" role="img" '
             f'font-family="system-ui, sans-serif" '
             f'aria-label="{html.escape(anomaly.kind)} cycle">']
    node, bend = 22, 34
    for i, step in enumerate(anomaly.steps):
        (x1, y1), (x2, y2) = points[i], points[(i + 1) % count]
        length = math.hypot(x2 - x1, y2 - y1) or 1
        # bend each arrow away from the ring's centre (for two transactions: to its
        # right, so that a -> b and b -> a do not overlap)
        px, py = -(y2 - y1) / length, (x2 - x1) / length
        if px * ((x1 + x2) / 2 - centre) + py * ((y1 + y2) / 2 - centre) < -1e-6:
            px, py = -px, -py
        cx, cy = (x1 + x2) / 2 + bend * px, (y1 + y2) / 2 + bend * py
        sx, sy = _towards(x1, y1, cx, cy, node)
        ex, ey = _towards(x2, y2, cx, cy, node)
        kind = step.dependency.kind
        colour = EDGE_COLOURS.get(kind, "#57606a")
        dash = ' stroke-dasharray="6 4"' if kind == "rw" else ""
        parts.append(f'<path d="M{sx:.1f},{sy:.1f} Q{cx:.1f},{cy:.1f} {ex:.1f},{ey:.1f}" '
                     f'fill="none" stroke="{colour}" stroke-width="2"{dash}>'
                     f"<title>{html.escape(step.words)}</title></path>")
        parts.append(_arrowhead(ex, ey, cx, cy, colour))
        # the label sits just beyond the curve's middle
        lx, ly = (x1 + x2) / 2 + (bend / 2 + 6) * px, (y1 + y2) / 2 + (bend / 2 + 8) * py
        anchor = "start" if px > 0.3 else "end" if px < -0.3 else "middle"
        label = f"{kind} {step.dependency.key}" if step.dependency.key is not None else kind
        parts.append(f'<text x="{lx:.1f}" y="{ly + 4:.1f}" text-anchor="{anchor}" '
                     f'font-size="12" fill="{colour}">{html.escape(str(label))}</text>')
    for (x, y), step in zip(points, anomaly.steps, strict=True):
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{node}" fill="#f6f8fa" '
                     f'stroke="#57606a"/><text x="{x:.1f}" y="{y + 4:.1f}" '
                     f'text-anchor="middle" font-size="12" font-weight="bold">'
                     f"{html.escape(step.source)}</text>")
    parts.append("</svg>")
    return "".join(parts)


def _arrowhead(x: float, y: float, fx: float, fy: float, colour: str) -> str:
    """A filled triangle with its tip at (x, y), pointing away from (fx, fy)."""
    bx, by = _towards(x, y, fx, fy, 10)
    length = math.hypot(x - bx, y - by) or 1
    nx, ny = -(y - by) / length * 5, (x - bx) / length * 5
    return (f'<polygon points="{x:.1f},{y:.1f} {bx + nx:.1f},{by + ny:.1f} '
            f'{bx - nx:.1f},{by - ny:.1f}" fill="{colour}"/>')


def _towards(x: float, y: float, tx: float, ty: float, distance: float) -> tuple[float, float]:
    """The point ``distance`` from (x, y) in the direction of (tx, ty)."""
    length = math.hypot(tx - x, ty - y) or 1
    return x + distance * (tx - x) / length, y + distance * (ty - y) / length
