"""The history checker itself: small histories, written by hand, one per anomaly.

The checker (``python -m acid_lab check``, :mod:`acid_lab.checkers.history`) sees
only what clients recorded -- Elle's list-append format, one operation a line::

    {:type :ok, :process 1, :value [[:append :x 2] [:r :y [1]]]}

Appended values are unique per key, so every read shows the order of the appends
before it. From those orders come the dependencies between transactions -- ww (T2
appended right after T1), wr (T2 read a list ending with T1's append), rw (T1
read a list, and T2 appended the next value: T1 missed it) -- and from their
cycles the anomaly's name: only ww is G0; ww and wr is G1c; exactly one rw is
G-single; several rw, never two in a row, G-nonadjacent; two in a row, G2-item.
Some anomalies need no cycle: reading a failed transaction's value (G1a), a
value its writer replaced in the same transaction (G1b), disagreeing with one's
own writes (internal), two read-modify-writes from the same state (lost update).

Each history below is classified exactly: the kinds found, with their counts. An
anomaly can show up twice over (a lost update is also a G-single cycle); the
expected counts say so. Histories that only *look* wrong must come out clean --
a checker that cannot say "serializable" is as useless as one that always does.
"""

import io
import json

import pytest

from acid_lab.checkers.histories import (
    HistoryError,
    Operation,
    parse_edn,
    parse_json,
    read_history,
    to_edn,
    to_jsonl,
    write_history,
)
from acid_lab.checkers.history import MODELS, check
from acid_lab.commands.check import check_command

pytestmark = pytest.mark.engine


def history(*transactions, types=None):
    """Completed transactions (EDN vectors of micro-operations), T1, T2, ... in order;
    ``types`` maps a transaction number to fail or info (default ok)."""
    types = types or {}
    return parse_edn("\n".join(
        f"{{:type :{types.get(n, 'ok')}, :f :txn, :process {n}, :index {n}, :value {value}}}"
        for n, value in enumerate(transactions, 1)))


@pytest.mark.parametrize("transactions, types, found", [
    pytest.param(["[[:append :x 1] [:append :y 1]]",
                  "[[:append :x 2] [:append :y 2]]",
                  "[[:r :x [1 2]] [:r :y [2 1]]]"], {}, {"G0": 1},
                 id="G0: T2 overwrote T1 on x, T1 overwrote T2 on y"),
    pytest.param(["[[:append :x 1]]", "[[:r :x [1]]]"], {1: "fail"}, {"G1a": 1},
                 id="G1a: T2 read 1, appended by T1, which failed"),
    pytest.param(["[[:append :x 1] [:append :x 2]]", "[[:r :x [1]]]"], {},
                 {"G1b": 1, "G-single": 1},
                 id="G1b: T2 read [1], T1 went on to append 2 (also a G-single)"),
    pytest.param(["[[:append :x 1] [:r :y [1]]]",
                  "[[:append :x 2] [:append :y 1]]",
                  "[[:r :x [1 2]]]"], {}, {"G1c": 1},
                 id="G1c: T1 saw T2 on y, T2 overwrote T1 on x"),
    pytest.param(["[[:append :x 1] [:append :y 1]]", "[[:r :x []] [:r :y [1]]]"], {},
                 {"G-single": 1},
                 id="G-single: T2 saw T1's append to y, missed the one to x"),
    pytest.param(["[[:append :x 1]]", "[[:r :x [1]] [:r :y []]]",
                  "[[:append :y 1]]", "[[:r :y [1]] [:r :x []]]"], {},
                 {"G-nonadjacent": 1},
                 id="G-nonadjacent: T2 and T4 each saw one append and missed the other"),
    pytest.param(["[[:r :x []] [:r :y []] [:append :x 1]]",
                  "[[:r :x []] [:r :y []] [:append :y 1]]"], {}, {"G2-item": 1},
                 id="G2-item: write skew, each missed the other's append"),
    pytest.param(["[[:r :x []] [:append :x 1]]", "[[:r :x []] [:append :x 2]]",
                  "[[:r :x [1 2]]]"], {}, {"lost-update": 1, "G-single": 1},
                 id="lost update: both read [], both appended (also a G-single)"),
    pytest.param(["[[:append :x 1] [:r :x []]]"], {}, {"internal": 1},
                 id="internal: T1 did not read its own append"),
    pytest.param(["[[:append :x 1]]", "[[:r :x [1 1]]]"], {}, {"duplicate-elements": 1},
                 id="duplicate elements: 1 read twice"),
    pytest.param(["[[:append :x 1]]", "[[:append :x 2]]", "[[:r :x [1 2]]]",
                  "[[:r :x [2 1]]]"], {}, {"incompatible-order": 1},
                 id="incompatible order: [1 2] and [2 1]"),
])
def test_each_anomaly_is_classified_exactly(transactions, types, found):
    """One small history per anomaly kind.

    Scenario: the transactions of the id (T1, T2, ... in that order, each committed
    unless marked failed), checked against serializable.
    Outcome: exactly the anomalies of the table, each with an explanation that
    names the transactions involved; serializable forbids every one of them.
    """
    verdict = check(history(*transactions, types=types))
    explained = [anomaly.explanation for anomaly in verdict.anomalies]

    assert verdict.counts() == found, f"classified as {verdict.counts()}: {explained}"
    for anomaly in verdict.anomalies:
        assert all(name in anomaly.explanation for name in anomaly.transactions), anomaly
    assert not verdict.valid, f"serializable forbids {found}"


