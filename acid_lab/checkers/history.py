"""The history checker: is there a serial order that explains what the clients saw?

Given a list-append history (:mod:`acid_lab.checkers.histories`), :func:`check`
infers each key's version order from the reads, builds the dependency graph
(:mod:`acid_lab.checkers.dependencies`), and finds and names the anomalies
(:mod:`acid_lab.checkers.anomalies`) -- each explained in words, with the
operations involved. It does what Jepsen's Elle does for list-append histories,
in a smaller way: no search for "a cycle must exist" beyond the cycles it finds,
and a cycle that needs a process or real-time edge is reported only when the
shortest one found needs it.

A consistency model says which anomalies it forbids (:data:`MODELS`); the
history is *valid* for a model when none of those was found::

    verdict = check(operations, model="snapshot-isolation")
    verdict.valid, verdict.counts(), verdict.anomalies[0].explanation

PostgreSQL's REPEATABLE READ is snapshot isolation: check its histories with
``snapshot-isolation``. ``repeatable-read`` here is Adya's PL-2.99, as Elle defines it:
it forbids G2-item (write skew) -- a promise PostgreSQL's level of that name does not
make -- but not an internal inconsistency (a non-repeatable read of a list within one
transaction), which snapshot isolation forbids.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Sequence

from acid_lab.checkers import anomalies as found
from acid_lab.checkers.anomalies import (
    DIRTY_UPDATE,
    DUPLICATES,
    FUTURE_READ,
    G0,
    G1A,
    G1B,
    G1C,
    G2_ITEM,
    G_NONADJACENT,
    G_SINGLE,
    INCOMPATIBLE_ORDER,
    INTERNAL,
    LOST_UPDATE,
    Finding,
)
from acid_lab.checkers.dependencies import DATA_KINDS, dependency_graph, transactions
from acid_lab.checkers.histories import FAIL, INFO, OK, Operation, no_cyclic_gc
from acid_lab.engine.scenario import (
    READ_COMMITTED,
    READ_UNCOMMITTED,
    REPEATABLE_READ,
    SERIALIZABLE,
)

_CYCLES = (G0, G1C, G_SINGLE, G_NONADJACENT, G2_ITEM)


def _variants(kinds: Sequence[str], *suffixes: str) -> set[str]:
    return {kind + suffix for kind in kinds for suffix in suffixes}


# As Elle's consistency models say (elle.consistency-model): read committed forbids G1,
# and what implies it -- a future read is a G1c of one transaction, a dirty update and an
# incompatible order imply a G1a. A transaction's read that disagrees with its own earlier
# read of the key (internal) is a non-repeatable read: read committed allows it, snapshot
# isolation does not, and neither does Elle's repeatable read (Adya's PL-2.99: G1 and
# G2-item, and what implies G2-item: item G-single, G-nonadjacent, lost update).
_READ_UNCOMMITTED = {G0, DUPLICATES}
_READ_COMMITTED = _READ_UNCOMMITTED | {G1A, G1B, G1C, INCOMPATIBLE_ORDER, FUTURE_READ,
                                       DIRTY_UPDATE}
_SNAPSHOT = _READ_COMMITTED | {INTERNAL, G_SINGLE, G_NONADJACENT, LOST_UPDATE}
_REPEATABLE_READ = _READ_COMMITTED | {G_SINGLE, G_NONADJACENT, LOST_UPDATE, G2_ITEM}
_SERIALIZABLE = _SNAPSHOT | _REPEATABLE_READ

#: model -> the anomalies it forbids (with list appends and item reads only, repeatable
#: read and serializable differ by internal alone: the rest of the difference is about
#: predicates, which list append does not have).
MODELS: dict[str, frozenset[str]] = {
    "read-uncommitted": frozenset(_READ_UNCOMMITTED),
    "read-committed": frozenset(_READ_COMMITTED),
    "snapshot-isolation": frozenset(_SNAPSHOT),
    "repeatable-read": frozenset(_REPEATABLE_READ),
    "serializable": frozenset(_SERIALIZABLE),
    # the same, plus: a client's transactions take effect in the order it ran them
    "strong-session-serializable": frozenset(_SERIALIZABLE | _variants(_CYCLES, "-process")),
    # the same, plus: a transaction that committed before another began comes first (real
    # time covers process order: a client runs one transaction at a time)
    "strict-serializable": frozenset(_SERIALIZABLE | _variants(_CYCLES, "-realtime")),
}
DEFAULT_MODEL = "serializable"
#: The model each PostgreSQL isolation level promises (read uncommitted is read committed).
LEVEL_MODELS = {READ_UNCOMMITTED: "read-committed", READ_COMMITTED: "read-committed",
                REPEATABLE_READ: "snapshot-isolation", SERIALIZABLE: "serializable"}


@dataclasses.dataclass
class Verdict:
    """What the checker found in one history, judged against one model."""

    model: str
    transactions: int                     # completed transactions (ok, fail, info)
    committed: int
    failed: int
    unknown: int
    anomalies: list[Finding]
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(anomaly.kind for anomaly in self.anomalies).items()))

    @property
    def forbidden(self) -> list[str]:
        """The kinds found that the model forbids."""
        return [kind for kind in self.counts() if kind in MODELS[self.model]]

    @property
    def valid(self) -> bool:
        return not self.forbidden

    def first(self, kind: str) -> Finding | None:
        return next((anomaly for anomaly in self.anomalies if anomaly.kind == kind), None)

    def as_json(self) -> dict:
        return {"model": self.model, "valid": self.valid,
                "transactions": self.transactions, "committed": self.committed,
                "failed": self.failed, "unknown": self.unknown,
                "anomaly_types": list(self.counts()), "counts": self.counts(),
                "forbidden": self.forbidden,
                "anomalies": [anomaly.as_json() for anomaly in self.anomalies]}


def check(operations: Sequence[Operation], model: str = DEFAULT_MODEL, *,
          kinds: Sequence[str] = DATA_KINDS) -> Verdict:
    """Every anomaly of ``operations``, judged against ``model`` (a key of MODELS).
    ``kinds``: the dependencies the graph is built from (all three, unless a lesson
    wants to show what a checker blind to one of them misses)."""
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(MODELS)}")
    began = time.perf_counter()
    with no_cyclic_gc():
        verdict = _check(operations, model, kinds)
    verdict.seconds = time.perf_counter() - began
    return verdict


def _check(operations: Sequence[Operation], model: str, kinds: Sequence[str]) -> Verdict:
    txns = transactions(operations)
    deps = dependency_graph(txns, kinds=kinds,
                            process=model == "strong-session-serializable",
                            realtime=model == "strict-serializable")
    result = (found.incompatible_orders(deps, txns) + found.duplicate_elements(txns)
              + found.internal_inconsistencies(txns) + found.aborted_reads(txns)
              + found.dirty_updates(deps)
              + found.intermediate_reads(txns) + found.lost_updates(txns)
              + found.cycle_anomalies(deps))
    count = Counter(txn.type for txn in txns)
    return Verdict(model, len(txns), count[OK], count[FAIL], count[INFO], result)
