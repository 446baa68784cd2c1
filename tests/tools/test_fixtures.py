"""Harness: what every test stands on -- its own place, a database when it asks, a safe server.

The suite starts a private server for each run (password-protected, fsync on),
gives each test a fresh schema -- its *place* -- holding Hermitage's table
``test`` with rows (1, 10) and (2, 20), and, to a test that asks for
``fresh_database``, a whole database of its own. These tests check that
machinery, not a database lesson: no test sees what another one left, and
nothing a test creates outlives it.
"""

import tempfile
from pathlib import Path

import psycopg2
import pytest

from acid_lab.servers.queries import execute, one, rows
from acid_lab.servers.target import own_database
from acid_lab.testing.plugin import TMP_PREFIX

pytestmark = pytest.mark.harness


def test_every_test_starts_from_the_same_demo_rows(connect):
    """Scenario: a fresh test reads Hermitage's table.

    Outcome: exactly (1, 10) and (2, 20) — whatever the tests before it did.
    """
    assert rows(connect(), "select id, value from test order by id") == [(1, 10), (2, 20)]


@pytest.mark.parametrize("turn", ["first", "second"])
def test_a_change_in_one_test_is_gone_in_the_next(connect, turn):
    """Scenario: run twice; each run deletes row 2 and adds a table.

    Outcome: each run still starts with both rows and without that table: every
    test has a place of its own.
    """
    conn = connect(autocommit=True)
    assert rows(conn, "select id from test order by id") == [(1,), (2,)]
    assert one(conn, "select to_regclass('scratch') is null"), "no table left by another test"
    with conn.cursor() as cur:
        cur.execute("delete from test where id = 2")
        cur.execute("create table scratch (x int)")


def test_a_database_created_for_a_test_is_dropped_afterwards(target, observer):
    """Scenario: create a whole database the way ``fresh_database`` does, use it, leave.

    Outcome: it exists while in use and is gone afterwards: nothing outlives its test.
    """
    with own_database(target.info, prefix="acid_lab_test") as info:
        conn = psycopg2.connect(**info.params())
        with conn, conn.cursor() as cur:
            cur.execute("create table mine (x int)")
        conn.close()
        assert one(observer, "select count(*) from pg_database where datname = %s",
                   (info.dbname,)) == 1
    assert one(observer, "select count(*) from pg_database where datname = %s",
               (info.dbname,)) == 0, "a test's own database is dropped at teardown"


def test_a_test_may_have_a_whole_database_of_its_own(fresh_database, connect, target):
    """Scenario: a test asks for ``fresh_database`` and logs in there.

    Outcome: a database other than the place's, empty of the demo table.
    """
    own = psycopg2.connect(**fresh_database.params())
    try:
        assert one(own, "select current_database()") == fresh_database.dbname
        assert one(own, "select to_regclass('test') is null"), "a new database starts empty"
    finally:
        own.close()
    assert one(connect(), "select current_database()") == target.info.dbname, \
        "the place stays in the run's database"


def wal_fsyncs(observer) -> int:
    """How many times the server has fsynced its WAL (counted only while fsync is on)."""
    if one(observer, "select current_setting('server_version_num')::int") >= 180000:
        return one(observer, "select sum(fsyncs)::int from pg_stat_io where object = 'wal'")
    return one(observer, "select wal_sync from pg_stat_wal")


def test_the_server_fsyncs_a_commit(connect, observer):
    """Scenario: a session asks for its statistics to be flushed when it next goes idle
    (``pg_stat_force_next_flush()``), inserts a row and commits; the observer reads the
    server's count of WAL fsyncs before and after.

    Outcome: the count grew: the commit's WAL was fsynced, as it is only with fsync on
    (pytest-postgresql's ``-F`` overridden). With fsync off it would stay 0.
    """
    before = wal_fsyncs(observer)
    writer = connect()
    execute(writer, "select pg_stat_force_next_flush()")
    execute(writer, "insert into test values (3, 30)")
    writer.commit()   # the session reports its statistics before it says it is ready

    assert wal_fsyncs(observer) > before, "durability needs the commit fsynced"


def test_a_failed_login_is_refused_without_the_password(target):
    """Scenario: log in over TCP with a wrong password.

    Outcome: refused; the server accepts only the suite's generated password.
    """
    if not target.managed:
        pytest.skip("the existing server's authentication is its own business")
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(**target.info.params(password="not-the-password"))


_FOLDERS_SEEN: list[Path] = []


@pytest.mark.parametrize("turn", ["first", "second"])
def test_a_tests_folder_is_its_own_and_gone_after_it(tmp_path, turn):
    """Scenario: run twice; each run writes a file in its ``tmp_path``.

    Outcome: the folder is the suite's (acid_lab-test-... in the system's temporary
    folder, not pytest's kept basetemp), and the first run's folder is gone when the second
    runs: nothing a test writes outlives it.
    """
    assert tmp_path.parent == Path(tempfile.gettempdir())
    assert tmp_path.name.startswith(TMP_PREFIX)
    assert [path for path in _FOLDERS_SEEN if path.exists()] == [], "a test's folder was kept"
    (tmp_path / "left.txt").write_text("written by the test")
    _FOLDERS_SEEN.append(tmp_path)
