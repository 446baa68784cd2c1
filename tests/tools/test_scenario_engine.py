"""The isolation engine itself: the scenario runner, the script parser, ``run``.

The isolation chapter stands on one promise: a schedule of steps from several
sessions runs in exactly the listed order, and a step that has to wait for
another session is *reported* as waiting -- because the server says so
(``pg_isolation_test_session_is_blocked``), not because a timer ran out.
These tests hold the engine to that promise: blocked steps are seen as
blocked (lock waits and the safe-snapshot wait of a deferrable transaction),
slow steps are not mistaken for blocked ones, a schedule that can never
finish fails within its bound with the transcript, and errors come back as
SQLSTATEs that psycopg2's error classes name.

The script half checks Hermitage's notation (``-- T2, BLOCKS``) is read as
published, and that ``python -m acid_lab run`` keeps its contract: the JSON
shape and exit statuses 0, 1 and 2.
"""

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from psycopg2 import errors

from acid_lab.commands.run import run_command
from acid_lab.engine.expectations import (
    CONCURRENT_UPDATE,
    RW_DEPENDENCIES,
    aborts,
    blocks,
    commits,
    rolls_back,
    sees,
    succeeds,
)
from acid_lab.engine.scenario import (
    OBSERVER,
    RAW,
    READ_COMMITTED,
    REPEATABLE_READ,
    SERIALIZABLE,
    T1,
    T2,
    ExpectationFailed,
    ScenarioRunner,
    ScheduleStuck,
)
from acid_lab.engine.script import ScriptError, parse_script

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SHORT_BOUND = 0.5  # seconds; a stuck schedule must fail about this fast


@pytest.fixture
def run(connect):
    """A scenario runner on this test's place: run(level, steps)."""
    with ScenarioRunner(connect) as runner:
        yield runner


@pytest.fixture
def dsn(target):
    """A libpq DSN to this run's own database, for the command line."""
    return target.info.dsn()


def lines_in_order(transcript, *expected):
    """True when each expected line appears in the transcript, in this order."""
    lines = transcript.splitlines()
    position = 0
    for line in expected:
        try:
            position = lines.index(line, position) + 1
        except ValueError:
            return False
    return True


# -- the runner ---------------------------------------------------------------

def test_a_step_waiting_for_a_lock_is_reported_blocked_and_then_unblocked(run):
    """Scenario: T1 updates row 1; T2 updates it too; T1 commits.

    Outcome: T2's update is reported BLOCKS (the server saw it wait for T1's
    row lock), the schedule goes on to T1's commit, and only then does T2's
    update finish ("unblocked").
    """
    result = run(READ_COMMITTED, [
        (T1, "update test set value = 11 where id = 1"),
        (T2, "update test set value = 12 where id = 1", blocks(then=succeeds)),
        (T1, "commit"),
        (T2, "commit"),
    ])

    t2_update = result.steps[1]
    assert t2_update.blocked, "a lock wait must be reported as blocked"
    assert lines_in_order(
        result.transcript,
        "update test set value = 12 where id = 1; -- T2, BLOCKS",
        "commit; -- T1. COMMIT",
        "-- T2, unblocked: UPDATE 1",
    ), f"T2 must show as blocked until T1 commits:\n{result.transcript}"


def test_a_slow_step_that_waits_for_no_one_is_not_reported_blocked(run):
    """Scenario: T1 runs a statement that takes 50 ms but waits for no other session.

    Outcome: not blocked. Slowness is not blocking; only the server can tell.
    """
    result = run(READ_COMMITTED, [
        (T1, "select pg_sleep(0.05)", sees("")),
        (T2, "select value from test where id = 1", sees(10)),
    ])

    assert not result.steps[0].blocked, "a slow statement must not be reported as blocked"


def test_a_safe_snapshot_wait_is_reported_blocked(run):
    """Scenario: T1, serializable, writes; T2 starts SERIALIZABLE READ ONLY DEFERRABLE and reads.

    Outcome: T2's read waits for a safe snapshot (no lock involved) until T1
    ends, and the runner reports that wait as blocked; then T2 sees the data
    as of its snapshot, before T1's write.
    """
    result = run(RAW, [
        (T1, "begin isolation level serializable"),
        (T1, "update test set value = 11 where id = 1"),
        (T2, "begin isolation level serializable read only deferrable"),
        (T2, "select value from test where id = 1", blocks(then=sees(10))),
        (T1, "commit"),
        (T2, "commit"),
    ])

    assert result.steps[3].blocked, "a safe-snapshot wait must be reported as blocked"


