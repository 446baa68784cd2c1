"""The annotated examples say what happens; this server must agree with every note.

Each file in ``examples/`` is a schedule written in Hermitage's notation, with
what happened written after each session tag: ``BLOCKS``, ``Shows 10``,
``T2 unblocks: ERROR 40001 ...``. ``python -m acid_lab run --check`` reads those
notes as expectations. Run on the live server, every note must agree: the
examples are documentation that cannot silently go stale -- if PostgreSQL
stopped making a dirty write wait, or let a lost update through at repeatable
read, the note that says otherwise would disagree here.
"""

import io
import json
from pathlib import Path

import pytest

from acid_lab.commands.run import run_command

pytestmark = pytest.mark.isolation

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = sorted([*EXAMPLES.glob("*.sql"), *EXAMPLES.glob("*.md")])


def test_every_example_agrees_with_its_notes(target):
    """Scenario: every examples/*.sql and examples/*.md, run with --check.

    Outcome: exit 0; in every script each note agrees (none DISAGREES, none is
    unreadable), and every script makes at least two checked claims.
    """
    out, err = io.StringIO(), io.StringIO()

    status = run_command([*map(str, SCRIPTS), "--dsn", target.info.dsn(), "--check", "--json"],
                         out=out, err=err)

    report = json.loads(out.getvalue())
    assert status == 0, err.getvalue()
    assert report["check"]["disagree"] == report["check"]["unreadable"] == 0
    for script in report["scripts"]:
        verdicts = [step["agrees"] for step in script["steps"]]
        disagreeing = [step for step in script["steps"] if step["agrees"] is False]
        assert not disagreeing, f"{script['script']}: the server disagrees: {disagreeing}"
        assert verdicts.count(True) >= 2, f"{script['script']} checks too little"
