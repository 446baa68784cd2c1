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
* ``-- either`` (any case) tags a statement for a session of its own that never
  joins the numbered transactions: Hermitage's "either T1 or T2, once both ended".

A Hermitage page (``PAGE.md``) holds several scripts: its first ```` ```sql ````
block is the setup, run before each later block; each later block with
session tags is one script, named after the page, its heading and the sentence
that introduces it (blocks without tags, such as "to see the current
isolation level", are not scripts). See :func:`load_page`.

Errors are :class:`ScriptError`, whose text names the file and the line (and quotes
at most a couple of hundred characters of it). Reading and parsing take time and memory
in proportion to the text: no step goes back over what was read.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from acid_lab.engine.expectations import anything
from acid_lab.engine.scenario import Step
from acid_lab.input_files import MAX_SOURCE_BYTES, InputError, excerpt, read_text, shown_name

_TAG = re.compile(r"\s*(T\d+|(?i:either))(?![\w])[\s,.:;]*(.*)")
#: The session name of statements tagged ``-- either``.
EITHER = "either"
#: Sessions a script may have: Hermitage's have three at most; each is a connection.
MAX_SESSIONS = 50
_DOLLAR_QUOTE = re.compile(r"\$([A-Za-z_\u0080-\uffff][\w\u0080-\uffff]*)?\$")
# a run of characters that neither end a statement nor open a quote or a comment
_PLAIN = re.compile(r"[^\n;\-/'\"$\\]+")
_COMMENT_MARK = re.compile(r"/\*|\*/")


class ScriptError(ValueError):
    """A script that cannot be parsed; ``str()`` is ``path:line: message``."""

    def __init__(self, path: str, line: int | None, message: str):
        self.path = path
        self.line = line
        self.message = message
        where = shown_name(path) + (f":{line}" if line is not None else "")
        super().__init__(f"{where}: {message}")


@dataclasses.dataclass(frozen=True)
class Statement:
    """One statement of a script: its text (no trailing ``;``), the line where it
    starts, its session (None for setup) and the note written after the tag."""

    sql: str
    line: int
    session: str | None = None
    note: str = ""
    #: whether the note is this statement's own: a note is about the last
    #: statement on its line (``begin; select ...; -- T1. Shows 10`` is about the select)
    owns_note: bool = True


@dataclasses.dataclass
class Script:
    """A parsed script: setup statements, then the tagged steps in file order."""

    path: str
    setup: list[Statement]
    steps: list[Statement]
    #: What to call the script: its path, or for a page "page.md: heading: sentence"
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or self.path

    def schedule(self) -> list[Step]:
        """The steps as a scenario schedule; every outcome is an observation."""
        return [Step(step.session, step.sql, anything) for step in self.steps]


def load_script(path: str | Path) -> Script:
    """Read and parse a script file."""
    return parse_script(_read(path), str(path))


def _read(path: str | Path) -> str:
    try:
        return read_text(path, limit=MAX_SOURCE_BYTES)
    except InputError as error:
        raise ScriptError(str(path), None, error.reason) from None


def parse_script(text: str, path: str = "<script>") -> Script:
    """Split ``text`` into setup statements and session-tagged steps."""
    return _Parser(text, path).parse()


def load_scripts(path: str | Path) -> list[Script]:
    """A ``.md`` page's scripts, or the one script of any other file."""
    if str(path).lower().endswith((".md", ".markdown")):
        return load_page(path)
    return [load_script(path)]


def load_page(path: str | Path) -> list[Script]:
    """Read a Hermitage page and parse its scripts."""
    return parse_page(_read(path), str(path))


# possessive (*+): a line of spaces must not be tried every way it can be split
_FENCE = re.compile(r"^(```+|~~~+)\s*+(\w*)\s*+$")
_UNDERLINE = re.compile(r"^(=+|-+)\s*$")


def parse_page(text: str, path: str = "<page>") -> list[Script]:
    """Every sql block after the first (the setup) that has session tags is a script."""
    blocks = _sql_blocks(text)
    if not blocks:
        raise ScriptError(path, None, "the page has no ```sql block")
    first_line, setup_text, _ = blocks[0]
    setup = _Parser(setup_text, path, first_line).parse(require_tags=False).setup
    scripts = []
    for line, body, title in blocks[1:]:
        script = _Parser(body, path, line).parse(require_tags=False)
        if not script.steps:
            continue  # an example query, not a schedule
        scripts.append(Script(path, setup + script.setup, script.steps,
                              name=f"{path}: {title}" if title else path))
    if not scripts:
        raise ScriptError(path, None, "no sql block after the first has session tags "
                                      "(-- T1, -- T2, ...)")
    return scripts