def test_a_schedule_that_cannot_finish_fails_within_its_bound_with_the_transcript(
        connect, observer):
    """Scenario: T2 blocks on T1's row lock, and T2's next step comes before T1 ever commits.

    Outcome: the runner gives up after its bound (not never), says why, shows
    the transcript so far, and cancels the stuck statement and closes the
    sessions: row 1 is free again for everyone else.
    """
    steps = [
        (T1, "begin"),
        (T1, "update test set value = 11 where id = 1"),
        (T2, "begin"),
        (T2, "update test set value = 12 where id = 1", blocks()),
        (T2, "commit"),  # T2 cannot get here: only T1's commit would release it
        (T1, "commit"),
    ]
    started = time.monotonic()
    with ScenarioRunner(connect, timeout=SHORT_BOUND) as runner, \
            pytest.raises(ScheduleStuck) as stuck:
        runner.run(RAW, steps)
    elapsed = time.monotonic() - started

    message = str(stuck.value)
    assert elapsed < SHORT_BOUND + 3, \
        f"a stuck schedule must fail within its bound, took {elapsed:.1f} s"
    assert "update test set value = 12 where id = 1; -- T2, BLOCKS" in message, \
        f"the failure must carry the transcript so far:\n{message}"
    assert "T2: `update test set value = 12 where id = 1` has not finished" in message, \
        f"the failure must say what is stuck:\n{message}"
    with observer.cursor() as cur:
        cur.execute("set lock_timeout = '5s'")
        cur.execute("update test set value = 99 where id = 1")
        assert cur.rowcount == 1, "the abandoned sessions must no longer hold row 1"


def test_a_serialization_failure_is_named_by_its_psycopg2_error_class(run):
    """Scenario: lost update at repeatable read; T2's blocked write fails when T1 commits.

    Outcome: the failure is SQLSTATE 40001, which psycopg2.errors calls
    SerializationFailure; the class-level TransactionRollback (40xxx) accepts
    it too, and DeadlockDetected (40P01) does not.
    """
    steps = [
        (T1, "select value from test where id = 1", sees(10)),
        (T2, "select value from test where id = 1", sees(10)),
        (T1, "update test set value = 11 where id = 1"),
        (T2, "update test set value = 12 where id = 1",
         blocks(then=aborts(errors.SerializationFailure))),
        (T1, "commit"),
        (T2, "rollback"),
    ]
    result = run(REPEATABLE_READ, steps)

    t2_update = result.steps[3]
    assert (t2_update.status, t2_update.sqlstate) == ("error", "40001"), \
        "a lost update at repeatable read is refused with a serialization failure"
    assert blocks(then=aborts(errors.TransactionRollback)).mismatch(t2_update) is None, \
        "a class-level error class stands for its whole SQLSTATE class"
    assert blocks(then=aborts("40001")).mismatch(t2_update) is None, \
        "a SQLSTATE string works as well"
    assert blocks(then=aborts(errors.DeadlockDetected)).mismatch(t2_update) is not None, \
        "a different SQLSTATE must not match"


def test_a_mismatch_names_the_step_expected_and_observed_and_shows_the_transcript(run):
    """Scenario: expect T2's write to be refused at read committed, where it succeeds.

    Outcome: AssertionError naming step 4, what was expected, what happened,
    and the whole transcript.
    """
    with pytest.raises(ExpectationFailed) as failed:
        run(READ_COMMITTED, [
            (T1, "select value from test where id = 1", sees(10)),
            (T1, "update test set value = 11 where id = 1"),
            (T1, "commit"),
            (T2, "update test set value = 12 where id = 1", aborts(errors.SerializationFailure)),
        ])

    message = str(failed.value)
    assert isinstance(failed.value, AssertionError), "a mismatch is a test failure"
    assert "step 4 (T2: update test set value = 12 where id = 1)" in message, message
    assert "expected: aborts with 40001 (SerializationFailure)" in message, message
    assert "observed: UPDATE 1" in message, message
    assert "update test set value = 11 where id = 1; -- T1. UPDATE 1" in message, \
        f"the failure must carry the transcript:\n{message}"