@pytest.mark.parametrize("transactions, types", [
    pytest.param(["[[:append :x 1]]", "[[:r :x [1]]]", "[[:append :x 2]]",
                  "[[:r :x [1 2]]]"], {},
                 id="reads of ever longer prefixes: T1, T2, T3, T4"),
    pytest.param(["[[:r :x []] [:r :y []] [:append :x 1]]",
                  "[[:r :x [1]] [:r :y []] [:append :y 1]]"], {},
                 id="looks like write skew, but T2 saw T1's append: T1 then T2"),
    pytest.param(["[[:r :x []] [:append :y 1]]", "[[:r :x []] [:append :z 1]]"], {},
                 id="both read the same key, append to different keys"),
    pytest.param(["[[:append :x 1]]", "[[:r :x []]]"], {1: "fail"},
                 id="a failed append nobody read"),
    pytest.param(["[[:append :x 1]]", "[[:r :x [1]]]"], {1: "info"},
                 id="an append of unknown outcome that was read: it committed"),
    pytest.param(["[[:append :x 1]]", "[[:r :x []]]"], {},
                 id="a read missing an append that came later in a serial order"),
])
def test_suspicious_but_serializable_histories_pass(transactions, types):
    """Histories that look wrong at a glance but have a serial order.

    Scenario: the transactions of the id, checked against serializable.
    Outcome: no anomaly; the verdict is valid (exit status 0 from ``check``).
    """
    verdict = check(history(*transactions, types=types))

    assert verdict.counts() == {}, [a.explanation for a in verdict.anomalies]
    assert verdict.valid


STALE_READ = """
{:type :invoke, :f :txn, :process 0, :index 0, :value [[:append :x 1]]}
{:type :ok,     :f :txn, :process 0, :index 1, :value [[:append :x 1]]}
{:type :invoke, :f :txn, :process 0, :index 2, :value [[:r :x nil]]}
{:type :ok,     :f :txn, :process 0, :index 3, :value [[:r :x []]]}
"""
OVERLAPPING_READ = """
{:type :invoke, :f :txn, :process 0, :index 0, :value [[:append :x 1]]}
{:type :invoke, :f :txn, :process 1, :index 1, :value [[:r :x nil]]}
{:type :ok,     :f :txn, :process 0, :index 2, :value [[:append :x 1]]}
{:type :ok,     :f :txn, :process 1, :index 3, :value [[:r :x []]]}
"""


