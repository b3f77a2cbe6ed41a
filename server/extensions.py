"""The database: one engine per app, one session per request (or CLI command).

Beside the session, `db.read_one` runs the token check of every request (a device's poll
included) in autocommit on the driver's own connection: no ORM session, no BEGIN and
ROLLBACK round trips, no SQLAlchemy execution and result objects, which together cost a poll
more than the query itself (on PostgreSQL not even psycopg's cursor: see
`_postgres_first_row`). It reads committed rows only: a request reads there before it writes.
"""
import functools
import hashlib
from collections import namedtuple

from flask import Flask, current_app, g
from psycopg import OperationalError, errors, pq
from psycopg.adapt import PyFormat, Transformer
from sqlalchemy import Dialect, Select, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

POOL_RECYCLE_SECONDS = 300


class Database:
    def init_app(self, app: Flask) -> None:
        url = app.config["DATABASE_URL"]
        if url.startswith("sqlite"):
            options = {"connect_args": {"check_same_thread": False, "timeout": 30}}
        else:  # a server may close idle connections: renew them before it would; no
            # pre-ping, which costs a round trip on every request
            options = {"pool_recycle": POOL_RECYCLE_SECONDS}
        options["pool_size"] = app.config["DATABASE_POOL_SIZE"]
        engine = create_engine(url, **options)
        # autocommit: no transaction to end, so nothing to roll back when a connection returns
        reads = create_engine(url, isolation_level="AUTOCOMMIT", pool_reset_on_return=None,
                              **options)
        if url.startswith("sqlite"):
            for each in (engine, reads):
                event.listen(each, "connect", _sqlite_pragmas)
        app.extensions["tern.db"] = sessionmaker(engine, expire_on_commit=False)
        app.extensions["tern.db.reads"] = reads
        app.teardown_appcontext(self._close_session)

    @property
    def session(self) -> Session:
        if "db_session" not in g:
            g.db_session = current_app.extensions["tern.db"]()
        return g.db_session

    def read_one(self, statement: Select, **parameters) -> tuple | None:
        """The first row of a prebuilt SELECT as a named tuple of the driver's own values
        (no SQLAlchemy type processing: for lookups whose values are compared, not
        converted). A dropped connection is invalidated and raised as SQLAlchemy's
        DBAPIError, as `Connection.execute` would (the error handler answers 503)."""
        engine = current_app.extensions["tern.db.reads"]
        sql, names, row_type = _prepared(engine.dialect, statement)
        values = parameters if names is None else [parameters[n] for n in names]
        connection, cursor = engine.raw_connection(), None
        try:
            if engine.dialect.name == "postgresql":
                row = _postgres_first_row(connection.dbapi_connection, sql, values)
            else:
                cursor = connection.cursor()
                cursor.execute(sql, values)
                row = cursor.fetchone()
        except engine.dialect.loaded_dbapi.Error as error:
            lost = engine.dialect.is_disconnect(error, connection.dbapi_connection, cursor)
            if lost:
                connection.invalidate(error)
            raise DBAPIError.instance(sql, parameters, error, engine.dialect.loaded_dbapi.Error,
                                      connection_invalidated=lost) from error
        finally:
            if cursor is not None:
                cursor.close()
            connection.close()
        return None if row is None else row_type(*row)

    def engine(self, app: Flask) -> Engine:
        return app.extensions["tern.db"].kw["bind"]

    def dispose(self, app: Flask) -> None:
        """Close every pooled connection (tests dropping their database)."""
        self.engine(app).dispose()
        app.extensions["tern.db.reads"].dispose()

    @staticmethod
    def _close_session(_exc) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


@functools.lru_cache(maxsize=32)
def _prepared(dialect: Dialect, statement: Select):
    """`statement` compiled for `dialect`: its SQL, its parameters' order (None: by name)
    and a named-tuple type for its rows. PostgreSQL's are numbered ($1), as its prepared
    statements want them."""
    if dialect.name == "postgresql":
        dialect = type(dialect)(paramstyle="numeric_dollar")
    compiled = statement.compile(dialect=dialect)
    return (str(compiled), compiled.positiontup if compiled.positional else None,
            namedtuple("Row", statement.selected_columns.keys()))


def _postgres_first_row(connection, sql: str, values: list) -> tuple | None:
    """The first row of `sql` as a statement prepared on `connection` (on first use there),
    run by one libpq call that waits with the GIL released. psycopg's cursor takes the same
    round trip in non-blocking steps, each back in Python: about 100 us more of a poll's CPU.
    Values go and come through psycopg's own adapters."""
    name = _statement_name(sql)
    transformer = Transformer(connection)
    params = transformer.dump_sequence(values, [PyFormat.TEXT] * len(values))
    result = connection.pgconn.exec_prepared(name, params)
    if _sqlstate(result) == errors.InvalidSqlStatementName.sqlstate:
        prepared = connection.pgconn.prepare(name, sql.encode())
        if prepared.status == pq.ExecStatus.COMMAND_OK:
            result = connection.pgconn.exec_prepared(name, params)
        else:
            result = prepared
    if result.status != pq.ExecStatus.TUPLES_OK:
        message = (result.error_message or connection.pgconn.error_message).decode(
            errors="replace").strip()
        state = _sqlstate(result)
        raise (errors.lookup(state) if state else OperationalError)(message)
    if result.ntuples == 0:
        return None
    transformer.set_pgresult(result)
    return transformer.load_row(0, tuple)


@functools.lru_cache(maxsize=32)
def _statement_name(sql: str) -> bytes:
    """A prepared statement's name, the same for the same SQL on every connection."""
    return b"tern_" + hashlib.blake2s(sql.encode(), digest_size=8).hexdigest().encode()


def _sqlstate(result) -> str | None:
    state = result.error_field(pq.DiagnosticField.SQLSTATE)
    return state and state.decode()


def _sqlite_pragmas(connection, _record) -> None:
    """WAL lets readers run beside the one writer; foreign keys are off by default in SQLite."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


db = Database()
