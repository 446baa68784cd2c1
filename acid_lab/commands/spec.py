"""``python -m acid_lab spec FILE.spec ... [--dsn DSN] [--expected FILE.out|DIR] [--timeout S]``.

Runs isolation-tester specs (see :mod:`acid_lab.engine.spec`) and prints what
PostgreSQL's isolationtester prints (:mod:`acid_lab.engine.spec_runner`).

Like PostgreSQL's own isolation schedule, the specs run one after the other in
one database named ``isolation_regression`` (the golden outputs print it),
set up as the golden outputs assume: messages, money, numbers and times in
the C locale, ``bytea_output`` hex, the default time-zone abbreviations; each
session with ``TimeZone`` America/Los_Angeles, ``DateStyle`` "Postgres, MDY",
``IntervalStyle`` postgres_verbose and the application name
``isolation/SPEC/SESSION``. Without ``--dsn`` a temporary server runs them, with
``max_prepared_transactions`` above zero.

With ``--expected`` each output is compared with ``NAME.out`` (or an accepted
alternative ``NAME_1.out`` ... ``NAME_9.out``) in that folder, or with the file
given (one spec); a difference is shown as a unified diff, and a summary line
"N of M specs match" ends the run. A spec that needs what the server lacks (an
extension, prepared transactions, a setting only a restart changes) is skipped
with its reason, not counted as a failure.

Exit status: 0 when everything ran (and matched), 1 on a difference, a stuck
permutation or no usable server, 2 for a spec that cannot be parsed or a file that
cannot be read (a golden output included: all are read before anything runs).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import math
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

import psycopg2
import psycopg2.extensions
from psycopg.conninfo import make_conninfo

from acid_lab.commands import prologue
from acid_lab.commands.prologue import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CommandError
from acid_lab.engine.spec import Spec, SpecError, load_spec
from acid_lab.engine.spec_runner import DEFAULT_STEP_TIMEOUT, SpecOutcome, SpecRunner
from acid_lab.input_files import read_text
from acid_lab.servers.connections import CONNECT_TIMEOUT

DATABASE = "isolation_regression"
MAX_STEP_TIMEOUT = 24 * 3600  # seconds: any wait has a bound

# What the golden outputs assume of the database (ALTER DATABASE ... SET)
DATABASE_SETTINGS = {
    "lc_messages": "C",
    "lc_monetary": "C",
    "lc_numeric": "C",
    "lc_time": "C",
    "bytea_output": "hex",
    "timezone_abbreviations": "Default",
}
# ... and of every session (PostgreSQL's test driver sets them through the environment)
SESSION_OPTIONS = ("-c timezone=America/Los_Angeles -c datestyle=Postgres,MDY "
                   "-c intervalstyle=postgres_verbose")

# Set on the temporary server: what PostgreSQL's own test set-ups give the specs
# (logical decoding for the specs of test_decoding); max_prepared_transactions is
# already above zero on every cluster we start.
TEMPORARY_SERVER_SETTINGS = {"wal_level": "logical", "max_replication_slots": "10",
                             "max_wal_senders": "10"}

# Errors that say the server lacks something, rather than that the engine is wrong
_LACKS = (
    (re.compile(r"cannot be changed without restarting the server"),
     "needs a server setting only a restart changes"),
    (re.compile(r"requires \"?wal_level\"? >= \"?logical"), "needs wal_level = logical"),
    (re.compile(r"prepared transactions are disabled"), "needs max_prepared_transactions > 0"),
    (re.compile(r"extension \"[^\"]+\" is not available|could not open extension control file"),
     "needs an extension this server does not have"),
    (re.compile(r"could not access file \"[^\"]+\""), "needs a library this server does not have"),
)

_EXTENSION = re.compile(r"\bcreate\s+extension\s+(?:if\s+not\s+exists\s+)?\"?(\w+)", re.I)
_PREPARE = re.compile(r"\bprepare\s+transaction\b", re.I)


@dataclasses.dataclass
class SpecComparison:
    spec: Spec
    outcome: SpecOutcome | None
    status: str  # "ran", "match", "differs", "stuck", "skipped"
    reason: str = ""
    diff: str = ""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m acid_lab spec",
        description="Run PostgreSQL isolation-tester specs on the scenario engine and print "
                    "isolationtester's output; compare it with golden outputs.")
    parser.add_argument("specs", nargs="+", metavar="FILE.spec")
    parser.add_argument("--dsn", help="run on this PostgreSQL (libpq DSN or URI); "
                                      "default: a temporary server")
    parser.add_argument("--expected", metavar="FILE.out|DIR",
                        help="golden output to compare with: a file (one spec) or a folder")
    parser.add_argument("--timeout", type=_step_timeout, default=DEFAULT_STEP_TIMEOUT,
                        help="seconds one step may run before it is cancelled "
                             f"(stuck after twice that; default {DEFAULT_STEP_TIMEOUT:g})")
    return parser


def _step_timeout(text: str) -> float:
    """--timeout's value: a number of seconds above 0, at most a day (not nan, not inf)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text[:40]!r}") from None
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_STEP_TIMEOUT):
        raise argparse.ArgumentTypeError(f"seconds above 0 and at most {MAX_STEP_TIMEOUT}")
    return seconds


