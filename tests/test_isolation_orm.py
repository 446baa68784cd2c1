"""Isolation through SQLAlchemy: the lost update the way an application meets it.

An ORM makes the lost update easy to write: load an object, change an
attribute in Python (``row.value += 1``), commit. Between the load and the
commit another request may have done the same, and at read committed --
PostgreSQL's default, and so SQLAlchemy's -- the second commit silently
overwrites the first.

The fixes, as an application writes them:

* a stricter level for the unit of work (``engine.execution_options(
  isolation_level="REPEATABLE READ")`` as the Session's bind): the second
  commit is refused with 40001 (``sqlalchemy.exc.OperationalError`` whose
  ``.orig`` is ``psycopg2.errors.SerializationFailure``) and the application
  retries the whole unit of work;
* lock what you are about to change: ``select(...).with_for_update()`` makes
  the second request wait until the first has committed, then read its value;
* let the database do the arithmetic: ``row.value = Row.value + 1`` sends
  ``UPDATE ... SET value = value + 1``, computed from the row as it is then.
"""

from concurrent.futures import ThreadPoolExecutor

import pytest
from psycopg2 import errors
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from acid_lab.engine.workloads import DEFAULT_TIMEOUT, blocked_or_done

pytestmark = pytest.mark.isolation

COMMITTED = "committed"
LOCK_TIMEOUT = "5s"


class Base(DeclarativeBase):
    pass


class Row(Base):
    """Hermitage's table test(id, value), mapped as an application maps a table."""

    __tablename__ = "test"
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int]


@pytest.fixture
def engine(engine):
    """The place's engine, with every lock wait of its sessions bounded (fail fast, never hang)."""
    @event.listens_for(engine, "connect")
    def bound_lock_waits(dbapi_connection, _record):
        autocommit, dbapi_connection.autocommit = dbapi_connection.autocommit, True
        with dbapi_connection.cursor() as cur:  # outside any transaction, so it stays set
            cur.execute(f"set lock_timeout = '{LOCK_TIMEOUT}'")
        dbapi_connection.autocommit = autocommit

    return engine


def session(engine, level="READ COMMITTED"):
    """A Session whose transactions run at ``level`` (SQLAlchemy spells levels in capitals)."""
    return Session(engine.execution_options(isolation_level=level))


def commit(orm_session):
    """Commit; return COMMITTED, or the psycopg2 error class the server answered with."""
    try:
        orm_session.commit()
    except OperationalError as error:
        orm_session.rollback()
        return type(error.orig)
    return COMMITTED


def value_of_row_1(engine):
    with session(engine) as fresh:
        return fresh.get(Row, 1).value


def backend_pid(orm_session):
    """The server process of the Session's connection (this starts its transaction)."""
    return orm_session.connection().connection.dbapi_connection.info.backend_pid


@pytest.mark.parametrize("level, bob_commit, row_1", [
    pytest.param("READ COMMITTED", COMMITTED, 11,
                 id="read committed: Bob's commit overwrites Alice's increment"),
    pytest.param("REPEATABLE READ", errors.SerializationFailure, 11,
                 id="repeatable read: Bob's commit refused with 40001"),
    pytest.param("SERIALIZABLE", errors.SerializationFailure, 11,
                 id="serializable: Bob's commit refused with 40001"),
])
def test_orm_lost_update_per_level(engine, level, bob_commit, row_1):
    """Lost update (P4) with the ORM: two Sessions each do ``row.value += 1``.

    Scenario: Alice and Bob both load row 1 (10); Alice adds 1 and commits;
    then Bob adds 1 to the 10 he loaded and commits.
    Outcome: at read committed Bob's commit succeeds and writes 11 over
    Alice's 11: two increments committed, one counted. From repeatable read
    up the server refuses Bob's UPDATE (the row changed after his snapshot):
    his commit raises OperationalError with SerializationFailure, and the
    application knows its increment did not happen.
    """
    with session(engine, level) as alice, session(engine, level) as bob:
        alice_row, bob_row = alice.get(Row, 1), bob.get(Row, 1)
        assert (alice_row.value, bob_row.value) == (10, 10), "both read the same value"

        alice_row.value += 1
        assert commit(alice) == COMMITTED, "Alice commits first, nobody in her way"
        bob_row.value += 1
        outcome = commit(bob)

    assert outcome == bob_commit, f"Bob's read-modify-write at {level}"
    assert value_of_row_1(engine) == row_1, f"row 1 after both increments at {level}"


