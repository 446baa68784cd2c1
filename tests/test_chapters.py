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

# Collects the suite and prints each test's node id with the names of its markers.
LIST_MARKERS = """
import json, sys, pytest

class Lister:
    def pytest_collection_finish(self, session):
        found = {item.nodeid: sorted({m.name for m in item.iter_markers()})
                 for item in session.items}
        print("MARKERS " + json.dumps(found))

sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider"], plugins=[Lister()]))
"""


def _start(*command: str) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(run: subprocess.Popen) -> str:
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 0, f"collection failed:\n{output}"
    return output


def _node_ids(output: str) -> set[str]:
    return {line for line in output.splitlines() if "::" in line and " " not in line}


def test_keyword_and_marker_select_the_same_tests():
    """Scenario: collect the suite with -k isolation, with -m isolation, and with markers listed.

    Outcome: -k isolation and -m isolation pick the same node ids; and for every
    chapter, no test outside it carries the chapter's word in its node id (the
    only way -k could pick a test that -m does not).
    """
    pytest_command = (sys.executable, "-m", "pytest", "--collect-only", "-q",
                      "-p", "no:cacheprovider")
    by_keyword = _start(*pytest_command, "-k", "isolation")
    by_marker = _start(*pytest_command, "-m", "isolation")
    listing = _start(sys.executable, "-c", LIST_MARKERS)

    keyword_ids, marker_ids = _node_ids(_finish(by_keyword)), _node_ids(_finish(by_marker))
    assert keyword_ids == marker_ids, (
        f"only -k: {sorted(keyword_ids - marker_ids)}; only -m: {sorted(marker_ids - keyword_ids)}"
    )

    line = next(line for line in _finish(listing).splitlines() if line.startswith("MARKERS "))
    markers = json.loads(line.removeprefix("MARKERS "))
    for chapter in CHAPTERS:
        strays = [node for node, names in markers.items()
                  if chapter not in names and chapter in node.lower()]
        assert not strays, f"-k {chapter} would also pick these unmarked tests: {strays}"
        assert any(chapter in names for names in markers.values()), f"no {chapter} tests"
