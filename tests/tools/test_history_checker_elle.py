"""Elle's verdicts as ours: every list-append history Elle's own tests judge, judged here.

Jepsen's Elle (``test/elle/list_append_test.clj``) builds small histories in a shorthand --
``ax1ry12`` is one committed transaction that appends 1 to key x, then reads key y as
[1 2]; a read with no digits, ``ry``, is Elle's two-element read ``[:r :y]`` -- and states
which anomalies its checker finds and which consistency models they rule out. Each row
below is one of those histories, written again from the facts the test states, with
Elle's expected anomaly types in our names (Elle's ``G-single-item`` is our ``G-single``:
list append has no predicates, so every cycle here is about items) and its verdict for one
model. What Elle's tests check that ours cannot (its graph-only analyzers, the
``empty-transaction-graph`` and ``cycle-search-timeout`` bookkeeping, histories made by its
random simulator) is listed in the README.
"""

import io
import re

import pytest

from acid_lab.checkers.histories import HistoryError, parse_edn
from acid_lab.checkers.history import check
from acid_lab.commands.check import check_command

pytestmark = pytest.mark.engine

_MOP = re.compile(r"([ar])([xyztu])(\d*)")


def mops(shorthand: str) -> str:
    """Elle's shorthand as an EDN vector: ``ax1rx12ry`` -> [[:append :x 1] [:r :x [1 2]]
    [:r :y]] (a read without digits is Elle's two-element read)."""
    out = []
    for f, key, digits in _MOP.findall(shorthand):
        if f == "a":
            out.append(f"[:append :{key} {digits}]")
        elif digits:
            out.append(f"[:r :{key} [{' '.join(digits)}]]")
        else:
            out.append(f"[:r :{key}]")
    assert "".join(f + k + d for f, k, d in _MOP.findall(shorthand)) == shorthand, shorthand
    return "[" + " ".join(out) + "]"


def ok(shorthand, process=0):
    return f"{{:type :ok, :f :txn, :process {process}, :value {mops(shorthand)}}}"


def fail(shorthand, process=0):
    return f"{{:type :fail, :f :txn, :process {process}, :value {mops(shorthand)}}}"


def info(shorthand, process=0):
    return f"{{:type :info, :f :txn, :process {process}, :value {mops(shorthand)}}}"


def completed(*shorthands):
    """Committed transactions only, in order (Elle's ``(h/history [(op ...) ...])``)."""
    return "\n".join(ok(s) for s in shorthands)


def paired(*shorthands):
    """Each transaction invoked, then committed, one after the other (Elle's ``pair``)."""
    lines = []
    for process, s in enumerate(shorthands):
        invoked = re.sub(r"(r[xyztu])\d+", r"\1", s)  # reads not known yet
        lines.append(f"{{:type :invoke, :f :txn, :process {process}, "
                     f":value {mops(invoked)}}}")
        lines.append(ok(s, process))
    return "\n".join(lines)


def timeline(*steps):
    """(process, type, shorthand) steps, in history order."""
    return "\n".join(f"{{:type :{kind}, :f :txn, :process {process}, "
                     f":value {mops(s)}}}" for process, kind, s in steps)


STRONG_SI = timeline((0, "invoke", "ax1"), (0, "ok", "ax1"), (1, "invoke", "ax2"),
                     (1, "ok", "ax2"), (2, "invoke", "rx"), (2, "ok", "rx1"),
                     (3, "invoke", "rx"), (3, "ok", "rx12"))
STRONG_SESSION_SI = timeline((0, "invoke", "ax1"), (0, "ok", "ax1"), (1, "invoke", "ax2"),
                             (1, "ok", "ax2"), (1, "invoke", "rx"), (1, "ok", "rx1"),
                             (2, "invoke", "rx"), (2, "ok", "rx12"))
NONADJACENT_PROCESS = timeline((0, "invoke", "rxrz"), (0, "ok", "rxrz1"),
                               (1, "invoke", "ax1"), (1, "ok", "ax1"),
                               (1, "invoke", "rz"), (1, "ok", "rz"),
                               (2, "invoke", "az1"), (2, "ok", "az1"))
WR_PROCESS = timeline((1, "invoke", "rxay1"), (1, "ok", "rx1ay1"), (2, "invoke", "ry"),
                      (2, "ok", "ry1"), (2, "invoke", "ax1"), (2, "ok", "ax1"))
UNOBSERVED_WRITE = "\n".join(  # all five invoked before any completes
    [f"{{:type :invoke, :f :txn, :process {p}, :value {mops(s)}}}"
     for p, s in enumerate(["ax1ay1", "ax2ay2", "ax3ay3", "rx", "ry"])]
    + [ok(s, p) for p, s in enumerate(["ax1ay1", "ax2ay2", "ax3ay3", "rx12", "ry2"])])
