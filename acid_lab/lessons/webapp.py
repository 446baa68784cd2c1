"""A small Flask shop on PostgreSQL: where ACID meets the web stack.

The picture from the course notes, all of it real::

    web client  --HTTP-->  web server  --TCP, port-->  database server
    (browser, or Flask's   (Flask view: one request,   (PostgreSQL: one server
     test client)           one Flask-SQLAlchemy        process per pooled
                            session, one transaction)   connection = session)

SQLAlchemy writes the SQL, its *dialect* (``postgresql``) speaks to the
*DBAPI* (``psycopg2``), which sends it down a connection taken from the
engine's *pool*: long-running connections kept open and reused request after
request, at most ``pool_size + max_overflow`` of them at once.

``create_app(database_uri, engine_options, **config)`` builds one app. Views:

* ``GET  /stock/<item>``                  -> ``{"item", "quantity"}``
* ``POST /stock/<item>/buy/<way>``        -> ``{"quantity": left, "attempts": n}``;
  ``way`` is one of :data:`BUY_WAYS` (a lost update, or three ways to avoid it)
* ``GET  /drivers``                       -> ``[{"name", "plates"}]``
* ``POST /drivers`` ``{"name", "vehicles": [{"plate", "seats"}]}`` -> 201
* ``POST /drivers/<id>/vehicles`` ``{"plate", "seats"}``           -> 201
* ``POST /drafts`` ``{"name"}`` -> 200: writes a driver and forgets to commit (a bug
  on purpose: what happens to it is decided at the end of the request)
* ``GET  /session``  the database server's view of this request's session
  (and the web server's view of the HTTP client)

Errors become proper HTTP answers: a unique violation 409, any other broken
rule (check, foreign key, not null) 422, a transient database failure
(serialization failure, lost connection, empty pool) 503; the session is
rolled back first. Whatever a request leaves uncommitted -- an unhandled
exception halfway included -- is rolled back at teardown.

Test hooks, through ``app.config``: ``AFTER_READ_HOOK(backend_pid)`` runs in a
buy once the request has seen the stock -- after the UPDATE in the atomic way --
(:class:`Rendezvous`, :class:`Parking`); ``FAIL_AFTER_WRITES = n`` makes ``POST /drivers`` raise
after its n-th write; ``SERIALIZABLE_ATTEMPTS`` bounds the retry decorator.
"""

from __future__ import annotations

import functools
import itertools
import threading
import time
from collections.abc import Callable

from flask import Blueprint, Flask, current_app, g, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from psycopg2 import errors
from sqlalchemy import CheckConstraint, ForeignKey, select, text, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from acid_lab.engine import scenario
from acid_lab.engine.postgres import POSTGRES
from acid_lab.lessons.faults import InjectedFailure

READ_COMMITTED, SERIALIZABLE = scenario.READ_COMMITTED, scenario.SERIALIZABLE
DEFAULT_SERIALIZABLE_ATTEMPTS = 3
HOOK_TIMEOUT = 10.0      # seconds a test hook may hold a request
_POLL_SECONDS = 0.002    # between two "is the other request blocked?" questions


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
shop = Blueprint("shop", __name__)


# --------------------------------------------------------------------------- models


class Stock(db.Model):
    """How many of an item are left; never fewer than none."""

    __tablename__ = "stock"
    __table_args__ = (CheckConstraint("quantity >= 0", name="stock_never_negative"),)

    item: Mapped[str] = mapped_column(primary_key=True)
    quantity: Mapped[int]


class Driver(db.Model):
    """A driver; each vehicle points at one (vehicles.driver_id -> drivers.id)."""

    __tablename__ = "drivers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    vehicles: Mapped[list[Vehicle]] = relationship(back_populates="driver",
                                                   order_by="Vehicle.plate")


