"""The anomalies of a list-append history: dependency cycles, named and explained,
and the anomalies one transaction (or two) show without a cycle.

Cycles (Adya's names): the graph's strongly connected components hold every cycle;
in each one, the shortest cycle of each kind is looked for, worst first, on the
edges that kind may use:

* G0 (write cycle): ww edges only;
* G1c (circular information flow): ww and wr, at least one wr;
* G-single (read skew): ww and wr plus exactly one rw;
* G-nonadjacent: two or more rw, no two of them next to each other;
* G2-item (write skew): two or more rw, some of them adjacent.

A component with a G0 cycle is not searched for G1c (G0 implies it), one with a
G-single not for G-nonadjacent or G2-item. With process or real-time edges, cycles
that need such an edge are named with a ``-process`` / ``-realtime`` suffix.

Without a cycle:

* G1a (aborted read): a committed transaction read a value a failed one appended;
* G1b (intermediate read): a read ends with a value whose writer appended to that
  key again later in the same transaction;
* internal inconsistency: a read disagrees with the transaction's own earlier
  appends or reads of that key (at read committed: a non-repeatable read);
* future read: a read holds a value the same transaction appends only later (Elle's
  ``future-read``: a cycle of one transaction, so a kind of G1c);
* dirty update: a committed append came right after a failed transaction's append in a
  key's version order (Elle's ``dirty-update``: a write built on a write that never
  committed, a kind of G1a);
* lost update: two committed transactions read the same list of a key, and both
  appended to it (each read-modify-write started from a state the other changed);
* duplicate elements: a read holds one value twice (each is appended once);
* incompatible order: two reads of a key that are not prefixes of one another.
"""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import networkx as nx

from acid_lab.checkers.dependencies import (
    INITIAL,
    KINDS_OF,
    ORDER_KINDS,
    PROCESS,
    REALTIME,
    RW,
    WR,
    WW,
    Dependencies,
    Dependency,
    Transaction,
    failed_appends,
    intermediate_appends,
)
from acid_lab.checkers.histories import APPEND, FAIL, INFO, OK, READ

G0, G1A, G1B, G1C = "G0", "G1a", "G1b", "G1c"
G_SINGLE, G_NONADJACENT, G2_ITEM = "G-single", "G-nonadjacent", "G2-item"
INTERNAL, LOST_UPDATE = "internal", "lost-update"
DUPLICATES, INCOMPATIBLE_ORDER = "duplicate-elements", "incompatible-order"
FUTURE_READ, DIRTY_UPDATE = "future-read", "dirty-update"

#: Seconds spent looking for one kind of cycle in one component before settling for
#: any cycle of it (a huge component can hold very many).
SEARCH_BUDGET = 1.0
#: Edges tried per kind and component when looking for the shortest cycle.
TRIES = 64
#: Components up to this size are searched without first computing what reaches what.
SMALL = 64


@dataclasses.dataclass
class CycleEdge:
    """One edge of a cycle: ``source`` must precede ``target`` because of ``dependency``."""

    source: str
    target: str
    dependency: Dependency
    words: str

    def as_json(self) -> dict:
        dep = self.dependency
        step = {"from": self.source, "to": self.target, "type": dep.kind,
                "explanation": self.words}
        if dep.key is not None:
            step["key"] = _json_value(dep.key)
            step["value"] = _json_value(dep.value)
        return step


@dataclasses.dataclass
class Finding:
    """One anomaly: its kind, the transactions in it, and why, in words."""

    kind: str
    transactions: list[str]
    explanation: str
    steps: list[CycleEdge] = dataclasses.field(default_factory=list)  # a cycle's edges

    def as_json(self) -> dict:
        found = {"type": self.kind, "transactions": self.transactions,
                 "explanation": self.explanation}
        if self.steps:
            found["cycle"] = [step.as_json() for step in self.steps]
        return found


def _json_value(value: Any) -> Any:
    if value is INITIAL:
        return None
    return list(value) if isinstance(value, tuple) else value


def show(values: Iterable) -> str:
    """A list as Elle prints it: [1 2 3]."""
    return "[" + " ".join(str(v) for v in values) + "]"


# -- words ----------------------------------------------------------------------

