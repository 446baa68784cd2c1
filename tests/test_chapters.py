"""Foundation: one chapter at a time, by keyword or by marker.

A reader runs ``pytest -k isolation`` or ``pytest -m isolation`` to study one
letter. Both must pick exactly the same tests: a parameter id such as
``isolation_level=...`` in another chapter would sneak into ``-k isolation``.
"""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.foundation

REPO = Path(__file__).resolve().parent.parent
CHAPTERS = ["atomicity", "consistency", "isolation", "durability"]


def _collect(selector: str, chapter: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         selector, chapter],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _node_ids(run: subprocess.Popen) -> set[str]:
    output, _ = run.communicate(timeout=120)
    assert run.returncode in (0, 5), f"collection failed:\n{output}"
    return {line for line in output.splitlines() if "::" in line}


def test_keyword_and_marker_select_the_same_tests_for_every_chapter():
    """Scenario: collect each chapter with -k and with -m.

    Outcome: the same node ids both ways, for each of the four letters.
    """
    runs = {(chapter, selector): _collect(selector, chapter)
            for chapter in CHAPTERS for selector in ("-k", "-m")}
    for chapter in CHAPTERS:
        by_keyword = _node_ids(runs[chapter, "-k"])
        by_marker = _node_ids(runs[chapter, "-m"])
        assert by_keyword == by_marker, (
            f"-k {chapter} and -m {chapter} differ: only -k: {sorted(by_keyword - by_marker)}; "
            f"only -m: {sorted(by_marker - by_keyword)}"
        )