@pytest.mark.parametrize("expectation, observed", [
    pytest.param(sees(11), "observed: Shows 10", id="sees: other value"),
    pytest.param(blocks(), "observed: not blocked: Shows 10", id="blocks: did not block"),
    pytest.param(aborts(), "observed: Shows 10", id="aborts: succeeded"),
])
def test_each_expectation_can_fail(run, expectation, observed):
    """Scenario: a plain read of row 1 (value 10) held to a wrong expectation.

    Outcome: the scenario fails, saying what was observed.
    """
    with pytest.raises(ExpectationFailed, match=observed):
        run(READ_COMMITTED, [(T1, "select value from test where id = 1", expectation)])


@pytest.mark.parametrize("commit_step, observed", [
    pytest.param(commits, "observed: ROLLBACK", id="commits: the COMMIT answered ROLLBACK"),
    pytest.param(succeeds, "observed: ROLLBACK", id="succeeds: never passes a ROLLBACK"),
])
def test_a_commit_that_answers_rollback_does_not_pass(run, commit_step, observed):
    """Scenario: T1's transaction fails (division by zero), then T1 sends COMMIT.

    Outcome: the server answers ROLLBACK, without an error; neither ``commits``
    nor ``succeeds`` accepts that -- only ``rolls_back`` does.
    """
    failing = [(T1, "select 1 / 0", aborts(errors.DivisionByZero))]
    with pytest.raises(ExpectationFailed, match=observed):
        run(READ_COMMITTED, [*failing, (T1, "commit", commit_step)])
    run(READ_COMMITTED, [*failing, (T1, "commit", rolls_back)])


@pytest.mark.parametrize("expectation, observed", [
    pytest.param(rolls_back, "observed: COMMIT", id="rolls_back: the COMMIT committed"),
    pytest.param(aborts(errors.SerializationFailure), "observed: COMMIT",
                 id="aborts: the COMMIT committed"),
])
def test_a_commit_that_commits_is_not_a_rollback(run, expectation, observed):
    """Scenario: T1 updates row 1 and commits: the server answers COMMIT.

    Outcome: ``rolls_back`` (or an abort) held to it fails, saying COMMIT.
    """
    with pytest.raises(ExpectationFailed, match=observed):
        run(READ_COMMITTED, [(T1, "update test set value = 11 where id = 1"),
                             (T1, "commit", expectation)])


@pytest.mark.parametrize("message, passes", [
    pytest.param(CONCURRENT_UPDATE, True, id="concurrent update: the first updater won"),
    pytest.param(RW_DEPENDENCIES, False, id="read/write dependencies: another 40001"),
])
def test_aborts_tells_the_two_serialization_failures_apart(run, message, passes):
    """Scenario: the lost update at repeatable read: T2's update waits for T1, then fails.

    Outcome: it fails with 40001 "could not serialize access due to concurrent
    update"; the same SQLSTATE with the other text (SSI's read/write
    dependencies) does not match.
    """
    schedule = [
        (T1, "update test set value = 11 where id = 1"),
        (T2, "update test set value = 12 where id = 1",
         blocks(then=aborts(errors.SerializationFailure, message))),
        (T1, "commit", commits),
    ]
    if passes:
        run(REPEATABLE_READ, schedule)
    else:
        with pytest.raises(ExpectationFailed, match="concurrent update"):
            run(REPEATABLE_READ, schedule)


def test_a_step_that_blocks_unexpectedly_fails_even_if_it_then_succeeds(run):
    """Scenario: T2's update waits for T1, but the schedule says it simply succeeds.

    Outcome: failure: an unexpected wait changes what the schedule means.
    """
    with pytest.raises(ExpectationFailed, match="blocked, but the step was expected"):
        run(READ_COMMITTED, [
            (T1, "update test set value = 11 where id = 1"),
            (T2, "update test set value = 12 where id = 1", succeeds),
            (T1, "commit"),
        ])


def test_the_observer_stays_outside_any_transaction(run):
    """Scenario: T1 updates row 1; the observer reads it before and after T1 commits.

    Outcome: the observer sees 10, then 11: each of its reads is its own
    autocommit statement, never a transaction begun at the scenario's level.
    """
    result = run(REPEATABLE_READ, [
        (T1, "update test set value = 11 where id = 1"),
        (OBSERVER, "select value from test where id = 1", sees(10)),
        (T1, "commit"),
        (OBSERVER, "select value from test where id = 1", sees(11)),
    ])

    assert "-- observer. BEGIN" not in result.transcript, \
        f"the observer must not open a transaction:\n{result.transcript}"


