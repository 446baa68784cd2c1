"""Isolation, judged from the outside: anomalies found in histories nobody scripted.

Every other isolation test arranges its anomaly step by step. Here, as with
Jepsen's Elle, four client threads run seeded random transactions at once over
a table of lists::

    create table lists (k int primary key, v int[] not null default '{}');
    select v from lists where k = 2;                 -- a read:    [:r 2 [1 3]]
    update lists set v = v || array[4] where k = 2;  -- an append: [:append 2 4]

with retries off, and write down only what each client saw: the history. The
checker (``python -m acid_lab check``) then works from that record alone: every
value is appended once, so each read reveals the order of the appends before it;
from those orders follow the dependencies -- T2 overwrote T1 (ww), T2 saw T1
(wr), T1 missed T2 (rw, an anti-dependency) -- and a cycle among them proves that
no serial order explains what the clients saw. The cycle's shape names the anomaly.

What PostgreSQL lets through, level by level:

* read committed: each statement sees what was committed when it began, so a
  transaction sees part of another's appends and misses the rest -- G-single
  (read skew) -- and two transactions both read the same version of a key's list
  and both append to it (Elle's ``lost-update``); write skew (G2-item) shows up too.
  Elle's lost update is not quite the catalog's P4 (test_isolation.py): there one
  write of a value disappears from the result; here nothing disappears, since both
  appends stay in the list, but each transaction read a version that the other's
  append made stale, so no serial order explains both reads;
* repeatable read (snapshot isolation): one snapshot for the whole transaction and
  "first updater wins" remove G-single and lost updates; only write skew (G2-item,
  two anti-dependencies) remains;
* serializable (SSI): aborts one transaction of every dangerous structure -- no
  cycle in any history.

The workers meet at three points per round (after their first reads; after every
*writer* committed; at the end), so transactions really overlap in every round:
the anomalies are made likely by concurrency, never staged statement by statement.
Run with ``-s`` to see each history's counts and one explained cycle.
"""

import pytest

from acid_lab.checkers.history import LEVEL_MODELS, check
from acid_lab.engine.scenario import READ_COMMITTED, REPEATABLE_READ, SERIALIZABLE
from acid_lab.lessons.list_append import list_append_history
from acid_lab.lessons.schema import HERMITAGE

pytestmark = pytest.mark.isolation

SEEDS = (3, 7, 8)  # three histories per level
WORKERS, ROUNDS, KEYS = 4, 15, 4  # 61 transactions a history (60 + one final read)

DIRTY = {"G0", "G1a", "G1b", "G1c"}
BROKEN_BOOKKEEPING = {"duplicate-elements", "incompatible-order"}
EVERYTHING = DIRTY | BROKEN_BOOKKEEPING | {"G-single", "G-nonadjacent", "G2-item",
                                           "lost-update", "internal"}


@pytest.fixture(scope="module")
def histories(target, place_keeper):
    """``histories(level)``: the SEEDS' histories at ``level``, recorded once per module."""
    recorded = {}
    with place_keeper.place(target.info, HERMITAGE) as connect:
        def record(level):
            if level not in recorded:
                recorded[level] = [
                    list_append_history(connect, level=level, workers=WORKERS, rounds=ROUNDS,
                                        keys=KEYS, seed=seed) for seed in SEEDS]
            return recorded[level]
        yield record


def show(level, recorded, verdict):
    """Print one history's counts and its first explained anomaly; return the counts."""
    line = f"{recorded.summary()}: found {verdict.counts() or 'nothing'}"
    print(line)
    cycles = [anomaly for anomaly in verdict.anomalies if anomaly.steps]
    for anomaly in cycles[:1] or verdict.anomalies[:1]:
        print("   e.g.", anomaly.kind, anomaly.explanation)
    return line


