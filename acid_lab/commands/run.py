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
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

import psycopg2
import psycopg2.extensions

from acid_lab.engine.scenario import (
    DEFAULT_TIMEOUT,
    ScenarioError,
    require_blocked_check,
)
from acid_lab.engine.script import ScriptError, load_scripts
from acid_lab.engine.script_runner import ScriptRun, run_script, tally
from acid_lab.servers.connections import CONNECT_TIMEOUT

EXIT_OK, EXIT_STUCK, EXIT_UNPARSABLE = 0, 1, 2


class UnusableServer(Exception):
    """No server to run scripts on; the message is the one line to print."""


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
    if not isinstance(args, argparse.Namespace):
        try:
            args = build_parser().parse_args(list(args))
        except SystemExit as exit_:  # argparse has said why (usage, one error line)
            return EXIT_OK if exit_.code == 0 else EXIT_UNPARSABLE
    try:
        scripts = [script for path in args.scripts for script in load_scripts(path)]
    except ScriptError as error:
        print(f"error: {error}", file=err)
        return EXIT_UNPARSABLE
    try:
        with server_dsn(args.dsn) as dsn:
            version = _check_server(dsn)
            runs = [run_script(script, dsn, _admin_connection(dsn), timeout=timeout)
                    for script in scripts]
    except (UnusableServer, ScenarioError) as error:
        print(f"error: {error}", file=err)
        return EXIT_STUCK
    except psycopg2.Error as error:  # e.g. no right to create the script's schema
        print(f"error: {' '.join(str(error).split())}", file=err)
        return EXIT_STUCK
    check = getattr(args, "check", False)
    if check:
        for run in runs:
            run.check()
    # Piped into `head`, say: the reader has all it wanted.
    with contextlib.suppress(BrokenPipeError):
        _print_runs(runs, version, as_json=args.json, check=check, out=out)
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
        return EXIT_STUCK
    if check and any(run.counts()["disagree"] or run.counts()["unreadable"] for run in runs):
        return EXIT_STUCK
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


@contextlib.contextmanager
def server_dsn(dsn: str | None, settings: dict | None = None) -> Iterator[str]:
    """The DSN to run on: the one given (read by the one --dsn parser, every parameter
    kept), or a temporary server's (with ``settings``)."""
    from acid_lab.servers.server import Cluster, ServerError
    from acid_lab.servers.target import parse_dsn

    if dsn:
        try:
            given = parse_dsn(dsn).dsn()
        except ServerError as error:
            raise UnusableServer(str(error)) from None
        yield given
        return
    try:
        with Cluster(settings=settings) as cluster:
            yield cluster.dsn
    except ServerError as error:
        raise UnusableServer(f"cannot start a temporary server: {error}") from None


def _describe(dsn: str) -> str:
    """Where a DSN points, without its password."""
    from acid_lab.servers.server import ServerError
    from acid_lab.servers.target import parse_dsn

    try:
        return parse_dsn(dsn).where()
    except ServerError:
        return "the server"


def _admin_connection(dsn: str) -> psycopg2.extensions.connection:
    try:
        conn = psycopg2.connect(dsn, connect_timeout=CONNECT_TIMEOUT)
    except psycopg2.ProgrammingError as error:
        raise UnusableServer(f"--dsn is not a valid connection string: {error}") from None
    except psycopg2.OperationalError as error:
        message = " ".join(str(error).split())
        raise UnusableServer(f"cannot connect to {_describe(dsn)}: {message}") from None
    conn.autocommit = True
    return conn


def _check_server(dsn: str) -> str:
    """The server's version ("15.18"), if it can run scripts at all."""
    from acid_lab.servers.server import server_version
    conn = _admin_connection(dsn)
    try:
        try:
            require_blocked_check(conn)
        except ScenarioError as error:
            raise UnusableServer(str(error)) from None
        return server_version(conn)
    finally:
        conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m acid_lab.commands.run FILE.sql ...``."""
    return run_command(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
