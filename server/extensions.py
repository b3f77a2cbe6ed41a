"""The database: one engine per app, one session per request (or CLI command)."""
from flask import Flask, g
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
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
        engine = create_engine(url, **options)
        if url.startswith("sqlite"):
            event.listen(engine, "connect", _sqlite_pragmas)
        app.extensions["tern.db"] = sessionmaker(engine, expire_on_commit=False)
        app.teardown_appcontext(self._close_session)

    @property
    def session(self) -> Session:
        if "db_session" not in g:
            from flask import current_app
            g.db_session = current_app.extensions["tern.db"]()
        return g.db_session

    def engine(self, app: Flask) -> Engine:
        return app.extensions["tern.db"].kw["bind"]

    @staticmethod
    def _close_session(_exc) -> None:
        session = g.pop("db_session", None)
        if session is not None:
            session.close()


def _sqlite_pragmas(connection, _record) -> None:
    """WAL lets readers run beside the one writer; foreign keys are off by default in SQLite."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


db = Database()
