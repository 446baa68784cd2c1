"""Foundation: SQL, the language every session speaks, and PostgreSQL's extras.

SQL structures data (CREATE / ALTER / DROP TABLE, ADD / DROP COLUMN),
manipulates it (INSERT / UPDATE / DELETE) and queries it (SELECT). Every table
is a list of columns, each with a data type. SQL comes in dialects: the same
SQLAlchemy statement is written differently for PostgreSQL, SQLite and
MariaDB, and a DBAPI driver (psycopg2 here) carries it to the server.

PostgreSQL is object-relational: besides plain tables it has arrays and table
inheritance, and indexes that let a query find rows without reading them all.
"""

import psycopg2
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.mysql.mariadb import MariaDBDialect

pytestmark = pytest.mark.foundation


def send(conn, statement, params=None):
    """Send one statement; its rows, or the number of rows it changed."""
    with conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall() if cur.description else cur.rowcount


def test_structure_statements_shape_a_table(observer):
    """Scenario: CREATE TABLE, ALTER TABLE ADD COLUMN, DROP COLUMN, DROP TABLE.

    Outcome: the catalog shows each change: columns appear and disappear, then the table.
    """
    send(observer, "create table drivers (id int primary key, name text not null)")
    send(observer, "alter table drivers add column licence text")
    assert _columns(observer, "drivers") == [("id", "integer"), ("name", "text"),
                                             ("licence", "text")]
    send(observer, "alter table drivers drop column licence")
    assert _columns(observer, "drivers") == [("id", "integer"), ("name", "text")]
    send(observer, "drop table drivers")
    assert send(observer, "select to_regclass('drivers') is null") == [(True,)]


def _columns(conn, table):
    return send(conn, """
        select column_name, data_type from information_schema.columns
        where table_schema = current_schema() and table_name = %s order by ordinal_position
        """, (table,))


def test_manipulation_statements_change_rows_and_report_how_many(observer):
    """Scenario: INSERT a row, UPDATE two, DELETE one, then SELECT.

    Outcome: each statement reports the number of rows it touched; SELECT shows the result.
    """
    assert send(observer, "insert into test (id, value) values (3, 30)") == 1
    assert send(observer, "update test set value = value + 1 where id in (1, 2)") == 2
    assert send(observer, "delete from test where id = 2") == 1
    assert send(observer, "select id, value from test order by id") == [(1, 11), (3, 30)]


@pytest.mark.parametrize("data_type, literal, stored, sqlstate", [
    pytest.param("integer", "42", "42", None, id="integer: 42 stored"),
    pytest.param("integer", "thirty", None, "22P02", id="integer: 'thirty' refused (22P02)"),
    pytest.param("smallint", "40000", None, "22003",
                 id="smallint: 40000 out of range (22003)"),
    pytest.param("numeric(5, 2)", "3.14159", "3.14", None,
                 id="numeric(5,2): 3.14159 rounded to 3.14"),
    pytest.param("numeric(5, 2)", "12345.6", None, "22003",
                 id="numeric(5,2): 12345.6 too many digits (22003)"),
    pytest.param("varchar(3)", "abcd", None, "22001", id="varchar(3): 'abcd' too long (22001)"),
    pytest.param("boolean", "yes", "true", None, id="boolean: 'yes' stored as true"),
    pytest.param("date", "2024-02-29", "2024-02-29", None, id="date: a leap day stored"),
    pytest.param("date", "2023-02-29", None, "22008", id="date: 2023-02-29 refused (22008)"),
    pytest.param("timestamptz", "2024-01-01 12:00+02", "2024-01-01 10:00:00+00", None,
                 id="timestamptz: stored as an instant, shown in the session's UTC"),
    pytest.param("uuid", "not-a-uuid", None, "22P02", id="uuid: malformed refused (22P02)"),
    pytest.param("jsonb", '{"b": 1, "a": [1, 2]}', '{"a": [1, 2], "b": 1}', None,
                 id="jsonb: parsed and stored as a value (keys reordered)"),
    pytest.param("jsonb", "{oops", None, "22P02", id="jsonb: not JSON, refused (22P02)"),
    pytest.param("inet", "192.168.0.1/24", "192.168.0.1/24", None, id="inet: an address stored"),
    pytest.param("integer[]", "{1,2,3}", "{1,2,3}", None, id="integer[]: an array stored"),
])
def test_a_column_accepts_only_its_data_type(observer, data_type, literal, stored, sqlstate):
    """Scenario: a table with one column of ``data_type``; insert ``literal`` into it
    (``create table kept (v <data_type>); insert into kept values ('<literal>')``) and
    read it back as text.

    Outcome: a database stores many data types, and the type is part of the schema:
    a value of the type is stored (sometimes normalized: rounded, reordered,
    converted to the session's time zone); anything else is refused with the
    SQLSTATE named, and the table stays empty.
    """
    send(observer, "set time zone 'UTC'")
    send(observer, f"create table kept (v {data_type})")
    if sqlstate is None:
        send(observer, "insert into kept values (%s)", (literal,))
    else:
        with pytest.raises(psycopg2.DataError) as refused:
            send(observer, "insert into kept values (%s)", (literal,))
        assert refused.value.pgcode == sqlstate, "the data exception the server raised"
    assert send(observer, "select v::text from kept") == ([] if stored is None else [(stored,)])


