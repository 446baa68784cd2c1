"""``python -m acid_lab check HISTORY [--model MODEL] [--json] [--convert OUT]``: find the
anomalies of a list-append history (EDN or JSON lines) and say whether the model allows them;
with ``--convert OUT.jsonl`` or ``OUT.edn``, also write the history in that format.

Exit status: 0 when the model allows everything found, 1 when it forbids something
found, 2 for bad usage or a history that cannot be read (or written).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TextIO

from acid_lab.checkers.histories import HistoryError, read_history, write_history
from acid_lab.checkers.history import DEFAULT_MODEL, MODELS, Verdict, check
from acid_lab.commands import prologue
from acid_lab.commands.prologue import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CommandError
from acid_lab.input_files import excerpt

CONVERT_SUFFIXES = (".jsonl", ".json", ".edn")
#: Anomalies of one kind explained in full in the text output; the rest are counted.
SHOWN_PER_KIND = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m acid_lab check",
        description="Find and explain the anomalies of a list-append history (Elle's format, "
                    "EDN or JSON lines) and judge them against a consistency model.")
    parser.add_argument("history", help="the history file (.edn, .json or .jsonl)")
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=list(MODELS),
                        help=f"the consistency model the history should obey "
                             f"(default {DEFAULT_MODEL}; PostgreSQL's repeatable read is "
                             "snapshot-isolation)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--convert", metavar="OUT",
                        help="also write the history to OUT: EDN when it ends in .edn, JSON "
                             "lines when in .jsonl or .json (an existing file is replaced)")
    return parser


def check_command(argv: Sequence[str], *, out: TextIO | None = None,
                  err: TextIO | None = None) -> int:
    """``python -m acid_lab check ...``; ``argv`` without the word "check"."""
    out = out or sys.stdout
    err = err or sys.stderr
    return prologue.run(lambda args: _check(args, out), build_parser(), argv, err)


def _check(args: argparse.Namespace, out: TextIO) -> int:
    if args.convert is not None and not args.convert.lower().endswith(CONVERT_SUFFIXES):
        raise CommandError(f"--convert {excerpt(args.convert)}: the name must end in .jsonl, "
                           ".json or .edn (the format to write)", EXIT_USAGE)
    try:
        operations = read_history(args.history)
        verdict = check(operations, args.model)
    except HistoryError as error:
        raise CommandError(f"{excerpt(args.history)}: {error}", EXIT_USAGE) from None
    if args.convert is not None:
        try:
            write_history(operations, args.convert)
        except OSError as error:
            raise CommandError(f"--convert {excerpt(args.convert)}: cannot write it "
                               f"({error.strerror or type(error).__name__})", EXIT_USAGE) \
                from None
    if args.json:
        json.dump({"history": args.history, **verdict.as_json()}, out)
        out.write("\n")
    else:
        out.write(text(verdict, args.history))
        if args.convert is not None:
            out.write(f"converted: {len(operations)} operations written to {args.convert}\n")
    return EXIT_OK if verdict.valid else EXIT_FAILED


def text(verdict: Verdict, name: str) -> str:
    """The verdict in words: counts, the judgement, then each anomaly explained."""
    lines = [f"{name}: {verdict.transactions} transactions ({verdict.committed} committed, "
             f"{verdict.failed} failed, {verdict.unknown} unknown), checked in "
             f"{verdict.seconds:.2f} s",
             f"model {verdict.model} forbids: {', '.join(sorted(MODELS[verdict.model]))}"]
    counts = verdict.counts()
    if counts:
        lines.append("found: " + ", ".join(f"{n} x {kind}" for kind, n in counts.items()))
    else:
        lines.append("found: no anomaly -- a serial order explains every committed "
                     "transaction")
    if verdict.valid:
        lines.append(f"VALID for {verdict.model}: it allows everything found")
    else:
        lines.append(f"NOT {verdict.model}: it forbids {', '.join(verdict.forbidden)}")
    for kind in counts:
        same = [anomaly for anomaly in verdict.anomalies if anomaly.kind == kind]
        lines.append("")
        lines.append(f"{kind} ({len(same)}):")
        for anomaly in same[:SHOWN_PER_KIND]:
            lines.append(f"  - {anomaly.explanation}")
        if len(same) > SHOWN_PER_KIND:
            lines.append(f"  ... and {len(same) - SHOWN_PER_KIND} more (--json lists all)")
    return "\n".join(lines) + "\n"