def _sql_blocks(text: str) -> list[tuple[int, str, str]]:
    """(first line, text, title) of each fenced sql block, the title made of the
    heading above it and the paragraph that introduces it."""
    lines = text.split("\n")
    blocks, heading, paragraph = [], "", []
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = _FENCE.match(line)
        if fence:
            end = i + 1
            while end < len(lines) and not lines[end].startswith(fence.group(1)):
                end += 1
            if fence.group(2).lower() in ("sql", ""):
                lead = " ".join(p for p in paragraph if p != "\0").strip().rstrip(":").strip()
                title = excerpt(": ".join(part for part in (heading, lead) if part))
                blocks.append((i + 2, "\n".join(lines[i + 1:end]), title))
            paragraph = []
            i = end + 1
            continue
        if line.startswith("#"):
            heading, paragraph = line.lstrip("#").strip(), []
        elif i + 1 < len(lines) and line.strip() and _UNDERLINE.match(lines[i + 1]):
            heading, paragraph = line.strip(), []
            i += 1
        elif not line.strip():
            if paragraph and paragraph[-1] != "\0":
                paragraph.append("\0")  # a paragraph ended; a new one replaces it
        else:
            if paragraph and paragraph[-1] == "\0":
                paragraph = []
            paragraph.append(line.strip())
        i += 1
    return blocks


def _is_identifier_char(char: str) -> bool:
    return char.isalnum() or char in "_$"


class _Parser:
    """A single pass over the text that knows just enough SQL lexing to find
    the statement ends (``;``) and the tag comments."""

    def __init__(self, text: str, path: str, first_line: int = 1):
        self.text = text
        self.path = path
        self.pos = 0
        self.line = first_line  # a page's block counts the page's lines
        self.current: list[str] = []  # text of the statement being read
        self.has_text = False  # whether it holds more than whitespace yet
        self.current_line = 0  # where it starts
        self.ended: list[tuple[str, int]] = []  # ended on this line, awaiting a tag
        self.setup: list[Statement] = []
        self.steps: list[Statement] = []

    def error(self, message: str, line: int | None = None) -> ScriptError:
        return ScriptError(self.path, self.line if line is None else line, message)

    def parse(self, require_tags: bool = True) -> Script:
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
                plain = _PLAIN.match(text, self.pos)
                self.add(plain.group() if plain else char)  # a lone - or /, or a backslash
                self.pos = plain.end() if plain else self.pos + 1
        self.end_of_line()
        leftover = "".join(self.current).strip()
        if leftover:
            if self.steps:
                raise self.error("the last statement has no session tag (-- T<n>)",
                                 self.current_line)
            self.setup.append(Statement(leftover, self.current_line))
        if not self.steps and require_tags:
            raise self.error("no statement has a session tag (-- T1, -- T2, ...)", 1)
        sessions: set[str | None] = set()
        for step in self.steps:  # each session is a connection and a thread
            sessions.add(step.session)
            if len(sessions) > MAX_SESSIONS:
                raise self.error(f"more than {MAX_SESSIONS} sessions in one script", step.line)
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
        special = re.compile(f"[{quote}\\\\]" if backslash_escapes else quote)
        text = self.text
        i = self.pos + 1
        while True:
            found = special.search(text, i)
            if found is None:
                raise self.error(f"unterminated {what}")
            i = found.start()
            if text[i] == "\\":
                i += 2
            elif text.startswith(quote * 2, i):
                i += 2  # a doubled quote stands for itself
            else:
                self.consume(i + 1)
                return

    def dollar_quoted(self, delimiter: str) -> None:
        end = self.text.find(delimiter, self.pos + len(delimiter))
        if end < 0:
            raise self.error(f"unterminated dollar-quoted string ({excerpt(delimiter, 60)})")
        self.consume(end + len(delimiter))

    def block_comment(self) -> None:
        depth, i = 0, self.pos
        for mark in _COMMENT_MARK.finditer(self.text, self.pos):  # comments nest
            depth, i = depth + (1 if mark.group() == "/*" else -1), mark.end()
            if depth == 0:
                break
        if depth:
            raise self.error("unterminated /* comment")
        self.line += self.text.count("\n", self.pos, i)
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
        if session.lower() == EITHER:
            session = EITHER
        last = len(self.ended) - 1
        self.steps.extend(Statement(sql, line, session, note, owns_note=i == last)
                          for i, (sql, line) in enumerate(self.ended))
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
            raise self.error(f"statement without a session tag (-- T<n>): {excerpt(sql)}",
                             line)
        self.setup.extend(Statement(sql, line) for sql, line in self.ended)
        self.ended.clear()
