"""History files: the two EDN readers agree, bad files are refused in one line, and
``check --convert`` moves a history between Jepsen's EDN and JSON lines.

EDN is read fast by rewriting the EDN Jepsen writes into JSON; anything the rewrite does
not cover goes to the ``edn_format`` library, which is also the reference: for every
history below, both must give the same operations. Files are read as a stream of lines
(``acid_lab.input_files.read_lines``), so a huge line, a nesting a thousand deep, or a
device that never ends gets one line and exit status 2 -- never a traceback.
"""

import io
import json
import os
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tests.tools.test_history_checker as checker_tests
import tests.tools.test_history_checker_elle as elle_tests
from acid_lab.checkers.histories import (
    MAX_DEPTH,
    HistoryError,
    Operation,
    parse_edn,
    parse_json,
    read_history,
    to_jsonl,
    write_history,
)
from acid_lab.commands.check import check_command
from acid_lab.input_files import InputError

pytestmark = pytest.mark.engine

# Shapes of Elle's example histories (histories/*.edn in its repository), written small:
# records, a nemesis with strings and maps, comments, forms over several lines.
JEPSEN_SHAPES = """; a comment line, as in si-without-g-single.edn
{:type :invoke, :f :txn, :value [[:append 11 1] [:r 11 nil]], :process 10, :time 14532933, :index 0}
{:type :ok, :f :txn, :value [[:append 11 1] [:r 11 [1]]], :process 10, :time 31076248, :index 1}
{:type :info, :f :leave, :value "n1", :process :nemesis, :time 1007302441, :index 2}
{:type :info, :f :leave, :value ["n1" {"n1" "ERR no leader"}], :process :nemesis, :index 3}
#jepsen.history.Op{:index 4, :time 5, :type :invoke, :process 2, :f :txn, :value [[:r :x nil]]}
#jepsen.history.Op{:index 5, :time 6, :type :ok, :process 2, :f :txn, :value [[:r :x []]]}
{:index 6 :type :invoke  :value [[:append 253 1] [:append 253 3]
                                 [:append 255 2]]}
{:index 7 :type :ok      :value [[:append 253 1] [:append 253 3]
                                 [:append 255 2]]}
{:index 8, :type :info, :f :kill, :process :nemesis, :value #{"n1" "n2"}}
{:index 9, :type :fail, :f :txn, :process 3, :value [[:append :y -4]], :error [:x "a \\"b\\""]}
{:index 10 :type :ok :value [[:r :y ()] (:append :z 7)]} {:index 11 :type :ok :value [[:r :z [7]]]}
{:index 12, :type :ok, :f :txn, :process :a-keyword, :value [[:r [:nested 1] nil]], :time 1.5}
"""


def _every_edn_history():
    texts = {"jepsen shapes": JEPSEN_SHAPES}
    for module in (checker_tests, elle_tests):
        for name, value in vars(module).items():
            if isinstance(value, str) and ":type" in value and not name.startswith("_"):
                texts[f"{module.__name__}.{name}"] = value
    for number, param in enumerate(elle_tests.ELLE_VERDICTS):
        texts[f"verdict {number}: {param.id}"] = param.values[0]
    return [pytest.param(text, id=name) for name, text in texts.items()]


@pytest.mark.parametrize("text", _every_edn_history())
def test_the_fast_edn_reader_agrees_with_edn_format(text):
    """Scenario: every EDN history of the checker's tests, and the shapes of Elle's
    example files, read by the fast reader and by edn_format alone.
    Outcome: the same operations, and as many as the history has."""
    fast, reference = parse_edn(text), parse_edn(text, fast=False)

    assert fast == reference
    assert len(fast) == len(reference) > 0


def test_the_jepsen_shapes_are_read_as_operations(tmp_path):
    """Scenario: the Jepsen-shaped history above, from a file. Outcome: 14 operations
    (two forms on one line; one form over three lines); records, nemesis operations and
    a two-element read read as the others."""
    path = tmp_path / "jepsen.edn"
    path.write_text(JEPSEN_SHAPES)
    operations = read_history(path)

    assert [op.index for op in operations] == list(range(13))
    assert operations[5].value == (("r", "x", ()),)
    assert operations[7].value == (("append", 253, 1), ("append", 253, 3), ("append", 255, 2))
    assert operations[8].f == "kill"
    assert operations[10].value == (("r", "y", ()), ("append", "z", 7))
    assert operations[12].value == (("r", ("nested", 1), None),)


