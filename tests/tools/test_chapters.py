"""Harness: one chapter at a time, by keyword or by marker.

A reader runs ``pytest -k isolation`` or ``pytest -m isolation`` to study one
letter. Both must pick exactly the same tests: ``-k`` matches words in test
names, parameter ids and file names too, so an id such as
``isolation_level=...`` in another chapter would sneak into ``-k isolation``.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from _pytest.mark import KeywordMatcher  # pytest's own -k matching, as -k applies it
from _pytest.mark.expression import Expression

pytestmark = pytest.mark.harness

REPO = Path(__file__).resolve().parents[2]
CHAPTERS = ["atomicity", "consistency", "isolation", "durability", "replication"]

# Collects the suite with the pytest arguments given, and prints every test's node id
# with the names of its markers: those the arguments selected, and those they deselected.
LIST_MARKERS = """
import json, sys, pytest

def markers(items):
    return {item.nodeid: sorted({m.name for m in item.iter_markers()}) for item in items}

class Lister:
    deselected = []

    def pytest_deselected(self, items):
        self.deselected.extend(items)

    def pytest_collection_finish(self, session):
        print("MARKERS " + json.dumps({"selected": markers(session.items),
                                       "deselected": markers(self.deselected)}))

sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *sys.argv[1:]],
                     plugins=[Lister()]))
"""


def _collect(*args: str) -> dict[str, dict[str, list[str]]]:
    """{"selected": {node id: marker names}, "deselected": {...}} for these arguments."""
    run = subprocess.run([sys.executable, "-c", LIST_MARKERS, *args], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"collection failed:\n{run.stdout}{run.stderr}"
    line = next(line for line in run.stdout.splitlines() if line.startswith("MARKERS "))
    return json.loads(line.removeprefix("MARKERS "))


def _markers(items) -> dict[str, list[str]]:
    return {item.nodeid: sorted({mark.name for mark in item.iter_markers()}) for item in items}


def _collect_here(items, keyword: str) -> dict[str, dict[str, list[str]]]:
    """What _collect gives, from this run's own collection of the whole suite."""
    matches = Expression.compile(keyword)
    picked = [item for item in items if matches.evaluate(KeywordMatcher.from_item(item))]
    return {"selected": _markers(picked),
            "deselected": _markers(item for item in items if item not in picked)}


def test_keyword_and_marker_select_the_same_tests(whole_suite):
    """Scenario: collect the suite with -k isolation, listing every test's markers (in a
    child pytest, unless this run has collected the whole suite: then pytest's own -k
    matcher is applied to that collection).

    Outcome: -k isolation picks exactly the tests marked isolation (what -m
    isolation picks); and for every chapter, no test outside it carries the
    chapter's word in its node id (the only way -k could pick a test that -m
    does not).
    """
    # a run of the whole suite has collected it already; otherwise collect it in a child
    collected = (_collect("-k", "isolation") if whole_suite is None
                 else _collect_here(whole_suite, "isolation"))
    markers = {**collected["selected"], **collected["deselected"]}

    keyword_ids = set(collected["selected"])
    marker_ids = {node for node, names in markers.items() if "isolation" in names}
    assert keyword_ids == marker_ids, (
        f"only -k: {sorted(keyword_ids - marker_ids)}; only -m: {sorted(marker_ids - keyword_ids)}"
    )

    for chapter in CHAPTERS:
        strays = [node for node, names in markers.items()
                  if chapter not in names and chapter in node.lower()]
        assert not strays, f"-k {chapter} would also pick these unmarked tests: {strays}"
        assert any(chapter in names for names in markers.values()), f"no {chapter} tests"
