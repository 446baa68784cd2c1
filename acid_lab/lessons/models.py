"""ORM models of the demo schemas, declared the way a Flask-SQLAlchemy app declares them.

SQLAlchemy 2.x declarative style: one ``DeclarativeBase``, one class per
table, typed ``Mapped[...]`` columns, the constraints stated on the model so
that ``Base.metadata.create_all(engine)`` (Flask-SQLAlchemy's
``db.create_all()``) builds tables that enforce the same rules as the SQL in
``acid_lab.lessons.schema``; the models also map those SQL-built tables as they are.

In a Flask app::

    db = SQLAlchemy(model_class=Base)   # db.metadata is Base.metadata
    db.create_all()
    db.session.add(Driver(name="Ada"))  # these classes work with db.session

The database keeps the rules: the ORM only sends SQL. A broken rule comes back
as ``sqlalchemy.exc.IntegrityError`` whose ``.orig`` is psycopg2's error class
(``errors.UniqueViolation``, ``errors.ForeignKeyViolation`` ...), and the
session must be rolled back before it is used again.
"""

from __future__ import annotations

from sqlalchemy import CheckConstraint, ForeignKey, Identity, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    """The declarative base: its ``metadata`` holds every table below."""


class Driver(Base):
    __tablename__ = "drivers"
    __table_args__ = (
        CheckConstraint("cardinality(license_classes) > 0 and license_classes <@ '{A,B,C,D}'",
                        name="known_license_classes"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(Text)   # not Optional: NOT NULL
    license_classes: Mapped[list[str]] = mapped_column(ARRAY(Text), default=lambda: ["B"])

    # The database refuses to delete a driver who still has vehicles (ON DELETE
    # RESTRICT); passive_deletes="all" keeps the ORM from quietly setting their
    # driver_id to NULL first.
    vehicles: Mapped[list[Vehicle]] = relationship(back_populates="driver",
                                                   passive_deletes="all")

    def __repr__(self) -> str:
        return f"Driver(id={self.id!r}, name={self.name!r})"


class Vehicle(Base):
    __tablename__ = "vehicles"
    __table_args__ = (
        CheckConstraint("plate ~ '^[A-Z0-9]{1,4}-[A-Z0-9]{1,4}$'", name="plate_format"),
        UniqueConstraint("plate", name="unique_plate"),
        # checked at COMMIT, so that two vehicles can swap spots
        UniqueConstraint("parking_spot", name="unique_parking_spot",
                         deferrable=True, initially="DEFERRED"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    plate: Mapped[str] = mapped_column(Text)
    driver_id: Mapped[int | None] = mapped_column(
        ForeignKey("drivers.id", ondelete="RESTRICT"))
    parking_spot: Mapped[int | None]
    specs: Mapped[dict] = mapped_column(JSONB, default=dict)

    driver: Mapped[Driver | None] = relationship(back_populates="vehicles")

    def __repr__(self) -> str:
        return f"Vehicle(id={self.id!r}, plate={self.plate!r}, driver_id={self.driver_id!r})"


class Account(Base):
    __tablename__ = "accounts"
    __table_args__ = (CheckConstraint("balance >= 0", name="no_negative_balance"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    owner: Mapped[str] = mapped_column(Text)
    balance: Mapped[int] = mapped_column(default=0)

    def __repr__(self) -> str:
        return f"Account(id={self.id!r}, owner={self.owner!r}, balance={self.balance!r})"


class AuditEntry(Base):
    __tablename__ = "audit"
    __table_args__ = (CheckConstraint("delta <> 0", name="no_empty_entry"),)

    entry: Mapped[int] = mapped_column(Identity(always=True), primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    delta: Mapped[int]
