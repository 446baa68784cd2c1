"""Engine: the bounded reader of every file a command is given (acid_lab/input_files.py).

Each refusal is one InputError line quoting at most QUOTE_LIMIT characters of the input;
nothing is read without a bound: /dev/zero runs into a limit, a FIFO nobody writes to is
given up after STALL_SECONDS (made short here), one that gets data is read.
"""

import os
import threading

import pytest

from acid_lab import input_files
from acid_lab.input_files import QUOTE_LIMIT, InputError, excerpt, read_lines, read_text

pytestmark = pytest.mark.engine

SHORT_STALL = 0.1  # seconds: STALL_SECONDS in these tests


@pytest.fixture
def short_stall(monkeypatch):
    monkeypatch.setattr(input_files, "STALL_SECONDS", SHORT_STALL)


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def _refused(read, *args, **kwargs) -> str:
    with pytest.raises(InputError) as raised:
        result = read(*args, **kwargs)
        if not isinstance(result, str):
            list(result)  # read_lines: a generator
    message = str(raised.value)
    assert "\n" not in message
    return message


@pytest.mark.timeout(20)
@pytest.mark.parametrize(("read", "limit_word"), [
    pytest.param(read_text, "larger than 16 MB", id="whole file"),
    pytest.param(read_lines, "a line longer than 1048576 bytes", id="lines"),
])
def test_dev_zero_runs_into_a_limit(read, limit_word):
    message = _refused(read, "/dev/zero")
    assert message.startswith("/dev/zero") and limit_word in message


@pytest.mark.timeout(10)  # a reader that waits without a bound fails here, not hangs
@pytest.mark.parametrize("read", [read_text, read_lines], ids=["whole file", "lines"])
def test_a_fifo_nobody_writes_to_is_given_up(fifo, short_stall, read):
    message = _refused(read, fifo)
    assert message == (f"{fifo}: nothing arrived for {SHORT_STALL:g} s "
                       "(a pipe or device that never ends?)")


@pytest.mark.timeout(10)
def test_a_fifo_that_gets_data_is_read(fifo, short_stall):
    def write():
        with open(fifo, "w", encoding="utf-8") as writer:  # waits for the reader to open
            writer.write("begin; -- T1\ncommit; -- T1\n")

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert read_text(fifo) == "begin; -- T1\ncommit; -- T1\n"
    finally:
        if writer.is_alive():  # the reader never opened: let the writer's open return
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(5)


@pytest.mark.parametrize(("make", "read", "expected"), [
    pytest.param(lambda tmp: tmp, read_text, "{path}: a folder, not a file", id="folder"),
    pytest.param(lambda tmp: tmp / "absent.sql", read_text, "{path}: no such file",
                 id="missing"),
    pytest.param(lambda tmp: _written(tmp, b"select 1;\n\xff\xfe"), read_text,
                 "{path}: not UTF-8 text (byte 10 of the file)", id="not utf-8"),
    pytest.param(lambda tmp: _written(tmp, b"ok\n\xc3("), read_lines,
                 "{path}:2: not UTF-8 text (byte 0 of the line)", id="not utf-8 line"),
    pytest.param(lambda tmp: _written(tmp, b"x" * 100), lambda path: read_text(path, limit=99),
                 "{path}: larger than 99 bytes; not a file this command reads",
                 id="over the size limit"),
])
def test_what_cannot_be_read_is_one_line(tmp_path, make, read, expected):
    path = make(tmp_path)
    assert _refused(read, path) == expected.format(path=path)


def _written(folder, data: bytes):
    path = folder / "input"
    path.write_bytes(data)
    return path


def test_a_long_line_is_refused_quoting_at_most_the_limit(tmp_path):
    path = _written(tmp_path, b"short\n" + b"[" * 5000 + b"\n")
    message = _refused(read_lines, path, max_line=1000)

    prefix = f"{path}:2: a line longer than 1000 bytes (it starts: "
    assert message.startswith(prefix) and message.endswith("…)")
    assert len(message) - len(prefix) - 1 == QUOTE_LIMIT


def test_lines_are_numbered_and_the_last_needs_no_newline(tmp_path):
    path = _written(tmp_path, b"a\n\nc")
    assert list(read_lines(path)) == [(1, "a"), (2, ""), (3, "c")]


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("select 1", "select 1", id="short: as it is"),
    pytest.param("a\n\tb\x1b[31m", "a b?[31m", id="one printable line"),
    pytest.param("x" * 1000, "x" * (QUOTE_LIMIT - 1) + "…", id="cut at the limit"),
    pytest.param(b"\xff" * 1000, "\ufffd" * (QUOTE_LIMIT - 1) + "…", id="bytes"),
])
def test_an_excerpt_is_one_printable_line_of_at_most_the_limit(text, expected):
    assert excerpt(text) == expected


def test_a_file_name_is_quoted_as_input_too(tmp_path):
    name = "bad\nname" + "y" * 200  # (a file name has at most 255 bytes)
    message = _refused(read_text, tmp_path / name)
    assert message.endswith("…: no such file") and len(message) < QUOTE_LIMIT + 20
    assert message.startswith(f"{tmp_path}/bad name")