SI_WITHOUT_G_SINGLE = """
{:index 11, :type :ok, :process 2, :value [[:append 9 2]]}
{:index 21, :type :ok, :process 4, :value [[:append 8 1] [:r 9 nil]]}
{:index 31, :type :ok, :process 7, :value [[:r 6 nil] [:r 8 nil] [:append 9 5]]}
{:index 41, :type :ok, :process 9, :value [[:append 6 2] [:r 9 [2]]]}
"""
FUTURE_READ = timeline((0, "invoke", "rx1ax1"), (0, "ok", "rx1ax1"))


ELLE_VERDICTS = [
    # checker-test
    pytest.param(completed("ax1ay1", "ax2ay2", "rx12ry21"), "read-uncommitted",
                 {"G0": 1}, False, id="G0: a pure write cycle; not read-uncommitted"),
    pytest.param(fail("ax1") + "\n" + ok("rx1"), "read-uncommitted", {"G1a": 1}, True,
                 id="G1a: read-uncommitted allows an aborted read"),
    pytest.param(fail("ax1") + "\n" + ok("rx1"), "read-committed", {"G1a": 1}, False,
                 id="G1a: read-committed forbids it"),
    pytest.param(fail("ax1") + "\n" + ok("rx1"), "repeatable-read", {"G1a": 1}, False,
                 id="G1a: repeatable-read forbids it (G1 and G2-item)"),
    pytest.param(paired("ax1ax2", "rx1"), "read-committed", {"G1b": 1, "G-single": 1}, False,
                 id="G1b: an intermediate read, also a G-single; not read-committed"),
    pytest.param(paired("ax1ax2", "rx1"), "strict-serializable", {"G1b": 1, "G-single": 1},
                 False, id="G1b: strict-serializable reports both"),
    pytest.param(completed("ax1ry1", "ax2ay1", "rx12ry1"), "read-committed", {"G1c": 1}, False,
                 id="G1c: circular information flow; not read-committed"),
    pytest.param(completed("ax1ay1", "ax2ry", "rx12"), "read-committed", {"G-single": 1}, True,
                 id="G-single: read-committed allows it"),
    pytest.param(completed("ax1ay1", "ax2ry", "rx12"), "repeatable-read", {"G-single": 1},
                 False, id="G-single: not repeatable-read (nor consistent view)"),
    pytest.param(completed("ax1ry", "ay1rx"), "read-committed", {"G2-item": 1}, True,
                 id="G2: read-committed allows a pure anti-dependency cycle"),
    pytest.param(completed("ax1ry", "ay1rx"), "repeatable-read", {"G2-item": 1}, False,
                 id="G2: repeatable-read does not"),
    pytest.param(completed("ax1ry", "ay1rx"), "serializable", {"G2-item": 1}, False,
                 id="G2: serializable does not"),
    pytest.param(STRONG_SI, "serializable", {}, True,
                 id="strong SI violation: serializable allows it"),
    pytest.param(STRONG_SI, "strict-serializable", {"G-single-realtime": 1}, False,
                 id="strong SI violation: strict-serializable finds G-single-realtime"),
    pytest.param(STRONG_SESSION_SI, "serializable", {}, True,
                 id="strong session SI violation: serializable allows it"),
    pytest.param(STRONG_SESSION_SI, "strong-session-serializable", {"G-single-process": 1},
                 False, id="strong session SI violation: G-single-process"),
    pytest.param(NONADJACENT_PROCESS, "serializable", {}, True,
                 id="G-nonadjacent-process: serializable allows it"),
    pytest.param(NONADJACENT_PROCESS, "strong-session-serializable",
                 {"G-nonadjacent-process": 1}, False,
                 id="G-nonadjacent-process: strong session forbids it"),
    pytest.param(completed("ax1ry1", "ax2", "ax3ay1", "rx13", "rx123"), "read-committed",
                 {"G1c": 1, "incompatible-order": 1}, False,
                 id="contradictory read orders: G1c and incompatible-order"),
    pytest.param(fail("ax1"), "read-committed", {}, True,
                 id="dirty update, none: one failed append"),
    pytest.param("\n".join([fail("ax1"), ok("ax2", 1), ok("rx12", 2)]), "read-committed",
                 {"dirty-update": 1, "G1a": 1}, False,
                 id="dirty update, direct: 2 committed on top of failed 1 (read: G1a too)"),
    pytest.param("\n".join([fail("ax1"), info("ax2", 1), ok("ax3", 2), ok("rx123", 3)]),
                 "read-committed", {"dirty-update": 1, "G1a": 1}, False,
                 id="dirty update, indirect: 3 committed on top of failed 1, unknown 2"),
    pytest.param(completed("ax1ry1", "ax2ay1", "rx121"), "read-committed",
                 {"G1c": 1, "duplicate-elements": 1, "G-single": 1}, False,
                 id="duplicated elements: also a G1c (and the G-single Elle's comment notes)"),
    pytest.param(completed("ax1ax2ax4", "ax3rx1234"), "read-uncommitted",
                 {"internal": 1, "G0": 1}, False,
                 id="internal violation (and the G0 Elle's comment notes)"),
    # unobserved-write-test
    pytest.param(UNOBSERVED_WRITE, "serializable", {"G0": 1, "G-single": 1}, False,
                 id="unobserved write: G-single and G0"),
    # repeatable-read-test
    pytest.param(completed("rxay1", "ryax1"), "read-committed", {"G2-item": 1}, True,
                 id="repeatable read test: read-committed allows G2-item"),
    pytest.param(completed("rxay1", "ryax1"), "repeatable-read", {"G2-item": 1}, False,
                 id="repeatable read test: repeatable-read does not"),
    # G-nonadjacent-test
    pytest.param(paired("ax1", "rx1ry", "ay1", "ry1rx"), "snapshot-isolation",
                 {"G-nonadjacent": 1}, False, id="G-nonadjacent: not SI"),
    pytest.param(paired("rx5ay1", "ryaz2", "rzat3", "rt3au4", "ruax5"), "snapshot-isolation",
                 {}, True,
                 id="rw rw wr rw wr (Elle: not G-nonadjacent): no cycle at all; SI allows it"),
    # lost-update-test
    pytest.param(paired("ax0", "rx0ax1", "rx0ax2"), "serializable",
                 {"lost-update": 1, "G2-item": 1}, False, id="lost update: also G2-item"),
    pytest.param(paired("ax0", "rx0ax1", "rx0ax2"), "read-committed",
                 {"lost-update": 1, "G2-item": 1}, True,
                 id="lost update: read-committed allows it (cursor stability does not)"),
    pytest.param(paired("rxax1ax2", "rx12"), "strict-serializable", {}, True,
                 id="lost update: one transaction appending twice is fine"),
    # wr-process-test
    pytest.param(WR_PROCESS, "serializable", {}, True,
                 id="wr-process: serializable allows it"),
    pytest.param(WR_PROCESS, "strong-session-serializable", {"G1c-process": 1}, False,
                 id="wr-process: G1c-process"),
    # rr-g-single-item-test, rr-g-nonadjacent-item-test
    pytest.param(paired("ax1ay1", "rx1ry"), "repeatable-read", {"G-single": 1}, False,
                 id="repeatable read forbids an item G-single"),
    pytest.param(paired("ax1at1", "rx1ry", "ay1az2", "rz2rt"), "repeatable-read",
                 {"G-nonadjacent": 1}, False,
                 id="repeatable read forbids an item G-nonadjacent"),
    # future-read-test
    pytest.param(FUTURE_READ, "read-committed", {"future-read": 1}, False,
                 id="future read: a transaction read its own later append"),
    # intermediate-sequential-extension-test (Elle's si-without-g-single.edn)
    pytest.param(SI_WITHOUT_G_SINGLE, "snapshot-isolation", {"G2-item": 1}, True,
                 id="si-without-g-single.edn: SI allows its G2-item"),
    pytest.param(SI_WITHOUT_G_SINGLE, "repeatable-read", {"G2-item": 1}, False,
                 id="si-without-g-single.edn: not repeatable-read"),
    # g1a-cases-test, g1b-cases-test
    pytest.param("\n".join([ok("rx1ax2"), ok("rx12ry3"), fail("ax1")]), "read-committed",
                 {"G1a": 2, "dirty-update": 1}, False,
                 id="g1a cases: two reads of failed 1 (and 2 committed on top of it)"),
    pytest.param(completed("rx1", "rx12ry3", "ax1ax2", "rx123"), "read-committed",
                 {"G1b": 1, "G-single": 1}, False,
                 id="g1b cases: only the read of [1] is intermediate"),
    pytest.param(completed("ax1rx1ax2"), "read-committed", {}, True,
                 id="g1b cases: reading one's own intermediate append is fine"),
    # internal-cases-test, each transaction alone
    pytest.param("{:type :ok, :process 0, :value [[:r :y [5 6]] [:append :x 3] "
                 "[:r :x [1 2 3]] [:append :x 4] [:r :x [1 2 3 4]]]}", "serializable", {},
                 True, id="internal: good"),
    pytest.param(paired("rxrx2"), "snapshot-isolation", {"internal": 1}, False,
                 id="internal: read nil, then something"),
    pytest.param(completed("rx12ax3rx12"), "snapshot-isolation", {"internal": 1}, False,
                 id="internal: read-append-read, stale"),
    pytest.param(completed("rx12ax3rx023"), "snapshot-isolation",
                 {"internal": 1, "incompatible-order": 1}, False,
                 id="internal: read-append-read, bad prefix (two reads disagree too)"),
    pytest.param(completed("rx12ax3rx1234"), "snapshot-isolation", {"internal": 1}, False,
                 id="internal: read-append-read, extension"),
    pytest.param(completed("rx12ax3rx1"), "snapshot-isolation", {"internal": 1}, False,
                 id="internal: read-append-read, short read"),
    pytest.param(completed("ax3rx1234"), "snapshot-isolation", {"internal": 1}, False,
                 id="internal: append-read, disagreement"),
    pytest.param(completed("ax3rx"), "snapshot-isolation", {"internal": 1}, False,
                 id="internal: append-read, short read"),
    pytest.param("{:type :invoke, :f :txn, :process 1, :value [[:append 0 6] [:r 0 nil]]}\n"
                 "{:type :ok, :f :txn, :process 1, :value [[:append 0 6] [:r 0 nil]]}",
                 "snapshot-isolation", {"internal": 1}, False, id="internal: FaunaDB example"),
    pytest.param(paired("rx012ax1"), "read-committed", {"future-read": 1}, False,
                 id="future read, external"),
    pytest.param(paired("ax1rx01ax0ax3"), "read-committed", {"future-read": 1}, False,
                 id="future read, internal"),
    pytest.param(completed("rx12ax3rx12"), "repeatable-read", {"internal": 1}, True,
                 id="internal: Elle's repeatable-read allows it (SI does not)"),
]