def test_orm_retry_loop_at_serializable_keeps_both_increments(engine):
    """The application's side of serializable: retry the unit of work on 40001.

    Scenario: as above at serializable, but Bob's increment is a function the
    application runs in a fresh Session until it commits.
    Outcome: the first attempt is refused, the second loads 11 and writes 12:
    both increments are counted, after exactly one retry.
    """
    def alice_increments():
        with session(engine, "SERIALIZABLE") as alice:
            alice.get(Row, 1).value += 1
            alice.commit()

    loaded = []  # what each of Bob's attempts read

    def bob_increments(bob):  # the application's unit of work
        row = bob.get(Row, 1)
        loaded.append(row.value)
        if len(loaded) == 1:
            alice_increments()  # another request commits while Bob's first attempt runs
        row.value += 1

    for _attempt in range(3):
        with session(engine, "SERIALIZABLE") as bob:
            bob_increments(bob)
            if commit(bob) == COMMITTED:
                break

    assert loaded == [10, 11], "the first attempt read 10 and was refused; the retry read 11"
    assert value_of_row_1(engine) == 12, "serializable plus a retry loop loses no increment"


@pytest.mark.parametrize("lock, bob_waits, bob_reads, row_1", [
    pytest.param(True, True, 11, 12,
                 id="with_for_update: Bob waits for Alice, reads 11, writes 12"),
    pytest.param(False, False, 10, 11,
                 id="plain select: Bob reads 10 at once, Alice's increment lost"),
])
def test_orm_with_for_update_makes_the_second_increment_wait(engine, observer, lock, bob_waits,
                                                             bob_reads, row_1):
    """Locking as the fix, with the ORM: ``select(Row).with_for_update()`` at read committed.

    Scenario: Alice loads row 1 (locking it, or not); Bob, on another thread,
    loads it the same way. Alice adds 1 and commits; then Bob adds 1 and commits.
    Outcome: with the lock, the server makes Bob's load wait until Alice has
    committed, and Bob then reads her 11 and writes 12. Without it Bob reads
    10 at once and his 11 overwrites hers.
    """
    def load(orm_session):
        query = select(Row).where(Row.id == 1)
        return orm_session.scalars(query.with_for_update() if lock else query).one()

    # Alice's session closes first: if Bob were still waiting, her rollback frees him.
    with ThreadPoolExecutor(1) as pool, session(engine) as bob, session(engine) as alice:
        alice_row = load(alice)
        bob_pid = backend_pid(bob)
        bob_load = pool.submit(load, bob)
        waited = blocked_or_done(observer, bob_pid, bob_load.done)

        alice_row.value += 1
        alice.commit()
        bob_row = bob_load.result(timeout=DEFAULT_TIMEOUT)
        loaded = bob_row.value
        bob_row.value += 1
        bob.commit()

    assert waited == bob_waits, "did Bob's load wait for Alice's lock (asked the server)?"
    assert loaded == bob_reads, "the value Bob's increment starts from"
    assert value_of_row_1(engine) == row_1, "row 1 after both increments at read committed"


@pytest.mark.parametrize("increment, update_written, row_1", [
    pytest.param("sql", "UPDATE test SET value=(test.value + %(value_1)s) "
                        "WHERE test.id = %(test_id)s", 12,
                 id="row.value = Row.value + 1: both increments counted"),
    pytest.param("python", "UPDATE test SET value=%(value)s WHERE test.id = %(test_id)s", 11,
                 id="row.value += 1: Alice's increment lost"),
])
def test_orm_increment_computed_by_the_database(engine, statement_log, increment,
                                                update_written, row_1):
    """Let the database do the arithmetic: assign a SQL expression, not a Python value.

    Scenario: at read committed Alice and Bob both load row 1 (10); each adds 1
    and commits, Alice first -- either in Python or as ``Row.value + 1``.
    Outcome: the expression becomes ``UPDATE test SET value=(test.value + 1)``
    (the UPDATE each session's flush wrote is asserted below, placeholders and
    all), evaluated on the row as it is when the UPDATE runs (Alice's 11), so the
    result is 12; the Python increment writes the stale value it computed, 10 + 1.
    """
    statement_log.watch(engine)
    def add_one(row):
        if increment == "sql":
            row.value = Row.value + 1
        else:
            row.value += 1

    with session(engine) as alice, session(engine) as bob:
        alice_row, bob_row = alice.get(Row, 1), bob.get(Row, 1)
        add_one(alice_row)
        alice.commit()
        add_one(bob_row)
        bob.commit()

    assert [sql for sql in statement_log.written if sql.startswith("UPDATE")] == \
        [update_written] * 2, "the UPDATE SQLAlchemy wrote for each session's increment"
    assert value_of_row_1(engine) == row_1, f"row 1 after two increments ({increment})"
