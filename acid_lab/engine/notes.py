"""Read Hermitage's notes as expectations, and check them against what happened.

Hermitage writes what a statement did after its session tag, in English::

    update test set value = 12 where id = 1; -- T2, BLOCKS
    commit; -- T1. This unblocks T2
    select * from test; -- T1. Shows 1 => 11, 2 => 21
    select * from test; -- T2. Still shows 1 => 10
    select * from test where value = 30; -- T1. Returns nothing
    commit; -- T2. Prints out "ERROR: could not serialize access due to read/write dependencies ..."
    commit; -- T1. T2 now prints out "ERROR: could not serialize access due to concurrent update"

A note is a list of *claims* separated by ``,`` ``.`` ``;`` or "and":

* ``BLOCKS`` (optionally ``(eventually shows 1 => 10)``): the statement had to wait;
* ``Shows`` / ``Still shows`` / ``Now shows`` / ``Returns`` ``1 => 11, 2 => 21`` [``again``]:
  every listed ``id => value`` row is among the rows returned (Hermitage lists
  the rows the scenario is about, not always all of them);
  ``Returns nothing`` / ``Still returns nothing``: no rows;
  ``Returns the newly inserted row``: at least one row; ``Doesn't delete anything``:
  the command touched no row;
* ``Prints [out] "ERROR: message"``: the statement failed with that message (a
  trailing ``...`` makes it a prefix; ``ERROR 1213 (40001): ...`` also names the SQLSTATE);
  ``aborts with deadlock error``: it failed with 40P01;
* ``[This] unblocks T2`` [``, which [now] shows ...``], ``T2 now shows ...``,
  ``T2 now prints [out] "..."``, ``causes T2 to print [out] "..."`` / ``to abort
  with deadlock error``: T2's waiting statement finished right after this one
  (and did that);
* ``There's nothing else we can do, this transaction has failed``: the session's
  transaction had already failed; ``rollback`` / ``rolls back``: the server
  answered ROLLBACK; ``commits``: it answered COMMIT.

What follows the claims in parentheses, or after ``so``, ``despite``, ``which``
(not followed by shows/returns) or ``but``, is commentary: shown, never checked.
Anything else makes the note *unreadable*: reported as such, never passed.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from acid_lab.engine.events import Event, released_after
from acid_lab.engine.sessions import StepResult
from acid_lab.input_files import excerpt

_PAIRS = r"-?\d+\s*=>\s*-?\d+(?:\s*,\s*-?\d+\s*=>\s*-?\d+)*"
_VALUES = r"-?\d+(?:\s*,\s*-?\d+)*(?!\s*=>)(?![\d.])"
_ROWS = rf"(?P<rows>nothing|{_PAIRS}|{_VALUES})"
_QUOTED = r"\"(?P<quoted>[^\"]*)\"|\((?P<paren>\"[^\"]*\")\)"
_SESSION = r"(?P<session>T\d+)"

# (kind, pattern) tried in order at the current position of the note. Where two runs of
# spaces meet around an optional part, the first is possessive (*+): a note of many spaces
# must not be tried every way it can be split (time growing as the square of its length).
_CLAUSE_TEXT = (
    ("unblocks_colon", _SESSION + r"\s+unblocks\s*:"),
    ("blocks", r"blocks(?:\s*\(\s*eventually\s+(?:shows|returns)\s+" + _ROWS + r"\s*\))?"),
    ("unblocks", r"(?:this\s+)?unblocks\s+" + _SESSION
     + r"(?:\s*+,?\s*+(?:which|so\s+it)\s+(?:now\s+)?(?:shows|returns)\s+" + _ROWS + r")?"),
    ("other_rows", _SESSION + r"\s+now\s+(?:shows|returns)\s+" + _ROWS),
    ("other_error", r"(?:" + _SESSION + r"\s+now\s+prints(?:\s+out)?"
     + r"|causes\s+(?P<session2>T\d+)\s+to\s+print(?:\s+out)?)\s*(?:" + _QUOTED + ")"),
    ("other_deadlock",
     r"causes\s+" + _SESSION + r"\s+to\s+abort\s+with\s+(?:a\s+)?deadlock\s+error"),
    ("deadlock", r"aborts\s+with\s+(?:a\s+)?deadlock\s+error"),
    ("some_rows", r"returns\s+the\s+newly\s+inserted\s+rows?"),
    ("rows", r"(?:still\s+|now\s+)?(?:shows|returns)\s+" + _ROWS + r"(?:\s+again)?"),
    ("no_change", r"doesn't\s+(?:delete|update)\s+anything"),
    ("error", r"prints(?:\s+out)?\s*(?:" + _QUOTED + ")"),
    ("failed", r"(?:there's\s+)?nothing\s+else\s+(?:we\s+can\s+|to\s+)do\s*+[,:]?\s*+"
               r"this\s+transaction\s+has\s+failed"),
    ("bare_error", r"(?:then\s+)?ERROR\s+(?P<state>[0-9A-Z]{5})\s+(?P<bare>.+)$"),
    ("command", r"(?-i:(?P<tag>(?:UPDATE|DELETE|SELECT|MERGE|INSERT\s+\d+)\s+\d+))\b"),
    ("rollback", r"(?:rollback|rolls\s+back|rolled\s+back)\b"),
    ("commit", r"commit(?:s|ted)?\b"),
)
_CLAUSES = [(kind, re.compile(pattern, re.I)) for kind, pattern in _CLAUSE_TEXT]
_SEPARATOR = re.compile(r"(?:[\s,.;]|\band\b|\bthen\b)*", re.I)
_COMMENTARY = re.compile(r"(?:\(|so\b|despite\b|which\b|but\b)", re.I)


@dataclasses.dataclass(frozen=True)
class Claim:
    """One checkable statement of a note."""

    kind: str
    session: str | None = None  # for claims about another session's waiting statement
    rows: tuple[tuple[int, ...], ...] | None = None  # () for "nothing"
    message: str | None = None  # an error message, without "ERROR:"
    prefix: bool = False  # the message ended in "...": compare its start only
    sqlstate: str | None = None
    then: Claim | None = None  # what the unblocked / blocked statement then did

    def describe(self) -> str:
        if self.kind == "blocks":
            return "blocks" + (f", then {self.then.describe()}" if self.then else "")
        if self.kind == "unblocks":
            return f"unblocks {self.session}" + (
                f", which {self.then.describe()}" if self.then else "")
        if self.kind == "rows":
            if not self.rows:
                return "returns nothing"
            return "shows " + ", ".join(" => ".join(map(str, row)) for row in self.rows)
        if self.kind == "some_rows":
            return "returns rows"
        if self.kind == "no_change":
            return "changes no row"
        if self.kind == "error":
            state = f" {self.sqlstate}" if self.sqlstate else ""
            return f'fails with{state} "{self.message}{"..." if self.prefix else ""}"'
        if self.kind == "deadlock":
            return "fails with a deadlock (40P01)"
        if self.kind == "failed":
            return "the transaction had failed already"
        if self.kind == "command":
            return f"answers {self.message}"
        if self.kind == "rollback":
            return "answers ROLLBACK"
        if self.kind == "commit":
            return "answers COMMIT"
        return self.kind

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"claim": self.kind}
        if self.session:
            data["session"] = self.session
        if self.rows is not None:
            data["rows"] = [list(row) for row in self.rows]
        if self.message is not None:
            data["message"] = self.message
            data["prefix"] = self.prefix
        if self.sqlstate:
            data["sqlstate"] = self.sqlstate
        if self.then is not None:
            data["then"] = self.then.as_json()
        return data


@dataclasses.dataclass(frozen=True)
class Note:
    """A note as read: its claims, the commentary, or why it cannot be read."""

    text: str
    claims: tuple[Claim, ...] = ()
    commentary: str = ""
    unreadable: str | None = None  # the part that could not be read

    @property
    def makes_claims(self) -> bool:
        return bool(self.claims) or self.unreadable is not None

    def describe(self) -> str:
        if self.unreadable is not None:
            return (f"unreadable note: {excerpt(self.text)!r} "
                    f"(cannot read {excerpt(self.unreadable)!r})")
        return "; ".join(claim.describe() for claim in self.claims)

    def as_json(self) -> dict[str, Any] | None:
        if not self.makes_claims:
            return None
        data: dict[str, Any] = {"note": self.text,
                                "claims": [claim.as_json() for claim in self.claims]}
        if self.commentary:
            data["commentary"] = self.commentary
        if self.unreadable is not None:
            data["unreadable"] = self.unreadable
        return data


def _rows(text: str | None) -> tuple[tuple[int, ...], ...] | None:
    """``1 => 11, 2 => 21`` -> ((1, 11), (2, 21)); ``10, 20`` -> ((10,), (20,)); nothing -> ()."""
    if text is None:
        return None
    if text.lower() == "nothing":
        return ()
    if "=>" in text:
        return tuple((int(k), int(v)) for k, v in re.findall(r"(-?\d+)\s*=>\s*(-?\d+)", text))
    return tuple((int(value),) for value in re.findall(r"-?\d+", text))


def _error_claim(kind: str, quoted: str, session: str | None = None) -> Claim:
    text = quoted.strip().strip('"').strip()
    prefix = text.endswith("...")
    text = text.rstrip(".").rstrip() if prefix else text
    sqlstate = None
    match = re.match(r"ERROR\s*+(?:\d+\s*+)?(?:\((?P<state>[0-9A-Z]{5})\))?\s*+:\s*(?P<rest>.*)",
                     text, re.S)
    if match:
        sqlstate, text = match.group("state"), match.group("rest")
    return Claim(kind, session=session, message=" ".join(text.split()), prefix=prefix,
                 sqlstate=sqlstate)


def parse_note(text: str) -> Note:
    """Read one note (the text after a session tag)."""
    claims: list[Claim] = []
    unblocked: str | None = None  # "T2 unblocks:" waits for what T2 then did
    pos = _SEPARATOR.match(text, 0).end()
    while pos < len(text):
        if claims and text[pos] == ":":  # "Shows 12: T1's write is lost"
            return Note(text, tuple(claims), commentary=text[pos + 1:].strip())
        for kind, pattern in _CLAUSES:
            match = pattern.match(text, pos)
            if match:
                try:
                    claim = _claim(kind, match)
                except ValueError:  # a number of thousands of digits: not a row we show
                    return Note(text, tuple(claims), unreadable=text[pos:].strip())
                if kind == "unblocks_colon":
                    unblocked = claim.session
                else:
                    if unblocked is not None:
                        claim, unblocked = Claim("unblocks", session=unblocked, then=claim), None
                    claims.append(claim)
                pos = match.end()
                break
        else:
            rest = text[pos:].strip()
            if claims and _COMMENTARY.match(rest):
                return Note(text, tuple(claims), commentary=rest)
            return Note(text, tuple(claims), unreadable=rest)
        pos = _SEPARATOR.match(text, pos).end()
    if unblocked is not None:
        claims.append(Claim("unblocks", session=unblocked))
    return Note(text, tuple(claims))


def _claim(kind: str, match: re.Match[str]) -> Claim:
    groups = match.groupdict()
    if kind == "blocks":
        then = Claim("rows", rows=_rows(groups["rows"])) if groups.get("rows") else None
        return Claim("blocks", then=then)
    if kind == "unblocks":
        then = Claim("rows", rows=_rows(groups["rows"])) if groups.get("rows") else None
        return Claim("unblocks", session=groups["session"].upper(), then=then)
    if kind == "other_rows":
        return Claim("unblocks", session=groups["session"].upper(),
                     then=Claim("rows", rows=_rows(groups["rows"])))
    if kind == "other_error":
        session = (groups["session"] or groups["session2"]).upper()
        error = _error_claim("error", groups["quoted"] or groups["paren"])
        return Claim("unblocks", session=session, then=error)
    if kind == "other_deadlock":
        return Claim("unblocks", session=groups["session"].upper(), then=Claim("deadlock"))
    if kind == "rows":
        return Claim("rows", rows=_rows(groups["rows"]))
    if kind == "error":
        return _error_claim("error", groups["quoted"] or groups["paren"])
    if kind == "bare_error":
        return Claim("error", message=" ".join(groups["bare"].split()), sqlstate=groups["state"])
    if kind == "command":
        return Claim("command", message=" ".join(groups["tag"].split()))
    if kind == "unblocks_colon":
        return Claim("unblocks", session=groups["session"].upper())
    return Claim(kind)


# -- checking -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class NoteCheck:
    """How one step's note compares with what happened: agrees is None for no claim."""

    agrees: bool | None
    expected: str = ""
    happened: str = ""

    def mark(self) -> str:
        if self.agrees is None:
            return "no claim"
        if self.agrees:
            return "agrees"
        return f"DISAGREES (expected: {self.expected}; happened: {self.happened})"


