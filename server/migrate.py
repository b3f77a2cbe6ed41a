"""Database migrations with Alembic; `tern-server init` and `serve` run `upgrade`.

New revision after changing models.py:
    python -c "from server.migrate import revision; revision('sqlite:///x.db', 'what changed')"
"""
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

MIGRATIONS = Path(__file__).parent / "migrations"
# pg_advisory_xact_lock key ("tern"): one migrating instance at a time.
MIGRATION_LOCK = 0x7465726E


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str) -> None:
    """Bring the schema to head. On PostgreSQL inside one transaction holding an advisory
    lock, so that instances starting together migrate once: the others wait for the lock,
    then find the schema at head."""
    config = alembic_config(database_url)
    if not database_url.startswith("postgresql"):
        command.upgrade(config, "head")
        return
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"),
                               {"key": MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


def revision(database_url: str, message: str) -> None:
    """Autogenerate a revision against a database at head."""
    command.revision(alembic_config(database_url), message=message, autogenerate=True)
