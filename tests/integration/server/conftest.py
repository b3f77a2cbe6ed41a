"""End-to-end server fixtures: a real `tern-server serve` (gunicorn, HTTPS) on loopback, on
SQLite and on PostgreSQL, and the `tern-server` CLI pointed at it."""
import pytest

from testkit.admin import ServerAdmin
from testkit.live_server import LiveServer

ADMIN, PASSWORD = "admin@example.com", "correct horse battery"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live_server(request, tmp_path_factory):
    """A live server with a user, on each database: its admin, whose `.cli(...)` runs
    tern-server against the server's URL."""
    database_url = None
    if request.param == "postgresql":
        database_url = request.getfixturevalue("postgres").create_database(
            f"tern_{request.module.__name__.rsplit('.', 1)[-1]}")
    with LiveServer(tmp_path_factory.mktemp("server") / "data", workers=2,
                    database_url=database_url, names=("ota.test",)) as server:
        yield ServerAdmin(server, ADMIN, PASSWORD, over_https=True)
