"""From a list-append history to the dependency graph of its transactions.

Every value is appended once per key, so every read of a key shows a prefix of
that key's *version order*: the order in which its values were appended. If all
reads of a key are prefixes of one another, the longest read is that order (a key
appended to only once, and never read, has the order ``[v]``); if two are not, no
single order explains them (*incompatible order*). A value appended but never read
came after everything ever read of its key.

With the version orders, each pair of transactions on a key is ordered, as Adya
defines the dependencies:

* ``ww`` T1 -> T2: T2 appended the value right after T1's value (T2 overwrote T1);
* ``wr`` T1 -> T2: T2 read a list whose last value T1 appended (T2 saw T1's write);
* ``rw`` T1 -> T2: T1 read a list, and the next value in the version order is T2's
  append (T1 did not see T2's write: an anti-dependency).

Optionally ``process`` (T1 ended before T2 began on the same client process) and
``realtime`` (T1 ended before T2 began at all). Only transactions that may have
committed (``ok``, and ``info`` ones for their appends) are nodes; a failed
transaction's writes are looked for only by the G1a check.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from itertools import pairwise
from typing import Any, NamedTuple

import networkx as nx

from acid_lab.engine.histories import APPEND, FAIL, INFO, INVOKE, OK, READ, HistoryError, Operation
from acid_lab.input_files import excerpt

WW, WR, RW, PROCESS, REALTIME = "ww", "wr", "rw", "process", "realtime"
DATA_KINDS = (WW, WR, RW)
ORDER_KINDS = (PROCESS, REALTIME)


class _Initial:
    """The state of a key before its first append (the empty list)."""

    def __repr__(self) -> str:
        return "INITIAL"


INITIAL = _Initial()


@dataclasses.dataclass(frozen=True)
class Transaction:
    """A completed transaction: its completion operation, and when it was invoked."""

    id: int                       # the completion's index: "T<id>"
    type: str                     # ok / fail / info
    mops: tuple                   # (f, key, value); a read's value None when unknown
    process: Any = None
    invoked: int | None = None    # position in the history of its invocation
    completed: int = 0            # position in the history of its completion

    @property
    def name(self) -> str:
        return f"T{self.id}"


class Dependency(NamedTuple):
    """Why ``source`` must come before ``target``. ``key``/``value``: the append that
    orders them (``value``: the later transaction's element for ww/rw, the element read
    for wr); ``read``: the list read (wr, rw); ``previous``: the earlier element (ww).
    (A named tuple: a big history has hundreds of thousands of them.)"""

    kind: str
    source: int
    target: int
    key: Any = None
    value: Any = None
    read: tuple | None = None
    previous: Any = None


def transactions(operations: Sequence[Operation]) -> list[Transaction]:
    """Pair every completion with its invocation (same process; without processes,
    the latest open invocation) and return the completed transactions in order."""
    open_by_process: dict[Any, list[int]] = defaultdict(list)
    done = []
    for position, op in enumerate(operations):
        if op.f != "txn":
            continue
        if op.type == INVOKE:
            open_by_process[op.process].append(position)
            continue
        waiting = open_by_process.get(op.process)
        invoked = waiting.pop() if waiting else None
        mops = op.value
        if op.type == INFO and invoked is not None and not mops:
            mops = operations[invoked].value
        if op.type == OK:  # a committed read of nil saw the empty list (Clojure's nil)
            mops = tuple((f, k, () if f == READ and v is None else v) for f, k, v in mops)
        done.append(Transaction(id=op.index, type=op.type, mops=mops, process=op.process,
                                invoked=invoked, completed=position))
    return done


@dataclasses.dataclass
class Orders:
    """What the reads reveal: each key's version order, and reads that disagree."""

    elements: dict[Any, tuple]                    # key -> elements in append order
    positions: dict[Any, dict[Any, int]]          # key -> element -> position
    incompatible: list[tuple[Any, tuple, tuple]]  # (key, shorter read, longer read)

    def previous(self, key: Any, element: Any) -> Any:
        """The element appended just before ``element`` (INITIAL if it was the first); for
        an element never read, the last one ever read (it came after all of them)."""
        order = self.elements.get(key, ())
        position = self.positions.get(key, {}).get(element)
        if position is None:
            return order[-1] if order else INITIAL
        return order[position - 1] if position else INITIAL


def version_orders(committed: Sequence[Transaction]) -> Orders:
    """The version order of every key, from the reads of ``committed`` (ok and info)."""
    reads: dict[Any, dict[tuple, None]] = defaultdict(dict)  # distinct, in history order
    appends: dict[Any, list] = defaultdict(list)
    for txn in committed:
        for f, k, v in txn.mops:
            if f == READ and v:
                reads[k][v] = None
            elif f == APPEND:
                appends[k].append(v)
    elements, incompatible = {}, []
    for k, seen in reads.items():
        by_length = sorted(seen, key=len)  # stable: equally long reads in history order
        for shorter, longer in pairwise(by_length):
            if longer[:len(shorter)] != shorter:
                incompatible.append((k, shorter, longer))
                break
        elements[k] = tuple(dict.fromkeys(by_length[-1]))  # distinct, in order
    for k, values in appends.items():
        if k not in elements and len(values) == 1:
            elements[k] = (values[0],)
    positions = {k: {e: i for i, e in enumerate(order)} for k, order in elements.items()}
    return Orders(elements, positions, incompatible)