def spec_command(argv: Sequence[str], *, out: TextIO | None = None,
                 err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    return prologue.run(lambda args: _spec(args, out, err), build_parser(), argv, err)


def _spec(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        specs = [load_spec(path) for path in args.specs]
    except SpecError as error:
        raise CommandError(str(error), EXIT_USAGE) from None
    if args.expected and not Path(args.expected).is_dir() and len(specs) > 1:
        raise CommandError("--expected is not a folder, but several specs were given "
                           "(a golden file is one spec's)", EXIT_USAGE)
    try:
        verdicts = run_specs(specs, args.dsn, expected=args.expected, timeout=args.timeout,
                             report=lambda verdict: _report(verdict, bool(args.expected), out))
    except (psycopg2.Error, OSError) as error:
        raise CommandError(prologue.one_line(error)) from None
    for verdict in verdicts:
        if verdict.status == "stuck":
            print(f"error: {verdict.spec.path}: {verdict.reason}", file=err)
    if args.expected:
        compared = [v for v in verdicts if v.status != "skipped"]
        matching = sum(v.status == "match" for v in compared)
        skipped = len(verdicts) - len(compared)
        summary = f"{matching} of {len(compared)} specs match"
        if skipped:
            summary += f" ({skipped} skipped)"
        print(summary, file=out)
        return EXIT_OK if matching == len(compared) else EXIT_FAILED
    return EXIT_FAILED if any(v.status == "stuck" for v in verdicts) else EXIT_OK


def run_specs(specs: Sequence[Spec], dsn: str | None, *, expected: str | None = None,
              timeout: float = DEFAULT_STEP_TIMEOUT,
              report: Callable[[SpecComparison], None] | None = None) -> list[SpecComparison]:
    """Run the specs one after the other in one fresh database (on ``dsn``, or on a
    temporary server) and compare each output with ``expected`` when given.

    Raises InputError, before anything runs, when a golden output cannot be read, and
    CommandError when there is no usable server."""
    goldens = [None if expected is None else _golden_outputs(spec, expected) for spec in specs]
    verdicts = []
    with prologue.target(dsn, TEMPORARY_SERVER_SETTINGS, own_database=False) as target, \
            isolation_database(target.info.dsn()) as conninfo:
        capabilities = _Capabilities(conninfo)
        runner = SpecRunner(conninfo, timeout=timeout)
        for spec, golden in zip(specs, goldens, strict=True):
            verdict = _run_one(spec, runner, capabilities, golden)
            verdicts.append(verdict)
            if report is not None:
                report(verdict)
    return verdicts


def _report(verdict: SpecComparison, comparing: bool, out: TextIO) -> None:
    name = verdict.spec.path
    if verdict.status == "skipped":
        print(f"skipped {name}: {verdict.reason}", file=out)
    elif not comparing:
        out.write(verdict.outcome.output)
    elif verdict.status == "match":
        print(f"ok      {name}", file=out)
    else:
        print(f"FAILED  {name}: {verdict.reason}", file=out)
        out.write(verdict.diff)
    out.flush()


def _run_one(spec: Spec, runner: SpecRunner, capabilities: _Capabilities,
             golden: list[tuple[Path, str]] | None) -> SpecComparison:
    """Run one spec (or skip it) and compare its output with the golden ones (path, text),
    if given."""
    missing = capabilities.missing(spec)
    if missing:
        return SpecComparison(spec, None, "skipped", missing)
    outcome = runner.run(spec)
    candidates = [path for path, _ in golden or []]
    texts = [text for _, text in golden or []]
    if outcome.output in texts:
        return SpecComparison(spec, outcome, "match")
    lacking = _lacking(outcome.output)
    if lacking:
        return SpecComparison(spec, outcome, "skipped", lacking)
    status, reason = ("stuck", outcome.stopped) if outcome.stopped else ("ran", "")
    if golden is None:
        return SpecComparison(spec, outcome, status, reason)
    if not candidates:
        return SpecComparison(spec, outcome, "differs", f"no expected output for {spec.name}")
    diff = "".join(difflib.unified_diff(
        texts[0].splitlines(keepends=True), outcome.output.splitlines(keepends=True),
        fromfile=str(candidates[0]), tofile=f"{spec.name} (this run)"))
    first = next((line[1:].rstrip("\n") for line in diff.splitlines(keepends=True)[2:]
                  if line[:1] in "+-"), "")
    why = reason or f"differs from {candidates[0].name}: first difference `{first}`"
    return SpecComparison(spec, outcome, "stuck" if reason else "differs", why, diff)


def _lacking(output: str) -> str | None:
    """Why the server cannot run this spec as its authors' server did, if an error says so."""
    for line in output.splitlines():
        if "ERROR" not in line and "failed:" not in line:
            continue
        for pattern, reason in _LACKS:
            if pattern.search(line):
                return f"{reason} ({line.strip()})"
    return None


def _golden_outputs(spec: Spec, expected: str) -> list[tuple[Path, str]]:
    """(path, text) of the spec's golden outputs: ``expected`` itself unless it is a folder,
    else the folder's NAME.out and NAME_1.out ... NAME_9.out that exist."""
    given = Path(expected)
    if not given.is_dir():
        return [(given, read_text(given))]
    names = [f"{spec.name}.out"] + [f"{spec.name}_{n}.out" for n in range(1, 10)]
    return [(given / name, read_text(given / name)) for name in names
            if (given / name).is_file()]


class _Capabilities:
    """What the server offers that some specs need."""

    def __init__(self, conninfo: str):
        conn = psycopg2.connect(conninfo)
        try:
            with conn.cursor() as cursor:
                cursor.execute("select name from pg_catalog.pg_available_extensions")
                self.extensions = {row[0] for row in cursor.fetchall()}
                cursor.execute("select current_setting('max_prepared_transactions')::int")
                self.prepared_transactions = cursor.fetchone()[0]
        finally:
            conn.close()

    def missing(self, spec: Spec) -> str | None:
        text = "\n".join(_all_sql(spec))
        for name in _EXTENSION.findall(text):
            if name.lower() not in self.extensions:
                return f"needs the extension {name}, which this server does not have"
        if _PREPARE.search(text) and self.prepared_transactions == 0:
            return ("needs prepared transactions (max_prepared_transactions is 0; "
                    "only a restart changes it)")
        return None


def _all_sql(spec: Spec) -> Iterator[str]:
    yield from spec.setup
    if spec.teardown:
        yield spec.teardown
    for session in spec.sessions:
        yield from filter(None, (session.setup, session.teardown))
        yield from (step.sql for step in session.steps)


@contextlib.contextmanager
def isolation_database(dsn: str) -> Iterator[str]:
    """A fresh ``isolation_regression`` database set up as the golden outputs assume."""
    admin = psycopg2.connect(dsn, connect_timeout=CONNECT_TIMEOUT)
    admin.autocommit = True
    name = DATABASE
    try:
        with admin.cursor() as cursor:
            cursor.execute("select 1 from pg_database where datname = %s", (name,))
            if cursor.fetchone():  # someone's own: never touch it, use a name of our own
                name = f"{DATABASE}_{admin.info.backend_pid}"
            cursor.execute(f'create database "{name}" template template0')
            try:
                for setting, value in DATABASE_SETTINGS.items():
                    cursor.execute(f'alter database "{name}" set {setting} = %s', (value,))
                yield make_conninfo(dsn, dbname=name, options=SESSION_OPTIONS)
            finally:
                cursor.execute(f'drop database "{name}" with (force)')
    finally:
        admin.close()
