"""What a step of a schedule must do: succeeds, commits, rolls_back, sees(...),
aborts(...), blocks(...), anything; and how rows are spelled in the messages."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.errorcodes
import psycopg2.errors

if TYPE_CHECKING:
    from acid_lab.engine.sessions import StepResult


def format_value(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return repr(value)
    return str(value)


def format_rows(rows: list[list[Any]]) -> str:
    if not rows:
        return "nothing"
    if len(rows) == 1 and len(rows[0]) == 1:
        return format_value(rows[0][0])
    return ", ".join(
        "(" + ", ".join(format_value(v) for v in row) + ")" for row in rows
    )



# -- expectations -------------------------------------------------------------

class Expectation:
    """What a step must do. Subclasses say what outcome they accept."""

    blocked = False  # whether the step must have waited for another session

    def describe(self) -> str:
        raise NotImplementedError

    def outcome_mismatch(self, result: StepResult) -> str | None:
        """Why the finished step's outcome does not match, or None when it does."""
        raise NotImplementedError

    def mismatch(self, result: StepResult) -> str | None:
        """Why the step does not meet this expectation, or None when it does."""
        if result.blocked and not self.blocked:
            return "blocked, but the step was expected to run without waiting"
        if self.blocked and not result.blocked:
            return f"not blocked: {result.outcome()}"
        return self.outcome_mismatch(result)

    def __repr__(self) -> str:
        return self.describe()


class _Anything(Expectation):
    def describe(self) -> str:
        return "anything"

    def mismatch(self, result: StepResult) -> str | None:
        return None

    def outcome_mismatch(self, result: StepResult) -> str | None:
        return None


def _is_commit(sql: str) -> bool:
    """``commit`` / ``end`` (with optional ``work``/``transaction``), not ``commit prepared``."""
    words = sql.strip().rstrip(";").lower().split()
    return bool(words) and words[0] in ("commit", "end") and "prepared" not in words


class _Succeeds(Expectation):
    def describe(self) -> str:
        return "succeeds"

    def outcome_mismatch(self, result: StepResult) -> str | None:
        if result.status != "ok":
            return result.outcome()
        if _is_commit(result.sql) and not result.committed:
            # A failed transaction's COMMIT answers ROLLBACK without an error: never a pass.
            return f"{result.outcome()} (say `commits` or `rolls_back` on a COMMIT step)"
        return None


class _Ends(Expectation):
    """The statement ended its transaction with this command tag: COMMIT or ROLLBACK."""

    def __init__(self, tag: str, words: str):
        self.tag = tag
        self.words = words

    def describe(self) -> str:
        return self.words

    def outcome_mismatch(self, result: StepResult) -> str | None:
        if result.status != "ok" or (result.command or "").upper() != self.tag:
            return result.outcome()
        return None


class _Sees(Expectation):
    def __init__(self, rows: Iterable[Sequence[Any]]):
        self.rows = [list(row) for row in rows]

    def describe(self) -> str:
        return "sees " + format_rows(self.rows)

    def outcome_mismatch(self, result: StepResult) -> str | None:
        if result.status != "ok":
            return result.outcome()
        if result.rows is None:
            return f"no result set ({result.command})"
        if result.rows != self.rows:
            return result.outcome()
        return None


class _Aborts(Expectation):
    def __init__(self, error: str | type | None, message: str | None = None):
        self.sqlstate, self.error_class = _resolve_error(error)
        self.message = message

    def describe(self) -> str:
        if self.sqlstate is None and self.error_class is None:
            words = "aborts with an error"
        elif self.error_class is None:
            words = f"aborts with {self.sqlstate}"
        elif self.sqlstate is None:
            words = f"aborts with {self.error_class.__name__}"
        else:
            words = f"aborts with {self.sqlstate} ({self.error_class.__name__})"
        return words if self.message is None else f"{words}: {self.message}"

    def outcome_mismatch(self, result: StepResult) -> str | None:
        if result.status != "error":
            return result.outcome()
        if self.message is not None and result.error != self.message:
            return result.outcome()
        if self.sqlstate is None and self.error_class is None:
            return None
        observed = result.sqlstate or ""
        if self.sqlstate is not None:
            # A class-level code such as 40000 stands for its whole class.
            if self.sqlstate.endswith("000") and observed[:2] == self.sqlstate[:2]:
                return None
            if observed == self.sqlstate:
                return None
        if self.error_class is not None and observed:
            try:
                observed_class = psycopg2.errors.lookup(observed)
            except KeyError:
                observed_class = None
            if observed_class is not None and issubclass(observed_class, self.error_class):
                return None
        return result.outcome()


