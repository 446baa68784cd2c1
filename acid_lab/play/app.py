"""The playground's Flask app: one page, and a small JSON API its JavaScript calls with fetch().

Routes (every answer is the page's whole state as JSON, or ``{"error": ...}``)::

    GET  /                             the page
    GET  /api/scenarios                the catalog: code, name, legend, steps; the levels
    POST /api/pages                    open a page: {"mode": "scenario", "code", "level"}
                                       | {"mode": "script", "text", "part"} (part: which
                                       script of a pasted page) | {"mode": "free", "level"}
    POST /api/pages/<token>/next       the scenario's next step
    POST /api/pages/<token>/run        free mode: {"session": "T1", "sql": "..."}
    POST /api/pages/<token>/poll       what finished meanwhile (waits at most POLL_BOUND)
    POST /api/pages/<token>/cancel     {"session": "T2"}: cancel its statement
    POST /api/pages/<token>/reset      fresh sessions and schema (a new token)
    POST /api/pages/<token>/close      close the sessions (the page is leaving)

The token is the page's key to its held sessions: random, known only to the page.

Access, as Jupyter does it: a secret made at start; the command prints
``http://127.0.0.1:PORT/?key=SECRET``; opening it sets an HttpOnly,
SameSite=Strict cookie (and redirects to ``/``, so the key leaves the address
bar). Every request but the static files needs that cookie (or the ``key``
parameter): 401 otherwise. The ``Host`` header must name this playground
(127.0.0.1, localhost or [::1], with its port: a DNS-rebound page sends its own
name) and an ``Origin``, when sent, must be its own: 403 otherwise. No frames.
Each refusal, and every error, is one JSON line ``{"error": ...}``.
"""

from __future__ import annotations

import hmac
import json
import secrets
from typing import Any

from flask import Flask, jsonify, redirect, render_template, request
from werkzeug.exceptions import HTTPException

from acid_lab.play import scenarios
from acid_lab.play import sessions as bounds
from acid_lab.play.sessions import (
    MAX_SESSIONS,
    POLL_BOUND,
    Playground,
    PlaygroundError,
    free_sessions,
    make_setup,
)

MAX_REQUEST_BYTES = 64 * 1024  # a pasted script is small
HOST = "127.0.0.1"  # never beyond this machine: the page runs any SQL typed into it
LOCAL_NAMES = ("127.0.0.1", "localhost", "[::1]")  # the Host names this playground answers
KEY = "key"                                          # the URL parameter carrying the secret
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the keyed URL never leaves in a Referer
}


