"""Everything that differs between SQLite, PostgreSQL and MariaDB/MySQL.

This is the only module that looks at a dialect's name: URL to driver,
column types whose storage differs (UTC timestamps, exact money, JSON),
connection set-up (SQLite durability pragmas), idempotent inserts, upserts
and cross-process locks. The rest of syncd stays dialect-free.
"""

from __future__ import annotations

import hashlib
import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import JSON, DateTime, Numeric, String, Table, any_, bindparam, event, text
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Dialect, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator, TypeEngine

from syncd.errors import ConfigError

# Money: 19 digits, 4 after the point (enough for 3-decimal currencies and
# unit prices); values with more decimals are refused by the wire parser.
MONEY_PRECISION, MONEY_SCALE = 19, 4
_MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
SQLITE_MONEY_DIGITS = 15  # what a 64-bit float holds exactly

_DRIVERS = {
    "sqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}


def database_url(raw: str, variable: str = "SYNCD_DATABASE_URL") -> URL:
    """A plain URL (``postgresql://…``) with the driver syncd uses filled in."""
    try:
        url = make_url(raw)
    except ArgumentError:
        raise ConfigError(variable, "not a database URL (e.g. sqlite:///syncd.db)") from None
    backend = url.get_backend_name()
    if backend not in _DRIVERS:
        raise ConfigError(
            variable, f"unsupported database {backend!r}: use sqlite, postgresql, mysql or mariadb"
        )
    if "+" in url.drivername and url.drivername != _DRIVERS[backend]:
        driver = url.drivername.split("+", 1)[1]
        raise ConfigError(
            variable,
            f"syncd picks the database driver itself: write {backend}://… without '+{driver}'",
        )
    if backend == "sqlite" and url.host:
        raise ConfigError(
            variable,
            "a SQLite URL has three slashes before a relative path (sqlite:///syncd.db) "
            "and four before an absolute one (sqlite:////var/lib/syncd/syncd.db)",
        )
    url = url.set(drivername=_DRIVERS[backend])
    if url.get_backend_name() in ("mysql", "mariadb") and "charset" not in url.query:
        url = url.update_query_dict({"charset": "utf8mb4"})
    return url


def kind(url: URL) -> str:
    """The database's kind as ``url`` names it: postgresql, mysql or sqlite."""
    return url.get_backend_name()


def is_embedded(url: URL) -> bool:
    """Whether ``url`` names an embedded database (SQLite: a file or memory,
    no server to reach)."""
    return kind(url) == "sqlite"


def database_file(url: URL) -> str | None:
    """The file a SQLite database lives in; None for a server's database or
    SQLite in memory."""
    database = url.database
    if not is_embedded(url) or not database or database == ":memory:":
        return None
    return database


def engine_options(
    url: URL, *, pool_size: int = 10, max_overflow: int = 10, pool_timeout: float = 30.0
) -> dict[str, Any]:
    options: dict[str, Any] = {
        "json_serializer": lambda obj: orjson.dumps(obj).decode(),
        "json_deserializer": orjson.loads,
        "pool_pre_ping": True,
        # Error messages must not carry the statement's parameters (customer data).
        "hide_parameters": True,
    }
    if url.get_backend_name() == "sqlite":
        # Timeout in seconds to wait for the write lock; also set as a pragma.
        options["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        options["pool_size"] = pool_size
        options["max_overflow"] = max_overflow
        options["pool_timeout"] = pool_timeout
        options["pool_recycle"] = 1800
        if url.get_backend_name() == "postgresql":
            options["connect_args"] = {"connect_timeout": 5}
        else:
            options["connect_args"] = {"connect_timeout": 5, "read_timeout": 60}
            # InnoDB's default REPEATABLE READ takes gap locks that make the
            # inbox's inserts and the worker's claims deadlock under load.
            options["isolation_level"] = "READ COMMITTED"
    return options


def configure_engine(engine: Engine) -> None:
    """Per-connection set-up. SQLite: WAL, fsync on commit, wait on locks,
    and BEGIN IMMEDIATE so that a transaction takes the write lock up front
    instead of failing when it upgrades from reading to writing."""
    if engine.dialect.name == "postgresql":
        from psycopg.types.json import set_json_loads

        @event.listens_for(engine, "connect")
        def _postgresql_connect(dbapi_connection: Any, _record: Any) -> None:
            # psycopg decodes JSONB itself; orjson does it several times faster.
            set_json_loads(orjson.loads, dbapi_connection)

    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(connection: Connection) -> None:
        if connection.get_execution_options().get(READ_ONLY_OPTION):
            connection.exec_driver_sql("BEGIN")  # WAL readers need no lock
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


READ_ONLY_OPTION = "syncd_read_only"


def reading(engine: Engine) -> Connection:
    """A connection for reads only: on SQLite it does not queue for the write
    lock (health checks, metrics and status stay quick while the worker
    writes). Elsewhere an ordinary connection."""
    return engine.connect().execution_options(**{READ_ONLY_OPTION: True})


# --- column types -----------------------------------------------------------


class UTCDateTime(TypeDecorator[datetime]):
    """A point in time, stored in UTC with microseconds, read back tz-aware.

    PostgreSQL: ``timestamptz``; MariaDB: ``DATETIME(6)`` holding UTC;
    SQLite: ISO text holding UTC. A naive value is refused: callers must
    decide what a naive time means (the wire parser reads it as UTC).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # SQLite rows written by other tools
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


class Money(TypeDecorator[Decimal]):
    """Exact decimal money: NUMERIC(19, 4) everywhere.

    SQLite has no decimal storage; it keeps NUMERIC values as 64-bit floats,
    which hold every amount with up to 15 significant digits exactly enough
    to round back to 4 places. We do that rounding here instead of letting
    the driver warn about it.
    """

    impl = Numeric(MONEY_PRECISION, MONEY_SCALE)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(Numeric(MONEY_PRECISION, MONEY_SCALE, asdecimal=False))
        return dialect.type_descriptor(Numeric(MONEY_PRECISION, MONEY_SCALE))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            if not isinstance(value, Decimal):  # ints and strings from plain SQL users
                value = Decimal(str(value))
            if len(value.as_tuple().digits) > SQLITE_MONEY_DIGITS:
                # SQLite keeps NUMERIC as a 64-bit float: more digits would be
                # rounded silently. Refuse instead (PostgreSQL/MariaDB hold 19).
                raise ValueError(
                    f"amount {value} has more than {SQLITE_MONEY_DIGITS} digits, "
                    "more than SQLite stores exactly: use PostgreSQL or MariaDB"
                )
            return str(value)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        amount = (
            value
            if isinstance(value, Decimal)
            else Decimal(repr(value) if isinstance(value, float) else str(value))
        )
        return amount.quantize(_MONEY_QUANTUM)


def local_datetime_type() -> TypeEngine[datetime]:
    """A store-local wall-clock time, without a zone, with microseconds:
    ``timestamp`` on PostgreSQL, ``DATETIME(6)`` on MariaDB, ISO text on SQLite."""
    return DateTime(timezone=False).with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def ident_type(length: int) -> TypeEngine[str]:
    """Text that is compared exactly: ids and store names. MariaDB's default
    collation folds case, so ``evt_AbC`` and ``evt_abc`` would share a key;
    a binary collation keeps them apart."""
    return String(length).with_variant(
        mysql.VARCHAR(length, collation="utf8mb4_bin"), "mysql", "mariadb"
    )


def json_type() -> TypeEngine[Any]:
    """JSON, stored as JSONB on PostgreSQL."""
    return JSON().with_variant(postgresql.JSONB(), "postgresql")


# --- statements -------------------------------------------------------------


def key_in(
    conn: Connection, column: ColumnElement[Any], values: Sequence[Any], *, chunk: int = 500
) -> Iterator[ColumnElement[bool]]:
    """Conditions ``column IN values`` for one statement each, covering ``values``.

    PostgreSQL: a single ``column = ANY(:array)``, one parameter however many
    values, so the statement's text is the same every time (both SQLAlchemy
    and psycopg cache it) and the driver adapts the list in C: a third of the
    client CPU of two 500-value IN lists. Elsewhere IN lists of ``chunk``.
    """
    if not values:
        return
    if conn.dialect.name == "postgresql":
        yield column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
        return
    for start in range(0, len(values), chunk):
        yield column.in_(values[start : start + chunk])


def insert_ignoring_duplicates(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], *, expect_new: bool = False
) -> None:
    """Insert ``rows``; a row whose key exists already is skipped silently.

    ``expect_new``: the caller has checked that none of the keys is there (a
    key may still turn up, written meanwhile); see :func:`_copy_expecting_new`.
    (``INSERT IGNORE`` is avoided on MariaDB: it would also swallow data errors.)
    """
    if not rows:
        return
    stmt: Insert
    name = conn.dialect.name
    if name == "postgresql" and len(rows) >= STAGED_MIN_ROWS:
        if not (expect_new and _copy_expecting_new(conn, table, rows)):
            _staged_insert(conn, table, rows, "DO NOTHING")
        return
    if name == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing()
    elif name == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    else:
        first_key = table.primary_key.columns.values()[0].name
        my = mysql.insert(table)
        stmt = my.on_duplicate_key_update({first_key: my.inserted[first_key]})
    conn.execute(stmt, list(rows))


def upsert(
    conn: Connection,
    table: Table,
    rows: Sequence[dict[str, Any]],
    *,
    update: Sequence[str],
    expect_new: bool = False,
) -> None:
    """Insert ``rows`` or, where the key exists, overwrite the ``update`` columns.

    Callers decide beforehand (under :func:`store_lock`) that each row wins.
    ``expect_new``: as for :func:`insert_ignoring_duplicates`.
    """
    if not rows:
        return
    name = conn.dialect.name
    if name == "postgresql" and len(rows) >= STAGED_MIN_ROWS:
        # One statement for all rows; a key twice would be an error there, and
        # the last row is the one that would have won row by row.
        last = list({tuple(row[c.name] for c in table.primary_key): row for row in rows}.values())
        if expect_new and _copy_expecting_new(conn, table, last):
            return
        assignments = ", ".join(f'"{column}" = EXCLUDED."{column}"' for column in update)
        _staged_insert(conn, table, last, f"DO UPDATE SET {assignments}")
        return
    if name == "postgresql":
        pg = postgresql.insert(table)
        stmt: Insert = pg.on_conflict_do_update(
            index_elements=list(table.primary_key.columns),
            set_={col: pg.excluded[col] for col in update},
        )
    elif name == "sqlite":
        lite = sqlite.insert(table)
        stmt = lite.on_conflict_do_update(
            index_elements=list(table.primary_key.columns),
            set_={col: lite.excluded[col] for col in update},
        )
    else:
        my = mysql.insert(table)
        stmt = my.on_duplicate_key_update({col: my.inserted[col] for col in update})
    conn.execute(stmt, list(rows))


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Plain inserts of many rows; on PostgreSQL through COPY, several times
    faster than row-by-row statements."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(table.insert(), list(rows))
        return
    _copy(conn, table, table.name, list(rows[0]), rows)


# Below this many rows, plain statements beat the staging table's round trips.
STAGED_MIN_ROWS = 64


UNIQUE_VIOLATION = "23505"  # PostgreSQL's SQLSTATE


def _copy_expecting_new(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> bool:
    """PostgreSQL: COPY ``rows`` straight into ``table``, which the caller
    expects to hold none of their keys: no staging table, no second copy of
    each row on the server. Returns False, with nothing written, if a key was
    there after all (the caller then takes the staged way, which handles it)."""
    try:
        with conn.begin_nested():
            _copy(conn, table, table.name, list(rows[0]), rows)
    except Exception as exc:
        if getattr(exc, "sqlstate", None) == UNIQUE_VIOLATION:
            return False
        raise
    return True


def _staged_insert(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], on_conflict: str
) -> None:
    """PostgreSQL: COPY the rows into a session-private staging table, then
    one ``INSERT … SELECT … ON CONFLICT``. Much less work per row for the
    driver and the server than one statement per row."""
    stage = f"syncd_stage_{table.name}"
    columns = list(rows[0])
    quoted = ", ".join(f'"{name}"' for name in columns)
    key = ", ".join(f'"{column.name}"' for column in table.primary_key)
    conn.exec_driver_sql(
        f'CREATE TEMP TABLE IF NOT EXISTS "{stage}" ON COMMIT DELETE ROWS '
        f'AS SELECT * FROM "{table.name}" WITH NO DATA'
    )
    _copy(conn, table, stage, columns, rows)
    conn.exec_driver_sql(
        f'INSERT INTO "{table.name}" ({quoted}) SELECT {quoted} FROM "{stage}" '
        f"ON CONFLICT ({key}) {on_conflict}"
    )
    conn.exec_driver_sql(f'DELETE FROM "{stage}"')


def _copy(
    conn: Connection,
    table: Table,
    target: str,
    columns: list[str],
    rows: Sequence[dict[str, Any]],
) -> None:
    """COPY ``rows`` into ``target``, each value converted by its column's
    type as a statement would (UTC times, money, JSON)."""
    # The values of a row in one C call; only the columns whose type converts
    # (times, money, JSON) are touched in Python.
    converting = [
        (index, fn)
        for index, name in enumerate(columns)
        if (fn := _bind_processor(table.c[name].type, conn.dialect)) is not None
    ]
    pick = operator.itemgetter(*columns, *columns[:1])  # always a tuple, one extra at the end
    width = len(columns)
    raw = conn.connection.driver_connection
    assert raw is not None
    quoted = ", ".join(f'"{name}"' for name in columns)
    with raw.cursor() as cursor, cursor.copy(f'COPY "{target}" ({quoted}) FROM STDIN') as copy:
        write = copy.write_row
        for row in rows:
            values = list(pick(row)[:width])
            for index, fn in converting:
                values[index] = fn(values[index])
            write(values)


def _bind_processor(type_: TypeEngine[Any], dialect: Dialect) -> Any:
    return type_.dialect_impl(dialect).bind_processor(dialect)


def analyze(conn: Connection, tables: Sequence[Table]) -> None:
    """Refresh the planner's statistics. A bulk import grows the tables faster
    than autovacuum looks at them; with stale numbers PostgreSQL scans a whole
    table for a handful of keys, and every page of the import gets slower."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("ANALYZE")
    elif conn.dialect.name == "postgresql":
        for table in tables:
            # Only the columns that keys and indexes look up: the row counts are
            # refreshed all the same, and the JSON columns' statistics, which
            # no query here needs, were most of the cost (a fifth of a 20,000
            # order import's server time).
            columns = ", ".join(f'"{name}"' for name in _indexed_columns(table))
            conn.exec_driver_sql(f'ANALYZE "{table.name}" ({columns})')
    else:
        conn.exec_driver_sql("ANALYZE TABLE " + ", ".join(f"`{table.name}`" for table in tables))


def _indexed_columns(table: Table) -> list[str]:
    names = [column.name for column in table.primary_key.columns]
    for index in sorted(table.indexes, key=lambda index: str(index.name)):
        names.extend(column.name for column in index.columns)
    return list(dict.fromkeys(names))


# --- locks ------------------------------------------------------------------


def _lock_key(name: str) -> int:
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _mysql_lock_name(conn: Connection, name: str) -> str:
    # GET_LOCK names are server-wide (PostgreSQL's advisory locks are per
    # database): the database's name keeps two deployments on one server apart.
    # Limited to 64 characters.
    scoped = f"{conn.engine.url.database}\0{name}"
    return "syncd:" + hashlib.sha256(scoped.encode()).hexdigest()[:40]


@contextmanager
def transaction_lock(conn: Connection, name: str, timeout: float = 60.0) -> Iterator[None]:
    """Hold an exclusive lock named ``name`` for the transaction running on ``conn``.

    PostgreSQL: ``pg_advisory_xact_lock`` (ends with the transaction).
    MariaDB: ``GET_LOCK``, released on exit (or when the session dies).
    SQLite: nothing to do; the transaction holds the database's write lock
    already (BEGIN IMMEDIATE).
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(name)})
        yield
    elif dialect in ("mysql", "mariadb"):
        lock = _mysql_lock_name(conn, name)
        got = conn.execute(text("SELECT GET_LOCK(:n, :t)"), {"n": lock, "t": timeout}).scalar()
        if got != 1:
            raise TimeoutError(f"lock {name!r} not granted within {timeout} s")
        try:
            yield
        finally:
            conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": lock})
    else:
        yield


@contextmanager
def session_lock(conn: Connection, name: str) -> Iterator[bool]:
    """Try to take a process-wide exclusive lock without waiting.

    Yields whether it was taken; released on exit (and by the database if the
    process dies, since it belongs to the connection's session). On SQLite
    a lock file beside the database stands in.
    """
    dialect = conn.dialect.name
    if dialect == "postgresql":
        key = _lock_key(name)
        got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                conn.commit()
    elif dialect in ("mysql", "mariadb"):
        lock = _mysql_lock_name(conn, name)
        got = conn.execute(text("SELECT GET_LOCK(:n, 0)"), {"n": lock}).scalar() == 1
        conn.commit()
        try:
            yield got
        finally:
            if got:
                conn.execute(text("SELECT RELEASE_LOCK(:n)"), {"n": lock})
                conn.commit()
    else:
        with _sqlite_file_lock(conn, name) as got:
            yield got


@contextmanager
def _sqlite_file_lock(conn: Connection, name: str) -> Iterator[bool]:
    import fcntl
    import os
    import tempfile

    database = conn.engine.url.database
    if database and database != ":memory:":
        path = f"{database}.{hashlib.sha256(name.encode()).hexdigest()[:12]}.lock"
    else:
        path = os.path.join(tempfile.gettempdir(), f"syncd-{os.getpid()}-{_lock_key(name)}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_deadlock(exc: BaseException) -> bool:
    """Whether the database chose this transaction as a deadlock victim (or
    it timed out waiting for a lock): the same work can simply be retried."""
    original = getattr(exc, "orig", None)
    if original is None:
        return False
    if getattr(original, "sqlstate", None) in ("40P01", "40001", "55P03"):  # PostgreSQL
        return True
    args: tuple[Any, ...] = tuple(getattr(original, "args", ()))
    return bool(args) and args[0] in (1213, 1205)  # MariaDB: deadlock, lock wait timeout


# MariaDB/MySQL client and server codes that mean "not there right now".
_MYSQL_UNAVAILABLE = frozenset(
    {1040, 1053, 1077, 1152, 1158, 1159, 1160, 1161, 2002, 2003, 2005, 2006, 2013, 2055}
)


def is_disconnect_or_unavailable(exc: BaseException) -> bool:
    """Whether an error means "the database is not there right now" (answer
    503, wait, try again) rather than "the database refuses this data" (fail
    the one event). Drivers file both under OperationalError at times: a
    CHECK violation on MariaDB, a lock error on SQLite."""
    from sqlalchemy.exc import DBAPIError, OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, DBAPIError) or is_deadlock(exc):
        return False
    if exc.connection_invalidated:
        return True
    original = exc.orig
    args: tuple[Any, ...] = tuple(getattr(original, "args", ()))
    if type(original).__module__.startswith("pymysql"):
        return bool(args) and isinstance(args[0], int) and args[0] in _MYSQL_UNAVAILABLE
    sqlstate = getattr(original, "sqlstate", None)
    if isinstance(sqlstate, str):
        # connection exception, insufficient resources, operator intervention
        return sqlstate.startswith(("08", "53", "57"))
    # psycopg's connection failures carry no SQLSTATE; SQLite's "database is
    # locked" / "unable to open database file" are OperationalErrors too.
    return isinstance(exc, OperationalError)
