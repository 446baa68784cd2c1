"""PostgreSQL's own isolation specs, run on our engine: ``python -m acid_lab spec``.

PostgreSQL tests its concurrency with *isolation-tester specs*: setup and
teardown blocks, sessions with named steps, and permutations (orders of steps)
with a golden output to compare with. Running those specs unchanged, and
printing exactly what PostgreSQL's own ``isolationtester`` prints, is the
strongest check that our engine decides "blocked" the way PostgreSQL does:
``step s2: ... <waiting ...>`` appears only when the server says the session
waits (``pg_isolation_test_session_is_blocked``), and ``step s2: <... completed>``
only once it went on.

Every spec here is written for this file (none is copied): a lock wait, result
tables aligned as libpq's PQprint does, notices, errors, blocker marks, every
interleaving when no permutation is listed, a bounded wait that cancels, and
the comparison with golden outputs -- including one that must differ.
"""

import io
import re
import textwrap

import pytest

from acid_lab.commands.spec import isolation_database, spec_command
from acid_lab.engine.spec import SpecError, parse_spec
from acid_lab.engine.spec_runner import SpecRunner

pytestmark = pytest.mark.engine

ACCOUNTS = """
setup {
  CREATE TABLE accounts (id int PRIMARY KEY, balance int);
  INSERT INTO accounts VALUES (1, 100);
}
teardown { DROP TABLE accounts; }
session alice
setup { BEGIN; }
step a_take { UPDATE accounts SET balance = balance - 10 WHERE id = 1; }
step a_commit { COMMIT; }
session bob
step b_take { UPDATE accounts SET balance = balance - 20 RETURNING balance; }
permutation a_take b_take a_commit
"""

ACCOUNTS_OUTPUT = """\
Parsed test spec with 2 sessions

starting permutation: a_take b_take a_commit
step a_take: UPDATE accounts SET balance = balance - 10 WHERE id = 1;
step b_take: UPDATE accounts SET balance = balance - 20 RETURNING balance; <waiting ...>
step a_commit: COMMIT;
step b_take: <... completed>
balance
-------
     70
(1 row)

"""


@pytest.fixture(scope="module")
def spec_database(target):
    """A database set up as the golden outputs assume (C messages, Los Angeles time...)."""
    with isolation_database(target.info.dsn()) as conninfo:
        yield conninfo


def spec_tester(conninfo, timeout):
    """Runs a spec text and returns what it printed; ``timeout`` bounds each step."""
    runner = SpecRunner(conninfo, timeout=timeout)

    def run(text):
        outcome = runner.run(parse_spec(textwrap.dedent(text), "written_here.spec"))
        assert outcome.stopped is None, outcome.output
        return outcome.output

    return run


@pytest.fixture(scope="module")
def tester(spec_database):
    """Runs a spec text and returns what it printed (a generous bound: nothing hangs here)."""
    return spec_tester(spec_database, timeout=30)


def test_a_step_waiting_for_a_lock_prints_waiting_then_completed(tester):
    """Scenario: alice updates row 1 in an open transaction; bob updates it too; alice commits.

    Outcome: bob's step is printed `<waiting ...>` (the server says he waits
    for alice's row lock), then `<... completed>` with his result after alice's
    COMMIT -- byte for byte the tester's format.
    """
    assert tester(ACCOUNTS) == ACCOUNTS_OUTPUT