@pytest.mark.parametrize("text, model, found, valid", [
    pytest.param(STALE_READ, "serializable", {}, True,
                 id="stale read, serializable: T3 may come first"),
    pytest.param(STALE_READ, "strong-session-serializable", {"G-single-process": 1}, False,
                 id="stale read, strong session: the process ran T1 first"),
    pytest.param(STALE_READ, "strict-serializable", {"G-single-realtime": 1}, False,
                 id="stale read, strict serializable: T1 had ended"),
    pytest.param(OVERLAPPING_READ, "strict-serializable", {}, True,
                 id="overlapping read, strict serializable: they ran at once"),
])
def test_process_and_real_time_order_are_part_of_some_models(text, model, found, valid):
    """The same read of an empty list, before or after the append ended.

    Scenario: T1 appends 1 to x; T3 reads x as [] -- on the same process after T1
    ended, or on another process while T1 was still running.
    Outcome: serializable lets T3 come first in either case; a model that orders a
    process's transactions, or all of them by real time, does not when T1 had ended.
    """
    verdict = check(parse_edn(text), model)

    assert verdict.counts() == found, [a.explanation for a in verdict.anomalies]
    assert verdict.valid is valid


PAPER_FIGURE = """
{:index 1 :type :ok :value [[:append 253 1] [:append 253 3] [:append 253 4]
                            [:append 255 2] [:append 255 3] [:append 255 4] [:append 255 5]
                            [:append 256 1] [:append 256 2]]}
{:index 3 :type :ok :value [[:append 255 8] [:r 253 [1 3 4]]]}
{:index 5 :type :ok :value [[:append 256 4] [:r 255 [2 3 4 5 8]] [:r 256 [1 2 4]]
                            [:r 253 [1 3 4]]]}
{:index 7 :type :ok :value [[:append 250 10] [:r 253 [1 3 4]] [:r 255 [2 3 4 5]]
                            [:append 256 3]]}
"""


def test_the_elle_papers_g_single_is_explained_step_by_step():
    """The G-single of the Elle paper's Figure 2 (a history observed on a real database).

    Scenario: T7 read key 255 as [2 3 4 5]; T3 appended 8 to it; T5 read [2 3 4 5 8]
    and appended 4 to key 256; T7 appended 3 to 256 after that 4.
    Outcome: one G-single, T7 -rw-> T3 -wr-> T5 -ww-> T7, each step in words -- the
    same three reasons the paper gives.
    """
    verdict = check(parse_edn(PAPER_FIGURE))
    (anomaly,) = verdict.anomalies

    assert anomaly.kind == "G-single"
    assert [(s.source, s.dependency.kind, s.target) for s in anomaly.steps] == [
        ("T7", "rw", "T3"), ("T3", "wr", "T5"), ("T5", "ww", "T7")]
    assert anomaly.steps[0].words == ("T7 read key 255 as [2 3 4 5], without 8, which T3 "
                                      "appended next (rw: T7 did not see T3)")
    assert anomaly.steps[2].words == ("T7 appended 3 to key 256 right after T5's 4 "
                                      "(ww: T7 overwrote T5)")


UNREAD_APPEND = """
{:index 11, :type :ok, :process 2, :value [[:append 9 2]]}
{:index 21, :type :ok, :process 4, :value [[:append 8 1] [:r 9 nil]]}
{:index 31, :type :ok, :process 7, :value [[:r 6 nil] [:r 8 nil] [:append 9 5]]}
{:index 41, :type :ok, :process 9, :value [[:append 6 2] [:r 9 [2]]]}
"""


@pytest.mark.parametrize("model, valid", [
    pytest.param("snapshot-isolation", True, id="SI, PostgreSQL's repeatable read, allows it"),
    pytest.param("repeatable-read", False, id="Adya's repeatable read does not"),
])
def test_an_append_nobody_read_still_orders_its_transaction(model, valid):
    """Elle's si-without-g-single history: the decisive append is never read.

    Scenario: T31 read key 6 empty and appended 5 to key 9; T41 appended 2 to key 6
    and read key 9 as [2]. Nobody ever read the 5: it came after everything read of
    key 9, so T41's read of [2] missed it.
    Outcome: one G2-item, T31 and T41 each missing the other's append -- allowed by
    snapshot isolation, forbidden by (Adya's) repeatable read, as Elle's own test says.
    """
    verdict = check(parse_edn(UNREAD_APPEND), model)

    assert verdict.counts() == {"G2-item": 1}
    assert verdict.anomalies[0].transactions == ["T31", "T41"]
    assert "T41 read key 9 as [2], without 5, which T31 appended next" in \
        verdict.anomalies[0].explanation
    assert verdict.valid is valid


