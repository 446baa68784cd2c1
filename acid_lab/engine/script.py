"""Parse annotated SQL scripts (Hermitage's notation) into schedules.

A statement line ends in a session tag, and free text may follow the tag::

    create table test (id int primary key, value int);   -- untagged: setup
    insert into test (id, value) values (1, 10), (2, 20);
    begin; set transaction isolation level read committed; -- T1
    update test set value = 12 where id = 1; -- T2, BLOCKS
    select * from test; -- T1. Shows 1 => 11

* Every statement ended (by ``;``) on a tagged line belongs to that session,
  so one line may hold several statements. A statement may span lines; the
  tag goes on the line where it ends.
* Untagged statements before the first tagged one are the setup. After it,
  an untagged statement is an error: it is not clear who would run it.
* ``;`` inside quotes, quoted identifiers, dollar quotes and comments does not
  end a statement. Comments are dropped from the statement text.
* A tag-like comment with no statement before it (``-- T1 goes first``) is
  just a comment.

Errors are :class:`ScriptError`, whose text names the file and the line.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from acid_lab.engine.scenario import Step, anything

_TAG = re.compile(r"\s*(T\d+)(?![\w])[\s,.:;]*(.*)")
_DOLLAR_QUOTE = re.compile(r"\$([A-Za-z_\u0080-\uffff][\w\u0080-\uffff]*)?\$")


class ScriptError(ValueError):
    """A script that cannot be parsed; ``str()`` is ``path:line: message``."""

    def __init__(self, path: str, line: int | None, message: str):
        self.path = path
        self.line = line
        self.message = message
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


@dataclasses.dataclass(frozen=True)
class Statement:
    """One statement of a script: its text (no trailing ``;``), the line where it
    starts, its session (None for setup) and the note written after the tag."""

    sql: str
    line: int
    session: str | None = None
    note: str = ""


@dataclasses.dataclass
class Script:
    """A parsed script: setup statements, then the tagged steps in file order."""

    path: str
    setup: list[Statement]
    steps: list[Statement]

    def schedule(self) -> list[Step]:
        """The steps as a scenario schedule; every outcome is an observation."""
        return [Step(step.session, step.sql, anything) for step in self.steps]


def load_script(path: str | Path) -> Script:
    """Read and parse a script file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScriptError(str(path), None, f"cannot read the script: {exc}") from None
    return parse_script(text, str(path))


def parse_script(text: str, path: str = "<script>") -> Script:
    """Split ``text`` into setup statements and session-tagged steps."""
    return _Parser(text, path).parse()


def _is_identifier_char(char: str) -> bool:
    return char.isalnum() or char in "_$"