def test_results_notices_and_errors_print_as_the_tester_prints_them(tester):
    """Scenario: one session selects text, numbers, NULL and non-ASCII; two result
    sets in one step; no rows; a notice; a division by zero.

    Outcome: PQprint's alignment (numeric-looking columns right-aligned, widths
    in bytes, NULL blank), every result set of a multi-statement step, the
    notice before its step line (it arrives first), `ERROR:  message`.
    """
    output = tester("""
        session s1
        step s1_show { SELECT 1 AS n, 'abc' AS t, NULL::int AS z, '-1.5e3' AS num, 'é' AS "ü"; }
        step s1_two { SELECT 1 AS a; SELECT g AS b FROM generate_series(1, 10) g WHERE g > 8; }
        step s1_nothing { SELECT 1 AS one WHERE false; }
        step s1_notice { DO $$BEGIN RAISE NOTICE 'hello from %', 's1'; END$$; }
        step s1_error { SELECT 1 / 0; }
    """)

    assert output == (
        "Parsed test spec with 1 sessions\n\n"
        "starting permutation: s1_show s1_two s1_nothing s1_notice s1_error\n"
        "step s1_show: SELECT 1 AS n, 'abc' AS t, NULL::int AS z, '-1.5e3' AS num,"
        " 'é' AS \"ü\";\n"
        "n|t  |z|   num|ü\n-+---+-+------+--\n1|abc| |-1.5e3|é\n(1 row)\n\n"
        "step s1_two: SELECT 1 AS a; SELECT g AS b FROM generate_series(1, 10) g WHERE g > 8;\n"
        "a\n-\n1\n(1 row)\n\n b\n--\n 9\n10\n(2 rows)\n\n"
        "step s1_nothing: SELECT 1 AS one WHERE false;\none\n---\n(0 rows)\n\n"
        "s1: NOTICE:  hello from s1\n"
        "step s1_notice: DO $$BEGIN RAISE NOTICE 'hello from %', 's1'; END$$;\n"
        "step s1_error: SELECT 1 / 0;\nERROR:  division by zero\n"
    )


def test_without_permutations_every_interleaving_runs(tester):
    """Scenario: s1 has two steps, s2 one, and no permutation line.

    Outcome: the three interleavings that keep each session's order, in the
    tester's order (s1's pile first).
    """
    output = tester("""
        session s1
        step s1a { SELECT 1; }
        step s1b { SELECT 2; }
        session s2
        step s2a { SELECT 3; }
    """)

    starts = [line for line in output.splitlines() if line.startswith("starting permutation")]
    assert starts == ["starting permutation: s1a s1b s2a", "starting permutation: s1a s2a s1b",
                      "starting permutation: s2a s1a s1b"]


MARKS = """
setup { CREATE TABLE t (id int); }
teardown { DROP TABLE t; }
session s1
step s1_lock { BEGIN; LOCK t; }
step s1_end { COMMIT; }
session s2
step s2_quick { SELECT 'quick' AS q; }
step s2_read { SELECT count(*) FROM t; }
"""


def test_an_asterisk_mark_reports_a_quick_step_as_waiting(tester):
    """Scenario: s2_quick(*) finishes at once, yet is marked (*).

    Outcome: it prints `<waiting ...>` when launched and `<... completed>` after
    the next step, as the tester does for steps that may or may not be seen waiting.
    """
    output = tester(MARKS + "permutation s2_quick(*) s1_lock s2_read s1_end\n")

    assert "step s2_quick: SELECT 'quick' AS q; <waiting ...>\n" \
           "step s1_lock: BEGIN; LOCK t;\nstep s2_quick: <... completed>\n" in output
    assert "step s2_read: SELECT count(*) FROM t; <waiting ...>\nstep s1_end: COMMIT;\n" \
           "step s2_read: <... completed>\n" in output


def test_a_permutation_that_cannot_go_on_is_cancelled_within_its_bound(spec_database):
    """Scenario: s2 waits for s1's table lock, and the permutation asks s2 for its
    next step before s1 ever commits (an impossible schedule).

    Outcome: after the bound (0.5 s here) the waiting step is cancelled, as the
    tester says in its own words, and the permutation goes on -- never a hang.
    """
    impatient = spec_tester(spec_database, timeout=0.5)

    output = impatient(MARKS + "permutation s1_lock s2_read s2_quick s1_end\n")

    assert re.search(r"step s2_read: SELECT count\(\*\) FROM t; <waiting \.\.\.>\n"
                     r"isolationtester: canceling step s2_read after \d+ seconds\n"
                     r"step s2_read: <\.\.\. completed>\n"
                     r"ERROR:  canceling statement due to user request\n", output), output


