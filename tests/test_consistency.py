"""Consistency: every transaction takes the database from one valid state to another.

**The promise.** "Valid" is written down in the schema as rules the database
itself enforces, whoever writes: a primary key names each row once (a
composite key: by several columns together), a foreign key lets a vehicle name
only a driver who exists, UNIQUE, NOT NULL and CHECK constrain values, an
EXCLUDE constraint forbids two overlapping bookings of one vehicle, a domain
type carries its check wherever it is used, and triggers enforce the rules no
declaration can express. A statement that would break a rule fails with an
error of SQLSTATE class 23 (integrity constraint violation) and -- atomicity
at work -- changes nothing.

**Without it**, every application (and every bug in one, and every hand-typed
fix) must keep every rule itself: a vehicle of a driver who was deleted, a
negative balance, a double-booked car, and nothing notices until a report
adds up wrong.

**How PostgreSQL does it.** NOT NULL, CHECK and domain checks are tested on
each row as it is written; UNIQUE, PRIMARY KEY and EXCLUDE through their
indexes as each row goes in; foreign keys by system triggers at the end of
each statement. A constraint declared DEFERRABLE INITIALLY DEFERRED (and a
deferred constraint trigger) waits until COMMIT, so a transaction may pass
through invalid states on its way to a valid one; COMMIT fails if it did not
get there. Consistency in the larger sense -- money is neither created nor
destroyed by a transfer -- is the transactions' job; the database's rules and
atomicity make sure a broken transaction cannot leave its mark.

The demo schemas are in ``acid_lab.lessons.schema``: the course notes' ``drivers`` and
``vehicles`` (a vehicle's ``driver_id`` references a driver) with
``inspections`` (composite key) and ``bookings`` (EXCLUDE); and the bank
(``accounts`` with CHECK balance >= 0, ``audit``). ``observer`` is the session
that stands for everyone else. The chapter goes on in
``test_consistency_triggers.py`` (rules kept by triggers) and
``test_consistency_bank.py`` (Hypothesis runs a bank through any history).
"""

import pytest
from psycopg2 import errors
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from acid_lab.lessons.bank import balances, fleet_rows, one_transaction, snapshot
from acid_lab.lessons.models import Account, Base, Driver, Vehicle
from acid_lab.servers.queries import execute, one, rows

pytestmark = pytest.mark.consistency

# --------------------------------------------------------------------------- declared rules


@pytest.mark.parametrize("statement, error, sqlstate", [
    pytest.param("insert into drivers (id, name) values (1, 'Bob')",
                 errors.UniqueViolation, "23505", id="primary key: a second driver 1"),
    pytest.param("insert into inspections values (10, '2024-03-01', true)",
                 errors.UniqueViolation, "23505",
                 id="composite primary key: vehicle 10 twice on 2024-03-01"),
    pytest.param("insert into vehicles (id, plate, driver_id) values (12, 'NEW-1', 99)",
                 errors.ForeignKeyViolation, "23503",
                 id="foreign key: a vehicle of unknown driver 99"),
    pytest.param("update vehicles set driver_id = 99 where id = 20",
                 errors.ForeignKeyViolation, "23503",
                 id="foreign key: vehicle 20 handed to unknown driver 99"),
    pytest.param("update drivers set id = 9 where id = 2",
                 errors.ForeignKeyViolation, "23503",
                 id="foreign key: renumbering Grace, whose vehicle names her"),
    pytest.param("insert into vehicles (id, plate) values (12, 'ADA-1')",
                 errors.UniqueViolation, "23505", id="unique: plate ADA-1 twice"),
    pytest.param("insert into drivers (id) values (3)",
                 errors.NotNullViolation, "23502", id="not null: a driver without a name"),
    pytest.param("insert into vehicles (id, plate) values (12, 'not a plate')",
                 errors.CheckViolation, "23514", id="domain check: a malformed plate"),
    pytest.param("insert into vehicles (id, plate) values (12, null)",
                 errors.NotNullViolation, "23502", id="not null: a vehicle without a plate"),
    pytest.param("insert into bookings (vehicle_id, during) "
                 "values (10, '[2025-06-01 11:00, 2025-06-01 13:00)')",
                 errors.ExclusionViolation, "23P01",
                 id="exclude: vehicle 10 booked twice at 11:00"),
])
def test_a_statement_breaking_a_declared_rule_is_refused(fleet, connect, observer, statement,
                                                         error, sqlstate):
    """Scenario: a session sends one statement that would break a rule of the fleet schema.

    Outcome: the statement fails with the rule's SQLSTATE, and every table is
    exactly as before.
    """
    with pytest.raises(error) as failure:
        one_transaction(connect, statement)

    assert failure.value.pgcode == sqlstate
    assert fleet_rows(observer) == fleet, "consistency: a refused statement changes nothing"


