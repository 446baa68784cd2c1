"""What every command does the same way: its arguments, its errors, its exit status, and
the server it works on.

An error is ONE line on stderr, ``error: ...`` (whitespace collapsed, bounded; what the
user gave is quoted at most 200 characters by :func:`acid_lab.input_files.excerpt`).
Exit status: 0 done, 1 failed (no usable server, a schedule stuck, a disagreement...),
2 bad usage or an input that cannot be read; ``report`` adds 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

import psycopg
import psycopg2

from acid_lab.engine.postgres import POSTGRES
from acid_lab.engine.scenario import ScenarioError
from acid_lab.input_files import InputError, excerpt
from acid_lab.servers import ServerError
from acid_lab.servers.connections import CONNECT_TIMEOUT
from acid_lab.servers.queries import server_version
from acid_lab.servers.run import open_run
from acid_lab.servers.target import Target, Unreachable, open_target

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 130  # after Ctrl-C, as a shell reports SIGINT
LINE_LIMIT = 500        # characters of one error line (a server's message may be long)


class CommandError(Exception):
    """The command stops: ``line`` is what to print after "error: ", ``status`` the exit
    status (a ``line`` of None prints nothing: argparse has spoken already)."""

    def __init__(self, line: str | None, status: int = EXIT_FAILED):
        super().__init__(line)
        self.line, self.status = line, status


def one_line(error: BaseException | str) -> str:
    """An error's text on one printable line, whitespace collapsed, at most LINE_LIMIT."""
    return excerpt(" ".join(str(error).split()), LINE_LIMIT)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``argv`` parsed; --help raises CommandError(None, 0), bad usage CommandError(None, 2)
    (argparse has printed the help, or the usage and its one error line)."""
    try:
        return parser.parse_args(list(argv))
    except SystemExit as exit_:
        raise CommandError(None, EXIT_OK if exit_.code == 0 else EXIT_USAGE) from None


def run(body: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
        argv: Sequence[str] | argparse.Namespace, err: TextIO | None = None) -> int:
    """Parse ``argv`` (unless given parsed) and run ``body``; its CommandError, or an input
    it cannot read, is printed once as one line. Returns the exit status."""
    err = err or sys.stderr
    try:
        args = argv if isinstance(argv, argparse.Namespace) else parse(parser, argv)
        return body(args)
    except CommandError as error:
        if error.line is not None:
            print(f"error: {error.line}", file=err)
        return error.status
    except InputError as error:  # already one line, the file's name quoted
        print(f"error: {error}", file=err)
        return EXIT_USAGE


@contextlib.contextmanager
def target(dsn: str | None, settings: dict[str, str] | None = None, *,
           own_database: bool = True) -> Iterator[Target]:
    """The server a command works on (servers.target.open_target): the one named by ``dsn``
    (every libpq parameter kept), else a temporary one with ``settings``; in a database of
    the command's own unless ``own_database`` is False. It must tell blocked sessions apart
    (PostgreSQL 10+). Every way of not getting one is a CommandError (exit 1); errors of
    the command's own work, inside the ``with``, pass through untouched."""
    with contextlib.ExitStack() as stack:
        try:
            if not dsn:
                open_run()  # the run's programs, account and templates: made once, here
            opened = stack.enter_context(open_target(dsn, settings, own_database=own_database))
            opened.version = _usable_version(opened)
        except Unreachable as error:
            raise CommandError(f"cannot connect to {error.where}: {error.reason}") from None
        except ServerError as error:
            if dsn:
                raise CommandError(one_line(error)) from None
            raise CommandError(f"cannot start a temporary server: {one_line(error)}") from None
        except (psycopg.Error, psycopg2.Error) as error:  # e.g. no right to create a database
            raise CommandError(f"cannot work on the server: {one_line(error)}") from None
        yield opened


def connect(info) -> psycopg2.extensions.connection:
    """An autocommit connection to ``info`` (a Target's), the one login bound."""
    conn = psycopg2.connect(**info.params(connect_timeout=CONNECT_TIMEOUT))
    conn.autocommit = True
    return conn


def _usable_version(opened: Target) -> str:
    """The server's version ("15.18") as it reports it, once it is known to report
    blocked sessions."""
    conn = connect(opened.info)
    try:
        try:
            POSTGRES.require_blocked_check(conn)
        except ScenarioError as error:
            raise CommandError(one_line(error)) from None
        return server_version(conn)
    finally:
        conn.close()
