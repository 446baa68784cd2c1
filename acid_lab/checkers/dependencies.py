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

from acid_lab.checkers.histories import (
    APPEND,
    FAIL,
    INFO,
    INVOKE,
    OK,
    READ,
    HistoryError,
    Operation,
)
from acid_lab.input_files import excerpt

WW, WR, RW, PROCESS, REALTIME = "ww", "wr", "rw", "process", "realtime"
DATA_KINDS = (WW, WR, RW)
ORDER_KINDS = (PROCESS, REALTIME)
#: An edge's kinds are kept as bits of one small int (a big history has millions of edges);
#: KINDS_OF[bits] is the set of names.
BIT = {WW: 1, WR: 2, RW: 4, PROCESS: 8, REALTIME: 16}
KINDS_OF = [frozenset(kind for kind, bit in BIT.items() if bits & bit) for bits in range(32)]


class _Initial:
    """The state of a key before its first append (the empty list)."""

    def __repr__(self) -> str:
        return "INITIAL"


INITIAL = _Initial()


@dataclasses.dataclass(frozen=True, slots=True)
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
        if op.type == OK and any(v is None for _, _, v in mops):
            # a committed read of nil saw the empty list (Clojure's nil)
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
    """The graph -- ``succ[a][b]``: the kinds (bits, see KINDS_OF) of the edges a -> b --
    and the indexes the anomaly checks share. The Dependency behind an edge is found
    again when a cycle is explained (:meth:`dependency`): keeping one per edge would cost
    gigabytes on a history of a million transactions."""

    succ: dict[int, dict[int, int]]
    by_id: dict[int, Transaction]
    orders: Orders
    writer: dict[tuple, Transaction]       # (key, element) -> transaction that appended it
    #                                        (failed ones too)

    def kinds(self, a: int, b: int) -> frozenset[str]:
        return KINDS_OF[self.succ[a][b]]

    def dependency(self, a: int, b: int, kind: str) -> Dependency:
        """The first reason of ``kind`` why ``a`` precedes ``b`` (in ``b``'s operations)."""
        if kind in ORDER_KINDS:
            return Dependency(kind, a, b)
        first, second = self.by_id[a], self.by_id[b]
        for f, k, v in second.mops:
            if kind == WR and f == READ and v and self.writer.get((k, v[-1])) is first:
                return Dependency(WR, a, b, k, v[-1], v)
            if f != APPEND:
                continue
            previous = self.orders.previous(k, v)
            if kind == WW and previous is not INITIAL and \
                    self.writer.get((k, previous)) is first:
                return Dependency(WW, a, b, k, v, previous=previous)
            if kind == RW:
                for g, key, read in first.mops:
                    if g == READ and key == k and read is not None and (
                            first.type == OK or read) and \
                            (read[-1] if read else INITIAL) == previous:
                        return Dependency(RW, a, b, k, v, read)
        raise LookupError(f"no {kind} edge from T{a} to T{b}")


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
    readers: dict[tuple, list[int]] = defaultdict(list)  # (key, last element) -> readers
    for txn in committed:
        for f, k, v in txn.mops:
            if f == READ and v is not None and (txn.type == OK or v):  # info's nil: unknown
                readers[k, v[-1] if v else INITIAL].append(txn.id)

    succ: dict[int, dict[int, int]] = {txn.id: {} for txn in committed}
    ww, wr, rw = (BIT[WW] if WW in kinds else 0, BIT[WR] if WR in kinds else 0,
                  BIT[RW] if RW in kinds else 0)
    no_readers: list[int] = []
    for txn in committed:
        me = txn.id
        for f, k, v in txn.mops:
            if f == APPEND:
                previous = orders.previous(k, v)
                if ww and previous is not INITIAL:
                    before = writer.get((k, previous))
                    if before is not None and before.id != me and before.type != FAIL:
                        out = succ[before.id]
                        out[me] = out.get(me, 0) | ww
                if rw:
                    for reader in readers.get((k, previous), no_readers):
                        if reader != me:
                            out = succ[reader]
                            out[me] = out.get(me, 0) | rw
            elif wr and v:
                before = writer.get((k, v[-1]))
                if before is not None and before.id != me and before.type != FAIL:
                    out = succ[before.id]
                    out[me] = out.get(me, 0) | wr
    by_id = {txn.id: txn for txn in committed}
    if len(by_id) != len(committed):
        twice = next(txn.id for txn in committed if by_id[txn.id] is not txn)
        raise HistoryError(f"the index {excerpt(repr(twice), 40)} names two completed "
                           "transactions: each completion needs an index of its own")
    if process:
        _process_edges(committed, succ)
    if realtime:
        _realtime_edges(committed, succ)
    return Dependencies(succ, by_id, orders, writer)


def _add(succ: dict[int, dict[int, int]], a: int, b: int, kind: str) -> None:
    out = succ[a]
    out[b] = out.get(b, 0) | BIT[kind]


def _process_edges(committed: Sequence[Transaction], edges: dict[int, dict[int, int]]
                   ) -> None:
    """T1 -> T2 when T2 is the next transaction on T1's process. An ``info`` transaction
    has no known end (it may take effect later), so nothing follows it."""
    last: dict[Any, Transaction] = {}
    for txn in sorted(committed, key=lambda t: t.completed):
        if txn.process is None:
            continue
        before = last.pop(txn.process, None)
        if before is not None:
            _add(edges, before.id, txn.id, PROCESS)
        if txn.type == OK:
            last[txn.process] = txn


def _realtime_edges(committed: Sequence[Transaction], edges: dict[int, dict[int, int]]
                    ) -> None:
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
            _add(edges, source, txn.id, REALTIME)
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
