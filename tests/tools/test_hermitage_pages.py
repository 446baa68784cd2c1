"""Hermitage pages run as published, their notes checked: ``run PAGE.md --check``.

Hermitage (Martin Kleppmann's test suite of isolation levels) publishes one
Markdown page per database: a setup block, then one ```` ```sql ```` block per
anomaly, each statement tagged with its session (``-- T1``, ``-- T2``,
``-- either``) and followed by what the author saw: ``BLOCKS``, ``Shows 1 =>
11``, ``This unblocks T2``, ``Prints out "ERROR: ..."``. Running such a page
unchanged and reading every note as an expectation turns prose into a test:
each note agrees with this server, DISAGREES (and says what happened instead),
or makes no claim -- and a note we cannot read is reported, never passed.

The pages here are written for this file. One of them says things PostgreSQL
does not do: a checker that cannot disagree would prove nothing.
"""

import io
import json
import textwrap

import pytest

from acid_lab.commands.run import run_command
from acid_lab.engine.notes import parse_note
from acid_lab.engine.script import ScriptError, parse_page

pytestmark = pytest.mark.engine

PAGE = """\
Two anomalies
=============

Setup (before every test case):

```sql
create table test (id int primary key, value int);
insert into test (id, value) values (1, 10), (2, 20);
```

To see the level (not a script: nothing is tagged):

```sql
select current_setting('transaction_isolation');
```

Dirty write
-----------

Read committed makes T2 wait:

```sql
begin; set transaction isolation level read committed; -- T1
begin; set transaction isolation level read committed; -- T2
update test set value = 11 where id = 1; -- T1
update test set value = 12 where id = 1; -- T2, BLOCKS
commit; -- T1. This unblocks T2
commit; -- T2
select * from test order by id; -- Either. Shows 1 => 12, 2 => 20
```

Write skew
----------

Serializable refuses the second commit:

```sql
begin; set transaction isolation level serializable; -- T1
begin; set transaction isolation level serializable; -- T2
select * from test where id in (1,2); -- T1
select * from test where id in (1,2); -- T2
update test set value = 11 where id = 1; -- T1
update test set value = 21 where id = 2; -- T2
commit; -- T1
commit; -- T2. Prints out "ERROR: could not serialize access due to read/write dependencies ..."
```
"""

# The same schedules with notes that are false on PostgreSQL.
WRONG = (PAGE
         .replace("-- T2, BLOCKS", "-- T2")
         .replace("-- T1. This unblocks T2", "-- T1. Unblocks T2, which shows 1 => 99")
         .replace("Shows 1 => 12, 2 => 20", "Shows 1 => 11, 2 => 20")
         .replace('-- T1\ncommit; -- T2. Prints', '-- T1. Returns nothing\ncommit; -- T2. Prints'))