def test_arrays_are_first_class_values(observer):
    """Scenario: a table with an integer array column; query inside the array.

    Outcome: the array comes back as a Python list, and `= any(...)` searches inside it.
    """
    send(observer, "create table rosters (team text primary key, shifts int[])")
    send(observer, "insert into rosters values ('night', '{22, 23, 0}'), ('day', '{9, 10}')")
    assert send(observer, "select shifts from rosters where team = 'night'") == [([22, 23, 0],)]
    assert send(observer, "select team from rosters where 9 = any(shifts)") == [("day",)]


def test_a_child_table_inherits_its_parents_columns_and_rows_show_up_in_the_parent(observer):
    """Scenario: vehicles, and trucks that inherit from vehicles with one more column.

    Outcome: a truck has the parent's columns; selecting from vehicles includes trucks,
    `only vehicles` does not.
    """
    send(observer, "create table vehicles (plate text primary key, seats int)")
    send(observer, "create table trucks (payload_tonnes int) inherits (vehicles)")
    send(observer, "insert into vehicles values ('CAR-1', 5)")
    send(observer, "insert into trucks values ('TRK-1', 2, 18)")

    assert send(observer, "select plate from vehicles order by plate") == [("CAR-1",), ("TRK-1",)]
    assert send(observer, "select plate from only vehicles") == [("CAR-1",)]
    assert send(observer, "select plate, seats, payload_tonnes from trucks") == [("TRK-1", 2, 18)]


def test_an_index_lets_a_query_skip_reading_every_row(observer):
    """Scenario: 10,000 rows; look one up by an indexed column and by an unindexed one.

    Outcome: the planner uses an index scan for the indexed column and must read the
    whole table (sequential scan) for the other.
    """
    send(observer, """
        create table readings as
        select n as id, n % 97 as sensor from generate_series(1, 10000) as n;
        create index on readings (id);
        analyze readings
        """)
    indexed = _plan(observer, "select * from readings where id = 4242")
    unindexed = _plan(observer, "select * from readings where sensor = 42")
    assert "Index" in indexed, f"expected an index scan, got: {indexed}"
    assert "Seq Scan" in unindexed, f"expected a sequential scan, got: {unindexed}"


def _plan(conn, query):
    return " ".join(line for (line,) in send(conn, "explain (costs off) " + query))


@pytest.mark.parametrize("dialect, written", [
    pytest.param(postgresql.psycopg2.dialect(),
                 "INSERT INTO drivers (name) VALUES (%(name)s) RETURNING drivers.id",
                 id="postgresql+psycopg2: %(name)s placeholders"),
    pytest.param(sqlite.dialect(), "INSERT INTO drivers (name) VALUES (?) RETURNING id",
                 id="sqlite: ? placeholders"),
    pytest.param(MariaDBDialect(), "INSERT INTO drivers (name) VALUES (%s) RETURNING drivers.id",
                 id="mariadb: %s placeholders"),
])
def test_one_statement_several_dialects(dialect, written):
    """Scenario: compile one SQLAlchemy statement -- insert a driver named Ada, return
    the new id -- for PostgreSQL (psycopg2), SQLite and MariaDB.

    Outcome: each dialect writes the SQL its database and DBAPI expect: the
    placeholder style differs (psycopg2's %(name)s, sqlite3's ?, %s), and so
    does the detail (SQLite names the returned column bare). RETURNING is not
    PostgreSQL's alone: SQLite (3.35+) and MariaDB (10.5+) have it too. The
    value "Ada" is not in the text: SQLAlchemy writes the SQL, the DBAPI sends
    it with the value.
    """
    drivers = Table("drivers", MetaData(), Column("id", Integer, primary_key=True),
                    Column("name", String))
    statement = insert(drivers).values(name="Ada").returning(drivers.c.id)

    assert str(statement.compile(dialect=dialect)) == written


def test_the_engine_speaks_the_postgresql_dialect_through_psycopg2(engine):
    """Outcome: the engine's dialect is postgresql and its DBAPI driver is psycopg2."""
    assert (engine.dialect.name, engine.dialect.driver) == ("postgresql", "psycopg2")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select value from test where id = 1").scalar() == 10