@pytest.mark.parametrize("text, model, found, valid", ELLE_VERDICTS)
def test_elle_list_append_verdicts(text, model, found, valid):
    """One history of Elle's list-append tests.

    Scenario: the transactions of the id, as Elle's test builds them, checked against
    the model of the row.
    Outcome: the anomaly types Elle's test expects (counted), and Elle's verdict for the
    model; every anomaly explained with the transactions it names.
    """
    verdict = check(parse_edn(text), model)

    assert verdict.counts() == found, [a.explanation for a in verdict.anomalies]
    assert verdict.valid is valid, verdict.forbidden
    for anomaly in verdict.anomalies:
        assert all(name in anomaly.explanation for name in anomaly.transactions), anomaly


def test_a_future_read_is_explained_as_elle_names_it():
    """Scenario: T1 (completed at index 1) reads x as [1], then appends 1 itself (Elle's
    future-read-test).
    Outcome: a future-read, in words: it saw its own future write."""
    (anomaly,) = check(parse_edn(FUTURE_READ), "read-committed").anomalies

    assert anomaly.kind == "future-read"
    assert anomaly.explanation.startswith("T1 read key x as [1], which holds 1, before "
                                          "appending 1 itself: it saw its own future write")


def test_a_dirty_update_is_explained_with_the_failed_write_under_it():
    """Scenario: T0 appends 1 and fails; T1 appends 2 and commits; T2 reads [1 2].
    Outcome: a dirty-update naming both writers and the values, as Elle reports it."""
    verdict = check(parse_edn("\n".join([fail("ax1"), ok("ax2", 1), ok("rx12", 2)])),
                    "read-committed")

    assert verdict.first("dirty-update").explanation == (
        "key x went through [1 2]: T0 appended 1 and failed (was rolled back), yet T1 "
        "committed its append of 2 on top of it, so a committed write was built on a write "
        "that never committed.")


