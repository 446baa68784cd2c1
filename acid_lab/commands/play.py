"""``python -m acid_lab play [--dsn DSN] [--port N]``: the playground on 127.0.0.1.

Starts a temporary PostgreSQL (or uses the server named by ``--dsn``, in a
database of its own that is dropped at the end), serves the Flask app on
127.0.0.1 only and prints its URL, ``http://127.0.0.1:PORT/?key=SECRET``
(the secret is made at start: without it nothing is served). Ctrl-C (or SIGTERM) closes every page's
sessions, stops the web server, drops the database and stops the temporary
server. After a SIGKILL the temporary server's guard stops it and removes its
folder; the sessions end with their connections.

Exit status: 0 after Ctrl-C, 1 when there is no server to play on or the port
is taken, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator, Sequence

import psycopg2

from acid_lab.commands import prologue
from acid_lab.commands.prologue import EXIT_OK, CommandError
from acid_lab.engine.scenario import ScenarioError
from acid_lab.play.app import HOST
from acid_lab.play.http import serve
from acid_lab.play.sessions import Playground
from acid_lab.servers import ServerError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m acid_lab play",
        description="Step through transaction schedules in the browser, on a live PostgreSQL.")
    parser.add_argument("--dsn", help="play on this PostgreSQL (libpq DSN or URI), in a "
                                      "database of its own; default: a temporary server")
    parser.add_argument("--port", type=int, default=0,
                        help="port on 127.0.0.1 (default: any free port)")
    return parser


def play_command(argv: Sequence[str]) -> int:
    return prologue.run(_play, build_parser(), argv)


def _play(args: argparse.Namespace) -> int:
    try:
        with _stopped_by_signals(), prologue.target(args.dsn) as target, \
                Playground(target.info) as playground:
            warning = None
            if args.dsn:
                warning = dsn_warning(playground, target.description)
                print(f"warning: {warning}", file=sys.stderr)
            serve(playground, args.port, target.description, warning)
    except KeyboardInterrupt:
        pass
    except (ServerError, ScenarioError, psycopg2.Error) as error:
        raise CommandError(prologue.one_line(error)) from None
    except OSError as error:  # e.g. the port is taken
        raise CommandError(f"cannot serve on {HOST}:{args.port}: {error.strerror or error}") \
            from None
    print("playground stopped: sessions closed, server stopped", file=sys.stderr)
    return EXIT_OK


def dsn_warning(playground: Playground, where: str) -> str:
    """What the command and the page say about playing on someone's own server."""
    info = playground.info
    said = (f"This page runs the SQL typed into it on {where}, in a database of its own "
            f"({info.dbname}, dropped when the playground stops). ")
    if playground.sandboxed:
        return said + (f"Each page's SQL runs as a role of that page's own, made by "
                       f"{info.user} and dropped with the page.")
    return said + (f"{info.user} may not create roles, so the SQL runs as {info.user}, with "
                   "that login's full rights: this is not a sandbox. Use a dedicated login "
                   "that is not a superuser.")


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """Ctrl-C and SIGTERM both clean up (even when SIGINT came in ignored, as for a
    command a shell started in the background)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {number: signal.signal(number, interrupt)
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
