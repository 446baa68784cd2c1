"""Reading the files a user names: bounded, so that no input can hang a command or exhaust it.

Scripts, Hermitage pages, isolation-tester specs and histories come from the command line,
and any of them may be wrong: huge, binary, a device that never ends (``/dev/zero``), a FIFO
that nobody writes to. Every reader here has limits, and every refusal is one ``InputError``
line that quotes at most ``QUOTE_LIMIT`` characters of the input.

* ``read_text`` — a whole file of a kind that is small by nature (a script, a page, a spec).
* ``read_lines`` — a stream of lines (a history: one operation a line), with memory bounded
  by the longest line allowed, not by the file.

A stream that gives nothing for ``STALL_SECONDS`` is refused; ``/dev/zero`` runs into the
size or line limit within a fraction of a second.
"""

from __future__ import annotations

import contextlib
import os
import select
import stat
from collections.abc import Iterator
from pathlib import Path

MAX_TEXT_BYTES = 16 * 1024 * 1024   # a script, page or spec: real ones are a few kB
MAX_LINE_BYTES = 1024 * 1024        # one history operation: real ones are well under 1 kB
STALL_SECONDS = 5.0                 # a pipe or device silent this long will not end
QUOTE_LIMIT = 200                   # characters of the input quoted in a message
CHUNK = 64 * 1024


class InputError(ValueError):
    """A file we cannot read as asked; the message is one line, fit to print as it is."""


def excerpt(text: str | bytes, limit: int = QUOTE_LIMIT) -> str:
    """At most ``limit`` characters of ``text`` on one line, marked where it was cut."""
    if isinstance(text, bytes):
        text = text[: limit * 4].decode("utf-8", errors="replace")
    flat = " ".join(text[: limit * 2].split())
    flat = "".join(char if char.isprintable() else "?" for char in flat)  # one printable line
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def read_text(path: str | Path, *, limit: int = MAX_TEXT_BYTES) -> str:
    """The whole file as UTF-8 text; refused when larger than ``limit`` bytes."""
    data = bytearray()
    for chunk in _chunks(path):
        data += chunk
        if len(data) > limit:
            raise InputError(f"{path}: larger than {limit // (1024 * 1024)} MB; "
                             "not a file this command reads")
    return _decode(path, bytes(data), None)


def read_lines(path: str | Path, *, max_line: int = MAX_LINE_BYTES) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` for each line, read as a stream; a line longer than
    ``max_line`` bytes is refused as soon as it is that long."""
    pending = bytearray()
    number = 0
    for chunk in _chunks(path):
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                pending += chunk[start:]
                if len(pending) > max_line:
                    _too_long(path, number + 1, pending, max_line)
                break
            pending += chunk[start:end]
            number += 1
            if len(pending) > max_line:
                _too_long(path, number, pending, max_line)
            yield number, _decode(path, bytes(pending), number)
            pending.clear()
            start = end + 1
    if pending:
        yield number + 1, _decode(path, bytes(pending), number + 1)


def _too_long(path, number: int, line: bytearray, max_line: int) -> None:
    raise InputError(f"{path}:{number}: a line longer than {max_line} bytes "
                     f"(it starts: {excerpt(bytes(line[:QUOTE_LIMIT * 4]))})")


def _decode(path, data: bytes, number: int | None) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        where = f"{path}:{number}" if number is not None else str(path)
        raise InputError(f"{where}: not UTF-8 text (byte {error.start} of "
                         f"{'the line' if number is not None else 'the file'})") from None


def _chunks(path: str | Path) -> Iterator[bytes]:
    """The file's bytes, chunk by chunk; opening never blocks (a FIFO without a writer) and
    each read waits at most STALL_SECONDS."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot open it ({error.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise InputError(f"{path}: a folder, not a file")
        while True:
            ready, _, _ = select.select([fd], [], [], STALL_SECONDS)
            if not ready:
                raise InputError(f"{path}: nothing arrived for {STALL_SECONDS:g} s "
                                 "(a pipe or device that never ends?)")
            try:
                chunk = os.read(fd, CHUNK)
            except BlockingIOError:
                continue  # woken without data: select waits again, bounded as before
            except OSError as error:
                raise InputError(f"{path}: cannot read it ({error.strerror})") from None
            if not chunk:
                return
            yield chunk
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