@pytest.mark.parametrize("level, found, never", [
    pytest.param(READ_COMMITTED, {"G-single", "G2-item", "lost-update"},
                 DIRTY | BROKEN_BOOKKEEPING,
                 id="read committed: G-single, G2-item and lost update found"),
    pytest.param(REPEATABLE_READ, {"G2-item"},
                 EVERYTHING - {"G2-item"},
                 id="repeatable read: G2-item found, never G-single or G1"),
    pytest.param(SERIALIZABLE, set(), EVERYTHING,
                 id="serializable: no anomaly in any history"),
])
def test_random_histories_show_what_each_level_allows(histories, level, found, never):
    """Random list-append transactions, 4 threads, no retries: what the checker finds.

    Scenario: for each of 3 seeds, 4 workers run 15 rounds of random transactions
    (reads early; then appends of fresh values, and maybe a read) at ``level``,
    recording invocations and completions; a last transaction reads every key. The
    checker infers version orders, builds the ww/wr/rw graph and names its cycles.
    Outcome: over the 3 histories, read committed shows G-single, G2-item and lost
    updates (never a dirty anomaly); repeatable read shows write skew (G2-item) only;
    serializable shows nothing -- its aborted transactions (40001) are the price.
    """
    kinds, lines = set(), []
    for recorded in histories(level):
        verdict = check(recorded.operations, LEVEL_MODELS[level])
        lines.append(show(level, recorded, verdict))
        kinds |= set(verdict.counts())
    story = "\n".join(lines)

    assert found <= kinds, f"anomalies {level} lets through, not found:\n{story}"
    assert not kinds & never, f"anomalies {level} forbids, found:\n{story}"


@pytest.mark.parametrize("level, model, valid", [
    pytest.param(READ_COMMITTED, "read-committed", True,
                 id="read committed: valid for read-committed"),
    pytest.param(READ_COMMITTED, "snapshot-isolation", False,
                 id="read committed: not snapshot isolation"),
    pytest.param(REPEATABLE_READ, "snapshot-isolation", True,
                 id="repeatable read: valid for snapshot-isolation"),
    pytest.param(REPEATABLE_READ, "serializable", False,
                 id="repeatable read: not serializable"),
    pytest.param(SERIALIZABLE, "serializable", True,
                 id="serializable: valid for serializable"),
])
def test_each_level_keeps_the_promise_of_its_model(histories, level, model, valid):
    """The same histories, judged: does each level keep the model it promises?

    Scenario: the checker judges every history of ``level`` against ``model`` (the
    anomalies a model forbids: ``acid_lab.checkers.history.MODELS``).
    Outcome: each level keeps its own promise (read committed, snapshot isolation,
    serializable) and breaks the next stronger one -- as ``check --model`` exits 0 or 1.
    """
    verdicts = [check(recorded.operations, model) for recorded in histories(level)]
    judged = [(verdict.valid, verdict.forbidden) for verdict in verdicts]

    assert all(verdict.valid for verdict in verdicts) == valid, (
        f"histories at {level} judged against {model}: {judged}")


@pytest.mark.parametrize("dependencies, found", [
    pytest.param(("ww", "wr", "rw"), {"G2-item"}, id="ww, wr and rw: write skew found"),
    pytest.param(("ww", "wr"), set(), id="without rw edges: nothing found"),
])
def test_write_skew_is_visible_only_through_anti_dependencies(histories, dependencies,
                                                               found):
    """Write skew is made of anti-dependencies: a checker blind to rw misses it.

    Scenario: the repeatable read histories, checked once with every dependency and
    once with the rw edges (T1 read a key and missed T2's append) left out.
    Outcome: with rw edges, G2-item (two transactions that each missed the other's
    append); without them, no cycle at all -- under snapshot isolation, every
    committed write and read agrees with some order, only what was *missed* does not.
    """
    kinds = set()
    for recorded in histories(REPEATABLE_READ):
        kinds |= set(check(recorded.operations, "serializable", kinds=dependencies).counts())

    assert kinds == found, f"anomalies found from {dependencies} edges: {kinds}"