def create_app(playground: Playground, *, warning: str | None = None,
               key: str | None = None, port: int | None = None) -> Flask:
    """The app over ``playground``; ``warning`` is shown on the page (e.g. an existing server).

    ``key`` is the secret (made here when not given); ``port`` the one it is served on
    (set ``app.config["PLAY_PORT"]`` once the server has bound it): until then every
    request is refused, since no Host header can match.
    """
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.config["PLAY_KEY"] = key or secrets.token_urlsafe(32)
    app.config["PLAY_PORT"] = port
    app.json.sort_keys = False

    @app.errorhandler(PlaygroundError)
    def refused(error: PlaygroundError):
        return jsonify(error=error.message), error.status

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        return jsonify(error=f"{error.code} {error.name}"), error.code

    @app.before_request
    def admit():
        port = app.config["PLAY_PORT"]
        host = request.headers.get("Host", "")
        if port is None or host not in {f"{name}:{port}" for name in LOCAL_NAMES}:
            raise PlaygroundError(403, f"refused: Host {host[:100]!r} is not this playground's "
                                       f"(use http://{HOST}:{port}/)")
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"http://{host}":
            raise PlaygroundError(403, f"refused: a request from {origin[:100]!r}, another "
                                       "site")
        if request.endpoint == "static":
            return None
        cookie = cookie_name(app)
        given = request.args.get(KEY) or request.cookies.get(cookie) or ""
        if not hmac.compare_digest(given.encode(), app.config["PLAY_KEY"].encode()):
            raise PlaygroundError(401, "refused: no key; open the URL the play command "
                                       "printed (http://127.0.0.1:PORT/?key=...)")
        if request.method == "GET" and request.path == "/" and KEY in request.args:
            response = redirect("/", code=303)  # the key leaves the address bar
            response.set_cookie(cookie, app.config["PLAY_KEY"], httponly=True,
                                samesite="Strict", path="/")
            return response
        return None

    @app.after_request
    def no_frames(response):
        response.headers.update(SECURITY_HEADERS)
        return response

    @app.get("/")
    def index():
        return render_template("play.html", scenarios=scenarios.scenarios(),
                               levels=scenarios.LEVELS,
                               sessions=free_sessions()[:2], max_sessions=MAX_SESSIONS,
                               warning=warning, bounds=bounds_text(playground))

    @app.get("/api/scenarios")
    def scenario_list():
        return jsonify(levels=list(scenarios.LEVELS), scenarios=[
            {"code": s.code, "name": s.name, "legend": s.legend,
             "steps": [{"session": session, "sql": sql} for session, sql in s.steps]}
            for s in scenarios.scenarios()])

    @app.post("/api/pages")
    def open_page():
        body = _body()
        part = body.get("part", 0)
        if not isinstance(part, int) or isinstance(part, bool) or not 0 <= part < 1000:
            raise PlaygroundError(400, "part is the number of a page's script, from 0")
        setup = make_setup(_text(body, "mode"), code=_text(body, "code"),
                           level=_text(body, "level") or None, text=_text(body, "text"),
                           part=part)
        page = playground.open_page(setup)
        with playground.holding(page.token) as held:
            return jsonify(held.as_json()), 201

    @app.post("/api/pages/<token>/next")
    def next_step(token: str):
        with playground.holding(token) as page:
            page.next()
            return jsonify(page.as_json())

    @app.post("/api/pages/<token>/run")
    def run(token: str):
        body = _body()
        with playground.holding(token) as page:
            page.run(_text(body, "session"), _text(body, "sql"))
            return jsonify(page.as_json())

    @app.post("/api/pages/<token>/poll")
    def poll(token: str):
        # Waits without the page's lock, so that a click is never held up by a poll.
        playground.page(token).wait_for_change(POLL_BOUND)
        with playground.holding(token) as page:
            page.poll()
            return jsonify(page.as_json())

    @app.post("/api/pages/<token>/cancel")
    def cancel(token: str):
        body = _body()
        with playground.holding(token) as page:
            page.cancel(_text(body, "session"))
            return jsonify(page.as_json())

    @app.post("/api/pages/<token>/reset")
    def reset(token: str):
        page = playground.reset_page(token)
        with playground.holding(page.token) as held:
            return jsonify(held.as_json())

    @app.post("/api/pages/<token>/close")
    def close(token: str):
        playground.close_page(token)
        return jsonify(closed=True)

    return app


def entry_url(app: Flask) -> str:
    """The URL a user opens: ``http://127.0.0.1:PORT/?key=SECRET``."""
    return f"http://{HOST}:{app.config['PLAY_PORT']}/?{KEY}={app.config['PLAY_KEY']}"


def keyed_client(app: Flask, port: int = 8765):
    """Flask's test client as a browser that opened the printed URL (tests): it sends this
    playground's Host and holds the key's cookie. ``port`` stands for the one served on."""
    from flask.testing import FlaskClient

    base = f"http://{HOST}:{port}"

    class LocalClient(FlaskClient):
        def open(self, *args, **kwargs):
            kwargs.setdefault("base_url", base)
            return super().open(*args, **kwargs)

    app.config["PLAY_PORT"] = port
    app.test_client_class = LocalClient
    client = app.test_client()
    opened = client.get(f"/?{KEY}={app.config['PLAY_KEY']}")
    if opened.status_code != 303:
        raise RuntimeError(f"the keyed URL was refused: {opened.get_data(as_text=True)}")
    return client


def cookie_name(app: Flask) -> str:
    # Cookies ignore ports: two playgrounds on one machine must not overwrite each other's.
    return f"acid_lab_play_{app.config['PLAY_PORT']}"


def bounds_text(playground: Playground) -> str:
    """The bounds a page lives within, as the page states them."""
    return (f"A statement ends after {playground.statement_timeout:g} s (a wait for a lock "
            f"included), a transaction left idle after "
            f"{bounds.IDLE_IN_TRANSACTION_TIMEOUT / 60:g} minutes; a result keeps "
            f"{bounds.MAX_RESULT_ROWS} rows, {bounds.MAX_CELL_CHARS} characters a value and "
            f"{bounds.MAX_RESULT_BYTES // 1024} KB in all; the page keeps its last "
            f"{bounds.MAX_HISTORY} statements.")


def _body() -> dict[str, Any]:
    """The request's JSON object (bounded by MAX_CONTENT_LENGTH); 400 for anything else."""
    try:
        body = json.loads(request.get_data(cache=False) or b"{}")
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep
        raise PlaygroundError(400, "send a JSON object") from None
    if not isinstance(body, dict):
        raise PlaygroundError(400, "send a JSON object")
    return body


def _text(body: dict[str, Any], name: str) -> str:
    """A string field of the body ("" when absent); 400 for any other type."""
    value = body.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PlaygroundError(400, f"{name} must be a string")
    return value
