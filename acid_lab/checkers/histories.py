"""Histories: what the clients saw of many concurrent transactions, one operation a line.

The model is Jepsen's *list append*: every key holds a list; a transaction is a
list of micro-operations, ``["append", k, v]`` (add ``v`` at the end of ``k``'s
list) and ``["r", k, [v1, v2]]`` (read ``k``'s whole list). Every appended value
is unique per key, so a read shows the order in which the values before it were
appended -- the *version order* the checker (:mod:`acid_lab.checkers.history`)
reasons with.

A client records each transaction twice: when it starts (``invoke``, reads not yet
known: ``["r", k, None]``) and when it ends -- ``ok`` (committed, with what it read),
``fail`` (certainly not committed: the server aborted it) or ``info`` (unknown: the
connection was lost around COMMIT). This module

* reads histories in Elle's format as a stream of lines, as EDN (the EDN Jepsen writes
  is rewritten into JSON for the ``json`` module; anything else goes to the ``edn_format``
  library) or as JSON (one object a line, same fields), and writes them either way::

      {:type :ok, :f :txn, :process 3, :time 2251, :index 7, :value [[:append 9 2] [:r 9 [1 2]]]}
      {"type": "ok", "f": "txn", "process": 3, "value": [["append", 9, 2], ["r", 9, [1, 2]]]}

* and records such histories from a live PostgreSQL (:func:`list_append_history`):
  a few worker threads, each with its own session, run seeded random transactions over
  the table ``lists(k int primary key, v int[])`` at one isolation level, retries off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import itertools
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import edn_format

from acid_lab.input_files import MAX_LINE_BYTES, excerpt, read_lines

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"
TYPES = (INVOKE, OK, FAIL, INFO)
APPEND, READ = "append", "r"


class HistoryError(ValueError):
    """A history that cannot be read: the message names the line."""


@dataclasses.dataclass(frozen=True, slots=True)
class Operation:
    """One line of a history. ``value``: micro-operations ``(f, key, value)``; a read's
    value is a tuple of the elements read, or None when not (yet) known."""

    type: str
    value: tuple
    process: Any = None
    time: int | None = None
    index: int = 0
    f: str = "txn"

    def as_json(self) -> dict:
        line = {"type": self.type, "f": self.f, "value": [
            [f, k, list(v) if isinstance(v, tuple) else v] for f, k, v in self.value]}
        if self.process is not None:
            line["process"] = self.process
        if self.time is not None:
            line["time"] = self.time
        line["index"] = self.index
        return line


# -- reading ------------------------------------------------------------------

#: Nesting levels allowed in one operation (a list-append operation has 4).
MAX_DEPTH = 100
#: A history written as one JSON array (one document) is read whole: at most this much.
MAX_ARRAY_BYTES = 32 * 1024 * 1024


@contextlib.contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """Pause Python's cycle collector: a big history makes millions of small objects that
    all live on (while it is read, and until the verdict), and repeated full collections
    over them would only cost time -- none of them is garbage."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_history(path: str | Path) -> list[Operation]:
    """A history file, read as a stream: EDN (``.edn``) or JSON lines (``.json``,
    ``.jsonl``); any other name is recognised by its first line (``{"`` or ``[`` is
    JSON). A ``.json`` file may also be one JSON array of operations (read whole, at most
    MAX_ARRAY_BYTES). Raises HistoryError, or InputError for a file that cannot be read
    (missing, endless, a line over MAX_LINE_BYTES)."""
    path = Path(path)
    suffix = path.suffix.lower()
    max_line = MAX_ARRAY_BYTES if suffix == ".json" else MAX_LINE_BYTES
    lines = read_lines(path, max_line=max_line)
    first = next(((n, line) for n, line in lines if _meaningful(line)), None)
    if first is None:
        return []
    lines = itertools.chain([first], lines)
    stripped = first[1].lstrip()
    with no_cyclic_gc():
        if suffix in (".json", ".jsonl") or (suffix != ".edn" and (
                stripped.startswith(("{\"", "[")) or stripped.rstrip() == "{")):
            if stripped.startswith("["):
                return _json_array(lines)
            return list(_json_lines(lines))
        return list(_edn_operations(lines))