def dependency_words(dep: Dependency, names: dict[int, str]) -> str:
    a, b = names[dep.source], names[dep.target]
    if dep.kind == WW:
        return (f"{b} appended {dep.value} to key {dep.key} right after {a}'s "
                f"{dep.previous} (ww: {b} overwrote {a})")
    if dep.kind == WR:
        return (f"{b} read key {dep.key} as {show(dep.read)}, ending with {a}'s append "
                f"of {dep.value} (wr: {b} saw {a})")
    if dep.kind == RW:
        seen = f"as {show(dep.read)}" if dep.read else "empty"
        return (f"{a} read key {dep.key} {seen}, without {dep.value}, which {b} appended "
                f"next (rw: {a} did not see {b})")
    if dep.kind == PROCESS:
        return f"{a} ended before {b} began, on the same process (process order)"
    return f"{a} ended before {b} began (real time)"


def cycle_words(steps: Sequence[CycleEdge]) -> str:
    loop = " -> ".join([step.source for step in steps] + [steps[0].source])
    return (f"{loop}: " + "; ".join(step.words for step in steps)
            + f". So {steps[0].source} would have to come before itself: "
              "no serial order explains these transactions.")


# -- cycles ------------------------------------------------------------------------

def classify(kinds: Sequence[str]) -> str:
    """The name of a cycle whose edges, in order, are of ``kinds``."""
    rw = sum(kind == RW for kind in kinds)
    if rw == 1:
        base = G_SINGLE
    elif rw > 1:
        adjacent = any(kinds[i] == RW and kinds[i - 1] == RW for i in range(len(kinds)))
        base = G2_ITEM if adjacent else G_NONADJACENT
    elif WR in kinds:
        base = G1C
    elif WW in kinds:
        base = G0
    else:
        base = "order"  # only process / real-time edges: cannot happen between ok txns
    if REALTIME in kinds:
        return base + "-realtime"
    if PROCESS in kinds:
        return base + "-process"
    return base


@dataclasses.dataclass
class _Component:
    """One strongly connected component: its edges, by the kinds each one carries."""

    nodes: list[int]
    edges: list[tuple[int, int, frozenset]]

    def graph(self, allowed: set[str]) -> nx.DiGraph:
        sub = nx.DiGraph()
        sub.add_nodes_from(self.nodes)
        sub.add_edges_from((a, b) for a, b, kinds in self.edges if kinds & allowed)
        return sub

    def edges_of(self, kind: str) -> list[tuple[int, int]]:
        return [(a, b) for a, b, kinds in self.edges if kind in kinds]


def cycle_anomalies(deps: Dependencies, *, budget: float = SEARCH_BUDGET) -> list[Finding]:
    """One cycle per kind and strongly connected component, shortest found first."""
    succ = deps.succ
    names = {txn_id: txn.name for txn_id, txn in deps.by_id.items()}
    found = []
    for nodes in strongly_connected(succ):
        members = sorted(nodes)
        inside = set(nodes)
        edges = [(a, b, KINDS_OF[bits]) for a in members for b, bits in succ[a].items()
                 if b in inside]
        component = _Component(members, edges)
        data = {WW, WR, RW}
        cycles = _search(component, data, budget)
        order_kinds = {kind for _, _, kinds in edges for kind in kinds} & set(ORDER_KINDS)
        if order_kinds:
            data_names = {classify(kinds) for _, kinds in cycles}
            for cycle, kinds in _search(component, data | order_kinds, budget):
                name = classify(kinds)
                if set(kinds) & order_kinds and name.rsplit("-", 1)[0] not in data_names:
                    cycles.append((cycle, kinds))
        for cycle, kinds in cycles:
            found.append(_explain_cycle(deps, cycle, kinds, names))
    return found