@pytest.fixture
def restrict_refusal(observer):
    """How this server reports ON DELETE RESTRICT: (psycopg2 class, SQLSTATE).

    PostgreSQL 18 gave RESTRICT the SQL standard's own code, restrict_violation;
    before, it reported a foreign key violation like NO ACTION does.
    """
    if observer.server_version >= 180000:
        return errors.RestrictViolation, "23001"
    return errors.ForeignKeyViolation, "23503"


def test_on_delete_restrict_keeps_a_driver_who_has_vehicles(fleet, connect, observer,
                                                            restrict_refusal):
    """Scenario: delete Ada, who still drives vehicles 10 and 11 (ON DELETE RESTRICT).

    Outcome: refused -- restrict_violation (23001) from PostgreSQL 18 on,
    foreign_key_violation (23503) before -- and nothing changes. (CASCADE,
    below, would have deleted her vehicles with her instead.)
    """
    error, sqlstate = restrict_refusal
    with pytest.raises(error) as failure:
        one_transaction(connect, "delete from drivers where id = 1")

    assert failure.value.pgcode == sqlstate
    assert fleet_rows(observer) == fleet, "consistency: a refused delete changes nothing"


@pytest.mark.usefixtures("bank")
def test_no_balance_goes_negative(connect, observer):
    """Scenario: alice (100) sends 150 to bob: debit, credit, in one transaction.

    Outcome: CHECK (balance >= 0) refuses the debit (CheckViolation, 23514);
    the transaction fails; both balances are as before.
    """
    with pytest.raises(errors.CheckViolation) as failure:
        one_transaction(connect, "update accounts set balance = balance - 150 where id = 1",
                        "update accounts set balance = balance + 150 where id = 2")

    assert failure.value.pgcode == "23514"
    assert failure.value.diag.constraint_name == "no_negative_balance"
    assert balances(observer) == {1: 100, 2: 50}, "consistency: no negative balance"


INSPECTION_KEYS = "select vehicle_id, inspected_on::text from inspections order by 1, 2"
KEYS_BEFORE = [(10, "2024-03-01"), (10, "2025-03-01"), (20, "2025-03-01")]


@pytest.mark.parametrize("statement, allowed, inspections_after", [
    pytest.param("insert into inspections values (10, '2024-03-02', true)", True,
                 [(10, "2024-03-01"), (10, "2024-03-02"), (10, "2025-03-01"), (20, "2025-03-01")],
                 id="same vehicle, another day: allowed"),
    pytest.param("insert into inspections values (20, '2024-03-01', true)", True,
                 [(10, "2024-03-01"), (10, "2025-03-01"), (20, "2024-03-01"), (20, "2025-03-01")],
                 id="same day, another vehicle: allowed"),
    pytest.param("insert into inspections values (10, '2024-03-01', true)", False, KEYS_BEFORE,
                 id="same vehicle, same day: refused"),
])
def test_a_composite_key_names_a_row_by_all_its_columns(fleet, connect, observer, statement,
                                                         allowed, inspections_after):
    """Scenario: inspections' primary key is (vehicle_id, inspected_on); vehicle 10 was
    inspected on 2024-03-01. Insert another inspection.

    Outcome: only the pair must be new: either column alone may repeat.
    """
    try:
        one_transaction(connect, statement)
        outcome = True
    except errors.UniqueViolation:
        outcome = False

    assert outcome is allowed, "a composite key is unique as a whole"
    assert rows(observer, INSPECTION_KEYS) == inspections_after


def test_deleting_a_vehicle_cascades_to_its_inspections_and_bookings(fleet, connect, observer):
    """Scenario: delete vehicle 10 (two inspections, one booking; ON DELETE CASCADE).

    Outcome: its inspections and booking go with it; nothing else changes, and
    no row is left pointing at a vehicle that is gone.
    """
    one_transaction(connect, "delete from vehicles where id = 10")

    after = fleet_rows(observer)
    assert [row[0] for row in after["vehicles"]] == [11, 20]
    assert rows(observer, INSPECTION_KEYS) == [(20, "2025-03-01")], \
        "vehicle 10's two inspections went with it"
    assert after["bookings"] == [], "the booking of vehicle 10 went with it"
    assert after["drivers"] == fleet["drivers"]