@dataclasses.dataclass
class Dependencies:
    """The graph (networkx DiGraph of transaction ids; each edge's ``deps`` lists the
    Dependency objects behind it) and the indexes the anomaly checks share."""

    graph: nx.DiGraph
    by_id: dict[int, Transaction]
    orders: Orders
    writer: dict[tuple, Transaction]       # (key, element) -> transaction that appended it
    #                                        (failed ones too)

    def kinds(self, a: int, b: int) -> set[str]:
        return {dep.kind for dep in self.graph[a][b]["deps"]}


def possibly_committed(txns: Sequence[Transaction]) -> list[Transaction]:
    return [txn for txn in txns if txn.type in (OK, INFO)]


def dependency_graph(txns: Sequence[Transaction], *, process: bool = False,
                     realtime: bool = False,
                     kinds: Sequence[str] = DATA_KINDS) -> Dependencies:
    """ww, wr and rw edges (those of ``kinds``) between the transactions that may have
    committed; process and real-time order edges when asked."""
    committed = possibly_committed(txns)
    orders = version_orders(committed)
    writer = append_writers(txns)
    readers: dict[tuple, list[tuple[int, tuple]]] = defaultdict(list)  # -> (reader, list)
    for txn in committed:
        for f, k, v in txn.mops:
            if f == READ and v is not None and (txn.type == OK or v):  # info's nil: unknown
                readers[k, v[-1] if v else INITIAL].append((txn.id, v))

    edges: dict[tuple[int, int], list[Dependency]] = defaultdict(list)
    for txn in committed:
        me = txn.id
        for f, k, v in txn.mops:
            if f == APPEND:
                previous = orders.previous(k, v)
                if WW in kinds and previous is not INITIAL:
                    before = writer.get((k, previous))
                    if before is not None and before.id != me and before.type != FAIL:
                        edges[before.id, me].append(
                            Dependency(WW, before.id, me, k, v, previous=previous))
                if RW in kinds:
                    for reader, read in readers.get((k, previous), ()):
                        if reader != me:
                            edges[reader, me].append(Dependency(RW, reader, me, k, v, read))
            elif f == READ and v and WR in kinds:
                before = writer.get((k, v[-1]))
                if before is not None and before.id != me and before.type != FAIL:
                    edges[before.id, me].append(Dependency(WR, before.id, me, k, v[-1], v))
    by_id = {txn.id: txn for txn in committed}
    if process:
        _process_edges(committed, edges)
    if realtime:
        _realtime_edges(committed, edges)
    graph = nx.DiGraph()
    graph.add_nodes_from(by_id)
    graph.add_edges_from((a, b, {"deps": deps}) for (a, b), deps in edges.items())
    return Dependencies(graph, by_id, orders, writer)


def _process_edges(committed: Sequence[Transaction], edges: dict) -> None:
    """T1 -> T2 when T2 is the next transaction on T1's process. An ``info`` transaction
    has no known end (it may take effect later), so nothing follows it."""
    last: dict[Any, Transaction] = {}
    for txn in sorted(committed, key=lambda t: t.completed):
        if txn.process is None:
            continue
        before = last.pop(txn.process, None)
        if before is not None:
            edges[before.id, txn.id].append(Dependency(PROCESS, before.id, txn.id))
        if txn.type == OK:
            last[txn.process] = txn


def _realtime_edges(committed: Sequence[Transaction], edges: dict) -> None:
    """T1 -> T2 when T1 committed before T2 was invoked; only the latest such T1s
    (the others reach T2 through them), so the edges stay few."""
    events = []
    for txn in committed:
        if txn.invoked is not None:
            events.append((txn.invoked, 0, txn))
        events.append((txn.completed, 1, txn))
    events.sort(key=lambda event: (event[0], event[1]))
    frontier: set[int] = set()        # completed, not yet followed by a later completion
    seen_at_invoke: dict[int, frozenset] = {}
    for _, is_completion, txn in events:
        if not is_completion:
            seen_at_invoke[txn.id] = frozenset(frontier)
            continue
        before = seen_at_invoke.get(txn.id, frozenset())
        for source in before:
            edges[source, txn.id].append(Dependency(REALTIME, source, txn.id))
        if txn.type == OK:  # an info transaction's end is unknown: it precedes nothing
            frontier -= before
            frontier.add(txn.id)


def append_writers(txns: Sequence[Transaction]) -> dict[tuple, Transaction]:
    """(key, element) -> the transaction (ok, info or fail) that appended it. A value
    appended to a key twice is refused, as Elle refuses it: version orders are inferred
    from appends that are unique per key."""
    writer: dict[tuple, Transaction] = {}
    for txn in txns:
        for f, k, v in txn.mops:
            if f == APPEND:
                other = writer.get((k, v))
                if other is not None:
                    twice = "twice by" if other is txn else "by"
                    names = txn.name if other is txn else f"{other.name} and {txn.name}"
                    raise HistoryError(
                        f"value {excerpt(repr(v), 40)} appended to key {excerpt(repr(k), 40)} "
                        f"{twice} {names}: the checker needs every value appended to a key "
                        "once (its version orders rest on that, as Elle's do)")
                writer[k, v] = txn
    return writer


def failed_appends(txns: Sequence[Transaction]) -> dict[tuple, Transaction]:
    """(key, element) -> the failed transaction that appended it."""
    return {(k, v): txn for txn in txns if txn.type == FAIL
            for f, k, v in txn.mops if f == APPEND}


def intermediate_appends(txns: Sequence[Transaction]) -> dict[tuple, Transaction]:
    """(key, element) -> transaction that appended it and later appended again to the key."""
    found = {}
    for txn in txns:
        last: dict[Any, Any] = {}
        for f, k, v in txn.mops:
            if f == APPEND:
                if k in last:
                    found[k, last[k]] = txn
                last[k] = v
    return found
