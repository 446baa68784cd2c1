"""A database client in a process of its own, driven one statement at a time.

Run as ``python -m acid_lab.lessons.client`` (``acid_lab.lessons.faults.ClientProcess`` does
it for you). The first line on stdin is ``{"dsn": "..."}`` (on stdin, not argv,
so the password never shows in the process list). The program connects with
psycopg2 in autocommit mode, so the transaction control is in the statements
themselves (``begin``, ``commit``, ``rollback``), exactly as a script would
send it.

Protocol, one JSON object per line:

* stdout, once connected: ``{"event": "connected", "backend_pid": 1234}``
* stdin: ``{"sql": "update ..."}`` runs one statement; after it the program
  reports on stdout ``{"event": "done", "index": 2, "sql": ..., "status": "ok"
  | "error", "sqlstate": ..., "error": ..., "rows": [[...]] | null,
  "transaction": "idle" | "in transaction" | "failed" | "unknown"}``
* stdin ``{"quit": true}`` or end of input: close the connection, exit 0.

Being a real process, it can be SIGKILLed between two statements or in the
middle of one: the server then sees its connection vanish, as it would if a
web worker died.
"""

import json
import sys

import psycopg2
import psycopg2.extensions as ext

TRANSACTION = {
    ext.TRANSACTION_STATUS_IDLE: "idle",
    ext.TRANSACTION_STATUS_INTRANS: "in transaction",
    ext.TRANSACTION_STATUS_INERROR: "failed",
    ext.TRANSACTION_STATUS_ACTIVE: "active",
}


def report(message: dict) -> None:
    sys.stdout.write(json.dumps(message, default=str) + "\n")
    sys.stdout.flush()


def execute(conn, index: int, statement: str) -> dict:
    outcome = {"event": "done", "index": index, "sql": statement, "status": "ok",
               "sqlstate": None, "error": None, "rows": None}
    try:
        with conn.cursor() as cur:
            cur.execute(statement)
            if cur.description is not None:
                outcome["rows"] = [list(row) for row in cur.fetchall()]
    except psycopg2.Error as error:
        outcome.update(status="error", sqlstate=error.pgcode, error=str(error).strip())
    outcome["transaction"] = TRANSACTION.get(conn.info.transaction_status, "unknown")
    return outcome


def main() -> None:
    conn = psycopg2.connect(json.loads(sys.stdin.readline())["dsn"])
    conn.autocommit = True
    report({"event": "connected", "backend_pid": conn.info.backend_pid})
    try:
        for index, line in enumerate(iter(sys.stdin.readline, ""), start=1):
            command = json.loads(line)
            if command.get("quit"):
                break
            report(execute(conn, index, command["sql"]))
    finally:
        conn.close()


if __name__ == "__main__":
    main()
