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

pytestmark = pytest.mark.harness

REPO = Path(__file__).resolve().parent.parent
CHAPTERS = ["atomicity", "consistency", "isolation", "durability"]

# Collects the suite (with any pytest arguments given) and prints each selected test's
# node id with the names of its markers.
LIST_MARKERS = """
import json, sys, pytest

class Lister:
    def pytest_collection_finish(self, session):
        found = {item.nodeid: sorted({m.name for m in item.iter_markers()})
                 for item in session.items}
        print("MARKERS " + json.dumps(found))

sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *sys.argv[1:]],
                     plugins=[Lister()]))
"""


def _start(*command: str) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(run: subprocess.Popen) -> str:
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 0, f"collection failed:\n{output}"
    return output


def _markers(output: str) -> dict[str, list[str]]:
    """The Lister's line: node id -> marker names."""
    line = next(line for line in output.splitlines() if line.startswith("MARKERS "))
    return json.loads(line.removeprefix("MARKERS "))


def test_keyword_and_marker_select_the_same_tests():
    """Scenario: collect the suite with -k isolation, and with every test's markers listed.

    Outcome: -k isolation picks exactly the tests marked isolation (what -m
    isolation picks); and for every chapter, no test outside it carries the
    chapter's word in its node id (the only way -k could pick a test that -m
    does not).
    """
    by_keyword = _start(sys.executable, "-c", LIST_MARKERS, "-k", "isolation")
    listing = _start(sys.executable, "-c", LIST_MARKERS)

    markers = _markers(_finish(listing))
    keyword_ids = set(_markers(_finish(by_keyword)))
    marker_ids = {node for node, names in markers.items() if "isolation" in names}
    assert keyword_ids == marker_ids, (
        f"only -k: {sorted(keyword_ids - marker_ids)}; only -m: {sorted(marker_ids - keyword_ids)}"
    )

    for chapter in CHAPTERS:
        strays = [node for node, names in markers.items()
                  if chapter not in names and chapter in node.lower()]
        assert not strays, f"-k {chapter} would also pick these unmarked tests: {strays}"
        assert any(chapter in names for names in markers.values()), f"no {chapter} tests"