def check_steps(steps: list[StepResult], notes: list[Note],
                events: list[Event]) -> list[NoteCheck]:
    """One verdict per step: compare each step's note with what happened (``events``:
    the runner's, which say after which step each waiting one resumed)."""
    released = released_after(events)
    return [_check(step, note, steps, released) for step, note in zip(steps, notes, strict=True)]


def _check(step: StepResult, note: Note, steps: list[StepResult],
           released: dict[int, int]) -> NoteCheck:
    if not note.makes_claims:
        return NoteCheck(None)
    if note.unreadable is not None:
        return NoteCheck(False, note.describe(), "(not compared: the note cannot be read)")
    for claim in note.claims:
        problem = _mismatch(claim, step, steps, released)
        if problem is not None:
            return NoteCheck(False, claim.describe(), problem)
    return NoteCheck(True, note.describe())


def _happened(step: StepResult) -> str:
    text = step.outcome()
    return f"blocked, then {text}" if step.blocked else text


def _mismatch(claim: Claim, step: StepResult, steps: list[StepResult],
              released: dict[int, int]) -> str | None:
    """Why ``step`` does not do what ``claim`` says, or None when it does."""
    if not step.finished:
        return "it never finished"
    kind = claim.kind
    if kind == "blocks":
        if not step.blocked:
            return f"not blocked: {step.outcome()}"
        return _mismatch(claim.then, step, steps, released) if claim.then else None
    if kind == "unblocks":
        waiting = [i for i, done_after in released.items()
                   if done_after == step.index and steps[i - 1].session == claim.session]
        if not waiting:
            blocked = [s for s in steps[:step.index] if s.session == claim.session and s.blocked]
            if not blocked:
                return f"{claim.session} had no waiting statement"
            return f"{claim.session}'s waiting statement did not finish right after this one"
        other = steps[waiting[0] - 1]
        if claim.then is not None:
            problem = _mismatch(claim.then, other, steps, released)
            if problem is not None:
                return f"{claim.session}: {problem}"
        return None
    if kind in ("rows", "some_rows"):
        if step.status != "ok" or step.rows is None:
            return _happened(step)
        if kind == "some_rows":
            return None if step.rows else "no rows"
        if claim.rows == ():
            return None if not step.rows else _happened(step)
        present = {tuple(row) for row in step.rows}
        missing = [pair for pair in claim.rows if pair not in present]
        return _happened(step) if missing else None
    if kind == "no_change":
        tag = step.command or ""
        return None if step.status == "ok" and tag.split()[-1:] == ["0"] else _happened(step)
    if kind in ("error", "deadlock"):
        if step.status != "error":
            return _happened(step)
        if kind == "deadlock":
            return None if step.sqlstate == "40P01" else _happened(step)
        if claim.sqlstate and claim.sqlstate != step.sqlstate:
            return _happened(step)
        observed = " ".join((step.error or "").split())
        wanted = claim.message or ""
        same = observed.startswith(wanted) if claim.prefix else observed == wanted
        return None if same else _happened(step)
    if kind == "failed":
        before = [s for s in steps[:step.index - 1] if s.session == step.session]
        if before and before[-1].status == "error":
            return None
        return "the session's last statement did not fail" if before else "nothing ran before"
    if kind == "command":
        return None if step.status == "ok" and step.command == claim.message else _happened(step)
    if kind in ("rollback", "commit"):
        want = "ROLLBACK" if kind == "rollback" else "COMMIT"
        return None if step.status == "ok" and (step.command or "").upper() == want \
            else _happened(step)
    return f"unknown claim {kind}"
