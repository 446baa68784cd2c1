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
"""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, render_template, request

from acid_lab.play import scenarios as catalog
from acid_lab.play.sessions import (
    MAX_SESSIONS,
    POLL_BOUND,
    Playground,
    PlaygroundError,
    free_sessions,
    make_setup,
)

MAX_REQUEST_BYTES = 64 * 1024  # a pasted script is small


def create_app(playground: Playground, *, warning: str | None = None) -> Flask:
    """The app over ``playground``; ``warning`` is shown on the page (e.g. an existing server)."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.json.sort_keys = False

    @app.errorhandler(PlaygroundError)
    def refused(error: PlaygroundError):
        return jsonify(error=error.message), error.status

    @app.get("/")
    def index():
        return render_template("play.html", scenarios=catalog.scenarios(), levels=catalog.LEVELS,
                               sessions=free_sessions()[:2], max_sessions=MAX_SESSIONS,
                               warning=warning)

    @app.get("/api/scenarios")
    def scenario_list():
        return jsonify(levels=list(catalog.LEVELS), scenarios=[
            {"code": s.code, "name": s.name, "legend": s.legend,
             "steps": [{"session": session, "sql": sql} for session, sql in s.steps]}
            for s in catalog.scenarios()])

    @app.post("/api/pages")
    def open_page():
        body = _body()
        part = body.get("part", 0)
        if not isinstance(part, int):
            raise PlaygroundError(400, "part is the number of a page's script, from 0")
        setup = make_setup(str(body.get("mode", "")), code=body.get("code"),
                           level=body.get("level") or None, text=body.get("text"), part=part)
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
            page.run(str(body.get("session", "")), str(body.get("sql", "")))
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
            page.cancel(str(body.get("session", "")))
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


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise PlaygroundError(400, "send a JSON object")
    return body