def test_at_a_level_every_transaction_begins_at_that_level(run):
    """Scenario: at serializable, T1 asks its isolation level, commits, and asks again.

    Outcome: both transactions run at serializable; each began implicitly.
    """
    result = run(SERIALIZABLE, [
        (T1, "show transaction_isolation", sees("serializable")),
        (T1, "commit"),
        (T1, "show transaction_isolation", sees("serializable")),
    ])

    begins = result.transcript.count("begin transaction isolation level serializable; -- T1")
    assert begins == 2, f"a new transaction begins after each commit:\n{result.transcript}"


def test_raw_schedules_do_their_own_transaction_control(run):
    """Scenario: RAW; T1 asks its isolation level without any begin.

    Outcome: the server default, read committed, and nothing implicit in the transcript.
    """
    result = run(RAW, [(T1, "show transaction_isolation", sees("read committed"))])

    assert result.transcript == "show transaction_isolation; -- T1. Shows 'read committed'"


@pytest.mark.usefixtures("deadlock_timeout_settable")
def test_a_deadlock_aborts_one_session_with_40P01(run):
    """Scenario: T1 and T2 lock rows 1 and 2 in opposite orders; T2 has the short deadlock_timeout.

    Outcome: both wait; T2's deadlock check fails it with DeadlockDetected,
    and T1 gets its lock.
    """
    run(READ_COMMITTED, [
        (T1, "set local deadlock_timeout = '10s'"),
        (T2, "set local deadlock_timeout = '100ms'"),
        (T1, "update test set value = 11 where id = 1"),
        (T2, "update test set value = 22 where id = 2"),
        (T1, "update test set value = 21 where id = 2", blocks(then=succeeds)),
        (T2, "update test set value = 12 where id = 1",
         blocks(then=aborts(errors.DeadlockDetected))),
        (T2, "rollback"),
        (T1, "commit"),
        (OBSERVER, "select id, value from test order by id", sees((1, 11), (2, 21))),
    ])


def test_each_step_records_its_outcome_and_timing(run):
    """Scenario: one read and one failing statement.

    Outcome: every field of a step result is filled: session, sql, blocked,
    status, sqlstate, rows, error, start and duration.
    """
    result = run(RAW, [
        (T1, "select id, value from test order by id", sees((1, 10), (2, 20))),
        (T1, "select 1/0", aborts(errors.DivisionByZero)),
    ])

    read, failure = result.steps
    assert (read.session, read.sql, read.blocked, read.status, read.rows) == \
        (T1, "select id, value from test order by id", False, "ok", [[1, 10], [2, 20]])
    assert (failure.status, failure.sqlstate, failure.rows, failure.error) == \
        ("error", "22012", None, "division by zero")
    assert 0 <= read.started <= failure.started and read.elapsed > 0, "steps are timed"


def test_a_runner_reused_after_reset_starts_clean_on_another_schema(connect, observer, place):
    """Scenario: a long-lived runner runs in this test's schema, then reset() moves it
    to another schema.

    Outcome: the same warm sessions now see the other schema, and settings a
    session made before the reset are gone.
    """
    elsewhere = f"{place}_elsewhere"
    with observer.cursor() as cur:
        cur.execute(f"create schema {elsewhere}")
        cur.execute(f"create table {elsewhere}.test (id int, value int)")
    try:
        with ScenarioRunner(connect) as runner:
            runner.run(RAW, [
                (T1, "set application_name = 'before reset'"),
                (T1, "select count(*) from test", sees(2)),
            ])
            pid = runner.sessions[T1].pid
            runner.reset(search_path=elsewhere)
            runner.run(RAW, [
                (T1, "select count(*) from test", sees(0)),
                (T1, "show application_name", sees("")),
            ])
            assert runner.sessions[T1].pid == pid, "reset() keeps the connection warm"
    finally:
        with observer.cursor() as cur:
            cur.execute(f"drop schema {elsewhere} cascade")


def test_a_closed_runner_leaves_no_thread_and_no_connection(connect):
    """Scenario: run a blocking schedule, then close the runner.

    Outcome: no worker thread is left and every connection it opened is closed.
    """
    runner = ScenarioRunner(connect)
    runner.run(READ_COMMITTED, [
        (T1, "update test set value = 11 where id = 1"),
        (T2, "update test set value = 12 where id = 1", blocks()),
        (T1, "commit"),
    ])
    connections = [s.conn for s in runner.sessions.values()] + [runner.monitor.conn]
    threads = [s.thread for s in runner.sessions.values()] + [runner.monitor.thread]
    runner.close()

    assert not [t.name for t in threads if t.is_alive()], "every worker thread must be joined"
    assert all(conn.closed for conn in connections), "every connection must be closed"


