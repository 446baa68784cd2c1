"""The demo schemas the chapters stand on, as plain SQL.

Every test's place starts with Hermitage's table ``test``: two rows, (1, 10)
and (2, 20). Other demo schemas are created by the tests that need them.
"""

HERMITAGE = """
create table test (id int primary key, value int);
insert into test (id, value) values (1, 10), (2, 20);
"""
