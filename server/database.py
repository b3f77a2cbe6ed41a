"""The database: one engine per app, one session per request (or CLI command).

Beside the session, `db.read_one` runs the token check of every request (a device's poll
included) in autocommit on the driver's own connection: no ORM session, no BEGIN and
ROLLBACK round trips, no SQLAlchemy execution and result objects, which together cost a poll
more than the query itself (on PostgreSQL not even psycopg's cursor: see `server.postgres`,
imported for PostgreSQL only). It reads committed rows only: a request reads there before it
writes.
"""
import functools
from collections import namedtuple

from flask import Flask, current_app, g
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
        app.extensions["tern.db.first_row"] = None  # the driver's cursor
        if engine.dialect.name == "postgresql":
            from .postgres import first_row  # psycopg: loaded only for PostgreSQL

            app.extensions["tern.db.first_row"] = first_row
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
        first_row = current_app.extensions["tern.db.first_row"]
        sql, names, row_type = _prepared(engine.dialect, statement)
        values = parameters if names is None else [parameters[n] for n in names]
        connection, cursor = engine.raw_connection(), None
        try:
            if first_row is not None:
                row = first_row(connection.dbapi_connection, sql, values)
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


def _sqlite_pragmas(connection, _record) -> None:
    """WAL lets readers run beside the one writer; foreign keys are off by default in SQLite."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


db = Database()