def test_a_step_that_is_not_an_expectation_is_refused_before_anything_runs(run):
    """Scenario: `sees` passed without calling it.

    Outcome: a TypeError that suggests the call.
    """
    with pytest.raises(TypeError, match="did you mean"):
        run(READ_COMMITTED, [(T1, "select 1", sees)])


# -- the script parser ---------------------------------------------------------

def test_a_tag_may_be_followed_by_free_text():
    """Hermitage writes what a session sees after its tag: `-- T2, BLOCKS`,
    `-- T1. Shows 1 => 11`; the tag alone names the session."""
    script = parse_script(
        "update test set value = 12 where id = 1; -- T2, BLOCKS\n"
        "select * from test; -- T1. Shows 1 => 11\n"
        "commit; --T1\n"
    )

    assert [(s.session, s.sql, s.note) for s in script.steps] == [
        ("T2", "update test set value = 12 where id = 1", "BLOCKS"),
        ("T1", "select * from test", "Shows 1 => 11"),
        ("T1", "commit", ""),
    ]


def test_one_line_may_hold_several_statements_of_one_session():
    script = parse_script("begin; set transaction isolation level read committed; -- T1\n")

    assert [(s.session, s.sql, s.line) for s in script.steps] == [
        ("T1", "begin", 1),
        ("T1", "set transaction isolation level read committed", 1),
    ]


def test_untagged_statements_before_the_first_tag_are_setup():
    script = parse_script(
        "-- Lost update\n"
        "create table test (id int primary key, value int);\n"
        "insert into test (id, value)\n"
        "  values (1, 10), (2, 20);\n"
        "\n"
        "begin; -- T1\n"
    )

    assert [(s.sql, s.line) for s in script.setup] == [
        ("create table test (id int primary key, value int)", 2),
        ("insert into test (id, value)\n  values (1, 10), (2, 20)", 3),
    ]
    assert [s.session for s in script.setup] == [None, None]
    assert [(s.session, s.sql) for s in script.steps] == [("T1", "begin")]


def test_semicolons_inside_quotes_and_comments_do_not_end_a_statement():
    script = parse_script(
        "select 'a;b', E'it\\'s;', \"odd;name\", $$x;y$$, $fn$ ; -- T9 $fn$ -- T1\n"
        "select /* not ; here */ 1; -- T2\n"
        "-- T1 goes first (prose: nothing to tag)\n"
    )

    assert [(s.session, s.sql) for s in script.steps] == [
        ("T1", "select 'a;b', E'it\\'s;', \"odd;name\", $$x;y$$, $fn$ ; -- T9 $fn$"),
        ("T2", "select   1"),
    ]


@pytest.mark.parametrize("text, line, reason", [
    pytest.param("begin; -- T1\nselect 1;\n", 2, "without a session tag",
                 id="untagged after a tag"),
    pytest.param("begin; -- T1\n\nselect 'open\n; -- T2\n", 3, "unterminated string",
                 id="unterminated string"),
    pytest.param("begin; -- T1\nselect $q$ never closed; -- T2\n", 2, "unterminated dollar",
                 id="unterminated dollar quote"),
    pytest.param("begin; -- T1\n/* open\n", 2, "unterminated /*", id="unterminated comment"),
    pytest.param("create table t (a int);\n", 1, "no statement has a session tag",
                 id="no tag at all"),
    pytest.param("begin; -- T1\nselect 1\n", 2, "no session tag", id="last statement untagged"),
    pytest.param("\\set x 1\nbegin; -- T1\n", 1, "meta-commands", id="psql meta-command"),
])
def test_a_script_that_cannot_be_parsed_names_file_and_line(text, line, reason):
    with pytest.raises(ScriptError) as error:
        parse_script(text, "bad.sql")

    assert (error.value.path, error.value.line) == ("bad.sql", line)
    assert reason in error.value.message
    assert str(error.value).startswith(f"bad.sql:{line}: ")


# -- python -m acid_lab run -------------------------------------------------------

STEP_KEYS = {"session", "sql", "blocked", "status", "sqlstate", "rows", "error"}


