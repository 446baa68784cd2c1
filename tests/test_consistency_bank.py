"""Consistency through any history: a bank driven by Hypothesis's state machine.

The declared rules are tested one by one in ``test_consistency.py``. Here
Hypothesis writes the histories: it opens accounts, deposits, withdraws and
transfers in any order, and mixes in operations that must be refused -- an
overdraft (CHECK balance >= 0, 23514), an account that does not exist (the
audit row's foreign key, 23503), a second account with a taken id (the
primary key, 23505). After every step the invariants are checked on the
database: no balance is negative, the money in the bank equals deposits minus
withdrawals, each balance equals the sum of its audit rows, and a refused
operation changed nothing. When one fails, Hypothesis shrinks the history to
the shortest that breaks it.

Every operation is one transaction of ``acid_lab.lessons.bank.Bank``. Two kinds of
rule are checked, kept by two different parties:

* the database's, declared in the schema (``acid_lab.lessons.schema.BANK``): no
  negative balance (CHECK), no audit row for a missing account (foreign key),
  one account per id (primary key). They hold whatever a client sends;
* the application's: each balance equals the sum of its audit rows, and the
  money equals deposits minus withdrawals. No declaration states them; ``Bank``
  keeps them by making each balance change and its audit rows one transaction.
  The last test shows an application that forgets the transaction break them
  while every rule of the database still holds.
"""

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg2 import errors

from acid_lab.lessons.bank import Bank, audit_sums, balances, snapshot
from acid_lab.lessons.faults import InjectedFailure
from acid_lab.servers.queries import execute

pytestmark = pytest.mark.consistency


ACCOUNT_IDS = st.integers(min_value=1, max_value=4)
UNKNOWN_IDS = st.integers(min_value=5, max_value=9)
AMOUNTS = st.integers(min_value=1, max_value=100)


class BankMachine(RuleBasedStateMachine):
    """Random histories of a bank; after every step the bank's rules hold and the
    database agrees with a model kept in Python."""

    def __init__(self, conn, observer):
        super().__init__()
        execute(observer, "delete from audit; delete from accounts")  # each example starts empty
        self.bank = Bank(conn)
        self.observer = observer
        self.model: dict[int, int] = {}
        self.deposited = self.withdrawn = 0

    def existing(self, data):
        return data.draw(st.sampled_from(sorted(self.model)), label="account")

    def refused(self, operation, error, *args):
        """Run an invalid operation: it must fail with ``error`` and change nothing."""
        before = snapshot(self.observer, "accounts", "audit")
        with pytest.raises(error):
            operation(*args)
        assert snapshot(self.observer, "accounts", "audit") == before, \
            "consistency: a refused operation changes nothing"

    # -- valid operations

    @rule(account=ACCOUNT_IDS)
    def open_account(self, account):
        if account in self.model:
            return self.refused(self.bank.open, errors.UniqueViolation, account, "again")
        self.bank.open(account, f"owner {account}")
        self.model[account] = 0

    @precondition(lambda self: self.model)
    @rule(data=st.data(), amount=AMOUNTS)
    def deposit(self, data, amount):
        account = self.existing(data)
        self.bank.deposit(account, amount)
        self.model[account] += amount
        self.deposited += amount

    @precondition(lambda self: any(self.model.values()))
    @rule(data=st.data())
    def withdraw(self, data):
        account = data.draw(st.sampled_from([a for a, b in sorted(self.model.items()) if b]))
        amount = data.draw(st.integers(1, self.model[account]), label="amount")
        self.bank.withdraw(account, amount)
        self.model[account] -= amount
        self.withdrawn += amount

    @precondition(lambda self: len(self.model) >= 2 and any(self.model.values()))
    @rule(data=st.data())
    def transfer(self, data):
        source = data.draw(st.sampled_from([a for a, b in sorted(self.model.items()) if b]))
        target = data.draw(st.sampled_from([a for a in sorted(self.model) if a != source]))
        amount = data.draw(st.integers(1, self.model[source]), label="amount")
        self.bank.transfer(source, target, amount)
        self.model[source] -= amount
        self.model[target] += amount

    # -- invalid operations

    @precondition(lambda self: self.model)
    @rule(data=st.data(), extra=AMOUNTS)
    def overdraw(self, data, extra):
        account = self.existing(data)
        self.refused(self.bank.withdraw, errors.CheckViolation, account,
                     self.model[account] + extra)

    @rule(account=UNKNOWN_IDS, amount=AMOUNTS)
    def deposit_to_unknown_account(self, account, amount):
        self.refused(self.bank.deposit, errors.ForeignKeyViolation, account, amount)

    @precondition(lambda self: any(self.model.values()))
    @rule(data=st.data(), unknown=UNKNOWN_IDS)
    def transfer_to_unknown_account(self, data, unknown):
        source = data.draw(st.sampled_from([a for a, b in sorted(self.model.items()) if b]))
        self.refused(self.bank.transfer, errors.ForeignKeyViolation, source, unknown, 1)

    # -- invariants, checked after every step

    @invariant()
    def no_balance_is_negative(self):
        assert all(balance >= 0 for balance in balances(self.observer).values()), \
            "consistency: no negative balance"

    @invariant()
    def total_is_deposits_minus_withdrawals(self):
        assert sum(balances(self.observer).values()) == self.deposited - self.withdrawn, \
            "consistency: money is neither created nor destroyed"

    @invariant()
    def audit_rows_match_the_balances(self):
        audited = audit_sums(self.observer)
        assert {a: audited.get(a, 0) for a in self.model} == self.model == \
            balances(self.observer), "consistency: every balance is the sum of its audit rows"