def _meaningful(line: str) -> bool:
    stripped = line.lstrip()
    return bool(stripped) and not stripped.startswith(";")


def parse_edn(text: str, *, fast: bool = True) -> list[Operation]:
    """Elle's EDN: maps with keyword keys, anywhere in the text (comments allowed).
    ``fast=False``: every form read by the edn_format library (the reference)."""
    return list(_edn_operations(enumerate(text.splitlines(), 1), fast=fast))


def parse_json(text: str) -> list[Operation]:
    """JSON lines (one object a line), or one JSON array of objects."""
    lines = list(enumerate(text.splitlines(), 1))
    if text.lstrip().startswith("["):
        return _json_array(iter(lines))
    return list(_json_lines(lines))


def _json_lines(lines: Iterable[tuple[int, str]]) -> Iterator[Operation]:
    position = 0
    for number, line in lines:
        if not line.strip():
            continue
        where = f"line {number}"
        _check_depth(line, where)
        try:
            parsed = json.loads(line)
        except json.JSONDecodeError as error:
            raise HistoryError(f"{where}: not JSON ({error.msg}): {excerpt(line)}") from None
        yield _operation(parsed, position, where)
        position += 1


def _json_array(lines: Iterator[tuple[int, str]]) -> list[Operation]:
    """One JSON document, an array of operations: read whole, within MAX_ARRAY_BYTES."""
    parts, size = [], 0
    for _, line in lines:
        size += len(line) + 1
        if size > MAX_ARRAY_BYTES:
            raise HistoryError(f"a JSON array larger than {MAX_ARRAY_BYTES // 2**20} MB; "
                               "write a history this big as JSON lines (one operation a line)")
        parts.append(line)
    text = "\n".join(parts)
    _check_depth(text, "the JSON array")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise HistoryError(f"not JSON ({error.msg} at line {error.lineno}): "
                           f"{excerpt(text[max(0, error.pos - 40):])}") from None
    if not isinstance(document, list):
        raise HistoryError(f"expected one operation a line or an array of operations, got "
                           f"{excerpt(text)}")
    return [_operation(line, position) for position, line in enumerate(document)]


# EDN, fast: the EDN of Jepsen's histories (maps, keywords, vectors, lists, integers,
# strings, nil, booleans, #jepsen.history.Op records) is rewritten into JSON and read by
# the json module; a form the rewrite does not cover (sets, symbols, tags, characters,
# comments inside a form ...) is read by the edn_format library instead.
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_KEYWORD = re.compile(r':([^\s,\[\]{}()"]+)')
_BRACKET = re.compile(r"[\[\](){}]")
_OUTSIDE_FAST = ("#", "\\", ";", "`", "~", "^", "@", "null", "NaN", "Infinity")
_PLACEHOLDER = '"\x00"'
_PLACEHOLDERS = re.compile(_PLACEHOLDER)
_RECORD = "#jepsen.history.Op{"
edn_format.add_tag("jepsen.history.Op", lambda fields: fields)  # a record: its map


def _edn_operations(lines: Iterable[tuple[int, str]], *, fast: bool = True
                    ) -> Iterator[Operation]:
    position = 0
    for number, forms in _edn_values(lines, fast=fast):
        where = f"line {number}"
        for form in forms:
            yield _operation(form, position, where)
            position += 1


def _edn_values(lines: Iterable[tuple[int, str]], *, fast: bool = True
                ) -> Iterator[tuple[int, list]]:
    """(line number, the forms that start there). A line that reads as whole forms by
    itself is taken at once (it is balanced, since it read); other lines are gathered
    until their brackets balance (outside strings and comments), within MAX_LINE_BYTES."""
    pending: list[str] = []
    started = depth = size = opened = 0
    for number, line in lines:
        if not pending:
            if fast and line.count("[") + line.count("{") <= MAX_DEPTH:
                forms = _edn_fast(line)
                if forms is not None:
                    yield number, forms
                    continue
            if not _meaningful(line):
                continue
        code = _STRING.sub("", line) if '"' in line else line
        if ";" in code:
            code = code[:code.index(";")]
        opening = code.count("[") + code.count("{") + code.count("(")
        depth += opening - code.count("]") - code.count("}") - code.count(")")
        opened += opening
        if not pending:
            started = number
        pending.append(line)
        size += len(line)
        if depth < 0:
            raise HistoryError(f"line {number}: more closing brackets than opening ones: "
                               f"{excerpt(line)}")
        if size > MAX_LINE_BYTES:
            raise HistoryError(f"line {started}: a form longer than {MAX_LINE_BYTES} bytes "
                               f"(it starts: {excerpt(pending[0])})")
        if depth == 0:
            yield started, _edn_read("\n".join(pending), f"line {started}", fast=fast,
                                     opened=opened)
            pending, size, opened = [], 0, 0
    if pending:  # unbalanced: the reader says what is wrong
        yield started, _edn_read("\n".join(pending), f"line {started}", fast=fast,
                                 opened=MAX_DEPTH + 1)


