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

The tables are ``acid_lab.lessons.schema``'s: drivers and vehicles, and the
bank; the triggers are below, in full.

What does a trigger's query see? A trigger function is VOLATILE (as every
function is unless declared otherwise), and a VOLATILE function takes a fresh
snapshot at the start of each query it runs (PostgreSQL's documentation,
Function Volatility Categories). At read committed that snapshot includes
every transaction committed by then -- even one that committed after the
trigger's own transaction began (shown below, after the cross-row rule);
at repeatable read and serializable
every snapshot of the transaction is its first one. Either way it never sees
a write that has not committed yet: two transactions that each count "three
vehicles" before either commits both pass the check. Below serializable, a
rule over many rows needs isolation too (the last test).
"""

import pytest
from psycopg2 import IntegrityError as Psycopg2IntegrityError
from psycopg2 import errors

from acid_lab.engine.expectations import (
    RW_DEPENDENCIES,
    aborts,
    commits,
    rolls_back,
    sees,
    succeeds,
)
from acid_lab.engine.scenario import OBSERVER, READ_COMMITTED, REPEATABLE_READ, SERIALIZABLE, T1, T2
from acid_lab.lessons.bank import balances, fleet_rows, one_transaction
from acid_lab.lessons.schema import create
from acid_lab.servers.queries import execute, rows

pytestmark = pytest.mark.consistency

# --------------------------------------------------------------------------- the triggers

# A BEFORE trigger rejects a bad row with a SQLSTATE of its own (class 23: an
# integrity violation, so every client library files it as one).
INSPECTION_DATE_TRIGGER = """
create function no_future_inspection() returns trigger language plpgsql as $$
begin
    if new.inspected_on > current_date then
        raise exception 'inspection of vehicle % dated in the future (%)',
            new.vehicle_id, new.inspected_on using errcode = '23V01';
    end if;
    return new;
end $$;

create trigger no_future_inspection before insert or update on inspections
    for each row execute function no_future_inspection();
"""
FUTURE_INSPECTION_SQLSTATE = "23V01"

# An AFTER trigger keeps the audit trail and a running total of all balances.
BANK_AUDIT_TRIGGER = """
create table bank_total (total int not null);
insert into bank_total (total) select coalesce(sum(balance), 0) from accounts;

create function audit_balance_change() returns trigger language plpgsql as $$
declare
    delta int := coalesce(new.balance, 0) - coalesce(old.balance, 0);
begin
    if delta <> 0 then
        insert into audit (account_id, delta) values (new.id, delta);
        update bank_total set total = total + delta;
    end if;
    return null;
end $$;

create trigger audit_balance_change after insert or update of balance on accounts
    for each row execute function audit_balance_change();
"""

# A deferred constraint trigger enforces a rule across rows at COMMIT.
THREE_VEHICLES_TRIGGER = """
create function at_most_three_vehicles() returns trigger language plpgsql as $$
begin
    if (select count(*) from vehicles where driver_id = new.driver_id) > 3 then
        raise exception 'driver % would drive more than three vehicles', new.driver_id
            using errcode = '23V02';
    end if;
    return null;
end $$;

create constraint trigger at_most_three_vehicles
    after insert or update of driver_id on vehicles
    deferrable initially deferred
    for each row execute function at_most_three_vehicles();
