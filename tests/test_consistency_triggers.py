"""Consistency by triggers: rules no declaration can state, kept by the database.

A CHECK constraint sees one row; a foreign key, one reference. Some rules need
more: a date compared with today, a count over many rows, a log of every
change. A trigger is a function the server runs for each row (or statement)
an INSERT, UPDATE or DELETE touches:

* a BEFORE trigger sees the row before it is written and may refuse it, with
  an error code of its own choosing;
* an AFTER trigger runs once the row is written -- to keep an audit trail or a
  running total -- and its writes are part of the statement that fired it:
  they commit with it, or vanish with it;
* a constraint trigger DEFERRABLE INITIALLY DEFERRED runs at COMMIT, when the
  transaction's rows are all in place, and can refuse the whole transaction.

The schemas are ``acid_lab.lessons.schema``'s: drivers and vehicles, and the bank.
"""

import pytest
from psycopg2 import IntegrityError as Psycopg2IntegrityError
from psycopg2 import errors

from acid_lab.lessons.bank import balances, fleet_rows, one_transaction, snapshot
from acid_lab.lessons.queries import execute
from acid_lab.lessons.schema import (
    BANK_AUDIT_TRIGGER,
    FUTURE_INSPECTION_SQLSTATE,
    INSPECTION_DATE_TRIGGER,
    THREE_VEHICLES_TRIGGER,
    TOO_MANY_VEHICLES_SQLSTATE,
    create,
)

pytestmark = pytest.mark.consistency

@pytest.mark.parametrize("inspected_on, error", [
    pytest.param("2020-06-01", None, id="a past date: accepted"),
    pytest.param("2999-01-01", Psycopg2IntegrityError, id="a future date: refused (23V01)"),
])
def test_a_before_trigger_refuses_a_bad_row_with_its_own_sqlstate(fleet, connect, observer,
                                                                  inspected_on, error):
    """Scenario: a BEFORE INSERT trigger on inspections raises, with SQLSTATE 23V01 of its
    own, for an inspection dated in the future. Insert an inspection.

    Outcome: a plausible date is stored; a future one is refused -- an
    integrity error (class 23) with the trigger's code -- and nothing changes.
    """
    create(observer, INSPECTION_DATE_TRIGGER)
    statement = f"insert into inspections values (20, '{inspected_on}', true)"

    if error is None:
        one_transaction(connect, statement)
        assert len(snapshot(observer, "inspections")["inspections"]) == 4
        return
    with pytest.raises(error) as failure:
        one_transaction(connect, statement)
    assert failure.value.pgcode == FUTURE_INSPECTION_SQLSTATE == "23V01"
    assert fleet_rows(observer) == fleet, "consistency: the trigger's refusal changed nothing"


def audit_trail(conn):
    with conn.cursor() as cur:
        cur.execute("select account_id, delta from audit order by entry")
        audit = cur.fetchall()
        cur.execute("select total from bank_total")
        return audit, cur.fetchone()[0]


@pytest.mark.usefixtures("bank")
@pytest.mark.parametrize("end, audit_after, total_after", [
    pytest.param("commit", [(1, 25)], 175, id="commit: audit row and total stay"),
    pytest.param("rollback", [], 150, id="rollback: they vanish"),
    pytest.param("a later statement fails", [], 150, id="a later failure: they vanish"),
    pytest.param("a savepoint is rolled back", [(1, 25)], 175,
                 id="savepoint rolled back: only its statement's writes vanish"),
])
def test_an_after_trigger_writes_go_with_the_statement_that_fired_them(
        connect, observer, end, audit_after, total_after):
    """Scenario: an AFTER trigger on accounts writes an audit row and updates the running
    total for every balance change. A transaction deposits 25 to alice, then ends:
    commit, rollback, a failing statement, or a deposit to bob inside a savepoint
    that is rolled back before the commit.

    Outcome: the trigger's writes belong to the firing statement's transaction:
    they stay or vanish with it; the total always equals the sum of the balances.
    """
    create(observer, BANK_AUDIT_TRIGGER)
    conn = connect()
    execute(conn, "update accounts set balance = balance + 25 where id = 1")
    if end == "commit":
        conn.commit()
    elif end == "rollback":
        conn.rollback()
    elif end == "a later statement fails":
        with pytest.raises(errors.CheckViolation), conn:
            execute(conn, "update accounts set balance = balance - 500 where id = 2")
    else:
        execute(conn, "savepoint bob")
        execute(conn, "update accounts set balance = balance + 10 where id = 2")
        execute(conn, "rollback to savepoint bob")
        conn.commit()

    assert audit_trail(observer) == (audit_after, total_after), "the trigger's writes followed"
    assert sum(balances(observer).values()) == total_after, "consistency: total = sum of balances"


@pytest.mark.parametrize("statements, error, vehicles_of_ada", [
    pytest.param(["insert into vehicles (id, plate, driver_id) values (12, 'ADA-3', 1)",
                  "insert into vehicles (id, plate, driver_id) values (13, 'ADA-4', 1)"],
                 Psycopg2IntegrityError, [10, 11], id="a fourth vehicle: refused at commit"),
    pytest.param(["insert into vehicles (id, plate, driver_id) values (12, 'ADA-3', 1)",
                  "insert into vehicles (id, plate, driver_id) values (13, 'ADA-4', 1)",
                  "update vehicles set driver_id = 2 where id = 13"],
                 None, [10, 11, 12], id="four for a moment, three at commit: accepted"),
])
def test_a_deferred_constraint_trigger_checks_a_cross_row_rule_at_commit(
        fleet, connect, observer, statements, error, vehicles_of_ada):
    """Scenario: no driver may have more than three vehicles -- a rule over many rows,
    kept by a constraint trigger DEFERRABLE INITIALLY DEFERRED. Ada has two;
    a transaction gives her two more, and maybe hands one on to Grace.

    Outcome: every statement succeeds; at COMMIT the trigger counts. Four for
    Ada: the commit fails with the trigger's SQLSTATE 23V02 and nothing
    changes; three: it commits.
    """
    create(observer, THREE_VEHICLES_TRIGGER)
    conn = connect()
    for statement in statements:
        execute(conn, statement)      # no statement is refused: the check waits

    if error is None:
        conn.commit()
    else:
        with pytest.raises(error) as failure:
            conn.commit()
        assert failure.value.pgcode == TOO_MANY_VEHICLES_SQLSTATE == "23V02"
    with observer.cursor() as cur:
        cur.execute("select id from vehicles where driver_id = 1 order by id")
        assert [row[0] for row in cur.fetchall()] == vehicles_of_ada, \
            "consistency: at most three vehicles per driver at every commit"