def _many_operations(transactions):
    """Invocations and completions of ``transactions`` appends and reads over 10 keys."""
    operations = []
    for n in range(transactions):
        mops = (("append", n % 10, n), ("r", (n + 1) % 10, None))
        operations.append(Operation("invoke", mops, process=n % 5, index=2 * n))
        done = (mops[0], ("r", mops[1][1], tuple(range((n + 1) % 10, n, 10))))
        operations.append(Operation("ok", done, process=n % 5, time=n, index=2 * n + 1))
    return operations


@pytest.mark.parametrize("name", [pytest.param("many.edn", id="EDN"),
                                  pytest.param("many.jsonl", id="JSON lines")])
def test_every_operation_of_a_long_history_is_read_back(tmp_path, name):
    """Scenario: 3,000 operations written to a file, then read back as ``check`` reads it.
    Outcome: the same 3,000 operations, in order -- none dropped, none changed."""
    operations = _many_operations(1500)
    write_history(operations, tmp_path / name)

    read = read_history(tmp_path / name)

    assert len(read) == 3000
    assert read == operations


def run_check(*argv):
    out, err = io.StringIO(), io.StringIO()
    status = check_command([str(arg) for arg in argv], out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def _deep(opening, closing, depth=MAX_DEPTH * 50):
    return opening * depth + closing * depth


@pytest.mark.parametrize("name, content, message", [
    pytest.param("deep.edn", "{:type :ok, :value " + _deep("[", "]") + "}\n",
                 f"nested deeper than {MAX_DEPTH} levels", id="EDN vectors 5000 deep"),
    pytest.param("deep-lists.edn", "{:type :ok, :value " + _deep("(", ")") + "}\n",
                 f"nested deeper than {MAX_DEPTH} levels", id="EDN lists 5000 deep"),
    pytest.param("deep.jsonl", '{"type": "ok", "value": ' + _deep("[", "]") + "}\n",
                 f"nested deeper than {MAX_DEPTH} levels", id="JSON lines 5000 deep"),
    pytest.param("deep.json", _deep("[", "]") + "\n", f"nested deeper than {MAX_DEPTH}",
                 id="one JSON array 5000 deep"),
    pytest.param("long.jsonl", '{"type": "ok", "value": [' + "1, " * 600_000 + "1]}\n",
                 "a line longer than", id="a 1.8 MB line"),
    pytest.param("open.edn", "{:type :ok, :value [\n" * 3, "not EDN", id="EDN never closed"),
    pytest.param("closed.edn", "]]\n", "more closing brackets", id="EDN closing first"),
    pytest.param("binary.edn", "\udcff\n", "not UTF-8", id="not UTF-8"),
    pytest.param("twice.jsonl", json.dumps({"type": "ok", "value": [
        ["append", "x", 1], ["append", "x", 1]]}) + "\n", "appended to key 'x' twice",
                 id="one value appended twice"),
    pytest.param("same-index.edn", "{:type :ok, :index 1, :value [[:append :x 1]]}\n"
                 "{:type :ok, :index 1, :value [[:r :x [1]]]}\n", "index 1 names two",
                 id="two transactions with one index"),
])
def test_a_bad_history_file_gets_one_line_and_exit_2(tmp_path, name, content, message):
    """Scenario: ``check`` on a file that is not a history we can read.
    Outcome: exit 2, nothing on stdout, one line on stderr saying why, quoting at most
    200 characters of the input."""
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8", errors="surrogateescape"))

    status, out, err = run_check(path)

    assert (status, out) == (2, "")
    assert err.count("\n") == 1 and message in err, err
    assert len(err) < 600, err


@pytest.mark.parametrize("source", [
    pytest.param("/dev/zero", id="/dev/zero"),
    pytest.param("fifo", id="a FIFO nobody writes to"),
])
def test_a_stream_that_never_ends_is_refused(tmp_path, source, monkeypatch):
    """Scenario: ``check`` on /dev/zero, and on a FIFO without a writer.
    Outcome: exit 2 and one line: a line over the limit, or nothing arriving."""
    monkeypatch.setattr("acid_lab.input_files.STALL_SECONDS", 0.2)
    if source == "fifo":
        source = tmp_path / "history.edn"
        os.mkfifo(source)

    status, _, err = run_check(source)

    assert status == 2
    assert err.count("\n") == 1 and ("longer than" in err or "nothing arrived" in err), err


@pytest.mark.parametrize("target", [
    pytest.param("converted.jsonl", id="EDN -> JSON lines"),
    pytest.param("converted.edn", id="EDN -> EDN"),
])
def test_check_convert_writes_the_same_history_in_the_other_format(tmp_path, target):
    """Scenario: ``check h.edn --convert OUT``.
    Outcome: the usual verdict (exit 1: a write skew under serializable), and OUT holds
    the same operations, read back from its own format."""
    source = tmp_path / "h.edn"
    source.write_text(JEPSEN_SHAPES)

    status, out, err = run_check(source, "--convert", tmp_path / target)

    assert (status, err) == (0, ""), err
    assert "converted: 13 operations written to" in out
    assert read_history(tmp_path / target) == read_history(source)


@pytest.mark.parametrize("argv, message", [
    pytest.param(["--convert", "out.txt"], "must end in .jsonl, .json or .edn",
                 id="an unknown format"),
    pytest.param(["--convert", "no-such-folder/out.jsonl"], "cannot write it",
                 id="a folder that does not exist"),
])
def test_check_convert_bad_use_gets_one_line_and_exit_2(tmp_path, argv, message):
    """Scenario: ``--convert`` to a name of no known format, or into a missing folder.
    Outcome: exit 2, one line."""
    source = tmp_path / "h.edn"
    source.write_text(JEPSEN_SHAPES)
    argv = [str(tmp_path / arg) if "/" in arg else arg for arg in argv]

    status, _, err = run_check(source, *argv)

    assert status == 2
    assert err.count("\n") == 1 and message in err, err


# -- fuzzing: mutated and random histories give a result or one clean error ------------

_FUZZ = settings(max_examples=60, deadline=5000,
                 suppress_health_check=[HealthCheck.too_slow])
EDN_SEEDS = [line for line in JEPSEN_SHAPES.splitlines() if line.startswith(("{", "#"))]
JSON_SEEDS = to_jsonl(parse_edn(JEPSEN_SHAPES)).splitlines()
EDN_ALPHABET = string.digits + "[](){}#:;\"\\ ,-+.^~@`nilrappendtypeokfailinfo\n\t"


def _mutated(seeds, alphabet):
    """A seed line with a few characters inserted, deleted or replaced."""
    def mutate(args):
        text, edits = args
        for position, kind, char in edits:
            position %= len(text) + 1
            if kind == 0:
                text = text[:position] + char + text[position:]
            elif kind == 1:
                text = text[:position] + text[position + 1:]
            else:
                text = text[:position] + char + text[position + 1:]
        return text
    edit = st.tuples(st.integers(0, 400), st.integers(0, 2), st.sampled_from(alphabet))
    return st.tuples(st.sampled_from(seeds), st.lists(edit, max_size=6)).map(mutate)


def _result_or_one_clean_error(parse, text):
    try:
        operations = parse(text)
    except (HistoryError, InputError) as error:
        message = str(error)
        assert "\n" not in message and len(message) < 600, message
        return
    assert isinstance(operations, list)


@_FUZZ
@given(st.one_of(_mutated(EDN_SEEDS, EDN_ALPHABET),
                 st.text(alphabet=EDN_ALPHABET, max_size=200)))
def test_fuzzed_edn_gives_operations_or_one_clean_error(text):
    """Scenario: Jepsen-shaped EDN lines with a few characters changed, and random text
    of EDN's characters. Outcome: operations, or one HistoryError line -- and when the
    fast reader reads it, edn_format reads the same."""
    _result_or_one_clean_error(parse_edn, text)
    try:
        fast = parse_edn(text)
    except HistoryError:
        return
    try:
        reference = parse_edn(text, fast=False)
    except HistoryError:
        return  # edn_format refuses a few forms the rewrite reads: nothing to compare
    assert fast == reference


@_FUZZ
@given(st.one_of(_mutated(JSON_SEEDS, string.digits + '[]{}":, -.etrufalsn\\'),
                 st.text(max_size=200)))
def test_fuzzed_json_gives_operations_or_one_clean_error(text):
    """Scenario: JSON lines of the same history with a few characters changed, and
    random text. Outcome: operations, or one HistoryError line."""
    _result_or_one_clean_error(parse_json, text)
