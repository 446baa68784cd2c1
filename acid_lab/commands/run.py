"""``python -m acid_lab run FILE.sql|PAGE.md ... [--dsn DSN] [--json] [--check]``.

Runs annotated SQL scripts and Hermitage pages (see :mod:`acid_lab.engine.script`)
and prints what happened, in Hermitage's notation or, with ``--json``, as one
JSON object::

    {"server_version": "15.18",
     "scripts": [{"script": "path.sql",
                  "steps": [{"session", "sql", "blocked", "status",
                             "sqlstate", "rows", "error"}, ...]}]}

With ``--check`` every note after a session tag is read as an expectation
(:mod:`acid_lab.engine.notes`) and compared with what happened: each step is
marked agrees, DISAGREES (what was expected, what happened) or no claim, with
a line per script and a total; in the JSON each step gains ``"expected"`` (the
note as read, or null) and ``"agrees"`` (true, false, or null for no claim),
and the object a ``"check"`` total. A note that cannot be read counts as a
disagreement: it is never passed silently.

Each script runs in a clean place of its own: a fresh schema, first on the
search_path of its setup connection and of every session, dropped afterwards.
Sessions are autocommit at the libpq level; transaction control is the
script's own, and an SQL error is an outcome, not a reason to stop.

Exit status: 0 when every script ran, 2 when a script cannot be parsed
(nothing runs then), 1 when a schedule could not finish -- or when there is
no usable server (unreachable, or too old to report blocked sessions), or,
with ``--check``, when a note disagrees with what happened or cannot be read.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import psycopg2

from acid_lab.commands import prologue
from acid_lab.commands.prologue import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CommandError
from acid_lab.engine.scenario import DEFAULT_TIMEOUT, ScenarioError
from acid_lab.engine.script import ScriptError, load_scripts
from acid_lab.engine.script_runner import ScriptRun, run_script, tally


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Fill ``parser`` (e.g. the ``run`` subparser of ``python -m acid_lab``)."""
    parser.add_argument("scripts", nargs="+", metavar="FILE.sql|PAGE.md",
                        help="annotated SQL scripts (statements tagged -- T1, -- T2, ..., "
                             "-- either) or Hermitage pages")
    parser.add_argument("--dsn", help="run on this PostgreSQL (libpq DSN or URI); "
                                      "default: a temporary server")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of the transcripts")
    parser.add_argument("--check", action="store_true",
                        help="read each note after a tag as an expectation and say whether "
                             "what happened agrees; exit 1 on a disagreement")
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m acid_lab run``."""
    return add_arguments(argparse.ArgumentParser(
        prog="python -m acid_lab run",
        description="Run annotated SQL scripts (Hermitage notation) deterministically, "
                    "one session per tag, and show what each statement did.",
    ))


def run_command(args: Sequence[str] | argparse.Namespace, *,
                out: TextIO | None = None, err: TextIO | None = None,
                timeout: float = DEFAULT_TIMEOUT) -> int:
    """The ``run`` subcommand: ``args`` is its argv (without "run") or parsed arguments.

    ``timeout`` bounds every wait of the schedules, in seconds.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    return prologue.run(lambda parsed: _run(parsed, out, err, timeout), build_parser(), args,
                        err)


def _run(args: argparse.Namespace, out: TextIO, err: TextIO, timeout: float) -> int:
    try:
        scripts = [script for path in args.scripts for script in load_scripts(path)]
    except ScriptError as error:
        raise CommandError(str(error), EXIT_USAGE) from None
    # the DSN's own database: each script makes a schema of its own there
    with prologue.target(args.dsn, own_database=False) as target:
        dsn = target.info.dsn()
        try:
            runs = [run_script(script, dsn, prologue.connect(target.info), timeout=timeout)
                    for script in scripts]
        except ScenarioError as error:
            raise CommandError(str(error)) from None
        except psycopg2.Error as error:  # e.g. no right to create the script's schema
            raise CommandError(prologue.one_line(error)) from None
    check = getattr(args, "check", False)
    if check:
        for run in runs:
            run.check()
    # Piped into `head`, say: the reader has all it wanted.
    with contextlib.suppress(BrokenPipeError):
        _print_runs(runs, target.version, as_json=args.json, check=check, out=out)
    for run in runs:
        if args.json:  # the JSON has no place for setup; do not let a failure pass unseen
            for result in run.setup:
                if result.status == "error":
                    print(f"warning: {run.script.name}: setup `{result.sql}` failed: "
                          f"{result.outcome()}", file=err)
        if run.stuck is not None:
            print(f"error: {run.script.name}: {run.stuck}", file=err)
            if args.json:  # the transcript is not in the JSON; keep it visible
                print(run.transcript, file=err)
    if any(run.stuck is not None for run in runs):
        return EXIT_FAILED
    if check and any(run.counts()["disagree"] or run.counts()["unreadable"] for run in runs):
        return EXIT_FAILED
    return EXIT_OK


def _total(runs: list[ScriptRun]) -> dict[str, int]:
    total = {"scripts": len(runs), "agree": 0, "disagree": 0, "unreadable": 0, "no_claim": 0}
    for run in runs:
        for key, value in run.counts().items():
            total[key] += value
    return total


def _print_runs(runs: list[ScriptRun], version: str, *, as_json: bool, out: TextIO,
                check: bool = False) -> None:
    if as_json:
        document: dict[str, Any] = {
            "server_version": version,
            "scripts": [run.as_json() for run in runs if run.stuck is None]}
        if check:
            document["check"] = _total(runs)
        json.dump(document, out, default=str)
        out.write("\n")
    else:
        for number, run in enumerate(runs):
            if number:
                out.write("\n")
            out.write(f"-- {run.script.name} (PostgreSQL {version})\n{run.transcript}\n")
            if check:
                out.write("\n".join(run.check_lines()) + "\n")
        if check:
            total = _total(runs)
            out.write(f"\n-- check, {total['scripts']} scripts: {tally(total)}\n")
    out.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m acid_lab.commands.run FILE.sql ...``."""
    return run_command(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