@pytest.mark.parametrize("model, forbidden", [
    pytest.param("read-uncommitted", {"G0", "duplicate-elements"}, id="read-uncommitted"),
    pytest.param("read-committed", {"G0", "duplicate-elements", "G1a", "G1b", "G1c",
                                    "incompatible-order", "future-read", "dirty-update"},
                 id="read-committed: G1 and what implies it (future-read, dirty-update)"),
    pytest.param("snapshot-isolation", {"G0", "duplicate-elements", "G1a", "G1b", "G1c",
                                        "incompatible-order", "future-read", "dirty-update",
                                        "internal", "G-single", "G-nonadjacent",
                                        "lost-update"},
                 id="snapshot (SI, PostgreSQL's repeatable read): allows G2-item"),
    pytest.param("repeatable-read", {"G0", "duplicate-elements", "G1a", "G1b", "G1c",
                                     "incompatible-order", "future-read", "dirty-update",
                                     "G-single", "G-nonadjacent", "lost-update", "G2-item"},
                 id="repeatable-read (Elle's PL-2.99): forbids G2-item, allows internal"),
    pytest.param("serializable", {"G0", "duplicate-elements", "G1a", "G1b", "G1c",
                                  "incompatible-order", "future-read", "dirty-update",
                                  "internal", "G-single", "G-nonadjacent", "lost-update",
                                  "G2-item"},
                 id="serializable"),
])
def test_each_model_forbids_exactly_its_anomalies(model, forbidden):
    """The table the README documents, as the checker applies it.

    Scenario: the anomalies each consistency model forbids.
    Outcome: exactly the listed ones (the process and real-time variants belong to
    the strong-session and strict models only).
    """
    assert set(MODELS[model]) == forbidden


# -- reading and writing histories ------------------------------------------------

EDN_LINES = """; comments and non-client operations are allowed
{:type :invoke, :f :txn, :process 3, :time 10, :index 0, :value [[:append 9 2] [:r 9 nil]]}
{:type :info, :f :start, :process :nemesis, :index 1, :value "n1"}
{:type :ok, :f :txn, :process 3, :time 20, :index 2, :value [[:append 9 2] [:r 9 [1 2]]]}
"""
JSON_LINES = "".join(json.dumps(line) + "\n" for line in [
    {"type": "invoke", "f": "txn", "process": 3, "time": 10, "index": 0,
     "value": [["append", 9, 2], ["r", 9, None]]},
    {"type": "info", "f": "start", "process": "nemesis", "index": 1, "value": "n1"},
    {"type": "ok", "f": "txn", "process": 3, "time": 20, "index": 2,
     "value": [["append", 9, 2], ["r", 9, [1, 2]]]}])


def test_edn_and_json_lines_read_the_same_history():
    """Scenario: one history as Elle's EDN and as JSON lines (and a JSON array).
    Outcome: the same operations; keywords become plain names; the nemesis's
    operation is kept but is not a transaction."""
    from_edn, from_json = parse_edn(EDN_LINES), parse_json(JSON_LINES)
    as_array = parse_json("[" + ",".join(JSON_LINES.splitlines()) + "]")

    assert from_edn == from_json == as_array
    assert from_edn[2] == Operation(type="ok", value=(("append", 9, 2), ("r", 9, (1, 2))),
                                    process=3, time=20, index=2)
    assert from_edn[1].f == "start"
    assert check(from_edn).transactions == 1


