"""The ACID report as files: Markdown, and one self-contained HTML page with timelines.

``report --out DIR`` writes ``acid-report.md`` (the matrix, the legend, the
demonstrations) and ``acid-report.html``: the same, plus the timeline of every
scenario that decided a cell, folded until opened (a cell of the matrix links
to its own) -- one column per session, one row per step, in
the order the steps ran; a step that had to wait is marked where it was sent
and again where it resumed, an error (the transaction is aborted) in red.

The page has its style inline and no scripts, fonts or links to anywhere else:
it opens from the file system in any browser.
"""

from __future__ import annotations

import html
from pathlib import Path

from acid_lab.engine.events import RESUMED, Event, timeline_rows
from acid_lab.engine.scenario import ScenarioResult, StepResult
from acid_lab.report.build import DEMO_MARK, KEY, MARK, POSSIBLE, Report, legend_lines
from acid_lab.report.histories import cycle_svg

MARKDOWN_NAME = "acid-report.md"
HTML_NAME = "acid-report.html"


def write_files(report: Report, folder: Path) -> list[Path]:
    """Write both files into ``folder`` (created if needed); return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    markdown, page = folder / MARKDOWN_NAME, folder / HTML_NAME
    markdown.write_text(to_markdown(report), encoding="utf-8")
    page.write_text(to_html(report), encoding="utf-8")
    return [markdown, page]


# --------------------------------------------------------------------------- Markdown


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: Report) -> str:
    codes = [anomaly.code for anomaly in report.anomalies]
    lines = ["# ACID report", "", f"{report.server}.", report.summary(), "",
             "## Isolation", "",
             "| level | " + " | ".join(codes) + " |",
             "|---|" + ":-:|" * len(codes)]
    for level in report.levels:
        marks = [MARK[report.cell(code, level)] for code in codes]
        lines.append(f"| {level} | " + " | ".join(marks) + " |")
    lines += ["", KEY, "", "| anomaly | in plain words |", "|---|---|"]
    lines += [f"| {code} | {_md(words)} |" for code, words in legend_lines(report)]
    lines += ["", "## Atomicity, consistency, durability", "",
              "| held | letter | demonstration | observed |", "|:-:|---|---|---|"]
    lines += [f"| {DEMO_MARK[shown.ok]} | {shown.letter} | {_md(shown.name)} | "
              f"{_md(shown.outcome)} |" for shown in report.demonstrations]
    lines += ["", "## Histories", "", "| level | checked | anomalies found | one cycle |",
              "|---|---|---|---|"]
    lines += [f"| {row.level} | {row.checked()} | {_md(row.found())} | "
              f"{_md(row.cycle.kind + ': ' + row.cycle.explanation) if row.cycle else ''} |"
              for row in report.histories]
    if not report.histories:
        lines.append(f"| – | {_md(report.histories_note)} | | |")
    lines += ["", "## Replication", "", REPLICATION_NOTE, "",
              "| setting | acknowledged commits lost at failover | standby read right after "
              "COMMIT |", "|---|---|---|"]
    lines += [f"| {row.setting} | {row.lost_text} | {row.stale_text} |"
              for row in report.replication]
    if not report.replication:
        lines.append(f"| – | {_md(report.replication_note)} | |")
    lines += ["", f"The timeline of every scenario is in `{HTML_NAME}`.", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- timelines


def timeline(result: ScenarioResult) -> list[Event]:
    """The steps as they ran: each one sent, and each wait's end right after the step
    that ended it (a commit releases its lock, a deadlock check aborts it); from the
    runner's events, so the order is the transcript's."""
    return [row[0] for row in timeline_rows(result.events, group=False)]


def _aborted(step: StepResult) -> bool:
    """An error aborts the transaction; a COMMIT answered ROLLBACK shows it was aborted."""
    return step.status == "error" or (step.command == "ROLLBACK"
                                      and step.sql.strip().lower().startswith(("commit", "end")))


def _outcome_html(step: StepResult) -> str:
    outcome = html.escape(step.outcome())
    if _aborted(step):
        return f'<span class="outcome abort">✗ {outcome}</span>'
    return f'<span class="outcome">{outcome}</span>'


def _event_cell(event: Event) -> str:
    step = event.result
    if event.kind == RESUMED:
        css = "resumed aborts" if _aborted(step) else "resumed"
        return f'<td class="{css}"><span class="badge">resumes</span> {_outcome_html(step)}</td>'
    sql = f"<code>{html.escape(step.sql)}</code>"
    if step.blocked:
        return f'<td class="waits">{sql}<span class="badge">waits</span></td>'
    css = ' class="aborts"' if _aborted(step) else ""
    return f"<td{css}>{sql}{_outcome_html(step)}</td>"


def timeline_table(result: ScenarioResult) -> str:
    """One column per session, one row per event."""
    sessions = list(dict.fromkeys(step.session for step in result.steps))
    head = "".join(f"<th>{html.escape(name)}</th>" for name in sessions)
    rows = []
    for event in timeline(result):
        number = "" if event.kind == RESUMED else str(event.result.index)
        cells = "".join(_event_cell(event) if name == event.session else "<td></td>"
                        for name in sessions)
        rows.append(f'<tr><th class="n">{number}</th>{cells}</tr>')
    return (f'<table class="timeline" style="--sessions: {len(sessions)}">'
            f'<thead><tr><th class="n">#</th>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


# --------------------------------------------------------------------------- the page


STARTING_POINT = ("Starts from Hermitage's table <code>test (id, value)</code> = "
                  "<code>(1, 10), (2, 20)</code>, in a fresh place.")


def _anchor(*parts: str) -> str:
    return "-".join(part.replace(" ", "-") for part in parts)


STYLE = """
:root { --ok: #1a7f37; --bad: #cf222e; --wait: #9a6700; --muted: #57606a; --line: #d0d7de; }
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 1300px;
       padding: 0 1rem; color: #1f2328; }
h1 { margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid var(--line); }
.server { color: var(--muted); margin: 0; }
table { border-collapse: collapse; }
th, td { border: 1px solid var(--line); padding: .3rem .55rem; vertical-align: top; }
thead th { background: #f6f8fa; }
.matrix td { text-align: center; font-size: 1.2rem; line-height: 1.45rem; padding: .25rem .9rem; }
.matrix th, .matrix td { vertical-align: middle; }
.matrix th[scope=row], .matrix th.level { text-align: left; white-space: nowrap; }
.matrix a { text-decoration: none; font-weight: bold; display: block; }
.prevented, .prevented a { color: var(--ok); } .possible, .possible a { color: var(--bad); }
td.possible { background: #ffebe9; } td.prevented { background: #dafbe1; }
.key, .note { color: var(--muted); max-width: 60rem; }
dl.legend { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dl.legend dt { font-weight: bold; } dl.legend dd { margin: 0; }
.demos td:first-child { text-align: center; font-weight: bold; }
.demos .ok td:first-child { color: var(--ok); } .demos .failed td:first-child { color: var(--bad); }
.demos .skipped td { color: var(--muted); }
section.anomaly { margin-top: 1.6rem; }
details { margin: .6rem 0 .6rem 1rem; }
summary { cursor: pointer; font-weight: 600; }
summary .verdict { font-weight: normal; margin-left: .5rem; }
.timeline { margin: .4rem 0; table-layout: fixed; width: calc(3rem + var(--sessions) * 24rem); }
.timeline th.n { width: 3rem; color: var(--muted); font-weight: normal; text-align: right; }
.timeline code { display: block; white-space: pre-wrap; font-size: .85rem; }
.outcome { display: block; font-size: .85rem; color: var(--muted); }
.abort { color: var(--bad); font-weight: 600; }
td.waits, td.resumed { background: #fff8c5; }
td.aborts, td.resumed.aborts { background: #ffebe9; }
.badge { display: inline-block; font-size: .75rem; font-weight: 700; text-transform: uppercase;
         letter-spacing: .04em; color: var(--wait); border: 1px solid var(--wait);
         border-radius: .6rem; padding: 0 .45rem; margin-top: .15rem; }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; font-size: .8rem; }
.histories td { max-width: 44rem; } .histories svg { display: block; margin: .3rem auto; }
"""


def to_html(report: Report) -> str:
    title = f"ACID report: PostgreSQL {report.server_version}"
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        "<h1>ACID report</h1>",
        f'<p class="server">{html.escape(report.server)}</p>',
        f'<p class="server">{html.escape(report.summary())}</p>',
        _matrix_html(report), _demonstrations_html(report), _histories_html(report),
        _replication_html(report),
        _timelines_html(report),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def _matrix_html(report: Report) -> str:
    head = "".join(f'<th scope="col" title="{html.escape(a.name)}">{html.escape(a.code)}</th>'
                   for a in report.anomalies)
    rows = []
    for level in report.levels:
        cells = []
        for anomaly in report.anomalies:
            cell = report.cell(anomaly.code, level)
            cells.append(f'<td class="{cell}"><a href="#{_anchor(anomaly.code, level)}" '
                         f'title="{html.escape(anomaly.code)} at {level}: {cell}">'
                         f"{MARK[cell]}</a></td>")
        rows.append(f'<tr><th scope="row">{level}</th>{"".join(cells)}</tr>')
    legend = "".join(f"<dt>{html.escape(code)}</dt><dd>{html.escape(words)}</dd>"
                     for code, words in legend_lines(report))
    return (f"<h2>Isolation</h2>"
            f'<table class="matrix"><thead><tr><th scope="col" class="level">level</th>'
            f"{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
            f'<p class="key">{html.escape(KEY)} A cell links to its timeline below.</p>'
            f'<dl class="legend">{legend}</dl>')


def _demonstrations_html(report: Report) -> str:
    css = {True: "ok", False: "failed", None: "skipped"}
    rows = "".join(
        f'<tr class="{css[shown.ok]}"><td>{DEMO_MARK[shown.ok]}</td>'
        f"<td>{html.escape(shown.letter)}</td><td>{html.escape(shown.name)}</td>"
        f"<td>{html.escape(shown.outcome)}</td></tr>"
        for shown in report.demonstrations)
    return ("<h2>Atomicity, consistency, durability</h2>"
            '<table class="demos"><thead><tr><th scope="col">held</th><th scope="col">letter</th>'
            '<th scope="col">demonstration</th><th scope="col">observed</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def _histories_html(report: Report) -> str:
    rows = "".join(
        f"<tr><th scope=\"row\">{row.level}</th><td>{html.escape(row.checked())}</td>"
        f"<td>{html.escape(row.found())}</td><td>"
        + (f"<p><b>{html.escape(row.cycle.kind)}</b>: {html.escape(row.cycle.explanation)}"
           f"</p>{cycle_svg(row.cycle)}" if row.cycle else "")
        + "</td></tr>"
        for row in report.histories)
    if not report.histories:
        rows = f'<tr><td colspan="4">{html.escape(report.histories_note)}</td></tr>'
    return ("<h2>Histories</h2>"
            '<p class="note">At each level, four threads ran random transactions that read '
            "and append to lists, retries off; the checker then worked from what the clients "
            "saw alone: the order of appends each read reveals, who overwrote (ww), saw (wr) "
            "or missed (rw, dashed) whom, and the cycles no serial order can explain.</p>"
            '<table class="histories"><thead><tr><th scope="col">level</th>'
            '<th scope="col">checked</th><th scope="col">anomalies found</th>'
            '<th scope="col">one cycle, explained</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


REPLICATION_NOTE = (
    "A primary and a hot standby of the report's own. Per setting: two rows committed while "
    "the standby streams, the standby cut off, three more sessions commit (a synchronous "
    "COMMIT waits for the standby), the primary's machine lost, the standby promoted: how many "
    "of the acknowledged commits it lacks. And, with the standby's replay paused, whether a "
    "row read there right after its COMMIT returned was stale (remote_apply waits for replay).")


def _replication_html(report: Report) -> str:
    rows = "".join(
        f'<tr><th scope="row">{html.escape(row.setting)}</th>'
        f'<td class="{"possible" if row.lost else "prevented"}">{html.escape(row.lost_text)}</td>'
        f'<td class="{"possible" if row.stale_read else "prevented"}">'
        f"{html.escape(row.stale_text)}</td></tr>"
        for row in report.replication)
    if not report.replication:
        rows = f'<tr><td colspan="3">{html.escape(report.replication_note)}</td></tr>'
    return ("<h2>Replication</h2>"
            f'<p class="note">{html.escape(REPLICATION_NOTE)}</p>'
            '<table class="replication"><thead><tr><th scope="col">setting</th>'
            '<th scope="col">acknowledged commits lost at failover</th>'
            '<th scope="col">standby read right after COMMIT</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>")


def _timelines_html(report: Report) -> str:
    sections = ["<h2>Timelines</h2>",
                '<p class="note">Every scenario as it ran: one column per session, one row '
                "per step in the order sent. Each session's transaction begins implicitly at "
                "the level named (<code>begin transaction isolation level …</code>). "
                '<span class="badge">waits</span> marks a step the server made wait for another '
                'session, <span class="badge">resumes</span> the moment it went on; '
                '<span class="abort">✗ red</span> is an error: that transaction is aborted. '
                "Each timeline is folded: open it by its level.</p>"]
    for anomaly in report.anomalies:
        sections.append(
            f'<section class="anomaly" id="{_anchor(anomaly.code)}">'
            f"<h3>{html.escape(anomaly.code)}: {html.escape(anomaly.name)}</h3>"
            f"<p>{html.escape(anomaly.legend)}</p>"
            f"<p>{STARTING_POINT}</p>")
        for level in report.levels:
            observation = report.observations[anomaly.code, level]
            cell = report.cell(anomaly.code, level)
            verdict = ("possible: the anomaly happened" if cell == POSSIBLE
                       else "prevented: the anomaly did not happen")
            sections.append(
                f'<details id="{_anchor(anomaly.code, level)}">'
                f'<summary>{level} <span class="verdict {cell}">{MARK[cell]} {verdict}'
                f"</span></summary>{timeline_table(observation.result)}"
                f"<details><summary>transcript</summary>"
                f"<pre>{html.escape(observation.result.transcript)}</pre></details></details>")
        sections.append("</section>")
    return "\n".join(sections)

