"""``python -m acid_lab COMMAND ...``: one word, one module that does the work."""

import importlib
import sys

from acid_lab.input_files import InputError

USAGE = """usage: python -m acid_lab {run,spec,check,report,play} ...

  run FILE.sql|PAGE.md ... [--dsn DSN] [--json] [--check]    run Hermitage scripts and pages
  spec FILE.spec ... [--dsn DSN] [--expected FILE.out|DIR]    run isolation-tester specs
  check HISTORY [--model MODEL] [--json]                      find anomalies in a history
  report [--dsn DSN] [--json] [--out DIR]                     the ACID report of a PostgreSQL
  play [--dsn DSN] [--port N]                                 the playground in a browser
"""

# command -> (module, function taking the rest of argv and returning the exit status)
COMMANDS = {
    "run": ("acid_lab.cli", "run_command"),
    "spec": ("acid_lab.engine.spec_command", "spec_command"),
    "check": ("acid_lab.checkers.check_command", "check_command"),
    "report": ("acid_lab.report.console", "report_command"),
    "play": ("acid_lab.play.command", "play_command"),
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
    try:
        return getattr(importlib.import_module(module), function)(rest)
    except InputError as error:  # each command says it better; this is the net below them
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
