"""The ACID report, shown: ``python -m acid_lab report [--dsn DSN] [--json] [--out DIR]``.

Prints a coloured matrix on a terminal (plain text otherwise), or with ``--json``
one JSON object; ``--out DIR`` also writes Markdown and HTML (:mod:`acid_lab.report.files`).
What is observed, and how, is :mod:`acid_lab.report.build`'s.

Exit status: 0 when the report was made (whatever it shows), 1 when it could
not be (no usable server, a scenario that could not finish), 2 for bad usage,
130 after Ctrl-C (once everything it started is stopped).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from rich.console import Console

from acid_lab.commands import prologue
from acid_lab.commands.prologue import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, CommandError
from acid_lab.report.build import WORKERS, Report, ReportError, make_report
from acid_lab.report.files import write_files
from acid_lab.report.text import plain_text, print_rich
from acid_lab.servers.target import DSN_ENVIRONMENT

# --------------------------------------------------------------------------- the command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m acid_lab report",
        description="Run the isolation matrix and the atomicity, consistency and durability "
                    "demonstrations on a PostgreSQL, live, and show what it guarantees.")
    parser.add_argument("--dsn", default=os.environ.get(DSN_ENVIRONMENT),
                        help="an existing PostgreSQL (libpq DSN or URI; default: $ACID_LAB_DSN, "
                             "else a temporary server). The report works in a database of its "
                             "own there and drops it; durability is skipped.")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--out", metavar="DIR", type=Path,
                        help="also write acid-report.md and acid-report.html (timelines) here")
    parser.add_argument("--workers", type=int, default=WORKERS,
                        help=f"scenarios run at once, each in its own place (default {WORKERS})")
    return parser


def report_command(argv: Sequence[str], *, out: TextIO | None = None,
                   err: TextIO | None = None) -> int:
    """``python -m acid_lab report ...``; ``argv`` without the word "report"."""
    out = out or sys.stdout
    err = err or sys.stderr
    return prologue.run(lambda args: _report(args, out, err), build_parser(), argv, err)


def _report(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if args.workers < 1:
        raise CommandError("--workers must be at least 1", EXIT_USAGE)
    try:
        report = make_report(args.dsn, workers=args.workers, progress_console=Console(file=err),
                             server=lambda: prologue.target(args.dsn))
    except ReportError as error:
        raise CommandError(prologue.one_line(error)) from None
    except KeyboardInterrupt:  # everything started has been stopped on the way out
        print("interrupted", file=err)
        return EXIT_INTERRUPTED
    _emit(report, args.json, out)
    if args.out is not None:
        try:
            written = write_files(report, args.out)
        except OSError as error:
            raise CommandError(f"cannot write the report to {args.out}: "
                               f"{prologue.one_line(error)}") from None
        for path in written:
            print(f"wrote {path}", file=err)
    return EXIT_OK


def _emit(report: Report, as_json: bool, out: TextIO) -> None:
    if as_json:
        json.dump(report.as_json(), out, ensure_ascii=False)
        out.write("\n")
        return
    console = Console(file=out)
    if console.is_terminal:
        print_rich(report, console)
    else:
        out.write(plain_text(report))


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point: ``python -m acid_lab.commands.report ...``."""
    return report_command(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())