def test_histories_survive_a_round_trip_through_both_formats(tmp_path):
    """Scenario: a history written as EDN and as JSON lines, then read back.
    Outcome: the same operations, hence the same verdict."""
    operations = history("[[:append :x 1] [:append :y 1]]", "[[:r :x []] [:r :y [1]]]")
    for name in ("h.edn", "h.jsonl", "h.txt"):
        write_history(operations, tmp_path / name)
    write_history(operations, tmp_path / "h.json")

    assert parse_edn(to_edn(operations)) == parse_json(to_jsonl(operations)) == operations
    for name in ("h.edn", "h.jsonl", "h.json", "h.txt"):
        assert read_history(tmp_path / name) == operations, name


@pytest.mark.parametrize("text, message", [
    pytest.param("{:type :ok, :value [[:w :x 1]]}", r"neither \[append k v\] nor \[r k",
                 id="a register write is not list-append"),
    pytest.param("{:type :done, :value []}", "type must be one of",
                 id="an unknown type"),
    pytest.param("[1 2 3]", "expected a map", id="not a map"),
    pytest.param("{:type :ok, :value [[:r :x 5]]}", "a read's value must be a list",
                 id="a read of a number"),
    pytest.param("{:type :ok, :value [", "not EDN", id="broken EDN"),
])
def test_a_history_that_is_not_list_append_is_refused_with_its_reason(text, message):
    """Scenario: malformed histories. Outcome: HistoryError naming what is wrong."""
    with pytest.raises(HistoryError, match=message):
        parse_edn(text)


def test_json_lines_errors_name_the_line():
    """Scenario: the second JSON line is broken. Outcome: the error says "line 2"."""
    with pytest.raises(HistoryError, match="line 2"):
        parse_json('{"type": "ok", "value": []}\n{"type": \n')


# -- the command ----------------------------------------------------------------------

def run_check(*argv):
    """``python -m acid_lab check ARGV`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    status = check_command(list(argv), out=out, err=err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def write_skew_file(tmp_path):
    """A history file holding one write skew (T1 and T2 each miss the other's append)."""
    path = tmp_path / "write-skew.edn"
    path.write_text(to_edn(history("[[:r :x []] [:r :y []] [:append :x 1]]",
                                   "[[:r :x []] [:r :y []] [:append :y 1]]")))
    return path


@pytest.mark.parametrize("model, status", [
    pytest.param("serializable", 1, id="serializable forbids write skew: exit 1"),
    pytest.param("snapshot-isolation", 0, id="SI (snapshot) allows it: exit 0"),
])
def test_check_exits_1_only_when_the_model_forbids_what_it_found(write_skew_file, model,
                                                                  status):
    """Scenario: ``check write-skew.edn --model MODEL``.
    Outcome: the G2-item explained in words either way; the exit status says whether
    the model forbids it."""
    code, out, _ = run_check(str(write_skew_file), "--model", model)

    assert code == status, out
    assert "1 x G2-item" in out
    assert "T1 read key y empty, without 1, which T2 appended next" in out


def test_check_json_is_one_object_for_tools(write_skew_file):
    """Scenario: ``check write-skew.edn --json``. Outcome: one JSON object with the
    verdict, the counts and each cycle's steps."""
    code, out, _ = run_check(str(write_skew_file), "--json")
    report = json.loads(out)

    assert code == 1
    assert {key: report[key] for key in ("model", "valid", "transactions", "counts",
                                         "forbidden")} == {
        "model": "serializable", "valid": False, "transactions": 2,
        "counts": {"G2-item": 1}, "forbidden": ["G2-item"]}
    (anomaly,) = report["anomalies"]
    assert [(step["from"], step["type"], step["to"], step["key"], step["value"])
            for step in anomaly["cycle"]] == [("T1", "rw", "T2", "y", 1),
                                              ("T2", "rw", "T1", "x", 1)]


@pytest.mark.parametrize("argv", [
    pytest.param(["no-such-history.edn"], id="a missing file"),
    pytest.param(["--model", "linearizable", "h.edn"], id="an unknown model"),
    pytest.param([], id="no history"),
])
def test_check_exits_2_for_bad_usage(argv):
    """Scenario: ``check`` with a missing file, an unknown model, no argument.
    Outcome: exit status 2."""
    code, _, _ = run_check(*argv)

    assert code == 2
