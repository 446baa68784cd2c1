"""Serving the playground's app on 127.0.0.1: in the foreground for the command, from a
thread for the tests and the bench."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

from werkzeug.serving import make_server

from acid_lab.play.app import HOST, create_app, entry_url
from acid_lab.play.sessions import Playground


def serve(playground: Playground, port: int, where: str, warning: str | None) -> None:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    app = create_app(playground, warning=warning)
    server = make_server(HOST, port, app, threaded=True)
    app.config["PLAY_PORT"] = server.server_port
    try:
        print(f"ACID Lab playground on {where}\n"
              f"open {entry_url(app)}  (Ctrl-C stops it)", flush=True)
        server.serve_forever()
    finally:
        server.server_close()


@contextlib.contextmanager
def serving(app, port: int = 0) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 from a thread of this process; yields its URL (tests, bench),
    without the key: ``entry_url(app)`` is the one to open."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = make_server(HOST, port, app, threaded=True)
    app.config["PLAY_PORT"] = server.server_port
    thread = threading.Thread(target=server.serve_forever, name="play-http", daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
