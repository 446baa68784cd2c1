"""Reading the files a user names: bounded, so that no input can hang a command or exhaust it.

Scripts, Hermitage pages, isolation-tester specs and histories come from the command line,
and any of them may be wrong: huge, binary, a device that never ends (``/dev/zero``), a FIFO
that nobody writes to. Every reader here has limits, and every refusal is one ``InputError``
line that quotes at most ``QUOTE_LIMIT`` characters of the input.

* ``read_text`` — a whole file of a kind that is small by nature (a script, a page, a spec:
  ``limit=MAX_SOURCE_BYTES``; a golden output).
* ``read_lines`` — a stream of lines (a history: one operation a line), with memory bounded
  by the longest line allowed, not by the file.

A stream that gives nothing for ``STALL_SECONDS`` is refused; ``/dev/zero`` runs into the
size or line limit within a fraction of a second. A file's name is user input too: messages
show it through ``shown_name`` (one printable line, at most ``QUOTE_LIMIT`` characters).
"""

from __future__ import annotations

import contextlib
import os
import select
import stat
from collections.abc import Iterator
from pathlib import Path

MAX_TEXT_BYTES = 16 * 1024 * 1024   # a whole file (a golden output: PostgreSQL's are < 1 MB)
MAX_SOURCE_BYTES = 2 * 1024 * 1024  # a script, page or spec, parsed into many small objects:
                                    # the largest known (prepared-transactions.spec) is 87 kB
MAX_LINE_BYTES = 1024 * 1024        # one history operation: real ones are well under 1 kB
STALL_SECONDS = 5.0                 # a pipe or device silent this long will not end
QUOTE_LIMIT = 200                   # characters of the input quoted in a message
CHUNK = 64 * 1024


class InputError(ValueError):
    """A file we cannot read as asked; the message is one line, fit to print as it is.

    ``path`` and ``reason`` (the message without the file's name) are there for a caller
    that names the file its own way (a parser's error type)."""

    def __init__(self, message: str, *, path: str | Path | None = None,
                 reason: str | None = None):
        super().__init__(message)
        self.path = path
        self.reason = message if reason is None else reason


def excerpt(text: str | bytes, limit: int = QUOTE_LIMIT) -> str:
    """At most ``limit`` characters of ``text`` on one printable line, marked where it was
    cut; a short printable line comes back as it is."""
    if isinstance(text, bytes):
        text = text[: limit * 4].decode("utf-8", errors="replace")
    if len(text) <= limit and text.isprintable():
        return text
    flat = " ".join(text[: limit * 2].split())
    flat = "".join(char if char.isprintable() else "?" for char in flat)  # no escape codes
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def shown_name(path: str | Path) -> str:
    """A file's name as a message shows it: as given when short and printable (the
    command line may give any string, a newline or a terminal escape included)."""
    return excerpt(os.fsdecode(path))


def _refused(path: str | Path, reason: str) -> InputError:
    return InputError(f"{shown_name(path)}: {reason}", path=path, reason=reason)


def _size(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MB" if limit >= 1024 * 1024 else f"{limit} bytes"


def read_text(path: str | Path, *, limit: int = MAX_TEXT_BYTES) -> str:
    """The whole file as UTF-8 text; refused when larger than ``limit`` bytes."""
    data = bytearray()
    for chunk in _chunks(path, size_limit=limit):
        data += chunk
        if len(data) > limit:
            raise _too_large(path, limit)
    return _decode(path, bytes(data), None)


def _too_large(path, limit: int) -> InputError:
    return _refused(path, f"larger than {_size(limit)}; not a file this command reads")


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
    reason = (f"a line longer than {max_line} bytes "
              f"(it starts: {excerpt(bytes(line[:QUOTE_LIMIT * 4]))})")
    raise InputError(f"{shown_name(path)}:{number}: {reason}", path=path, reason=reason)


def _decode(path, data: bytes, number: int | None) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        reason = (f"not UTF-8 text (byte {error.start} of "
                  f"{'the line' if number is not None else 'the file'})")
        where = shown_name(path) + (f":{number}" if number is not None else "")
        raise InputError(f"{where}: {reason}", path=path, reason=reason) from None


def _chunks(path: str | Path, *, size_limit: int | None = None) -> Iterator[bytes]:
    """The file's bytes, chunk by chunk; opening never blocks (a FIFO without a writer) and
    each read waits at most STALL_SECONDS. A regular file larger than ``size_limit`` is
    refused before any of it is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise _refused(path, "no such file") from None
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the name
        raise _refused(path, f"cannot open it ({getattr(error, 'strerror', None) or error})"
                       ) from None
    try:
        status = os.fstat(fd)
        if stat.S_ISDIR(status.st_mode):
            raise _refused(path, "a folder, not a file")
        if size_limit is not None and stat.S_ISREG(status.st_mode) \
                and status.st_size > size_limit:
            raise _too_large(path, size_limit)
        # poll, not select: select cannot watch a descriptor numbered 1024 or more
        waiting = select.poll()
        waiting.register(fd, select.POLLIN)
        while True:
            if not waiting.poll(STALL_SECONDS * 1000):
                raise _refused(path, f"nothing arrived for {STALL_SECONDS:g} s "
                                     "(a pipe or device that never ends?)")
            try:
                chunk = os.read(fd, CHUNK)
            except BlockingIOError:
                continue  # woken without data: poll waits again, bounded as before
            except OSError as error:
                raise _refused(path, f"cannot read it ({error.strerror})") from None
            if not chunk:
                return
            yield chunk
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