def strongly_connected(succ: dict[int, dict[int, int]]) -> Iterator[list[int]]:
    """The strongly connected components of more than one node (Tarjan's algorithm,
    without recursion: a history's graph can hold a million transactions)."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    for root, out in succ.items():
        if not out or root in index:
            continue  # a node without successors is in no cycle (nor counted: none needs it)
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(succ[root]))]
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(succ[child])))
                    break
                if child in on_stack and index[child] < low[node]:
                    low[node] = index[child]
            else:
                work.pop()
                if work and low[node] < low[work[-1][0]]:
                    low[work[-1][0]] = low[node]
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        yield component


def _search(component: _Component, allowed: set[str], budget: float
            ) -> list[tuple[list[int], list[str]]]:
    """The cycles of one component, as (nodes, edge kinds), worst kind first."""
    plain = allowed - {RW}
    found = []
    g0 = _shortest_closing(component.graph(allowed & ({WW} | set(ORDER_KINDS))),
                           component.edges_of(WW) + _order_edges(component, allowed), budget)
    if g0 is not None:
        found.append((g0, _kinds(component, g0, plain)))
    else:
        g1c = _shortest_closing(component.graph(plain), component.edges_of(WR), budget)
        if g1c is not None:
            found.append((g1c, _kinds(component, g1c, plain)))
    if RW not in allowed:
        return found
    rw_edges = component.edges_of(RW)
    plain_graph = component.graph(plain)
    single = _shortest_closing(plain_graph, rw_edges, budget)
    if single is not None:
        found.append((single, [RW] + _kinds(component, single, plain)[1:]))
        return found
    nonadjacent = _nonadjacent(component, plain, rw_edges, budget)
    if nonadjacent is not None:
        found.append(nonadjacent)
        return found
    whole = component.graph(allowed)
    cycle = _shortest_closing(whole, rw_edges, budget)
    if cycle is not None:
        kinds = [RW] + _kinds(component, cycle, plain, fallback=RW)[1:]
        found.append((cycle, kinds))
    return found


def _order_edges(component: _Component, allowed: set[str]) -> list[tuple[int, int]]:
    return [(a, b) for a, b, kinds in component.edges if kinds & allowed & set(ORDER_KINDS)]


def _kinds(component: _Component, cycle: list[int], prefer: set[str],
           fallback: str | None = None) -> list[str]:
    """The kind named for each edge of ``cycle``: ww, then wr, then order edges."""
    by_pair = {(a, b): kinds for a, b, kinds in component.edges}
    chosen = []
    for a, b in _edges_of(cycle):
        kinds = by_pair[a, b]
        for kind in (WW, WR, PROCESS, REALTIME):
            if kind in kinds and kind in prefer:
                chosen.append(kind)
                break
        else:
            chosen.append(fallback if fallback in kinds else sorted(kinds)[0])
    return chosen


def _shortest_closing(graph: nx.DiGraph, edges: list[tuple[int, int]], budget: float
                      ) -> list[int] | None:
    """Over the edges (a, b) (in ``graph`` or not), the shortest cycle a, b, ..., a
    whose way back from b to a runs in ``graph``."""
    found = _shortest_paths_back(graph, [(b, a) for a, b in edges], budget)
    return None if found is None else [found[-1], *found[:-1]]


def _shortest_paths_back(graph: nx.DiGraph, pairs: list[tuple[Any, Any]], budget: float
                         ) -> list | None:
    """The shortest path ``start .. end`` in ``graph`` over the (start, end) ``pairs``
    that have one. Which pairs do is read off the reachability of the condensation
    (its components, as a DAG), all at once; then at most TRIES breadth-first searches
    (within ``budget`` seconds, once one is found) pick the shortest."""
    pairs = [(start, end) for start, end in pairs if start in graph and end in graph]
    if not pairs:
        return None
    if len(pairs) <= TRIES and len(graph) <= SMALL:
        candidates = pairs  # few: a search that finds no path costs little
    else:
        reachable = _reachable(graph)
        candidates = [(start, end) for start, end in pairs if reachable(start, end)]
    best = None
    deadline = time.monotonic() + budget
    for tries, (start, end) in enumerate(candidates):
        if best is not None and (tries >= TRIES or time.monotonic() > deadline
                                 or len(best) == 2):
            break
        try:
            path = nx.bidirectional_shortest_path(graph, start, end)
        except nx.NetworkXNoPath:
            continue
        if best is None or len(path) < len(best):
            best = path
    return best


def _reachable(graph: nx.DiGraph):
    """``reachable(u, v)``: is there a path from u to v? One pass over the condensation
    in reverse topological order, each component's descendants kept as a bit set."""
    dag = nx.condensation(graph)
    member = dag.graph["mapping"]
    below: dict[int, int] = {}
    for component in reversed(list(nx.topological_sort(dag))):
        bits = 1 << component
        for successor in dag.successors(component):
            bits |= below[successor]
        below[component] = bits
    return lambda u, v: bool(below[member[u]] >> member[v] & 1)