class _Parser:
    """A single pass over the text that knows just enough SQL lexing to find
    the statement ends (``;``) and the tag comments."""

    def __init__(self, text: str, path: str):
        self.text = text
        self.path = path
        self.pos = 0
        self.line = 1
        self.current: list[str] = []  # text of the statement being read
        self.has_text = False  # whether it holds more than whitespace yet
        self.current_line = 0  # where it starts
        self.ended: list[tuple[str, int]] = []  # ended on this line, awaiting a tag
        self.setup: list[Statement] = []
        self.steps: list[Statement] = []

    def error(self, message: str, line: int | None = None) -> ScriptError:
        return ScriptError(self.path, self.line if line is None else line, message)

    def parse(self) -> Script:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char == "\n":
                self.end_of_line()
                self.add(char)
                self.line += 1
                self.pos += 1
            elif char == ";":
                self.end_statement()
                self.pos += 1
            elif text.startswith("--", self.pos):
                self.line_comment()
            elif text.startswith("/*", self.pos):
                self.block_comment()
            elif char == "'":
                escapes = (self.pos > 0 and text[self.pos - 1] in "eE"
                           and (self.pos < 2 or not _is_identifier_char(text[self.pos - 2])))
                self.quoted("'", "string", backslash_escapes=escapes)
            elif char == '"':
                self.quoted('"', "quoted identifier", backslash_escapes=False)
            elif char == "$" and not (self.pos > 0 and _is_identifier_char(text[self.pos - 1])):
                match = _DOLLAR_QUOTE.match(text, self.pos)
                if match:
                    self.dollar_quoted(match.group(0))
                else:
                    self.add(char)
                    self.pos += 1
            elif char == "\\" and not self.has_text:
                raise self.error("psql meta-commands (\\...) are not supported in scripts")
            else:
                self.add(char)
                self.pos += 1
        self.end_of_line()
        leftover = "".join(self.current).strip()
        if leftover:
            if self.steps:
                raise self.error("the last statement has no session tag (-- T<n>)",
                                 self.current_line)
            self.setup.append(Statement(leftover, self.current_line))
        if not self.steps:
            raise self.error("no statement has a session tag (-- T1, -- T2, ...)", 1)
        return Script(self.path, self.setup, self.steps)

    # -- pieces of text

    def add(self, chunk: str) -> None:
        if not self.has_text and chunk.strip():
            self.has_text = True
            self.current_line = self.line
        self.current.append(chunk)

    def consume(self, end: int) -> str:
        """Take text[pos:end] into the statement, counting its lines."""
        chunk = self.text[self.pos:end]
        self.add(chunk)
        self.line += chunk.count("\n")
        self.pos = end
        return chunk

    def quoted(self, quote: str, what: str, *, backslash_escapes: bool) -> None:
        start_line = self.line
        text = self.text
        i = self.pos + 1
        while i < len(text):
            char = text[i]
            if backslash_escapes and char == "\\":
                i += 2
            elif char == quote:
                if text.startswith(quote * 2, i):
                    i += 2  # a doubled quote stands for itself
                else:
                    self.consume(i + 1)
                    return
            else:
                i += 1
        raise self.error(f"unterminated {what}", start_line)

    def dollar_quoted(self, delimiter: str) -> None:
        end = self.text.find(delimiter, self.pos + len(delimiter))
        if end < 0:
            raise self.error(f"unterminated dollar-quoted string ({delimiter})")
        self.consume(end + len(delimiter))

    def block_comment(self) -> None:
        start_line = self.line
        text = self.text
        depth, i = 0, self.pos
        while i < len(text):
            if text.startswith("/*", i):
                depth, i = depth + 1, i + 2
            elif text.startswith("*/", i):
                depth, i = depth - 1, i + 2
                if depth == 0:
                    break
            else:
                i += 1
        if depth:
            raise self.error("unterminated /* comment", start_line)
        self.line += text.count("\n", self.pos, i)
        self.pos = i
        self.add(" ")  # comments separate tokens; their text is dropped

    def line_comment(self) -> None:
        end = self.text.find("\n", self.pos)
        end = len(self.text) if end < 0 else end
        comment = self.text[self.pos + 2:end]
        self.pos = end
        tag = _TAG.match(comment)
        if tag is None:
            return
        self.end_statement()  # a tag ends the statement it follows, `;` or not
        if not self.ended:
            return  # a tag-like comment with nothing to tag: prose
        session, note = tag.group(1), tag.group(2).strip()
        self.steps.extend(Statement(sql, line, session, note) for sql, line in self.ended)
        self.ended.clear()

    # -- statement boundaries

    def end_statement(self) -> None:
        sql = "".join(self.current).strip()
        if sql:
            self.ended.append((sql, self.current_line))
        self.current.clear()
        self.has_text = False

    def end_of_line(self) -> None:
        """Statements ended on this line without a tag: setup, or an error."""
        if not self.ended:
            return
        if self.steps:
            sql, line = self.ended[0]
            raise self.error(f"statement without a session tag (-- T<n>): {sql}", line)
        self.setup.extend(Statement(sql, line) for sql, line in self.ended)
        self.ended.clear()
