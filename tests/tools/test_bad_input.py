"""Engine: `run` and `spec` given files they cannot use: one line on stderr, exit 2.

Missing, a folder, binary, /dev/zero, a FIFO nobody writes to, a pathological text:
nothing runs (the --dsn given points nowhere and is never used), no traceback, at
most a couple of hundred characters of the input quoted.
"""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from acid_lab import input_files
from acid_lab.__main__ import main
from acid_lab.commands.run import run_command
from acid_lab.commands.spec import spec_command

pytestmark = pytest.mark.engine

ROOT = Path(__file__).resolve().parents[2]
NOWHERE = "host=127.0.0.1 port=1 connect_timeout=1"  # never reached: parsing fails first
GOOD_SPEC = "session s1\nstep a { SELECT 1; }\n"


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _fifo(folder: Path, name: str) -> Path:
    path = folder / name
    os.mkfifo(path)
    return path


BAD_FILES = [
    pytest.param(lambda tmp, kind: tmp / f"absent.{kind}", "{path}: no such file", id="missing"),
    pytest.param(lambda tmp, kind: tmp, "{path}: a folder, not a file", id="folder"),
    pytest.param(lambda tmp, kind: _write(tmp, f"binary.{kind}", b"\x7fELF\x02\x01\xff\xfe"),
                 "{path}: not UTF-8 text (byte 6 of the file)", id="binary"),
    pytest.param(lambda tmp, kind: Path("/dev/zero"),
                 "{path}: larger than 2 MB; not a file this command reads", id="dev-zero"),
    pytest.param(lambda tmp, kind: _fifo(tmp, f"fifo.{kind}"),
                 "{path}: nothing arrived for 0.1 s (a pipe or device that never ends?)",
                 id="fifo"),
    pytest.param(lambda tmp, kind: _write(tmp, f"long.{kind}", (
        b"begin; -- T1\nselect 1" + b" x" * 100_000 + b";\n" if kind == "sql" else
        b"session s1\nstep a { SELECT 1; }\npermutation a" + b"b" * 100_000 + b"\n")),
        {"sql": "{path}:2: statement without a session tag (-- T<n>): select 1 x x",
         "spec": "{path}: undefined step \"abbbb"}, id="long statement"),
    pytest.param(lambda tmp, kind: _write(tmp, f"nested.{kind}", (
        b"begin; -- T1\n" + b"/*" * 20_000 if kind == "sql" else
        b"session s1\nstep a { SELECT 1; }\npermutation a" + b"(" * 20_000)),
        {"sql": "{path}:2: unterminated /* comment",
         "spec": "{path}:3: expected a blocker step name or *, found '('"}, id="nested"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("command, kind", [
    pytest.param(run_command, "sql", id="run"),
    pytest.param(spec_command, "spec", id="spec"),
])
@pytest.mark.parametrize("make, expected", BAD_FILES)
def test_a_file_that_cannot_be_used_is_one_line_and_exit_2(tmp_path, monkeypatch, command, kind,
                                                            make, expected):
    monkeypatch.setattr(input_files, "STALL_SECONDS", 0.1)
    path = make(tmp_path, kind)
    out, err = io.StringIO(), io.StringIO()
    status = command([str(path), "--dsn", NOWHERE], out=out, err=err)

    expected = expected[kind] if isinstance(expected, dict) else expected
    assert (status, out.getvalue()) == (2, "")
    line = err.getvalue()
    assert line.startswith("error: " + expected.format(path=path)), line
    assert line.count("\n") == 1 and len(line) < 300


@pytest.mark.parametrize("make, expected", [
    pytest.param(lambda tmp: tmp / "absent.out", "{path}: no such file", id="missing"),
    pytest.param(lambda tmp: _write(tmp, "a.out", b"\xff"),
                 "{path}: not UTF-8 text (byte 0 of the file)", id="binary"),
    pytest.param(lambda tmp: (tmp / "a.out").mkdir() or tmp, None, id="NAME.out a folder"),
])
def test_a_golden_output_that_cannot_be_read_stops_spec_before_anything_runs(tmp_path, make,
                                                                              expected):
    spec = _write(tmp_path, "a.spec", GOOD_SPEC.encode())
    given = make(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    status = spec_command([str(spec), "--dsn", NOWHERE, "--expected", str(given)],
                          out=out, err=err)

    if expected is None:  # a folder named a.out is no golden output: the server is next
        assert status == 1 and err.getvalue().startswith("error: ")
        return
    assert (status, out.getvalue()) == (2, "")
    assert err.getvalue() == f"error: {expected.format(path=given)}\n"


@pytest.mark.parametrize("timeout", ["nan", "inf", "0", "-1", "1e9", "soon"])
def test_spec_refuses_a_step_timeout_that_is_no_bound(timeout, capsys):
    assert spec_command(["x.spec", "--timeout", timeout]) == 2
    assert "argument --timeout: " in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "spec", "check", "report", "play"])
def test_every_command_answers_bad_usage_with_exit_2_and_no_traceback(command, capsys):
    """The one prologue: argparse's usage and error line, exit 2, for each command."""
    assert main([command, "--no-such-option"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ") and err.splitlines()[-1].startswith(
        f"python -m acid_lab {command}: error: ") and "Traceback" not in err


def test_python_dash_m_acid_lab_says_one_line_for_dev_zero():
    """The real command line, in a child process: no traceback, exit 2."""
    completed = subprocess.run([sys.executable, "-m", "acid_lab", "spec", "/dev/zero"],
                               cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert (completed.returncode, completed.stdout) == (2, "")
    assert completed.stderr == ("error: /dev/zero: larger than 2 MB; "
                                "not a file this command reads\n")