# --------------------------------------------------------------------------- data types


CLASSES_OF_ADA = "select license_classes from drivers where id = 1"
SPECS_OF_VEHICLE_10 = "select specs from vehicles where id = 10"


@pytest.mark.parametrize("statement, error, read_back, value_after", [
    pytest.param("update drivers set license_classes = '{B,C,D}' where id = 1", None,
                 CLASSES_OF_ADA, ["B", "C", "D"], id="array: known classes accepted"),
    pytest.param("update drivers set license_classes = '{B,Z}' where id = 1",
                 errors.CheckViolation, CLASSES_OF_ADA, ["B"], id="array: unknown class Z refused"),
    pytest.param("update drivers set license_classes = '{}' where id = 1",
                 errors.CheckViolation, CLASSES_OF_ADA, ["B"], id="array: no class at all refused"),
    pytest.param("""update vehicles set specs = '{"seats": 7, "color": "red"}' where id = 10""",
                 None, SPECS_OF_VEHICLE_10, {"seats": 7, "color": "red"},
                 id="jsonb: an object with a seat count accepted"),
    pytest.param("""update vehicles set specs = '{"seats": 0}' where id = 10""",
                 errors.CheckViolation, SPECS_OF_VEHICLE_10, {"seats": 5},
                 id="jsonb: zero seats refused"),
    pytest.param("""update vehicles set specs = '{"seats": "five"}' where id = 10""",
                 errors.CheckViolation, SPECS_OF_VEHICLE_10, {"seats": 5},
                 id="jsonb: seats not a number refused"),
    pytest.param("""update vehicles set specs = '[5]' where id = 10""",
                 errors.CheckViolation, SPECS_OF_VEHICLE_10, {"seats": 5},
                 id="jsonb: not an object refused"),
])
def test_array_and_jsonb_columns_obey_their_checks(fleet, connect, observer, statement, error,
                                                   read_back, value_after):
    """PostgreSQL is object-relational: a column may hold an array or a JSON document,
    and a CHECK constraint can look inside it.

    Scenario: write a licence-class array or a vehicle's JSONB specs.
    Outcome: values that fit the rule are stored, exactly as written; the rest
    are refused with CheckViolation (23514) and change nothing.
    """
    if error is None:
        one_transaction(connect, statement)
    else:
        with pytest.raises(error):
            one_transaction(connect, statement)
        assert fleet_rows(observer) == fleet, "consistency: a refused value changes nothing"
    assert one(observer, read_back) == value_after


# --------------------------------------------------------------------------- checked at commit


def parking_spots(conn):
    with conn.cursor() as cur:
        cur.execute("select id, parking_spot from vehicles where id in (10, 11) order by id")
        return dict(cur.fetchall())


@pytest.mark.parametrize("when_checked, error, spots_after", [
    pytest.param("deferred", None, {10: 2, 11: 1}, id="deferred: the swap commits"),
    pytest.param("immediate", errors.UniqueViolation, {10: 1, 11: 2},
                 id="immediate: the first update fails (23505)"),
])
def test_two_vehicles_swap_parking_spots(fleet, connect, observer, when_checked, error,
                                         spots_after):
    """Scenario: vehicles 10 and 11 hold spots 1 and 2; one transaction swaps them in two
    UPDATEs. unique_parking_spot is DEFERRABLE INITIALLY DEFERRED; ``set constraints
    ... immediate`` asks for the check after each statement instead.

    Outcome: deferred, the duplicate between the two UPDATEs is allowed and the
    state at COMMIT is valid; immediate, the first UPDATE is refused.
    """
    statements = [f"set constraints unique_parking_spot {when_checked}",
                  "update vehicles set parking_spot = 2 where id = 10",
                  "update vehicles set parking_spot = 1 where id = 11"]
    if error is None:
        one_transaction(connect, *statements)
    else:
        with pytest.raises(error):
            one_transaction(connect, *statements)

    assert parking_spots(observer) == spots_after, "the rule holds at every commit"


