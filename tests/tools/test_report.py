"""The ACID report: ``python -m acid_lab report`` keeps its contract.

The report is the suite's summary for people who will not read the tests: one
command that shows what *this* PostgreSQL guarantees, the way Hermitage's
summary table does -- but every cell observed live, by running the anomaly's
schedule at that isolation level just now (the schedules written out in
``tests/test_isolation.py``, collected by ``acid_lab.lessons.catalog``), and one line per atomicity,
consistency and durability demonstration with what it observed.

These tests hold it to what the README promises: the ``--json`` shape, the
matrix Hermitage observed for PostgreSQL (read committed prevents G0 to OTV,
repeatable read adds PMP, P4 and G-single, serializable prevents all ten, read
uncommitted behaves as read committed; PostgreSQL's own documentation states
the SQL standard's phenomena -- dirty read, nonrepeatable read, phantom read,
serialization anomaly -- not these ten), ``--out`` files that open anywhere
(Markdown, and an HTML page with no outside resources whose timelines, folded
until opened, mark waits and aborts), plain text when the output is not a terminal, and one
clear line when there is no server. The report runs twice per module: once as
``make report`` runs it (a temporary server of its own, a crashable one for
durability), once on the suite's own server through ``--dsn``.
"""

import io
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import port_for
import pytest

from acid_lab.commands.report import report_command
from acid_lab.report.files import HTML_NAME, MARKDOWN_NAME
from acid_lab.servers.powercut import fuse_missing

pytestmark = pytest.mark.engine

PREVENTED, POSSIBLE = "prevented", "possible"
ANOMALIES = ["G0", "G1a", "G1b", "G1c", "OTV", "PMP", "P4", "G-single", "G2-item", "G2"]
LEVELS = ["read uncommitted", "read committed", "repeatable read", "serializable"]
SKIPPED = "skipped: needs a server the report starts itself"


@dataclass
class Run:
    """One ``report`` command: exit status and what it wrote to stdout and stderr."""

    status: int
    out: str
    err: str

    @property
    def json(self) -> dict:
        return json.loads(self.out)