@pytest.mark.usefixtures("bank")
def test_a_bank_keeps_its_rules_through_any_history(connect, observer):
    """Property (stateful): open accounts, deposit, withdraw, transfer, and try invalid
    operations -- overdraw, an unknown account, a duplicate account -- in any order.

    Outcome: each invalid operation fails with its SQLSTATE class and changes
    nothing; after every step no balance is negative, the total equals
    deposits minus withdrawals, and each balance equals its audit rows.
    """
    conn = connect()
    run_state_machine_as_test(lambda: BankMachine(conn, observer),
                              settings=settings(max_examples=30, stateful_step_count=12))


# A transfer of 30 from alice to bob, as the application sends it (acid_lab.lessons.bank):
TRANSFER_30 = [
    "update accounts set balance = balance - 30 where id = 1",   # debit alice
    "update accounts set balance = balance + 30 where id = 2",   # credit bob
    "insert into audit (account_id, delta) values (1, -30)",
    "insert into audit (account_id, delta) values (2, 30)",
]


@pytest.mark.usefixtures("bank")
@pytest.mark.parametrize("autocommit, balances_after, audit_after", [
    pytest.param(False, {1: 100, 2: 0}, {1: 100},
                 id="one transaction: the crash undoes the debit and the credit"),
    pytest.param(True, {1: 70, 2: 30}, {1: 100},
                 id="autocommit: debit and credit stay, their audit rows never come"),
])
def test_an_application_that_forgets_the_transaction_breaks_its_own_rule(
        connect, observer, autocommit, balances_after, audit_after):
    """Scenario: alice (100, audited by one deposit of 100) and bob (0). The application
    sends TRANSFER_30 above and crashes after the credit, before the audit rows:
    once inside one transaction, once in autocommit (each statement commits on its
    own -- the transaction forgotten).

    Outcome: with the transaction nothing of the transfer remains. Without it the
    debit and the credit are committed and their audit rows never written: alice's
    balance (70) is no longer the sum of her audit rows (100). The database saw no
    broken rule -- no negative balance, no dangling audit row, nothing to refuse:
    that rule was the application's, and only the transaction kept it.
    """
    execute(observer, "delete from audit; update accounts set balance = 0;"
                      " update accounts set balance = 100 where id = 1;"
                      " insert into audit (account_id, delta) values (1, 100)")
    app = connect()
    app.autocommit = autocommit
    with pytest.raises(InjectedFailure):
        try:
            for statement in TRANSFER_30[:2]:
                execute(app, statement)
            raise InjectedFailure("the application crashes before the audit rows")
        finally:
            app.rollback()   # what the crash does to an open transaction (none in autocommit)

    assert balances(observer) == balances_after, "what the crash left of the balances"
    assert audit_sums(observer) == audit_after, "what the crash left of the audit"
    assert (balances(observer)[1] == audit_sums(observer)[1]) is not autocommit, \
        "the application's rule: alice's balance is the sum of her audit rows"
    assert all(balance >= 0 for balance in balances(observer).values()), \
        "the database's rule (CHECK) holds either way"