def test_the_spec_command_compares_with_golden_outputs_and_skips_what_the_server_lacks(
        tmp_path, target):
    """Scenario: three specs in one run: one whose golden output is right, one whose
    golden output says bob's balance is 80 (it is 70), one that needs an extension
    no server has.

    Outcome: "ok", "FAILED" with a unified diff, "skipped" with the reason, the
    summary "1 of 2 specs match (1 skipped)", and exit status 1.
    """
    golden, specs = tmp_path / "expected", tmp_path / "specs"
    golden.mkdir()
    specs.mkdir()
    (specs / "matches.spec").write_text(ACCOUNTS)
    (golden / "matches.out").write_text(ACCOUNTS_OUTPUT)
    (specs / "differs.spec").write_text(ACCOUNTS)
    (golden / "differs.out").write_text(ACCOUNTS_OUTPUT.replace("     70", "     80"))
    (specs / "needs.spec").write_text(
        "setup { CREATE EXTENSION no_such_extension_anywhere; }\n"
        "session s1\nstep s1a { SELECT 1; }\n")
    out, err = io.StringIO(), io.StringIO()

    status = spec_command([str(specs / "matches.spec"), str(specs / "differs.spec"),
                           str(specs / "needs.spec"), "--dsn", target.info.dsn(),
                           "--expected", str(golden)], out=out, err=err)

    report = out.getvalue()
    assert status == 1, err.getvalue()
    assert f"ok      {specs / 'matches.spec'}" in report
    assert f"FAILED  {specs / 'differs.spec'}" in report
    assert "\n-     80\n+     70\n" in report
    assert f"skipped {specs / 'needs.spec'}: needs the extension no_such_extension_anywhere" \
        in report
    assert report.endswith("1 of 2 specs match (1 skipped)\n")


def test_the_spec_parser_keeps_sql_as_written_and_reads_blocker_marks():
    spec = parse_spec(textwrap.dedent("""\
        # a comment
        setup { CREATE TABLE a (i int); }
        setup
        {
          VACUUM a;
        }
        session "first one"
        step "s1" {   SELECT 1;   }
        session s2
        step s2a { SELECT 2; }
        step s2b { }
        permutation s1(*) "s2a"(s1, s1 notices 2) s2b
    """))

    assert spec.setup == ["CREATE TABLE a (i int);", "\n  VACUUM a;\n"]
    assert [s.name for s in spec.sessions] == ["first one", "s2"]
    assert spec.steps()["s1"].sql == "SELECT 1;" and spec.steps()["s2b"].sql == ""
    [permutation] = spec.permutations
    assert [(p.name, [str(b) for b in p.blockers]) for p in permutation] == [
        ("s1", ["*"]), ("s2a", ["s1", "s1 notices 2"]), ("s2b", [])]


@pytest.mark.parametrize(("text", "line", "reason"), [
    pytest.param("session s1\nstep a { SELECT 1;\n", 2, "unterminated sql block",
                 id="unterminated block"),
    pytest.param("session s1\nstep a { SELECT 1; }\npermutation a b\n", None,
                 'undefined step "b"', id="unknown step"),
    pytest.param("session s1\nstep a { }\nsession s2\nstep a { }\n", None,
                 "duplicate step name: a", id="duplicate step"),
    pytest.param("session s1\nstep a { }\nstep b { }\npermutation a(b) b\n", None,
                 "cannot block on its own session", id="blocker in own session"),
    pytest.param("setup { }\n\nsession s1\n  step a { } %\n", 4, "unexpected character",
                 id="stray character"),
])
def test_a_spec_that_cannot_be_parsed_names_file_and_line(text, line, reason):
    with pytest.raises(SpecError) as raised:
        parse_spec(text, "bad.spec")

    where = f"bad.spec:{line}: " if line else "bad.spec: "
    assert str(raised.value).startswith(where) and reason in str(raised.value)
