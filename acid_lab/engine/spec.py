"""Parse PostgreSQL's isolation-tester spec language.

A spec is, in this order::

    setup { CREATE TABLE ... }          # any number of setup blocks, each one submission
    teardown { DROP TABLE ... }         # optional
    session s1                          # one or more sessions
    setup { BEGIN; }                    #   optional, run on the session's connection
    step s1a { SELECT ... }             #   one or more named steps
    teardown { ... }                    #   optional
    permutation s1a s2a(s1a) s1b(*)     # optional; none: every interleaving

* ``#`` starts a comment outside SQL blocks. Names are identifiers
  (``[A-Za-z_][A-Za-z0-9_]*``) or double-quoted, never case-folded.
* An SQL block's text is kept as written, minus the spaces and tabs right after
  ``{`` and right before ``}`` (newlines stay): the tester prints it as it is.
* A permutation step may carry blocker marks: ``(*)`` reports it waiting as
  soon as it is launched, ``(other)`` holds its completion until step
  ``other`` has completed, ``(other notices N)`` until ``other``'s session
  sent N more notices.

Errors are :class:`SpecError` naming ``path:line`` (and quoting at most a couple of hundred
characters of the spec). A spec without permutations may have at most
``MAX_INTERLEAVINGS`` interleavings: every one of them is run.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from acid_lab.input_files import MAX_SOURCE_BYTES, InputError, excerpt, read_text, shown_name

KEYWORDS = ("setup", "teardown", "session", "step", "permutation", "notices")
#: Interleavings a spec without permutation lines may ask for (PostgreSQL's own ask for a
#: few hundred at most); each is run, and listed in memory first.
MAX_INTERLEAVINGS = 10_000

_TOKEN = re.compile(
    r"""(?P<newline>\n)
      | (?P<space>[ \t\r\f]+)
      | (?P<comment>\#[^\n\r]*)
      | (?P<sql>\{)
      | (?P<quoted>")
      | (?P<integer>[0-9]+)
      | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<punct>[(),*])
    """,
    re.VERBOSE,
)


class SpecError(ValueError):
    """A spec that cannot be parsed; ``str()`` is ``path:line: message``."""

    def __init__(self, path: str, line: int | None, message: str):
        self.path, self.line, self.message = path, line, message
        where = shown_name(path) + (f":{line}" if line is not None else "")
        super().__init__(f"{where}: {message}")


@dataclasses.dataclass(frozen=True)
class Blocker:
    """A mark on a permutation step: ``*``, a step name, or a step name with notices."""

    step: str | None  # None for ``*``
    notices: int | None = None

    def __str__(self) -> str:
        if self.step is None:
            return "*"
        return self.step if self.notices is None else f"{self.step} notices {self.notices}"


@dataclasses.dataclass(frozen=True)
class PermutationStep:
    name: str
    blockers: tuple[Blocker, ...] = ()


@dataclasses.dataclass
class SpecStep:
    name: str
    sql: str
    session: int  # index into Spec.sessions


@dataclasses.dataclass
class SpecSession:
    name: str
    setup: str | None
    steps: list[SpecStep]
    teardown: str | None


@dataclasses.dataclass
class Spec:
    path: str
    setup: list[str]
    teardown: str | None
    sessions: list[SpecSession]
    permutations: list[list[PermutationStep]]

    @property
    def name(self) -> str:
        """The spec's name as the tester knows it: the file name without ``.spec``."""
        name = Path(self.path).name
        return name[:-5] if name.endswith(".spec") else name

    def steps(self) -> dict[str, SpecStep]:
        return {step.name: step for session in self.sessions for step in session.steps}

    def unused_steps(self) -> list[str]:
        """Steps no permutation names, sorted (empty when permutations are generated)."""
        if not self.permutations:
            return []
        used = {pstep.name for permutation in self.permutations for pstep in permutation}
        return sorted(name for name in self.steps() if name not in used)

    def all_permutations(self) -> list[list[PermutationStep]]:
        """The listed permutations, or every interleaving of the sessions' steps."""
        if self.permutations:
            return self.permutations
        result: list[list[PermutationStep]] = []
        # (steps taken from each session, the permutation so far), depth first, on a stack
        # of our own: a recursion as deep as the spec has steps would overflow Python's
        pending: list[tuple[tuple[int, ...], list[PermutationStep]]] = [
            ((0,) * len(self.sessions), [])]
        while pending:
            taken, chosen = pending.pop()
            following = [(index, session.steps[taken[index]])
                         for index, session in enumerate(self.sessions)
                         if taken[index] < len(session.steps)]
            if not following:
                result.append(chosen)
            for index, step in reversed(following):  # popped in the sessions' order
                more = taken[:index] + (taken[index] + 1,) + taken[index + 1:]
                pending.append((more, [*chosen, PermutationStep(step.name)]))
        return result


def _interleave_in_more_ways(lengths: list[int], limit: int) -> bool:
    """Whether sequences of these lengths interleave in more than ``limit`` ways (the
    multinomial coefficient, built a factor at a time and left as soon as it is over)."""
    ways, total = 1, 0
    for length in lengths:
        for taken in range(1, length + 1):
            total += 1
            ways = ways * total // taken  # exact: a product of binomial coefficients
            if ways > limit:
                return True
    return False


def load_spec(path: str | Path) -> Spec:
    try:
        text = read_text(path, limit=MAX_SOURCE_BYTES)
    except InputError as error:
        raise SpecError(str(path), None, error.reason) from None
    return parse_spec(text, str(path))


def parse_spec(text: str, path: str = "<spec>") -> Spec:
    return _Parser(_tokens(text, path), path).parse()


def _tokens(text: str, path: str) -> list[tuple[str, str, int]]:
    """(kind, value, line): kinds are word, quoted, integer, sql, punct, and end."""
    tokens, pos, line = [], 0, 1
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise SpecError(path, line, f"unexpected character {text[pos]!r}")
        kind = match.lastgroup
        if kind == "newline":
            line += 1
            pos = match.end()
        elif kind in ("space", "comment"):
            pos = match.end()
        elif kind == "sql":
            start = match.end()
            while start < len(text) and text[start] in " \t\r\f":
                start += 1
            end = text.find("}", start)
            if end < 0:
                raise SpecError(path, line, "unterminated sql block")
            body_end = end
            while body_end > start and text[body_end - 1] in " \t\r\f":
                body_end -= 1
            tokens.append(("sql", text[start:body_end], line))
            line += text.count("\n", pos, end)
            pos = end + 1
        elif kind == "quoted":
            end = text.find('"', match.end())
            if end < 0 or "\n" in text[match.end():end]:
                raise SpecError(path, line, "unterminated quoted string")
            tokens.append(("quoted", text[match.end():end], line))
            pos = end + 1
        else:
            tokens.append((kind, match.group(), line))
            pos = match.end()
    tokens.append(("end", "", line))
    return tokens


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, int]], path: str):
        self.tokens = tokens
        self.path = path
        self.pos = 0

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.pos]

    def at_keyword(self, word: str) -> bool:
        kind, value, _ = self.peek()
        return kind == "word" and value == word

    def error(self, message: str) -> SpecError:
        kind, value, line = self.peek()
        found = "the end of the file" if kind == "end" else repr(excerpt(value))
        return SpecError(self.path, line, f"{message}, found {found}")

    def take(self, kind: str, what: str) -> str:
        if self.peek()[0] != kind:
            raise self.error(f"expected {what}")
        value = self.peek()[1]
        self.pos += 1
        return value

    def count(self, what: str) -> int:
        digits = self.take("integer", what)
        if len(digits) > 9:  # more notices than a session could ever send
            self.pos -= 1
            raise self.error(f"{what} of at most 9 digits")
        return int(digits)

    def identifier(self, what: str) -> str:
        kind, value, _ = self.peek()
        if kind == "quoted" or (kind == "word" and value not in KEYWORDS):
            self.pos += 1
            return value
        raise self.error(f"expected {what}")

    def parse(self) -> Spec:
        setup: list[str] = []
        while self.at_keyword("setup"):
            self.pos += 1
            setup.append(self.take("sql", "{ sql } after setup"))
        teardown = self.optional_block("teardown")
        sessions: list[SpecSession] = []
        while self.at_keyword("session"):
            sessions.append(self.session(len(sessions)))
        if not sessions:
            raise self.error("expected a session")
        permutations = []
        while self.at_keyword("permutation"):
            self.pos += 1
            permutations.append(self.permutation())
        if self.peek()[0] != "end":
            raise self.error("expected a permutation")
        spec = Spec(self.path, setup, teardown, sessions, permutations)
        self.check(spec)
        return spec

    def optional_block(self, keyword: str) -> str | None:
        if not self.at_keyword(keyword):
            return None
        self.pos += 1
        return self.take("sql", f"{{ sql }} after {keyword}")

    def session(self, index: int) -> SpecSession:
        self.pos += 1
        name = self.identifier("a session name")
        setup = self.optional_block("setup")
        steps = []
        while self.at_keyword("step"):
            self.pos += 1
            step_name = self.identifier("a step name")
            sql = self.take("sql", "{ sql } after the step name")
            steps.append(SpecStep(step_name, sql, index))
        if not steps:
            raise self.error(f"session {name} needs at least one step")
        teardown = self.optional_block("teardown")
        return SpecSession(name, setup, steps, teardown)

    def permutation(self) -> list[PermutationStep]:
        steps = []
        while self.peek()[0] in ("word", "quoted") and not (
                self.peek()[0] == "word" and self.peek()[1] in KEYWORDS):
            name = self.identifier("a step name")
            blockers: list[Blocker] = []
            if self.peek()[:2] == ("punct", "("):
                self.pos += 1
                while True:
                    if self.peek()[:2] == ("punct", "*"):
                        self.pos += 1
                        blockers.append(Blocker(None))
                    else:
                        other = self.identifier("a blocker step name or *")
                        notices = None
                        if self.at_keyword("notices"):
                            self.pos += 1
                            notices = self.count("a number of notices")
                        blockers.append(Blocker(other, notices))
                    if self.peek()[:2] == ("punct", ","):
                        self.pos += 1
                        continue
                    if self.peek()[:2] == ("punct", ")"):
                        self.pos += 1
                        break
                    raise self.error("expected , or ) in the blocker list")
            steps.append(PermutationStep(name, tuple(blockers)))
        if not steps:
            raise self.error("expected step names after permutation")
        return steps

    def check(self, spec: Spec) -> None:
        seen: dict[str, SpecStep] = {}
        for session in spec.sessions:
            for step in session.steps:
                if step.name in seen:
                    raise SpecError(self.path, None,
                                    f"duplicate step name: {excerpt(step.name)}")
                seen[step.name] = step
        for permutation in spec.permutations:
            names = {pstep.name for pstep in permutation}
            for pstep in permutation:
                if pstep.name not in seen:
                    raise SpecError(self.path, None, f'undefined step "{excerpt(pstep.name)}" '
                                                     "specified in permutation")
                for blocker in pstep.blockers:
                    if blocker.step is None:
                        continue
                    if blocker.step not in names:
                        raise SpecError(self.path, None,
                                        f'undefined blocking step "{excerpt(blocker.step)}" '
                                        f'referenced in permutation step "{excerpt(pstep.name)}"')
                    if seen[blocker.step].session == seen[pstep.name].session:
                        raise SpecError(self.path, None,
                                        f'permutation step "{excerpt(pstep.name)}" '
                                        "cannot block on its own session")
        if not spec.permutations and _interleave_in_more_ways(
                [len(session.steps) for session in spec.sessions], MAX_INTERLEAVINGS):
            raise SpecError(self.path, None,
                            f"no permutation lines, and the sessions' steps interleave in "
                            f"more than {MAX_INTERLEAVINGS:,} ways: list the permutations to run")
