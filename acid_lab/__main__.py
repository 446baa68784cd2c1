"""``python -m acid_lab run FILE.sql ...`` and ``python -m acid_lab report``."""

import sys

USAGE = """usage: python -m acid_lab {run,report} ...

  run FILE.sql [FILE2.sql ...] [--dsn DSN] [--json]   run annotated scenario scripts
  report [--dsn DSN] [--json] [--out DIR]             the ACID report of a PostgreSQL
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "run":
        from acid_lab.cli import run_command

        return run_command(rest)
    if command == "report":
        from acid_lab.report.console import report_command

        return report_command(rest)
    print(f"unknown command {command!r}\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