def _nonadjacent(component: _Component, plain: set[str], rw_edges: list[tuple[int, int]],
                 budget: float) -> tuple[list[int], list[str]] | None:
    """A cycle with several rw edges, none next to another: a shortest path in the
    graph of (transaction, came in by rw?) states, from b (in by rw) back to a (in by
    a plain edge), closed by the rw edge a -> b."""
    states = nx.DiGraph()
    for a, b, kinds in component.edges:
        if kinds & plain:
            states.add_edge((a, False), (b, False))
            states.add_edge((a, True), (b, False))
        if RW in kinds:
            states.add_edge((a, False), (b, True))
    path = _shortest_paths_back(states, [((b, True), (a, False)) for a, b in rw_edges], budget)
    if path is None:
        return None
    nodes = [path[-1][0]] + [node for node, _ in path[:-1]]
    marks = [RW] + [RW if came_by_rw else "plain" for _, came_by_rw in path[1:]]
    plain_kinds = _kinds(component, nodes, plain)
    kinds = [RW if mark == RW else plain_kinds[i] for i, mark in enumerate(marks)]
    return nodes, kinds


def _edges_of(cycle: list[int]) -> list[tuple[int, int]]:
    """The edges of a cycle given as its nodes: a -> b, b -> c, ..., z -> a."""
    return list(zip(cycle, cycle[1:] + cycle[:1], strict=True))


def _explain_cycle(deps: Dependencies, cycle: list[int], kinds: list[str],
                   names: dict[int, str]) -> Finding:
    steps = []
    for (a, b), kind in zip(_edges_of(cycle), kinds, strict=True):
        dep = deps.dependency(a, b, kind)
        steps.append(CycleEdge(names[a], names[b], dep, dependency_words(dep, names)))
    return Finding(classify(kinds), [names[n] for n in cycle], cycle_words(steps), steps)


# -- without a cycle ------------------------------------------------------------------

def aborted_reads(txns: Sequence[Transaction]) -> list[Finding]:
    """G1a: a committed read holds a value that only a failed transaction appended."""
    failed: dict[Any, dict[Any, Transaction]] = defaultdict(dict)  # key -> element -> txn
    for (k, element), writer in failed_appends(txns).items():
        failed[k][element] = writer
    found = []
    for txn in txns:
        if txn.type != OK:
            continue
        for f, k, v in txn.mops:
            if f != READ or not v or k not in failed or failed[k].keys().isdisjoint(v):
                continue
            for element in v:
                writer = failed[k].get(element)
                if writer is not None:
                    found.append(Finding(G1A, [txn.name, writer.name], (
                        f"{txn.name} read key {k} as {show(v)}, which holds {element}; "
                        f"{writer.name} appended {element} and failed (was rolled back), "
                        f"so {txn.name} read a write that never committed.")))
    return found


def intermediate_reads(txns: Sequence[Transaction]) -> list[Finding]:
    """G1b: a read ends with a value its writer followed with another append to that key."""
    intermediate = intermediate_appends(txns)
    found = []
    for txn in txns:
        if txn.type != OK:
            continue
        for f, k, v in txn.mops:
            if f == READ and v:
                writer = intermediate.get((k, v[-1]))
                if writer is not None and writer.id != txn.id:
                    later = _appended_after(writer, k, v[-1])
                    found.append(Finding(G1B, [txn.name, writer.name], (
                        f"{txn.name} read key {k} as {show(v)}, ending with {v[-1]}; but "
                        f"{writer.name} appended {later} after {v[-1]} to key {k} in the same "
                        f"transaction, so {txn.name} saw a state {writer.name} never "
                        "committed.")))
    return found


def _appended_after(txn: Transaction, key: Any, element: Any) -> Any:
    after = False
    for f, k, v in txn.mops:
        if f == APPEND and k == key:
            if after:
                return v
            after = v == element
    return "?"


def internal_inconsistencies(txns: Sequence[Transaction]) -> list[Finding]:
    """A committed transaction's read that disagrees with its own earlier operations."""
    found = []
    for txn in txns:
        if txn.type != OK:
            continue
        known: dict[Any, tuple[bool, tuple]] = {}  # key -> (whole list known?, list or tail)
        for f, k, v in txn.mops:
            if f == APPEND:
                whole, values = known.get(k, (False, ()))
                known[k] = (whole, values + (v,))
                continue
            if v is None:
                continue
            if k in known:
                whole, values = known[k]
                agrees = v == values if whole else v[len(v) - len(values):] == values \
                    and len(v) >= len(values)
                if not agrees:
                    expected = show(values) if whole else "a list ending in " + show(values)
                    found.append(Finding(INTERNAL, [txn.name], (
                        f"{txn.name} read key {k} as {show(v)}, but after its own earlier "
                        f"operations on key {k} it should have read {expected}.")))
            known[k] = (True, v)
        for anomaly in _future_reads(txn):
            found.append(anomaly)
    return found


