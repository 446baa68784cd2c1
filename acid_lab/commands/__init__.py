"""The commands of ``python -m acid_lab``: one module each (all under one prologue,
:mod:`acid_lab.commands.prologue`), one dispatch here."""

import importlib
import sys

USAGE = """usage: python -m acid_lab {run,spec,check,report,play} ...

  run FILE.sql|PAGE.md ... [--dsn DSN] [--json] [--check]    run Hermitage scripts and pages
  spec FILE.spec ... [--dsn DSN] [--expected FILE.out|DIR]    run isolation-tester specs
  check HISTORY [--model MODEL] [--json]                      find anomalies in a history
  report [--dsn DSN] [--json] [--out DIR]                     the ACID report of a PostgreSQL
  play [--dsn DSN] [--port N]                                 the playground in a browser
"""

# command -> (module, function taking the rest of argv and returning the exit status)
COMMANDS = {
    "run": ("acid_lab.commands.run", "run_command"),
    "spec": ("acid_lab.commands.spec", "spec_command"),
    "check": ("acid_lab.commands.check", "check_command"),
    "report": ("acid_lab.commands.report", "report_command"),
    "play": ("acid_lab.commands.play", "play_command"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"unknown command {command!r}\n{USAGE}", end="", file=sys.stderr)
        return 2
    module, function = COMMANDS[command]
    return getattr(importlib.import_module(module), function)(rest)  # each under prologue.run