class Vehicle(db.Model):
    """A vehicle belongs to a driver (foreign key); a plate is registered once."""

    __tablename__ = "vehicles"
    __table_args__ = (CheckConstraint("seats between 1 and 9", name="vehicle_seats_1_to_9"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    plate: Mapped[str] = mapped_column(unique=True)
    seats: Mapped[int]
    driver_id: Mapped[int] = mapped_column(ForeignKey("drivers.id"))
    driver: Mapped[Driver] = relationship(back_populates="vehicles")


# --------------------------------------------------------------------------- the app


def create_app(database_uri, engine_options: dict | None = None, *, create_tables: bool = True,
               rollback_at_teardown: bool = True, **config) -> Flask:
    """A Flask app on ``database_uri`` (a SQLAlchemy URL, postgresql+psycopg2).

    ``engine_options`` go to ``create_engine`` (``connect_args``, ``pool_size``,
    ``pool_pre_ping`` ...); ``config`` updates ``app.config`` (the test hooks).
    With ``create_tables`` the models' tables are created where the connection's
    search_path points. ``rollback_at_teardown=False`` leaves the end of a request
    to Flask-SQLAlchemy alone (it removes the session, which rolls back).
    """
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_uri,
        SQLALCHEMY_ENGINE_OPTIONS=dict(engine_options or {}),
        PROPAGATE_EXCEPTIONS=False,   # an unhandled exception is a 500, as in production
        AFTER_READ_HOOK=None,
        FAIL_AFTER_WRITES=None,
        SERIALIZABLE_ATTEMPTS=DEFAULT_SERIALIZABLE_ATTEMPTS,
    )
    app.config.update(config)
    db.init_app(app)
    # Registered after init_app, so it runs before Flask-SQLAlchemy removes the session.
    if rollback_at_teardown:
        app.teardown_appcontext(roll_back_what_is_left)
    app.register_blueprint(shop)
    if create_tables:
        with app.app_context():
            db.create_all()
    return app


def dispose_engines(app: Flask) -> None:
    """Close every pooled connection of ``app``."""
    with app.app_context():
        for engine in db.engines.values():
            engine.dispose()


def roll_back_what_is_left(exc: BaseException | None) -> None:
    """End of request: nothing the view did not commit may survive it."""
    db.session.rollback()


# --------------------------------------------------------------------------- errors


@shop.app_errorhandler(sa_exc.IntegrityError)
def broken_constraint(error: sa_exc.IntegrityError):
    """A duplicate is a conflict (409); any other broken rule is unprocessable (422)."""
    db.session.rollback()
    duplicate = isinstance(error.orig, errors.UniqueViolation)
    return jsonify(error="duplicate" if duplicate else "rule broken",
                   sqlstate=error.orig.pgcode,
                   constraint=error.orig.diag.constraint_name), 409 if duplicate else 422


@shop.app_errorhandler(sa_exc.OperationalError)
def database_unavailable(error: sa_exc.OperationalError):
    """Serialization failure, lost connection, lock timeout: transient, try again (503)."""
    db.session.rollback()
    reason = ("connection lost" if error.connection_invalidated
              else "serialization failure" if isinstance(error.orig, errors.SerializationFailure)
              else "database error")
    return jsonify(error=reason, sqlstate=getattr(error.orig, "pgcode", None)), 503


@shop.app_errorhandler(sa_exc.TimeoutError)
def pool_exhausted(error: sa_exc.TimeoutError):
    """Every pooled connection is busy and the pool may not open more (503)."""
    db.session.rollback()
    return jsonify(error="no free database connection"), 503


# --------------------------------------------------------------------------- helpers


def begin(level: str) -> None:
    """Start the request's transaction at ``level`` (the pool resets it on return)."""
    # SQLAlchemy's option takes the level's upper-case spelling
    db.session.connection(execution_options={"isolation_level": level.upper()})


def backend_pid() -> int:
    """The server process serving this request's pooled connection."""
    return db.session.connection().connection.driver_connection.info.backend_pid


def after_read() -> None:
    hook = current_app.config["AFTER_READ_HOOK"]
    if hook is not None:
        hook(backend_pid())


def write(obj) -> None:
    """One write, sent to the server now; a test may make the request fail right after it."""
    db.session.add(obj)
    db.session.flush()
    g.writes = g.get("writes", 0) + 1
    if g.writes == current_app.config["FAIL_AFTER_WRITES"]:
        raise InjectedFailure(f"the request fails after {g.writes} writes")


def retry_serialization_failures(view: Callable) -> Callable:
    """Run ``view`` again, in a new transaction, when PostgreSQL reports 40001."""

    @functools.wraps(view)
    def retrying(*args, **kwargs):
        allowed = current_app.config["SERIALIZABLE_ATTEMPTS"]
        for attempt in itertools.count(1):
            g.attempts = attempt
            try:
                return view(*args, **kwargs)
            except sa_exc.OperationalError as error:
                if attempt >= allowed or not isinstance(error.orig, errors.SerializationFailure):
                    raise
                db.session.rollback()

    return retrying


# --------------------------------------------------------------------------- stock


def stock_row(item: str, *, for_update: bool = False) -> Stock:
    query = select(Stock).where(Stock.item == item)
    if for_update:
        query = query.with_for_update()
    return db.session.execute(query).scalar_one()


def read_modify_write(item: str, level: str, *, lock: bool = False) -> int:
    """Read the quantity, subtract one in Python, write it back, commit."""
    begin(level)
    stock = stock_row(item, for_update=lock)
    after_read()
    left = stock.quantity - 1
    stock.quantity = left
    db.session.commit()
    return left


def buy_by_read_modify_write(item: str) -> int:
    """Read, then write what was read minus one: a lost update waiting to happen."""
    return read_modify_write(item, READ_COMMITTED)


def buy_with_for_update(item: str) -> int:
    """The same, but the read locks the row (SELECT ... FOR UPDATE): the next buyer waits."""
    return read_modify_write(item, READ_COMMITTED, lock=True)


def buy_by_atomic_update(item: str) -> int:
    """One statement reads and writes: UPDATE ... SET quantity = quantity - 1."""
    begin(READ_COMMITTED)
    left = db.session.execute(
        update(Stock).where(Stock.item == item).values(quantity=Stock.quantity - 1)
        .returning(Stock.quantity).execution_options(synchronize_session=False)
    ).scalar_one()
    after_read()
    db.session.commit()
    return left


@retry_serialization_failures
def buy_serializable(item: str) -> int:
    """Read-modify-write at serializable: PostgreSQL aborts the loser; the decorator retries."""
    return read_modify_write(item, SERIALIZABLE)


BUY_WAYS: dict[str, Callable[[str], int]] = {
    "read-modify-write": buy_by_read_modify_write,
    "for-update": buy_with_for_update,
    "atomic-update": buy_by_atomic_update,
    "serializable": buy_serializable,
}


@shop.get("/stock/<item>")
def show_stock(item: str):
    stock = db.session.get(Stock, item)
    if stock is None:
        return jsonify(error="no such item"), 404
    return jsonify(item=item, quantity=stock.quantity)


@shop.post("/stock/<item>/buy/<way>")
def buy(item: str, way: str):
    if way not in BUY_WAYS:
        return jsonify(error=f"no such way to buy; try one of {sorted(BUY_WAYS)}"), 404
    g.attempts = 1
    left = BUY_WAYS[way](item)
    return jsonify(item=item, quantity=left, attempts=g.attempts)


# --------------------------------------------------------------------------- drivers


@shop.get("/drivers")
def list_drivers():
    drivers = db.session.execute(select(Driver).order_by(Driver.name)).scalars()
    return jsonify([{"name": d.name, "plates": [v.plate for v in d.vehicles]} for d in drivers])


@shop.post("/drivers")
def register_driver():
    """A driver and their vehicles: several writes, one transaction."""
    body = request.get_json()
    driver = Driver(name=body["name"])
    write(driver)
    for vehicle in body.get("vehicles", []):
        write(Vehicle(plate=vehicle["plate"], seats=vehicle["seats"], driver=driver))
    db.session.commit()
    return jsonify(id=driver.id), 201


@shop.post("/drivers/<int:driver_id>/vehicles")
def register_vehicle(driver_id: int):
    """The database, not the view, checks the driver exists and the plate is new."""
    body = request.get_json()
    vehicle = Vehicle(plate=body["plate"], seats=body["seats"], driver_id=driver_id)
    write(vehicle)
    db.session.commit()
    return jsonify(id=vehicle.id), 201


@shop.post("/drafts")
def register_driver_without_commit():
    """A bug on purpose: the driver is sent to the server (flush) and never committed."""
    driver = Driver(name=request.get_json()["name"])
    write(driver)
    return jsonify(id=driver.id, backend_pid=backend_pid())


# --------------------------------------------------------------------------- the session


@shop.get("/session")
def describe_session():
    """What the database server knows about the session serving this request, and what
    the web server knows about the HTTP client (its address, the port it called)."""
    row = db.session.execute(text(
        "select pg_backend_pid() as backend_pid, txid_current() as transaction_id,"
        " host(inet_client_addr()) as client_addr, inet_server_port() as server_port,"
        " current_setting('application_name') as application_name")).one()
    return jsonify(**row._asdict(), web_client_addr=request.remote_addr,
                   web_server_port=int(request.environ["SERVER_PORT"]))


# --------------------------------------------------------------------------- test hooks


class HookTimeout(AssertionError):
    """A test hook waited longer than its bound."""


class Rendezvous:
    """AFTER_READ_HOOK: hold each request after its read until the other one has read too.

    Then both have seen the same stock before either writes -- the lost update
    happens every time, not by luck. A request that cannot reach the hook
    because it waits for a row lock held by one already here must not be waited
    for (that would deadlock): whether it is blocked is asked of the server
    through ``via`` (an autocommit connection of the test's own). Requests that
    arrive after the meeting pass straight through (a retry, a buyer that was
    blocked). ``how`` tells how the meeting ended: :data:`ALL_READ` or
    :data:`ONE_WAITS_FOR_A_LOCK`.
    """

    ALL_READ = "all read"
    ONE_WAITS_FOR_A_LOCK = "one waits for a lock"

    def __init__(self, via, parties: int = 2, timeout: float = HOOK_TIMEOUT):
        self.via = via
        self.parties = parties
        self.timeout = timeout
        self.arrived: list[int] = []
        self.how: str | None = None
        self._met = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, pid: int) -> None:
        with self._lock:
            self.arrived.append(pid)
            if len(self.arrived) >= self.parties:
                self._meet(self.ALL_READ)
        deadline = time.monotonic() + self.timeout
        while not self._met.wait(_POLL_SECONDS):
            if self._someone_waits_for(pid):
                with self._lock:
                    self._meet(self.ONE_WAITS_FOR_A_LOCK)
            elif time.monotonic() > deadline:
                raise HookTimeout(f"request on backend {pid} waited {self.timeout:g} s for "
                                  f"the other to read; arrived so far: {self.arrived}")

    def _meet(self, how: str) -> None:
        if not self._met.is_set():
            self.how = how
            self._met.set()

    def _someone_waits_for(self, pid: int) -> bool:
        with self.via.cursor() as cur:
            return POSTGRES.someone_waits_for(cur, pid)


class Parking:
    """AFTER_READ_HOOK: park the first request after its read, holding its connection.

    ``parked`` is set once it is there; it leaves when the test sets ``release``
    (or after ``timeout``, failing). Later requests pass straight through.
    """

    def __init__(self, timeout: float = HOOK_TIMEOUT):
        self.timeout = timeout
        self.parked = threading.Event()
        self.release = threading.Event()

    def __call__(self, pid: int) -> None:
        if self.parked.is_set():
            return
        self.parked.set()
        if not self.release.wait(self.timeout):
            raise HookTimeout(f"request on backend {pid} stayed parked {self.timeout:g} s")
