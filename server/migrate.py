"""Database migrations with Alembic; `tern-server init` runs `upgrade`.

New revision after changing models.py:
    python -c "from server.migrate import revision; revision('sqlite:///x.db', 'what changed')"
"""
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str) -> None:
    command.upgrade(alembic_config(database_url), "head")


def revision(database_url: str, message: str) -> None:
    """Autogenerate a revision against a database at head."""
    command.revision(alembic_config(database_url), message=message, autogenerate=True)
