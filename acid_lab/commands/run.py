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
import dataclasses
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

import psycopg2
import psycopg2.extensions

from acid_lab.engine.notes import Note, Verdict, check_steps, parse_note
from acid_lab.engine.scenario import (
    DEFAULT_TIMEOUT,
    RAW,
    ScenarioError,
    ScenarioRunner,
    ScheduleStuck,
    StepResult,
    require_blocked_check,
)
from acid_lab.engine.script import Script, ScriptError, load_scripts
from acid_lab.servers.places import PlaceKeeper

EXIT_OK, EXIT_STUCK, EXIT_UNPARSABLE = 0, 1, 2
CONNECT_TIMEOUT = 10


class UnusableServer(Exception):
    """No server to run scripts on; the message is the one line to print."""


@dataclasses.dataclass
class ScriptRun:
    """One script's outcome: its setup results, its steps, and why it stopped early."""

    script: Script
    setup: list[StepResult]
    steps: list[StepResult]
    transcript: str
    stuck: str | None = None  # the error, when the schedule could not finish
    lines: list[str] = dataclasses.field(default_factory=list)  # the steps' transcript
    verdicts: list[Verdict] | None = None  # with --check: one per step that ran

    def check(self) -> None:
        """Compare every step's note with what the step did."""
        notes = _notes(self.script)
        ran = len(self.steps)
        self.verdicts = check_steps(self.steps, notes[:ran], self.lines)
        self.verdicts += [Verdict(False, notes[i].describe(), "never ran (the schedule stopped)")
                          if notes[i].makes_claims else Verdict(None)
                          for i in range(ran, len(notes))]

    def counts(self) -> dict[str, int]:
        verdicts = self.verdicts or []
        notes = _notes(self.script)
        return {"agree": sum(v.agrees is True for v in verdicts),
                "disagree": sum(v.agrees is False and n.unreadable is None
                                for v, n in zip(verdicts, notes, strict=False)),
                "unreadable": sum(n.unreadable is not None for n in notes),
                "no_claim": sum(v.agrees is None for v in verdicts)}

    def as_json(self) -> dict[str, Any]:
        steps = [step.as_json() for step in self.steps]
        if self.verdicts is not None:
            for step, note, verdict in zip(steps, _notes(self.script), self.verdicts,
                                           strict=False):
                step["expected"] = note.as_json()
                step["agrees"] = verdict.agrees
        return {"script": self.script.name, "steps": steps}

    def check_lines(self) -> list[str]:
        """The steps with their marks, and the script's line."""
        lines = ["-- check: each note read as an expectation"]
        for statement, verdict in zip(self.script.steps, self.verdicts or [], strict=False):
            note = f" {statement.note}" if statement.note else ""
            lines.append(f"{statement.sql}; -- {statement.session}{note}  => {verdict.mark()}")
        counts = self.counts()
        lines.append(f"-- {self.script.name}: {_tally(counts)}")
        return lines


def _notes(script: Script) -> list[Note]:
    """Each step's note as read (empty for all but the last statement of a line)."""
    return [parse_note(statement.note if statement.owns_note else "")
            for statement in script.steps]


def _tally(counts: dict[str, int]) -> str:
    return (f"{counts['agree']} agree, {counts['disagree']} DISAGREE, "
            f"{counts['unreadable']} unreadable, {counts['no_claim']} no claim")


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
            runs = [run_script(script, dsn, timeout=timeout) for script in scripts]
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
            out.write(f"\n-- check, {total['scripts']} scripts: {_tally(total)}\n")
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


def _with_search_path(dsn: str, schema: str) -> str:
    """``dsn`` plus libpq options (after its own) that put ``schema`` first on the
    search_path."""
    from acid_lab.servers.target import parse_dsn

    return parse_dsn(dsn).dsn(options=f"-c search_path={schema},public")


def run_script(script: Script, dsn: str, *, timeout: float = DEFAULT_TIMEOUT) -> ScriptRun:
    """Run one script in a fresh schema of its own and drop the schema afterwards."""
    keeper = PlaceKeeper(_admin_connection(dsn))
    try:
        schema = keeper.create(setup_sql="")  # the script's own setup fills it
        try:
            place = _with_search_path(dsn, schema)
            setup = _run_setup(script, place)
            return _run_steps(script, place, setup, timeout)
        finally:
            keeper.drop(schema)
    finally:
        keeper.close()


def _run_setup(script: Script, place: str) -> list[StepResult]:
    """The untagged statements, in autocommit, before any session connects."""
    results = []
    if not script.setup:
        return results
    conn = psycopg2.connect(place, connect_timeout=CONNECT_TIMEOUT)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            for number, statement in enumerate(script.setup, start=1):
                result = StepResult(number, "setup", statement.sql)
                try:
                    cursor.execute(statement.sql)
                    result.status, result.command = "ok", cursor.statusmessage
                    if cursor.description is not None:
                        result.rows = [list(row) for row in cursor.fetchall()]
                except psycopg2.Error as error:
                    result.status, result.sqlstate = "error", error.pgcode
                    diag = error.diag.message_primary if error.diag else None
                    result.error = diag or " ".join(str(error).split())
                results.append(result)
    finally:
        conn.close()
    return results


def _run_steps(script: Script, place: str, setup: list[StepResult],
               timeout: float) -> ScriptRun:
    setup_lines = [
        f"{result.sql}; -- setup{', ' if result.status == 'error' else '. '}{result.outcome()}"
        for result in setup
    ]
    with ScenarioRunner(place, timeout=timeout) as runner:
        try:
            result = runner.run(RAW, script.schedule(), check=False)
        except ScheduleStuck as stuck:
            return ScriptRun(script, setup, stuck.result.steps,
                             "\n".join(setup_lines + stuck.result.lines),
                             stuck=stuck.message, lines=list(stuck.result.lines))
    return ScriptRun(script, setup, result.steps, "\n".join(setup_lines + result.lines),
                     lines=list(result.lines))


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m acid_lab.cli FILE.sql ...``."""
    return run_command(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