@pytest.mark.parametrize("when_checked, error, drivers_after", [
    pytest.param("deferred", None, [1, 2, 3, 4], id="deferred: both co-drivers commit"),
    pytest.param("immediate", errors.ForeignKeyViolation, [1, 2],
                 id="immediate: the first insert fails (23503)"),
])
def test_two_drivers_name_each_other_as_co_drivers(fleet, connect, observer, when_checked,
                                                   error, drivers_after):
    """Scenario: insert driver 3 with co-driver 4, then driver 4 with co-driver 3 (the
    foreign key co_driver_id is DEFERRABLE INITIALLY DEFERRED).

    Outcome: deferred, the first row may point at a driver who does not exist
    yet, because by COMMIT he does; checked immediately, it may not.
    """
    statements = ["set constraints all " + when_checked,
                  "insert into drivers (id, name, co_driver_id) values (3, 'Lin', 4)",
                  "insert into drivers (id, name, co_driver_id) values (4, 'Kay', 3)"]
    if error is None:
        one_transaction(connect, *statements)
    else:
        with pytest.raises(error):
            one_transaction(connect, *statements)

    assert [row[0] for row in snapshot(observer, "drivers")["drivers"]] == drivers_after


def test_a_deferred_violation_fails_the_commit(fleet, connect, observer):
    """Scenario: insert driver 3 with co-driver 99, who never arrives; then COMMIT.

    Outcome: the INSERT succeeds (the check waits); COMMIT fails with
    ForeignKeyViolation (23503) and the transaction is rolled back.
    """
    conn = connect()
    execute(conn, "insert into drivers (id, name, co_driver_id) values (3, 'Lin', 99)")

    with pytest.raises(errors.ForeignKeyViolation):
        conn.commit()
    assert fleet_rows(observer) == fleet, "consistency: an invalid commit changes nothing"


# --------------------------------------------------------------------------- the ORM


@pytest.fixture
def orm_fleet(engine, observer):
    """Tables built from the ORM models (``db.create_all()``); Ada drives ADA-1; alice has 100."""
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add(Driver(id=1, name="Ada", vehicles=[Vehicle(id=10, plate="ADA-1")]))
        session.add(Account(id=1, owner="alice", balance=100))
        session.commit()
    return snapshot(observer, "drivers", "vehicles", "accounts")


@pytest.mark.parametrize("change, error", [
    pytest.param(lambda s: s.add(Driver(id=1, name="Imposter")), errors.UniqueViolation,
                 id="a second driver 1 (23505)"),
    pytest.param(lambda s: s.add(Vehicle(id=11, plate="NEW-1", driver_id=99)),
                 errors.ForeignKeyViolation, id="a vehicle of unknown driver 99 (23503)"),
    pytest.param(lambda s: s.add(Vehicle(id=11, plate="ADA-1")), errors.UniqueViolation,
                 id="plate ADA-1 twice (23505)"),
    pytest.param(lambda s: s.add(Driver(id=2, name=None)), errors.NotNullViolation,
                 id="a driver without a name (23502)"),
    pytest.param(lambda s: setattr(s.get(Account, 1), "balance", -1), errors.CheckViolation,
                 id="a negative balance (23514)"),
])
def test_the_orm_session_catches_a_violation_and_rolls_back(orm_fleet, engine, observer,
                                                            change, error):
    """Scenario: models declared the Flask-SQLAlchemy way (``acid_lab.lessons.models``); a session
    makes a change that breaks a rule and commits.

    Outcome: the database refuses it; SQLAlchemy raises IntegrityError whose
    ``.orig`` is psycopg2's class for the SQLSTATE; after ``session.rollback()``
    the session works again and the data is as before.
    """
    with Session(engine) as session:
        change(session)
        with pytest.raises(IntegrityError) as failure:
            session.commit()
        session.rollback()

        assert isinstance(failure.value.orig, error), "the database named the broken rule"
        assert session.scalars(select(Driver.name)).all() == ["Ada"], "the session works again"
    assert snapshot(observer, "drivers", "vehicles", "accounts") == orm_fleet, \
        "consistency: the refused change left nothing"


def test_the_orm_leaves_on_delete_restrict_to_the_database(orm_fleet, engine, observer,
                                                          restrict_refusal):
    """Scenario: a session deletes Ada, who drives ADA-1. The relationship is declared
    with ``passive_deletes="all"``: the ORM does not first set her vehicles'
    driver_id to NULL (its default), it sends the DELETE and lets the database judge.

    Outcome: ON DELETE RESTRICT refuses it (IntegrityError, ``.orig`` the
    server's RESTRICT error); after rollback Ada and her vehicle are still there.
    """
    error, _ = restrict_refusal
    with Session(engine) as session:
        session.delete(session.get(Driver, 1))
        with pytest.raises(IntegrityError) as failure:
            session.commit()
        session.rollback()

    assert isinstance(failure.value.orig, error), "the database refused the delete"
    assert snapshot(observer, "drivers", "vehicles", "accounts") == orm_fleet, \
        "consistency: the refused delete left nothing"
