"""The demo schemas the chapters stand on, as plain SQL.

Every test's place starts with Hermitage's table ``test``: two rows, (1, 10)
and (2, 20). Other demo schemas are created by the tests that need them, with
``create(conn, SCHEMA, ...)`` in the connection's place (its search_path):

* ``BANK`` (+ ``BANK_ACCOUNTS``: alice 100, bob 50): accounts whose balance
  may not go negative, and an audit row for every change.
* ``DRIVERS`` (+ ``DRIVERS_ROWS``): the course notes' drivers and vehicles
  (a vehicle's driver_id references a driver), with a domain type for
  plates, arrays and JSONB under CHECK constraints, deferred constraints,
  inspections (composite key, ON DELETE CASCADE) and bookings (EXCLUDE).
  The triggers on them are written out in tests/test_consistency_triggers.py.

``acid_lab.lessons.models`` maps the same tables for SQLAlchemy's ORM.
"""

from acid_lab.servers.queries import rows

HERMITAGE = """
create table test (id int primary key, value int);
insert into test (id, value) values (1, 10), (2, 20);
"""

# --------------------------------------------------------------------------- the bank
# A balance may never go negative; every change of a balance leaves an audit row.

BANK = """
create table accounts (
    id      int primary key,
    owner   text not null,
    balance int not null default 0 constraint no_negative_balance check (balance >= 0)
);
create table audit (
    entry      int generated always as identity primary key,
    account_id int not null references accounts (id),
    delta      int not null constraint no_empty_entry check (delta <> 0)
);
"""

BANK_ACCOUNTS = """
insert into accounts (id, owner, balance) values (1, 'alice', 100), (2, 'bob', 50);
"""

# --------------------------------------------------------------------------- drivers and vehicles
# The course notes' example: a vehicle's driver_id references a driver.

DRIVERS = """
create domain license_plate as text
    constraint plate_format check (value ~ '^[A-Z0-9]{1,4}-[A-Z0-9]{1,4}$');

create table drivers (
    id              int primary key,
    name            text not null,
    license_classes text[] not null default '{B}'
        constraint known_license_classes
        check (cardinality(license_classes) > 0 and license_classes <@ '{A,B,C,D}'),
    -- a driver may name a co-driver; two co-drivers reference each other, so the
    -- check waits for COMMIT
    co_driver_id    int references drivers (id) deferrable initially deferred
);

create table vehicles (
    id           int primary key,
    plate        license_plate not null constraint unique_plate unique,
    driver_id    int references drivers (id) on delete restrict,
    -- a spot holds one vehicle, checked at COMMIT so that two vehicles can swap
    parking_spot int constraint unique_parking_spot unique deferrable initially deferred,
    specs        jsonb not null default '{}'
        constraint specs_shape check (
            jsonb_typeof(specs) = 'object'
            and case when jsonb_typeof(specs -> 'seats') = 'number'
                     then (specs ->> 'seats')::numeric between 1 and 60
                     else not specs ? 'seats' end)
);

-- composite primary key: a vehicle is inspected at most once a day
create table inspections (
    vehicle_id   int references vehicles (id) on delete cascade,
    inspected_on date,
    passed       boolean not null,
    primary key (vehicle_id, inspected_on)
);

-- no two bookings of one vehicle overlap (GiST over ranges: the one-point
-- range of the vehicle id overlaps only itself, so no extension is needed)
create table bookings (
    id         int generated always as identity primary key,
    vehicle_id int not null references vehicles (id) on delete cascade,
    during     tsrange not null,
    constraint no_double_booking
        exclude using gist (int4range(vehicle_id, vehicle_id, '[]') with &&, during with &&)
);
"""

DRIVERS_ROWS = """
insert into drivers (id, name, license_classes) values
    (1, 'Ada', '{B}'), (2, 'Grace', '{B,C}');
insert into vehicles (id, plate, driver_id, parking_spot, specs) values
    (10, 'ADA-1', 1, 1, '{"seats": 5}'),
    (11, 'ADA-2', 1, 2, '{"seats": 2}'),
    (20, 'GRC-1', 2, 3, '{}');
insert into inspections (vehicle_id, inspected_on, passed) values
    (10, '2024-03-01', true), (10, '2025-03-01', false), (20, '2025-03-01', true);
insert into bookings (vehicle_id, during) values
    (10, '[2025-06-01 09:00, 2025-06-01 12:00)');
"""

FLEET_TABLES = ("drivers", "vehicles", "inspections", "bookings")


def create(conn, *schemas: str) -> None:
    """Create demo schemas in the connection's place (its search_path), in one round trip."""
    with conn.cursor() as cur:
        cur.execute("\n".join(schemas))
    if not conn.autocommit:
        conn.commit()


def demo_rows(conn) -> list[tuple]:
    """Hermitage's table ``test`` as (id, value) pairs, by id."""
    return rows(conn, "select id, value from test order by id")
