"""The report as text: plain for a pipe or a file, with rich's tables on a terminal."""

from __future__ import annotations

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from acid_lab.lessons.catalog import POSSIBLE, PREVENTED
from acid_lab.report.build import DEMO_MARK, KEY_LINES, MARK, Report, legend_lines


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
