"""Engine: the parsers of what users give `run` and `spec`, fuzzed.

Hypothesis mutates real inputs (the examples/ scripts and page, a few specs written here,
Hermitage's phrasing of notes) and makes up random ones. Every parser must give a result
or its one clean error -- ScriptError, SpecError; a note is always read, unreadable at
worst -- never IndexError, KeyError, RecursionError..., and within the deadline. An error
is one line quoting at most a couple of hundred characters of the input.
"""

import os
import string
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acid_lab.engine.notes import parse_note
from acid_lab.engine.script import ScriptError, parse_page, parse_script
from acid_lab.engine.spec import SpecError, parse_spec

pytestmark = pytest.mark.engine

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = [path.read_text(encoding="utf-8") for path in sorted(EXAMPLES.glob("*.sql"))]
PAGES = [path.read_text(encoding="utf-8") for path in sorted(EXAMPLES.glob("*.md"))]
SPECS = [
    "setup { CREATE TABLE t (id int primary key, v int); INSERT INTO t VALUES (1, 1); }\n"
    "teardown { DROP TABLE t; }\n"
    "session s1\nsetup { BEGIN; }\nstep r1 { SELECT * FROM t; }\nstep c1 { COMMIT; }\n"
    "session s2\nstep w2 { UPDATE t SET v = 2; }\nteardown { ROLLBACK; }\n"
    "permutation r1 w2(r1) c1\npermutation w2(*) r1 c1\n",
    '# every interleaving\nsession "first one"\nstep a { SELECT 1; }\nstep b { }\n'
    "session s2\nstep c { SELECT pg_notify('x', 'y'); }\n",
    "session s1\nstep s1a { LOCK t; }\nsession s2\nstep s2a { SELECT 1; }\n"
    "permutation s1a s2a(s1a notices 2, *)\n",
]
NOTES = [
    "BLOCKS", "Shows 1 => 11, 2 => 21", "Still shows 1 => 10", "Returns nothing",
    "This unblocks T2", 'T2 now prints out "ERROR: could not serialize access ..."',
    'Prints "ERROR 1213 (40001): Deadlock found"', "aborts with deadlock error",
    "There's nothing else we can do, this transaction has failed",
    "BLOCKS (eventually shows 1 => 10)", "T2 unblocks: shows 2 => 20", "UPDATE 0",
    "returns 1 => 20 (despite ostensibly having been deleted)", "Doesn't delete anything",
]
# the pieces each notation is made of: mutations splice them in
PIECES = ["'", '"', "$$", "$a$", "E'\\'", "/*", "*/", "--", "-- T1", "-- T2, BLOCKS",
          "-- either", ";", "\n", "```", "```sql\n", "~~~", "#", "===\n", "\\set", "{", "}",
          "(", ")", "*", ",", "permutation ", "session ", "step ", "setup ", "notices 9",
          "=>", "ERROR:", "T1", " ", "\t", "\r", "\x00", "\u2028", "é"]

# few examples and a bound on each: the chapter stays within its time budget
FUZZ = settings(max_examples=60, deadline=timedelta(seconds=2),
                suppress_health_check=[HealthCheck.too_slow],
                **({"derandomize": True} if os.environ.get("CI") == "true" else {}))


@st.composite
def mutated(draw, seeds: list[str]) -> str:
    """A seed with a few slices cut, doubled or replaced by pieces of the notation."""
    text = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(0, 6))):
        start = draw(st.integers(0, len(text)))
        end = min(len(text), start + draw(st.integers(0, 40)))
        piece = draw(st.one_of(st.sampled_from(PIECES), st.text(max_size=12),
                               st.just(text[start:end] * 3)))
        text = text[:start] + piece + text[end:]
    return text


def inputs(seeds: list[str]):
    return st.one_of(mutated(seeds), st.lists(st.sampled_from(PIECES)).map("".join),
                     st.text(max_size=200))


def _clean(error: Exception) -> None:
    message = str(error)
    assert "\n" not in message and len(message) < 400, message


@FUZZ
@given(inputs(SCRIPTS))
def test_the_script_parser_gives_a_script_or_one_clean_error(text):
    try:
        script = parse_script(text, "fuzzed.sql")
    except ScriptError as error:
        _clean(error)
        return
    assert script.steps and all(step.session for step in script.steps)
    assert len(script.schedule()) == len(script.steps)