"""
TOO_MANY_VEHICLES_SQLSTATE = "23V02"


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
        assert rows(observer, "select vehicle_id, inspected_on::text, passed from inspections "
                              "where vehicle_id = 20 order by inspected_on") == [
            (20, "2020-06-01", True), (20, "2025-03-01", True)]
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


ADA_S_VEHICLES = "select id from vehicles where driver_id = 1 order by id"


@pytest.mark.parametrize("level, t2_commit, ada_after", [
    pytest.param(READ_COMMITTED, commits, [10, 11, 12, 13],
                 id="read committed: both counted three, Ada has four"),
    pytest.param(REPEATABLE_READ, commits, [10, 11, 12, 13],
                 id="repeatable read: both counted three, Ada has four"),
    pytest.param(SERIALIZABLE, aborts(errors.SerializationFailure, RW_DEPENDENCIES), [10, 11, 12],
                 id="serializable: T2's commit aborts (40001), Ada has three"),
])
def test_a_cross_row_trigger_needs_serializable_against_concurrent_writers(
        fleet, observer, run, level, t2_commit, ada_after):
    """Consistency that needs isolation: the three-vehicle rule under two concurrent inserts.

    Scenario: Ada has two vehicles. T1 gives her vehicle 12, T2 vehicle 13;
    each runs the deferred check now (``set constraints ... immediate``, what
    COMMIT would do first) before either commits; T1 commits, then T2.
    Outcome: each trigger counts Ada's vehicles in its own snapshot: two
    committed plus its own, three -- the other's insert is invisible -- so
    both checks pass. At read committed and repeatable read both commit and
    Ada drives four vehicles, though every transaction passed the check.
    Serializable notices that each counted rows the other was inserting
    (read/write dependencies both ways) and refuses T2's commit with 40001.
    Checking at COMMIT only narrows the window: two commits can run their
    checks at the same moment just the same.
    """
    create(observer, THREE_VEHICLES_TRIGGER)
    run(level, [
        (T1, "insert into vehicles (id, plate, driver_id) values (12, 'ADA-3', 1)"),
        (T2, "insert into vehicles (id, plate, driver_id) values (13, 'ADA-4', 1)"),
        (T1, "set constraints at_most_three_vehicles immediate"),   # T1's trigger counts 3
        (T2, "set constraints at_most_three_vehicles immediate"),   # T2's trigger counts 3
        (T1, "commit", commits),
        (T2, "commit", t2_commit),
        (OBSERVER, ADA_S_VEHICLES, sees(*ada_after)),
    ])


@pytest.mark.parametrize("level, t1_check, t1_commit, ada_after", [
    pytest.param(READ_COMMITTED, aborts(TOO_MANY_VEHICLES_SQLSTATE), rolls_back, [10, 11, 13],
                 id="read committed: T1's trigger counts T2's committed row: 4, refused"),
    pytest.param(REPEATABLE_READ, succeeds, commits, [10, 11, 12, 13],
                 id="repeatable read: T1's trigger counts in T1's snapshot: 3, accepted"),
])
def test_a_trigger_at_read_committed_sees_rows_committed_after_its_transaction_began(
        fleet, observer, run, level, t1_check, t1_commit, ada_after):
    """Scenario: Ada has two vehicles. T1 gives her vehicle 12 (its transaction has begun
    and taken its first snapshot); then T2 gives her vehicle 13 and commits (T2's own
    check counts 10, 11, 13: three). Now T1 runs its deferred three-vehicle check
    (``set constraints ... immediate``): the trigger's ``select count(*)``.
    Outcome: at read committed the trigger's query takes a fresh snapshot and
    counts T2's vehicle, committed after T1 began: four, so T1 is refused
    (23V02) and Ada keeps three. At repeatable read the query sees T1's
    transaction snapshot, from before T2 committed: three, T1 commits -- and Ada
    has four (the write skew of the last test).
    """
    create(observer, THREE_VEHICLES_TRIGGER)
    run(level, [
        (T1, "insert into vehicles (id, plate, driver_id) values (12, 'ADA-3', 1)"),
        (T2, "insert into vehicles (id, plate, driver_id) values (13, 'ADA-4', 1)"),
        (T2, "commit", commits),                                    # T2's trigger counts 3
        (T1, "set constraints at_most_three_vehicles immediate", t1_check),
        (T1, "commit", t1_commit),
        (OBSERVER, ADA_S_VEHICLES, sees(*ada_after)),
    ])