DUPLICATE_APPENDS = ("{:index 0, :type :invoke, :process 0, :value [[:append :x 1] [:r :y nil]]}\n"
                     "{:index 1, :type :invoke, :process 1, :value [[:append :y 2] "
                     "[:append :x 1]]}\n"
                     "{:index 2, :type :ok, :process 0, :value [[:append :x 1] [:r :y []]]}\n"
                     "{:index 3, :type :ok, :process 1, :value [[:append :y 2] "
                     "[:append :x 1]]}\n")


def test_a_value_appended_twice_is_refused_as_elle_refuses_it(tmp_path):
    """Elle's "duplicate inserts attempts": two transactions both append 1 to x.

    Scenario: ``check`` on that history.
    Outcome: no verdict -- exit 2 with one line naming the key, the value and both
    transactions (version orders rest on unique appends)."""
    path = tmp_path / "duplicate.edn"
    path.write_text(DUPLICATE_APPENDS)
    out, err = io.StringIO(), io.StringIO()

    status = check_command([str(path)], out=out, err=err)

    assert status == 2
    assert out.getvalue() == ""
    assert err.getvalue().count("\n") == 1
    assert "value 1 appended to key 'x' by T2 and T3" in err.getvalue()
    with pytest.raises(HistoryError, match="appended to key 'x'"):
        check(parse_edn(DUPLICATE_APPENDS))