@FUZZ
@given(inputs(PAGES))
def test_the_page_parser_and_its_notes_give_scripts_or_one_clean_error(text):
    try:
        scripts = parse_page(text, "fuzzed.md")
    except ScriptError as error:
        _clean(error)
        return
    for script in scripts:
        for step in script.steps:
            note = parse_note(step.note)
            note.describe()
            note.as_json()


@FUZZ
@given(st.one_of(mutated(NOTES), st.text(max_size=100),
                 st.lists(st.sampled_from(NOTES + PIECES + list(string.digits))).map(" ".join)))
def test_a_note_is_always_read_claims_or_unreadable(text):
    note = parse_note(text)
    assert note.text == text
    note.describe()
    note.as_json()


@FUZZ
@given(inputs(SPECS))
def test_the_spec_parser_gives_a_spec_or_one_clean_error(text):
    try:
        spec = parse_spec(text, "fuzzed.spec")
    except SpecError as error:
        _clean(error)
        return
    steps = spec.steps()
    for permutation in spec.all_permutations():
        assert all(pstep.name in steps for pstep in permutation)


# -- the worst cases, which random mutations do not reach by chance ------------------
# Each took minutes (time growing as the square of the input) or crashed before: the
# timeout bounds the test, it does not time it.

def _outcome(parse, text: str) -> str:
    """What a parser made of ``text``, in a word: the error's message, or the result's."""
    try:
        result = parse(text)
    except (ScriptError, SpecError) as error:
        _clean(error)
        return f"error: {error.message}"
    if hasattr(result, "unreadable"):  # a note
        return "unreadable" if result.unreadable is not None else "read"
    if hasattr(result, "all_permutations"):  # a spec
        return f"{len(result.all_permutations())} permutation(s)"
    return f"{len(result)} script(s)" if isinstance(result, list) else "a script"


SQL_BLOCK = "```sql\ncreate table t (id int);\n```\n"
TAGGED_BLOCK = "```sql\nselect 1; -- T1\n```\n"


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("parse", "text", "outcome"), [
    pytest.param(parse_page, "```" + " " * 200_000 + "!", "error: the page has no ```sql block",
                 id="page: a fence line of spaces"),
    pytest.param(parse_page, "x\n" + "\n" * 200_000 + SQL_BLOCK + TAGGED_BLOCK, "1 script(s)",
                 id="page: blank lines after a paragraph"),
    pytest.param(parse_page, SQL_BLOCK + TAGGED_BLOCK * 5_000, "5000 script(s)",
                 id="page: many blocks"),
    pytest.param(parse_script, "".join(f"select 1; -- T{n}\n" for n in range(51)),
                 "error: more than 50 sessions in one script", id="script: many sessions"),
    pytest.param(parse_note, "unblocks T2" + " " * 100_000 + "x", "unreadable",
                 id="note: spaces after unblocks"),
    pytest.param(parse_note, 'prints "ERROR' + " " * 100_000 + 'x"', "read",
                 id="note: spaces after ERROR"),
    pytest.param(parse_note, "nothing else to do" + " " * 100_000 + "x", "unreadable",
                 id="note: spaces after do"),
    pytest.param(parse_note, "shows 1 => " + "9" * 5000, "unreadable",
                 id="note: a number of 5000 digits"),
    pytest.param(parse_spec, '"a" ' * 50_000, "error: expected a session, found 'a'",
                 id="spec: many quoted names on a line"),
    pytest.param(parse_spec, "session s1\nstep a { }\nsession s2\nstep b { }\n"
                             "permutation a b(a notices " + "9" * 5000 + ")",
                 "error: a number of notices of at most 9 digits, found '" + "9" * 199 + "…'",
                 id="spec: notices of 5000 digits"),
    pytest.param(parse_spec, "".join(f"session s{n}\n" + "".join(f"step s{n}_{m} {{ }}\n"
                                                             for m in range(20))
                                     for n in range(2)),
                 "error: no permutation lines, and the sessions' steps interleave in more "
                 "than 10,000 ways: list the permutations to run", id="spec: 2 x 20 steps"),
    pytest.param(parse_spec, "session s1\n" + "".join(f"step a{n} {{ }}\n" for n in range(5000)),
                 "1 permutation(s)", id="spec: one session of 5000 steps"),
])
def test_pathological_inputs_end_in_time_proportional_to_them(parse, text, outcome):
    assert _outcome(parse, text) == outcome