def _edn_read(text: str, where: str, *, fast: bool = True, opened: int | None = None
              ) -> list:
    """The forms of ``text`` as plain Python values (keywords as their names)."""
    if opened is None or opened > MAX_DEPTH:
        _check_depth(text, where)
    forms = _edn_fast(text) if fast else None
    if forms is not None:
        return forms
    try:
        return [_plain(form) for form in edn_format.loads_all(text)]
    except Exception as error:  # noqa: BLE001 - edn_format raises several kinds
        raise HistoryError(f"{where}: not EDN ({excerpt(str(error), 80)}): "
                           f"{excerpt(text)}") from None


def _edn_fast(text: str) -> list | None:
    """``text`` read through JSON, or None when it holds EDN this rewrite does not cover."""
    code = text.replace(_RECORD, "{") if "#" in text else text
    strings = None
    if '"' in code:
        if "\x00" in code:
            return None
        strings = _STRING.findall(code)
        code = _STRING.sub(_PLACEHOLDER, code)
    if any(mark in code for mark in _OUTSIDE_FAST) or (
            strings and '"' in code.replace(_PLACEHOLDER, "")):
        return None
    code = '"'.join(_KEYWORD.split(code))  # :name -> "name" (split and join run in C)
    code = (code.replace("{", '{"m":[').replace("}", "]}").replace("(", "[")
            .replace(")", "]"))
    # every run of blanks and commas becomes one comma, then none next to a bracket
    code = ",".join(("[" + code.replace(",", " ") + "]").split())
    code = code.replace("[,", "[").replace(",]", "]")
    if "nil" in code:  # nil stands alone: after "[" or ","; a keyword "nil" is quoted
        code = code.replace(",nil", ",null").replace("[nil", "[null")
    if strings:
        found = iter(strings)
        code = _PLACEHOLDERS.sub(lambda _: next(found), code)
    try:
        return _JSON_EDN.decode(code)
    except (ValueError, TypeError, RecursionError):  # deep nesting: the careful path says so
        return None


def _edn_map(holder: dict) -> dict:
    items = holder["m"]
    if len(holder) != 1 or len(items) % 2:
        raise ValueError("not a map of pairs")
    pairs = iter(items)
    return dict(zip(pairs, pairs, strict=True))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not EDN")


_JSON_EDN = json.JSONDecoder(object_hook=_edn_map, parse_constant=_no_constant)