class _Blocks(Expectation):
    blocked = True

    def __init__(self, then: Expectation):
        if not isinstance(then, Expectation) or then.blocked:
            raise TypeError("blocks(then=...) takes an outcome such as succeeds, "
                            "commits, sees(...) or aborts(...)")
        self.then = then

    def describe(self) -> str:
        return f"blocks, then {self.then.describe()}"

    def outcome_mismatch(self, result: StepResult) -> str | None:
        problem = self.then.outcome_mismatch(result)
        return None if problem is None else f"blocked, then {problem}"


_CLASS_TO_SQLSTATE: dict[type, str] = {}


def _sqlstate_of(error_class: type) -> str | None:
    """The SQLSTATE psycopg2.errors maps to ``error_class``, if any."""
    if not _CLASS_TO_SQLSTATE:
        for name in dir(psycopg2.errorcodes):
            code = getattr(psycopg2.errorcodes, name)
            if name.isupper() and isinstance(code, str) and len(code) == 5:
                with contextlib.suppress(KeyError):
                    _CLASS_TO_SQLSTATE.setdefault(psycopg2.errors.lookup(code), code)
    return _CLASS_TO_SQLSTATE.get(error_class)


def _resolve_error(error: str | type | None) -> tuple[str | None, type | None]:
    if error is None:
        return None, None
    if isinstance(error, str):
        if len(error) != 5:
            raise ValueError(f"a SQLSTATE has five characters, not {error!r}")
        try:
            return error, psycopg2.errors.lookup(error)
        except KeyError:
            return error, None
    if isinstance(error, type) and issubclass(error, psycopg2.Error):
        return _sqlstate_of(error), error
    raise TypeError(f"aborts() takes a SQLSTATE or a psycopg2 error class, not {error!r}")


#: The step finishes without error and without waiting for another session.
succeeds: Expectation = _Succeeds()
#: No check at all (scripts use it: every outcome is an observation).
anything: Expectation = _Anything()
#: A ``commit`` that committed: the server answered COMMIT.
commits: Expectation = _Ends("COMMIT", "commits")
#: A ``commit`` (or ``rollback``) that ended the transaction without committing:
#: the server answered ROLLBACK, as it does, without an error, to the COMMIT of
#: a transaction that had failed.
rolls_back: Expectation = _Ends("ROLLBACK", "rolls back")


def sees(*rows: Any) -> Expectation:
    """The step returns exactly these rows, in this order.

    ``sees(10)`` is one row with the value 10; ``sees((1, 10), (2, 20))`` two
    rows of two columns; ``sees(10, 20)`` two rows of one column; ``sees()``
    no rows at all.
    """
    return _Sees(row if isinstance(row, (tuple, list)) else (row,) for row in rows)


def aborts(error: str | type | None = None, message: str | None = None) -> Expectation:
    """The step fails with this error: a SQLSTATE (``"40001"``) or a class
    (``psycopg2.errors.SerializationFailure``; a class-level one such as
    ``TransactionRollback`` accepts any error of its class). None: any error.

    ``message``, when given, must equal the server's primary message, e.g. to
    tell the two 40001s apart: ``CONCURRENT_UPDATE`` vs ``RW_DEPENDENCIES``."""
    return _Aborts(error, message)


#: The 40001 of a write to a row that a concurrent transaction changed since
#: the snapshot (repeatable read and serializable: first updater wins).
CONCURRENT_UPDATE = "could not serialize access due to concurrent update"
#: The 40001 of serializable's dependency tracking (SSI): a dangerous
#: structure of read/write anti-dependencies.
RW_DEPENDENCIES = "could not serialize access due to read/write dependencies among transactions"


def blocks(then: Expectation = succeeds) -> Expectation:
    """The step has to wait for another session, and when it finally finishes
    it meets ``then`` (by default: it succeeds)."""
    return _Blocks(then)