def run_cli(*args, timeout=None):
    """run_command in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    options = {} if timeout is None else {"timeout": timeout}
    status = run_command([str(arg) for arg in args], out=out, err=err, **options)
    return status, out.getvalue(), err.getvalue()


def test_run_json_keeps_the_contract_shape(dsn):
    """Scenario: `run --json` on the lost-update-at-repeatable-read example.

    Outcome: exit 0 and exactly the README's object: server_version, scripts ->
    script, steps -> session, sql, blocked, status, sqlstate, rows, error; T2's
    update blocked and failed with 40001.
    """
    script = EXAMPLES / "lost_update_repeatable_read.sql"
    status, out, err = run_cli(script, "--dsn", dsn, "--json")

    assert status == 0, err
    report = json.loads(out)
    assert set(report) == {"server_version", "scripts"}
    assert isinstance(report["server_version"], str) and report["server_version"][0].isdigit()
    [entry] = report["scripts"]
    assert set(entry) == {"script", "steps"} and entry["script"] == str(script)
    assert all(set(step) == STEP_KEYS for step in entry["steps"])
    steps = {(step["session"], step["sql"]): step for step in entry["steps"]}
    assert steps[("T2", "update test set value = 12 where id = 1")] == {
        "session": "T2", "sql": "update test set value = 12 where id = 1", "blocked": True,
        "status": "error", "sqlstate": "40001", "rows": None,
        "error": "could not serialize access due to concurrent update",
    }
    assert steps[("T1", "select value from test where id = 1")]["rows"] == [[10]]
    assert steps[("T3", "select value from test where id = 1")]["rows"] == [[11]]
    assert len(entry["steps"]) == 11, "one step object per tagged statement"


def test_run_prints_hermitage_transcripts_for_every_example(dsn):
    status, out, err = run_cli(*sorted(EXAMPLES.glob("*.sql")), "--dsn", dsn)

    assert status == 0, err
    assert "update test set value = 12 where id = 1; -- T2, BLOCKS" in out
    assert "-- T2, unblocked: ERROR 40001 could not serialize access" in out
    assert "-- T2, unblocked: ERROR 40P01 deadlock detected" in out
    assert "select value from test where id = 1; -- T3. Shows 12" in out, \
        "at read committed the lost update happens"


def test_run_exits_2_for_a_script_that_cannot_be_parsed(tmp_path):
    """Nothing runs (the DSN is never used): the message names file and line."""
    bad = tmp_path / "bad.sql"
    bad.write_text("begin; -- T1\nselect 1;\n")
    status, out, err = run_cli(bad, "--dsn", "host=127.0.0.1 port=1")

    assert (status, out) == (2, "")
    assert f"{bad}:2:" in err


def test_run_exits_1_when_a_schedule_cannot_finish(tmp_path, dsn):
    stuck = tmp_path / "stuck.sql"
    stuck.write_text(
        "create table test (id int primary key, value int);\n"
        "insert into test values (1, 10);\n"
        "begin; update test set value = 11 where id = 1; -- T1\n"
        "update test set value = 12 where id = 1; -- T2, BLOCKS\n"
        "select 1; -- T2. Can never run: T1 never commits\n"
    )
    status, out, err = run_cli(stuck, "--dsn", dsn, timeout=SHORT_BOUND)

    assert status == 1, err
    assert "update test set value = 12 where id = 1; -- T2, BLOCKS" in out
    assert "schedule stuck" in err and str(stuck) in err


def test_run_exits_1_with_one_line_when_the_server_is_unreachable():
    status, out, err = run_cli(EXAMPLES / "dirty_write.sql", "--dsn", "host=127.0.0.1 port=1")

    assert status == 1
    assert err.count("\n") == 1 and err.startswith("error: cannot connect to 127.0.0.1:1")


def test_python_dash_m_acid_lab_run_end_to_end(dsn):
    """The real command line, in a child process."""
    completed = subprocess.run(
        [sys.executable, "-m", "acid_lab", "run", str(EXAMPLES / "write_skew_serializable.sql"),
         "--dsn", dsn, "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )

    assert completed.returncode == 0, completed.stderr
    [entry] = json.loads(completed.stdout)["scripts"]
    final_commit = [s for s in entry["steps"] if s["session"] == "T2"][-1]
    assert (final_commit["sql"], final_commit["sqlstate"]) == ("commit", "40001")
