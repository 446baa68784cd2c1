"""Tiny verbs for a test body: run a statement, read one value, read the rows."""


def execute(conn, query: str, params=None) -> None:
    """Run one statement (no result wanted)."""
    with conn.cursor() as cur:
        cur.execute(query, params)


def one(conn, query: str, params=None):
    """The first column of the first row; None when there is no row (or no result set)."""
    with conn.cursor() as cur:
        cur.execute(query, params)
        row = cur.fetchone() if cur.description else None
        return None if row is None else row[0]


def rows(conn, query: str, params=None) -> list[tuple]:
    """Every row, as tuples."""
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def server_version(conn) -> str:
    """'15.18' for a psycopg2 connection."""
    with conn.cursor() as cur:
        cur.execute("SHOW server_version")
        return cur.fetchone()[0].split()[0]
