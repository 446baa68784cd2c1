"""PostgreSQL servers for the lessons: found, started, crashed, cut off, replicated."""


class ServerError(RuntimeError):
    """The suite cannot get a PostgreSQL server; the message says why and how to fix it."""
