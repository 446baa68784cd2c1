"""The bank both the atomicity and the consistency chapters run (schema: ``schema.BANK``).

Every operation is one transaction of a few statements; the money moves in
``accounts.balance`` and every move leaves a row in ``audit``. A transfer is
the four statements of ``TRANSFER``::

    1. update accounts set balance = balance - :amount where id = :source   -- debit
    2. update accounts set balance = balance + :amount where id = :target   -- credit
    3. insert into audit (account_id, delta) values (:source, -:amount)
    4. insert into audit (account_id, delta) values (:target, :amount)

Two kinds of rules. The declared ones are the database's: ``no_negative_balance``
refuses an overdraft (23514), the audit row's foreign key an unknown account
(23503), the primary key a second account with the same id (23505) -- whatever
the client does. "Each balance equals the sum of its audit rows" and "a transfer
creates no money" are declared nowhere: this module keeps them, by writing the
balance change and its audit row in one transaction. An application that sends
the same statements without a transaction breaks them at the first failure
(``tests/test_consistency_bank.py``); a trigger can move such a rule into the
database (``tests/test_consistency_triggers.py``).
"""

from __future__ import annotations

from psycopg2 import sql

from acid_lab.lessons.schema import FLEET_TABLES
from acid_lab.servers.queries import execute

TRANSFER = (
    "update accounts set balance = balance - %(amount)s where id = %(source)s",
    "update accounts set balance = balance + %(amount)s where id = %(target)s",
    "insert into audit (account_id, delta) values (%(source)s, - %(amount)s)",
    "insert into audit (account_id, delta) values (%(target)s, %(amount)s)",
)


def transfer_statements(source: int = 1, target: int = 2,
                        amount: int = 30) -> list[tuple[str, dict]]:
    """The four statements of a transfer, each with its parameters (default: alice pays bob 30)."""
    params = {"source": source, "target": target, "amount": amount}
    return [(statement, params) for statement in TRANSFER]


def execute_each(conn, statements: list[tuple[str, dict]]) -> None:
    """Execute statements on ``conn`` one after another (no transaction control here)."""
    with conn.cursor() as cur:
        for statement, params in statements:
            cur.execute(statement, params)


def one_transaction(connect, *statements: str) -> None:
    """Run the statements as one transaction of a new session; commit if all succeed."""
    conn = connect()
    with conn:
        for statement in statements:
            execute(conn, statement)


class Bank:
    """Bank operations, each one transaction on ``conn`` (psycopg2's ``with conn:``).

    A failed operation raises the database's error and leaves nothing behind.
    """

    def __init__(self, conn):
        self.conn = conn

    def _transaction(self, statements: list[tuple[str, dict]]) -> None:
        with self.conn:  # commits on success, rolls back on any exception
            execute_each(self.conn, statements)

    def open(self, account: int, owner: str) -> None:
        self._transaction([("insert into accounts (id, owner) values (%s, %s)",
                            (account, owner))])

    def deposit(self, account: int, amount: int) -> None:
        self._transaction([
            ("update accounts set balance = balance + %s where id = %s", (amount, account)),
            ("insert into audit (account_id, delta) values (%s, %s)", (account, amount)),
        ])

    def withdraw(self, account: int, amount: int) -> None:
        self._transaction([
            ("update accounts set balance = balance - %s where id = %s", (amount, account)),
            ("insert into audit (account_id, delta) values (%s, %s)", (account, -amount)),
        ])

    def transfer(self, source: int, target: int, amount: int) -> None:
        self._transaction(transfer_statements(source, target, amount))


def balances(conn) -> dict[int, int]:
    """Every account's balance, by id."""
    with conn.cursor() as cur:
        cur.execute("select id, balance from accounts order by id")
        return dict(cur.fetchall())


def audit_sums(conn) -> dict[int, int]:
    """The sum of each account's audit rows, by account id (accounts without rows omitted)."""
    with conn.cursor() as cur:
        cur.execute("select account_id, sum(delta)::int from audit group by 1 order by 1")
        return dict(cur.fetchall())


def seen_by_everyone(conn) -> tuple[dict[int, int], dict[int, int]]:
    """The bank as any other session sees it: (balances, audit sums)."""
    return balances(conn), audit_sums(conn)


def snapshot(conn, *tables: str) -> dict[str, list[tuple]]:
    """Every row of the given tables, sorted: compare two to see that nothing changed."""
    contents = {}
    with conn.cursor() as cur:
        for table in tables:
            cur.execute(sql.SQL("select * from {} as r order by r").format(sql.Identifier(table)))
            contents[table] = [tuple(row) for row in cur.fetchall()]
    return contents


def fleet_rows(conn) -> dict[str, list[tuple]]:
    """Every row of the drivers-and-vehicles tables (``schema.DRIVERS``)."""
    return snapshot(conn, *FLEET_TABLES)