def run_page(tmp_path, text, *args, dsn):
    page = tmp_path / "page.md"
    page.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    status = run_command([str(page), "--dsn", dsn, *args], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def dsn(target):
    return target.info.dsn()


def test_a_page_is_split_into_scripts_named_by_heading_and_sentence():
    scripts = parse_page(PAGE, "page.md")

    assert [s.name for s in scripts] == [
        "page.md: Dirty write: Read committed makes T2 wait",
        "page.md: Write skew: Serializable refuses the second commit"]
    first = scripts[0]
    assert [s.sql for s in first.setup][0] == \
        "create table test (id int primary key, value int)"
    assert first.steps[-1].session == "either", "-- Either is a session of its own"
    assert first.steps[3].line == 24, "lines are the page's"


def test_a_page_whose_script_cannot_be_parsed_names_the_page_line():
    bad = PAGE.replace("commit; -- T2\n", "commit;\n")
    with pytest.raises(ScriptError) as raised:
        parse_page(bad, "page.md")

    assert str(raised.value).startswith("page.md:28: ")


@pytest.mark.parametrize(("note", "reads_as"), [
    pytest.param("BLOCKS", "blocks", id="blocks"),
    pytest.param("This unblocks T2", "unblocks T2", id="unblocks"),
    pytest.param("Shows 1 => 11, 2 => 21", "shows 1 => 11, 2 => 21", id="shows rows"),
    pytest.param("Still shows 1 => 10", "shows 1 => 10", id="still shows"),
    pytest.param("Now shows 1 => 11", "shows 1 => 11", id="now shows"),
    pytest.param("Shows 10", "shows 10", id="one value"),
    pytest.param("Returns nothing", "returns nothing", id="returns nothing"),
    pytest.param("Returns 3 => 30, 4 => 42", "shows 3 => 30, 4 => 42", id="returns rows"),
    pytest.param("Returns the newly inserted row", "returns rows", id="newly inserted row"),
    pytest.param('Prints "ERROR: could not serialize access due to concurrent update"',
                 'fails with "could not serialize access due to concurrent update"',
                 id="prints an error"),
    pytest.param('T2 now prints out "ERROR: could not serialize access due to concurrent update"',
                 'unblocks T2, which fails with "could not serialize access due to '
                 'concurrent update"', id="another session's error"),
    pytest.param("BLOCKS (eventually shows 1 => 10, 2 => 20)",
                 "blocks, then shows 1 => 10, 2 => 20", id="blocks then shows"),
    pytest.param("aborts with deadlock error, unblocks T2",
                 "fails with a deadlock (40P01); unblocks T2", id="deadlock"),
    pytest.param("There's nothing else we can do, this transaction has failed",
                 "the transaction had failed already", id="failed transaction"),
    pytest.param("rollback", "answers ROLLBACK", id="rollback"),
    pytest.param("T2 unblocks: ERROR 40001 could not serialize access",
                 'unblocks T2, which fails with 40001 "could not serialize access"',
                 id="transcript notation"),
    pytest.param("Doesn't delete anything", "changes no row", id="deletes nothing"),
])
def test_hermitage_phrasing_is_read_as_claims(note, reads_as):
    parsed = parse_note(note)

    assert parsed.unreadable is None
    assert parsed.describe() == reads_as


def test_commentary_is_kept_apart_and_an_unknown_note_is_unreadable():
    kept = parse_note("returns 1 => 20 (despite ostensibly having been deleted)")
    unknown = parse_note("PostgreSQL BLOCKS but this database does not")

    assert (kept.describe(), kept.commentary) == (
        "shows 1 => 20", "(despite ostensibly having been deleted)")
    assert unknown.unreadable == "PostgreSQL BLOCKS but this database does not"


def test_a_page_whose_notes_are_true_agrees_everywhere(tmp_path, dsn):
    """Scenario: the page above, run with --check.

    Outcome: exit 0; the blocked update, the unblocking commit, the final read and
    the serialization failure all agree; the total says so.
    """
    status, out, err = run_page(tmp_path, PAGE, "--check", dsn=dsn)

    assert status == 0, out + err
    assert "update test set value = 12 where id = 1; -- T2 BLOCKS  => agrees" in out
    assert "commit; -- T1 This unblocks T2  => agrees" in out
    assert out.endswith("-- check, 2 scripts: 4 agree, 0 DISAGREE, 0 unreadable, "
                        "15 no claim\n")


def test_notes_that_are_false_disagree_and_say_what_happened(tmp_path, dsn):
    """Scenario: the same schedules, with notes PostgreSQL contradicts: no BLOCKS on
    the blocked update, T2 said to show 99, the final read said to show T1's value,
    a `Returns nothing` on a commit.

    Outcome: exit 1; each false note DISAGREES with what was expected and what
    happened; the dropped BLOCKS is merely no claim.
    """
    status, out, err = run_page(tmp_path, WRONG, "--check", dsn=dsn)

    assert status == 1
    assert ("commit; -- T1 Unblocks T2, which shows 1 => 99  => DISAGREES (expected: "
            "unblocks T2, which shows 1 => 99; happened: T2: blocked, then UPDATE 1)") in out
    assert ("select * from test order by id; -- either Shows 1 => 11, 2 => 20  => DISAGREES "
            "(expected: shows 1 => 11, 2 => 20; happened: Shows (1, 12), (2, 20))") in out
    assert ("commit; -- T1 Returns nothing  => DISAGREES (expected: returns nothing; "
            "happened: COMMIT)") in out
    assert out.endswith("-- check, 2 scripts: 1 agree, 3 DISAGREE, 0 unreadable, "
                        "15 no claim\n")


def test_an_unreadable_note_fails_the_check(tmp_path, dsn):
    text = PAGE.replace("-- T2, BLOCKS", "-- T2, waits politely")
    status, out, err = run_page(tmp_path, text, "--check", dsn=dsn)

    assert status == 1
    assert "=> DISAGREES (expected: unreadable note: 'waits politely'" in out
    assert "1 unreadable" in out


def test_check_json_gives_each_step_its_expectation_and_verdict(tmp_path, dsn):
    status, out, err = run_page(tmp_path, textwrap.dedent(WRONG), "--check", "--json", dsn=dsn)

    report = json.loads(out)
    assert status == 1
    steps = report["scripts"][0]["steps"]
    assert all({"expected", "agrees"} <= set(step) for step in steps)
    final = steps[-1]
    assert final["session"] == "either" and final["agrees"] is False
    assert final["expected"]["claims"] == [{"claim": "rows", "rows": [[1, 11], [2, 20]]}]
    assert steps[0]["expected"] is None and steps[0]["agrees"] is None
    assert report["check"] == {"scripts": 2, "agree": 1, "disagree": 3, "unreadable": 0,
                               "no_claim": 15}