def report(*argv: str) -> Run:
    """Run ``python -m acid_lab report ARGV`` in-process; stdout is not a terminal."""
    out, err = io.StringIO(), io.StringIO()
    status = report_command(list(argv), out=out, err=err)
    return Run(status, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def out_dir():
    """Where the full run writes its Markdown and HTML (removed afterwards)."""
    with tempfile.TemporaryDirectory(prefix="acid_lab-report-") as folder:
        yield Path(folder)


@pytest.fixture(scope="module")
def full_run(pytestconfig, out_dir):
    """``report --json --out DIR`` as ``make report`` runs it (or on --dsn, if the suite is)."""
    dsn = pytestconfig.getoption("dsn")
    run = report("--json", "--out", str(out_dir), *(["--dsn", dsn] if dsn else []))
    assert run.status == 0, f"the report could not be made:\n{run.err}"
    return run


@pytest.fixture(scope="module")
def plain_run(target):
    """``report --dsn <the suite's server>``, printed to a file: plain text."""
    run = report("--dsn", target.info.dsn())
    assert run.status == 0, f"the report could not be made:\n{run.err}"
    return run


def timeline_of(page: str, code: str, level: str) -> str:
    """The HTML of one scenario's timeline (without its transcript)."""
    anchor = f"{code}-{level.replace(' ', '-')}"
    found = re.search(rf'<details id="{anchor}">.*?(<table class="timeline".*?</table>)',
                      page, re.DOTALL)
    assert found, f"the page has no timeline for {code} at {level}"
    return found.group(1)


# -- --json --------------------------------------------------------------------


def test_json_has_the_documented_shape(full_run):
    """Scenario: ``report --json``.

    Outcome: one object with exactly server_version, matrix (anomaly -> level ->
    "prevented" | "possible", all ten by four) and demonstrations (letter, name,
    outcome, ok).
    """
    document = full_run.json
    assert list(document) == ["server_version", "matrix", "demonstrations"], \
        "the report's JSON keys differ from the README's"
    assert re.fullmatch(r"\d+(\.\d+)?", document["server_version"]), document["server_version"]
    assert list(document["matrix"]) == ANOMALIES, "matrix columns out of Hermitage's order"
    for code, row in document["matrix"].items():
        assert list(row) == LEVELS, f"{code}: levels missing or out of order"
        assert set(row.values()) <= {PREVENTED, POSSIBLE}, f"{code}: a cell is not a verdict"
    for shown in document["demonstrations"]:
        assert list(shown) == ["letter", "name", "outcome", "ok"], shown
        assert shown["ok"] in (True, False, None), shown


@pytest.mark.parametrize("level, row", [
    pytest.param("read uncommitted", {
        "G0": PREVENTED, "G1a": PREVENTED, "G1b": PREVENTED, "G1c": PREVENTED,
        "OTV": PREVENTED, "PMP": POSSIBLE, "P4": POSSIBLE, "G-single": POSSIBLE,
        "G2-item": POSSIBLE, "G2": POSSIBLE}, id="read uncommitted: same as read committed"),
    pytest.param("read committed", {
        "G0": PREVENTED, "G1a": PREVENTED, "G1b": PREVENTED, "G1c": PREVENTED,
        "OTV": PREVENTED, "PMP": POSSIBLE, "P4": POSSIBLE, "G-single": POSSIBLE,
        "G2-item": POSSIBLE, "G2": POSSIBLE}, id="read committed: prevents G0 to OTV"),
    pytest.param("repeatable read", {
        "G0": PREVENTED, "G1a": PREVENTED, "G1b": PREVENTED, "G1c": PREVENTED,
        "OTV": PREVENTED, "PMP": PREVENTED, "P4": PREVENTED, "G-single": PREVENTED,
        "G2-item": POSSIBLE, "G2": POSSIBLE}, id="repeatable read: adds PMP, P4, G-single"),
    pytest.param("serializable", {
        "G0": PREVENTED, "G1a": PREVENTED, "G1b": PREVENTED, "G1c": PREVENTED,
        "OTV": PREVENTED, "PMP": PREVENTED, "P4": PREVENTED, "G-single": PREVENTED,
        "G2-item": PREVENTED, "G2": PREVENTED}, id="serializable: prevents all ten"),
])
def test_matrix_is_hermitages_row_for_postgresql(full_run, level, row):
    """Scenario: the report's matrix, one level (row) at a time.

    Outcome: Hermitage's PostgreSQL row, observed live on this server.
    """
    observed = {code: cells[level] for code, cells in full_run.json["matrix"].items()}
    assert observed == row, f"the report's {level} row differs from Hermitage's for PostgreSQL"


# Each matrix column and the isolation chapter's test whose table states its verdicts.
CHAPTER_TESTS = {"G0": "test_g0_dirty_write", "G1a": "test_g1a_aborted_read",
                 "G1b": "test_g1b_intermediate_read",
                 "G1c": "test_g1c_circular_information_flow",
                 "OTV": "test_otv_observed_transaction_vanishes",
                 "PMP": "test_pmp_predicate_many_preceders", "P4": "test_p4_lost_update",
                 "G-single": "test_g_single_read_skew", "G2-item": "test_g2_item_write_skew",
                 "G2": "test_g2_anti_dependency_cycle"}


def chapter_verdicts(test) -> dict[str, str]:
    """level -> verdict, read from the ``level`` and ``verdict`` columns of the test's
    ``pytest.mark.parametrize`` table."""
    (table,) = [mark for mark in test.pytestmark if mark.name == "parametrize"]
    names, params = table.args
    columns = [name.strip() for name in names.split(",")]
    level, verdict = columns.index("level"), columns.index("verdict")
    return {param.values[level]: param.values[verdict] for param in params}


@pytest.mark.parametrize("code", [pytest.param(code, id=code) for code in CHAPTER_TESTS])
def test_report_matrix_is_the_chapters_literal_verdicts(full_run, code):
    """Scenario: the report's column for one anomaly, beside the isolation chapter's
    parameter table for it (tests/test_isolation.py, as the report loaded it).

    Outcome: at every level the report observed the verdict the chapter writes down.
    """
    from acid_lab.lessons.catalog import chapter_module

    written = chapter_verdicts(getattr(chapter_module(), CHAPTER_TESTS[code]))
    assert list(written) == LEVELS, f"{code}: the chapter's table does not cover the levels"
    assert full_run.json["matrix"][code] == written, (
        f"{code}: the report observed other verdicts than the isolation chapter states")


def test_one_line_per_letter_demonstration(full_run, pytestconfig):
    """Scenario: the demonstrations of the full run.

    Outcome: two atomicity, three consistency and four durability lines (two
    process crashes, two power cuts), each holding (ok true); on an existing server
    (--dsn) durability is skipped (ok null), and so are the power cuts without FUSE.
    """
    shown = full_run.json["demonstrations"]
    on_existing_server = bool(pytestconfig.getoption("dsn"))
    no_power_cuts = on_existing_server or fuse_missing() is not None
    assert [d["letter"] for d in shown] == (
        ["atomicity"] * 2 + ["consistency"] * 3 + ["durability"] * 4)
    assert [d["ok"] for d in shown] == ([True] * 5 + [None if on_existing_server else True] * 2
                                        + [None if no_power_cuts else True] * 2), (
        "a demonstration did not show its property:\n"
        + "\n".join(f"{d['letter']}: {d['name']}: {d['outcome']}" for d in shown))


# -- --out DIR -------------------------------------------------------------------


def test_out_writes_markdown_with_the_matrix(full_run, out_dir):
    """Scenario: ``report --out DIR``.

    Outcome: DIR/acid-report.md holds the matrix as a Markdown table, the
    legend and the demonstrations.
    """
    markdown = (out_dir / MARKDOWN_NAME).read_text(encoding="utf-8")
    assert "| level | G0 | G1a | G1b | G1c | OTV | PMP | P4 | G-single | G2-item | G2 |" in markdown
    assert "| read committed | ✓ | ✓ | ✓ | ✓ | ✓ | ✗ | ✗ | ✗ | ✗ | ✗ |" in markdown
    assert "| serializable | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ | ✓ |" in markdown
    assert "| G2-item | write skew" in markdown, "the legend is missing"
    assert "CHECK (balance >= 0) refuses an overdraft" in markdown


def test_out_writes_a_self_contained_html_page(full_run, out_dir):
    """Scenario: the HTML page of ``--out``.

    Outcome: one timeline per cell (40), style inline, and nothing fetched from
    anywhere: no scripts, links, images, fonts or URLs.
    """
    page = (out_dir / HTML_NAME).read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    assert page.count('<table class="timeline"') == 40, "one timeline per matrix cell"
    for outside in ("<script", "<link", "<img", "<iframe", "@import", "url(", "src=",
                    "http://", "https://"):
        assert outside not in page, f"the page is not self-contained: it has {outside!r}"


def test_histories_have_a_row_per_level_and_a_cycle_drawn(full_run, out_dir):
    """Scenario: the histories section of ``--out``: at three levels, 4 threads ran
    random list-append transactions (retries off), and the checker judged the history.

    Outcome: a row per level with the transactions checked and the anomalies by kind;
    read committed shows G-single, repeatable read only G2-item (write skew), each with
    one cycle explained and drawn as inline SVG; serializable shows no anomaly.
    """
    markdown = (out_dir / MARKDOWN_NAME).read_text(encoding="utf-8")
    rows = {level: re.search(rf"^\| {level} \| 41 transactions \(\d+ committed\) \| (.*)$",
                             markdown, re.MULTILINE) for level in LEVELS[1:]}
    assert all(rows.values()), f"a level has no histories row:\n{markdown}"
    assert rows["read committed"].group(1).startswith("G-single x ")
    assert re.match(r"G2-item x \d+ \| G2-item: T\d+ -> ", rows["repeatable read"].group(1))
    assert rows["serializable"].group(1) == "no anomaly |  |"
    page = (out_dir / HTML_NAME).read_text(encoding="utf-8")
    assert page.count('<svg class="cycle"') == 2, "one cycle drawn per level with anomalies"


@pytest.mark.parametrize("row", [
    pytest.param("| asynchronous | lost 3 of 5 | stale |", id="asynchronous: lost 3 of 5, stale"),
    pytest.param("| synchronous, remote_write | lost 0 of 2 | stale |",
                 id="remote_write: lost 0 of 2, stale"),
    pytest.param("| synchronous, on | lost 0 of 2 | stale |", id="on: lost 0 of 2, stale"),
    pytest.param("| synchronous, remote_apply | lost 0 of 2 | fresh |",
                 id="remote_apply: lost 0 of 2, fresh"),
])
def test_failover_has_a_row_per_setting(full_run, out_dir, pytestconfig, row):
    """Scenario: the replication section of ``--out``: a primary and a hot standby of the
    report's own, per setting a failover after the standby was cut off, and a standby
    read right after COMMIT with replay paused.

    Outcome: the row the id names; with --dsn, one line saying why it was skipped.
    """
    markdown = (out_dir / MARKDOWN_NAME).read_text(encoding="utf-8")
    if pytestconfig.getoption("dsn"):
        assert "skipped: needs a primary and a standby the report starts itself" in markdown
        return
    assert row in markdown.splitlines(), markdown[markdown.find("## Replication"):]


def test_html_timelines_are_folded_and_every_column_is_headed(full_run, out_dir):
    """Scenario: the HTML page of ``--out``, as a reader first sees it.

    Outcome: all 40 timelines are folded (``<details>`` without ``open``), so
    the page stays short; every table column has a heading, and the matrix's
    row labels sit on the same line as their cells (both vertically centred).
    """
    page = (out_dir / HTML_NAME).read_text(encoding="utf-8")
    assert page.count('<details id="') == 40, "one folded timeline per matrix cell"
    assert "<details open" not in page, "a timeline is unfolded from the start"
    assert "<th></th>" not in page and "<th scope=\"col\"></th>" not in page, (
        "a column without a heading")
    assert ".matrix th, .matrix td { vertical-align: middle; }" in page, (
        "the matrix's row labels are not aligned with their cells")
    markdown = (out_dir / MARKDOWN_NAME).read_text(encoding="utf-8")
    assert "| held | letter | demonstration | observed |" in markdown, (
        "the Markdown demonstrations table has a column without a heading")


@pytest.mark.parametrize("level, t2_resumes_with", [
    pytest.param("read committed", "UPDATE 1", id="read committed: T2 waits, then writes"),
    pytest.param("repeatable read", "✗ ERROR 40001", id="repeatable read: T2 waits, then aborts"),
])
def test_timeline_marks_waits_and_aborts(full_run, out_dir, level, t2_resumes_with):
    """Scenario: the lost-update (P4) timeline: T2's update waits for T1's lock.

    Outcome: the wait is marked where T2 sent it; where it resumed is marked
    after T1's commit, and at repeatable read it resumes with 40001, marked as
    an abort.
    """
    page = (out_dir / HTML_NAME).read_text(encoding="utf-8")
    timeline = timeline_of(page, "P4", level)
    waits = timeline.find('class="badge">waits')
    t1_commit = timeline.find("<code>commit</code>")
    resumes = timeline.find('class="badge">resumes')
    assert -1 < waits < t1_commit < resumes, \
        f"P4 at {level}: T2's wait must be marked before T1's commit, its resumption after"
    resumed = timeline[resumes:timeline.index("</td>", resumes)]
    assert t2_resumes_with in resumed, f"P4 at {level}: T2 resumed with {resumed!r}"
    assert ("✗" in resumed) == t2_resumes_with.startswith("✗"), \
        f"P4 at {level}: the abort mark is wrong in {resumed!r}"


# -- plain text, --dsn -------------------------------------------------------------


def test_plain_text_when_not_a_terminal(plain_run):
    """Scenario: ``report`` with stdout a file (not a terminal).

    Outcome: no colour codes, and the matrix as fixed-width text with the
    marks Hermitage observed for PostgreSQL.
    """
    assert "\x1b[" not in plain_run.out, "colour codes in output that is not a terminal"
    assert (
        "                  G0  G1a  G1b  G1c  OTV  PMP  P4  G-single  G2-item  G2\n"
        "read uncommitted  ✓   ✓    ✓    ✓    ✓    ✗    ✗   ✗         ✗        ✗\n"
        "read committed    ✓   ✓    ✓    ✓    ✓    ✗    ✗   ✗         ✗        ✗\n"
        "repeatable read   ✓   ✓    ✓    ✓    ✓    ✓    ✓   ✓         ✗        ✗\n"
        "serializable      ✓   ✓    ✓    ✓    ✓    ✓    ✓   ✓         ✓        ✓\n"
    ) in plain_run.out


def test_existing_server_skips_crash_demonstrations(plain_run):
    """Scenario: ``report --dsn ...``: the report may not crash someone else's server.

    Outcome: each durability line says it was skipped and why; the others ran.
    """
    lines = [line for line in plain_run.out.splitlines() if line.startswith("  ")]
    crash_lines = [line for line in lines if line.lstrip("✓✗– ").startswith("durability")]
    assert len(crash_lines) == 4 and all(line.endswith(SKIPPED) for line in crash_lines), \
        "\n".join(crash_lines)
    assert sum(line.startswith("  ✓ ") for line in lines) == 5, plain_run.out


def test_unreachable_server_is_one_clear_line(tmp_path):
    """Scenario: ``report --dsn`` naming a port where no server listens.

    Outcome: exit status 1, nothing on stdout, one line on stderr saying which
    server could not be reached.
    """
    port = port_for.select_random()
    run = report("--dsn", f"host=127.0.0.1 port={port} user=nobody password=x dbname=postgres",
                 "--out", str(tmp_path / "never"))
    assert run.status == 1, f"exit status {run.status}: {run.err}"
    assert run.out == ""
    assert run.err.count("\n") == 1 and run.err.startswith("error: "), run.err
    assert f"127.0.0.1:{port}" in run.err, run.err
    assert not (tmp_path / "never").exists(), "files written without a report"
