"""The ACID report, shown: ``python -m acid_lab report [--dsn DSN] [--json] [--out DIR]``.

Prints a coloured matrix on a terminal (plain text otherwise), or with ``--json``
one JSON object; ``--out DIR`` also writes Markdown and HTML (:mod:`acid_lab.report.files`).
What is observed, and how, is :mod:`acid_lab.report.build`'s.

Exit status: 0 when the report was made (whatever it shows), 1 when it could
not be (no usable server, a scenario that could not finish), 2 for bad usage,
130 after Ctrl-C (once everything it started is stopped).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from acid_lab.lessons.catalog import POSSIBLE, PREVENTED
from acid_lab.report.build import (
    DEMO_MARK,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    KEY_LINES,
    MARK,
    WORKERS,
    Report,
    ReportError,
    legend_lines,
    make_report,
)
from acid_lab.report.files import write_files


def plain_text(report: Report) -> str:
    """The report for a file or a pipe: no colours, fixed-width columns."""
    codes = [anomaly.code for anomaly in report.anomalies]
    first = max(len(level) for level in report.levels) + 2

    def row(label: str, cells: list[str]) -> str:
        # each column as wide as its anomaly code, plus two spaces
        return (label.ljust(first) + "".join(cell.ljust(len(code) + 2)
                                             for cell, code in zip(cells, codes, strict=True))
                ).rstrip()

    lines = ["ACID report", report.server, report.summary(), "",
             f"Isolation ({MARK[PREVENTED]} prevented, {MARK[POSSIBLE]} possible)", "",
             row("", codes)]
    lines += [row(level, [MARK[report.cell(code, level)] for code in codes])
              for level in report.levels]
    lines += ["", "Legend"]
    code_width = max(len(code) for code in codes) + 2
    lines += [f"  {code.ljust(code_width)}{words}" for code, words in legend_lines(report)]
    lines += ["", *KEY_LINES, "", "Atomicity, consistency, durability"]
    letter_width = max(len(shown.letter) for shown in report.demonstrations) + 2
    lines += [f"  {DEMO_MARK[shown.ok]} {shown.letter.ljust(letter_width)}{shown.name} — "
              f"{shown.outcome}" for shown in report.demonstrations]
    lines += ["", HISTORIES_TITLE]
    lines += [f"  {line}" for line in history_lines(report)]
    lines += ["", REPLICATION_TITLE]
    lines += [f"  {line}" for line in replication_lines(report)]
    return "\n".join(lines) + "\n"


REPLICATION_TITLE = ("Replication (a primary and a hot standby; the primary's machine lost, "
                     "the standby promoted)")


def replication_lines(report: Report) -> list[str]:
    """Per setting: acknowledged commits lost at failover; was a standby read stale."""
    if not report.replication:
        return [report.replication_note or "not observed"]
    width = max(len(row.setting) for row in report.replication) + 2
    return [f"{row.setting.ljust(width)}at failover: {row.lost_text.ljust(14)}"
            f"standby read right after COMMIT: {row.stale_text}" for row in report.replication]


HISTORIES_TITLE = "Histories (random transactions on 4 threads, checked as Elle does)"


def history_lines(report: Report) -> list[str]:
    """Per level: transactions checked, anomalies by kind, one cycle explained."""
    if not report.histories:
        return [report.histories_note or "no histories recorded"]
    width = max(len(row.level) for row in report.histories) + 2
    lines = []
    for row in report.histories:
        lines.append(f"{row.level.ljust(width)}{row.checked()}: {row.found()}")
        if row.cycle is not None:
            lines.append(f"{'':{width}}e.g. {row.cycle.kind}: {row.cycle.explanation}")
    return lines


def print_rich(report: Report, console: Console) -> None:
    """The report on a terminal: a coloured matrix, the legend, the demonstrations."""
    console.print(Text("ACID report", style="bold"))
    console.print(report.server, style="cyan", highlight=False)
    console.print(report.summary(), style="dim", highlight=False)
    console.print()
    # no box: the eleven columns still fit an 80-column terminal
    matrix = Table(title="Isolation: what each level prevents", title_justify="left",
                   title_style="bold", box=None, pad_edge=False, padding=(0, 1),
                   header_style="bold underline")
    matrix.add_column("level", no_wrap=True, min_width=max(map(len, report.levels)))
    for anomaly in report.anomalies:
        matrix.add_column(anomaly.code, justify="center", no_wrap=True,
                          min_width=len(anomaly.code))
    style = {PREVENTED: "bold green", POSSIBLE: "bold red"}
    for level in report.levels:
        cells = (report.cell(anomaly.code, level) for anomaly in report.anomalies)
        matrix.add_row(level, *(Text(MARK[cell], style=style[cell]) for cell in cells))
    console.print(matrix)
    console.print()
    legend = Table.grid(padding=(0, 2))
    legend.add_column(style="bold", no_wrap=True)
    legend.add_column()
    for code, words in legend_lines(report):
        legend.add_row(code, words)
    console.print(legend)
    for line, colour in zip(KEY_LINES, ("green", "red"), strict=True):
        mark, words = line.split(" ", 1)
        console.print(Text.assemble((mark, f"bold {colour}"), " ", (words, "dim")))
    console.print()
    demos = Table(title="Atomicity, consistency, durability", title_justify="left",
                  box=box.SIMPLE_HEAVY, title_style="bold")
    demos.add_column("")
    demos.add_column("letter", no_wrap=True)
    demos.add_column("demonstration")
    demos.add_column("observed")
    demo_style = {True: "bold green", False: "bold red", None: "dim"}
    for shown in report.demonstrations:
        demos.add_row(Text(DEMO_MARK[shown.ok], style=demo_style[shown.ok]), shown.letter,
                      shown.name, Text(shown.outcome, style="dim" if shown.ok is None else ""))
    console.print(demos)
    console.print()
    console.print(Text(HISTORIES_TITLE, style="bold"))
    for line in history_lines(report):
        console.print(f"  {line}", highlight=False)
    console.print()
    console.print(Text(REPLICATION_TITLE, style="bold"))
    for line in replication_lines(report):
        console.print(f"  {line}", highlight=False)


# --------------------------------------------------------------------------- the command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m acid_lab report",
        description="Run the isolation matrix and the atomicity, consistency and durability "
                    "demonstrations on a PostgreSQL, live, and show what it guarantees.")
    parser.add_argument("--dsn", default=os.environ.get("ACID_LAB_DSN"),
                        help="an existing PostgreSQL (libpq DSN or URI; default: $ACID_LAB_DSN, "
                             "else a temporary server). The report works in a database of its "
                             "own there and drops it; durability is skipped.")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", metavar="DIR", type=Path,
                        help="also write acid-report.md and acid-report.html (timelines) here")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help=f"scenarios run at once, each in its own place (default {WORKERS})")
    return parser


def report_command(argv: Sequence[str], *, out: TextIO | None = None,
                   err: TextIO | None = None) -> int:
    """``python -m acid_lab report ...``; ``argv`` without the word "report"."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = build_parser().parse_args(list(argv))
    except SystemExit as exit_:
        return EXIT_OK if exit_.code == 0 else EXIT_USAGE
    if args.workers < 1:
        print("error: --workers must be at least 1", file=err)
        return EXIT_USAGE
    err_console = Console(file=err)
    try:
        report = make_report(args.dsn, workers=args.workers, progress_console=err_console)
    except ReportError as error:
        print(f"error: {error}", file=err)
        return EXIT_FAILED
    except KeyboardInterrupt:  # everything started has been stopped on the way out
        print("interrupted", file=err)
        return EXIT_INTERRUPTED
    _emit(report, args.json, out)
    if args.out is not None:
        try:
            written = write_files(report, args.out)
        except OSError as error:
            print(f"error: cannot write the report to {args.out}: {error}", file=err)
            return EXIT_FAILED
        for path in written:
            print(f"wrote {path}", file=err)
    return EXIT_OK


def _emit(report: Report, as_json: bool, out: TextIO) -> None:
    if as_json:
        json.dump(report.as_json(), out, ensure_ascii=False)
        out.write("\n")
        return
    console = Console(file=out)
    if console.is_terminal:
        print_rich(report, console)
    else:
        out.write(plain_text(report))


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m acid_lab.report.console ...``."""
    return report_command(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())