def _future_reads(txn: Transaction) -> list[Finding]:
    """A read holding a value the same transaction appends only later."""
    reads: dict[Any, list[tuple]] = {}  # key -> the lists read so far
    found = []
    for f, k, v in txn.mops:
        if f == READ:
            if v:
                reads.setdefault(k, []).append(v)
            continue
        read = next((seen for seen in reads.get(k, ()) if v in seen), None) if reads else None
        if read is not None:
            found.append(Finding(FUTURE_READ, [txn.name], (
                f"{txn.name} read key {k} as {show(read)}, which holds {v}, before "
                f"appending {v} itself: it saw its own future write (as if it had come "
                "after itself).")))
    return found


def dirty_updates(deps: Dependencies) -> list[Finding]:
    """A committed append right after failed ones in a key's version order (as Elle walks
    it: appends of unknown outcome in between are passed over)."""
    found = []
    for k, order in deps.orders.elements.items():
        last_known, failed, values = OK, None, []   # the initial state counts as committed
        for element in order:
            writer = deps.writer.get((k, element))
            kind = writer.type if writer is not None else OK
            if kind == OK:
                if last_known == FAIL:
                    found.append(_dirty_update(k, failed, writer, values + [element]))
                last_known, values = OK, [element]
            elif kind == FAIL:
                if last_known != FAIL:
                    failed, values = writer, []
                last_known = FAIL
                values.append(element)
            elif last_known == FAIL:
                values.append(element)   # unknown outcome: keep the range open
    return found


def _dirty_update(k: Any, failed: Transaction, writer: Transaction, values: list) -> Finding:
    return Finding(DIRTY_UPDATE, [failed.name, writer.name], (
        f"key {k} went through {show(values)}: {failed.name} appended {values[0]} and failed "
        f"(was rolled back), yet {writer.name} committed its append of {values[-1]} on top "
        f"of it, so a committed write was built on a write that never committed."))


def lost_updates(txns: Sequence[Transaction]) -> list[Finding]:
    """Committed transactions that read the same list of a key and then appended to it."""
    groups: dict[tuple, list[tuple[Transaction, Any]]] = defaultdict(list)
    for txn in txns:
        if txn.type != OK:
            continue
        first_read: dict[Any, tuple] = {}
        wrote = set()
        for f, k, v in txn.mops:
            if f == READ and v is not None and k not in first_read:
                first_read[k] = v
            elif f == APPEND and k in first_read and k not in wrote:
                wrote.add(k)
                groups[k, first_read[k]].append((txn, v))
    found = []
    for (k, v), group in groups.items():
        if len(group) < 2:
            continue
        names = [txn.name for txn, _ in group]
        appends = ", ".join(f"{txn.name} appended {element}" for txn, element in group)
        state = f"as {show(v)}" if v else "empty"
        found.append(Finding(LOST_UPDATE, names, (
            f"{_and(names)} all read key {k} {state} and then appended to it ({appends}): "
            f"each read-modify-write started from a state another one changed, so one of "
            f"the updates is based on a value that was already out of date.")))
    return found


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def duplicate_elements(txns: Sequence[Transaction]) -> list[Finding]:
    found = []
    for txn in txns:
        if txn.type in (OK, INFO):
            for f, k, v in txn.mops:
                if f == READ and v and len(set(v)) != len(v):
                    twice = sorted({str(e) for e in v if v.count(e) > 1})
                    verb = "appears" if len(twice) == 1 else "appear"
                    found.append(Finding(DUPLICATES, [txn.name], (
                        f"{txn.name} read key {k} as {show(v)}: {_and(twice)} {verb} more "
                        "than once, but every value is appended only once.")))
    return found


def incompatible_orders(deps: Dependencies, txns: Sequence[Transaction]) -> list[Finding]:
    found = []
    for k, shorter, longer in deps.orders.incompatible:
        readers = [txn.name for txn in txns if txn.type == OK and any(
            f == READ and key == k and v in (shorter, longer) for f, key, v in txn.mops)]
        found.append(Finding(INCOMPATIBLE_ORDER, readers[:2], (
            f"key {k} was read as {show(shorter)} and as {show(longer)} ({_and(readers[:2])}): "
            "neither is a prefix of the other, so no single order of appends explains "
            "both reads.")))
    return found