def _check_depth(text: str, where: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH before a recursive reader meets it."""
    if text.count("[") + text.count("{") + text.count("(") <= MAX_DEPTH:
        return
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        depth += 1 if bracket in "[{(" else -1
        deepest = max(deepest, depth)
    if deepest > MAX_DEPTH:
        raise HistoryError(f"{where}: nested deeper than {MAX_DEPTH} levels: {excerpt(text)}")


def _plain(form: Any) -> Any:
    """EDN values as plain Python: keywords become their names, vectors lists."""
    if isinstance(form, edn_format.Keyword):
        return form.name
    if isinstance(form, Mapping):
        return {_plain(k): _plain(v) for k, v in form.items()}
    if isinstance(form, Sequence) and not isinstance(form, str):
        return [_plain(item) for item in form]
    return form


def _operation(line: Any, position: int, where: str | None = None) -> Operation:
    where = where or f"operation {position + 1}"
    if type(line) is not dict:
        raise HistoryError(f"{where}: expected a map, got {excerpt(repr(line))}")
    kind = line.get("type")
    if kind not in TYPES:
        raise HistoryError(f"{where}: type must be one of {', '.join(TYPES)}, "
                           f"not {excerpt(repr(kind))}")
    f = line.get("f", "txn")
    process = line.get("process")
    if process is not None and type(process) is not int:
        process = _hashable_or_text(_hashable(process))
    index = line.get("index", position)
    if type(index) is not int:
        index = position
    time_ = line.get("time")
    time_ = time_ if type(time_) is int else None
    if f != "txn":  # e.g. a nemesis's operations: not a client's transaction
        return Operation(kind, (), process, time_, index, str(f))
    value = line.get("value")
    if type(value) is not list:
        raise HistoryError(f"{where}: value must be a list of micro-operations")
    mops = []
    for mop in value:
        if type(mop) is not list or not 2 <= len(mop) <= 3 or mop[0] not in _MOP_NAMES:
            raise HistoryError(f"{where}: {excerpt(repr(mop))} is neither [append k v] nor "
                               "[r k values]")
        key = mop[1]
        if type(key) is not int and type(key) is not str:
            key = _hashable_or_text(_hashable(key))
        if mop[0] == READ:
            element = mop[2] if len(mop) == 3 else None  # Elle's [r k]: not known yet
            if element is not None:
                if type(element) is not list:
                    raise HistoryError(f"{where}: a read's value must be a list or nil: "
                                       f"{excerpt(repr(mop))}")
                element = tuple(element)
                try:
                    hash(element)  # integers, mostly: checked in C
                except TypeError:
                    element = tuple(_hashable_or_text(_hashable(e)) for e in element)
            mops.append((READ, key, element))
        else:
            if len(mop) != 3:
                raise HistoryError(f"{where}: {excerpt(repr(mop))} appends nothing")
            element = mop[2]
            if type(element) is not int and type(element) is not str:
                element = _hashable_or_text(_hashable(element))
            mops.append((APPEND, key, element))
    return Operation(kind, tuple(mops), process, time_, index)


_MOP_NAMES = (APPEND, READ)


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


def _hashable_or_text(value: Any) -> Any:
    """``value`` if it can be a key of a dict, else its text (a map read as a value)."""
    try:
        hash(value)
    except TypeError:
        return excerpt(repr(value))
    return value


# -- writing ------------------------------------------------------------------

def to_jsonl(operations: Iterable[Operation]) -> str:
    return "".join(json.dumps(op.as_json()) + "\n" for op in operations)


def to_edn(operations: Iterable[Operation]) -> str:
    return "".join(_edn_line(op) for op in operations)


def _edn_line(op: Operation) -> str:
    """One operation as a line of EDN, in the order Jepsen writes its fields."""
    mops = " ".join(f"[{_keyword(f)} {_edn(k)} {_edn(v)}]" for f, k, v in op.value)
    line = f"{{:type {_keyword(op.type)}, :f {_keyword(op.f)}, :value [{mops}]"
    if op.process is not None:
        line += f", :process {_edn(op.process)}"
    if op.time is not None:
        line += f", :time {op.time}"
    return line + f", :index {_edn(op.index)}}}\n"


_SIMPLE_KEYWORD = re.compile(r"[A-Za-z*!_?<>=][\w*+!?<>=.-]*")


def _keyword(name: str) -> str:
    return ":" + name if _SIMPLE_KEYWORD.fullmatch(name) else _edn(name)


def _edn(value: Any) -> str:
    """A value of an operation as EDN: numbers, strings, nil, booleans, vectors."""
    if value is None:
        return "nil"
    if value is True or value is False:
        return "true" if value else "false"
    if type(value) is int:
        return str(value)
    if type(value) is str:
        return json.dumps(value)  # the escapes EDN and JSON share
    if type(value) is tuple:
        return "[" + " ".join(_edn(item) for item in value) + "]"
    return edn_format.dumps(value)


def write_history(operations: Iterable[Operation], path: str | Path) -> None:
    """As EDN when ``path`` ends in ``.edn``, else as JSON lines; written as a stream."""
    path = Path(path)
    line = _edn_line if path.suffix.lower() == ".edn" else _json_line
    with path.open("w", encoding="utf-8") as out:
        for op in operations:
            out.write(line(op))


def _json_line(op: Operation) -> str:
    return json.dumps(op.as_json()) + "\n"
