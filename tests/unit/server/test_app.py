"""The app factory, the error format, the OpenAPI document, and migrations against models."""
import subprocess
import sys

import jwt
import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import column, literal_column, select, table, true
from sqlalchemy.exc import DBAPIError

from server import create_app
from server.database import db
from server.migrate import upgrade
from server.models import Base


def test_factory_refuses_to_start_without_a_secret():
    with pytest.raises(RuntimeError, match="SECRET_KEY"):
        create_app({"DATABASE_URL": "sqlite://"})


def test_a_server_on_sqlite_never_loads_psycopg(tmp_path):
    code = ("import sys\nfrom server import create_app\n"
            f"app = create_app({{'DATABASE_URL': 'sqlite:///{tmp_path}/tern.db', "
            "'SECRET_KEY': 'x' * 32})\n"
            "print(app.test_client().get('/api/health').status_code, 'psycopg' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["204", "False"]


def test_health_answers_204(client):
    assert client.get("/api/health").status_code == 204


def test_unknown_path_is_a_json_404_with_request_id(client):
    response = client.get("/api/nothing/here", headers={"X-Request-Id": "abc123"})
    assert response.status_code == 404
    assert response.json["request_id"] == "abc123"
    assert response.json["error"]
    assert response.headers["X-Request-Id"] == "abc123"


def test_wrong_method_is_a_json_405(client):
    response = client.delete("/api/health")
    assert response.status_code == 405
    assert "error" in response.json


def test_malformed_json_is_a_400_not_a_500(client, admin):
    response = client.post("/api/management/v1/deployments", data=b"{not json",
                           headers={**admin, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json["error"] == "request body must be JSON"


def test_body_over_the_limit_is_refused(client, admin):
    response = client.post("/api/management/v1/deployments", data=b" " * (2 << 20),
                           headers={**admin, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert "error" in response.json


def test_openapi_document_lists_device_and_management_paths(client):
    document = client.get("/api/openapi.json").json
    assert document["openapi"].startswith("3.")
    assert "/api/devices/v2/deployments/device/deployments/next" in document["paths"]
    assert "/api/management/v1/artifacts" in document["paths"]
    page = client.get("/api/docs").get_data(as_text=True)
    assert "/api/management/v1/deployments" in page


def test_every_route_is_documented(app):
    documented = set(app.test_client().get("/api/openapi.json").json["paths"])
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "meta.openapi_document", "meta.docs_page") \
                or rule.endpoint.startswith("ui."):  # the dashboard's pages are no API
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        assert path in documented, path


def test_migrations_match_the_models(app):
    with db.engine(app).connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_nul_characters_are_a_400_on_both_databases(fleet, client, admin, app):
    device = fleet.accepted()
    response = client.put("/api/devices/v1/inventory/device/attributes",
                          json=[{"name": "a\x00b", "value": "v"}], headers=device.headers)
    assert response.status_code == 400
    response = client.get("/api/management/v1/devices", query_string={"group": "a\x00"},
                          headers=admin)
    on_postgresql = app.config["DATABASE_URL"].startswith("postgresql")
    # SQLite stores NUL and finds no such group; PostgreSQL refuses it: a 400, not a 500.
    assert response.status_code == (400 if on_postgresql else 200)
    response = client.post("/api/management/v1/auth/login",
                           headers={"Authorization": "Basic YQBiOnBhc3N3b3Jk"})  # "a\0b:password"
    assert response.status_code == 401  # no user has such an email: not even asked


def test_a_dropped_database_connection_is_a_503_then_recovers(postgres, tmp_path):
    """No pre-ping on checkout: a pooled connection the database dropped fails one request
    with a 503, and the next gets a fresh connection."""
    url = postgres.create_database("tern_dropped")
    upgrade(url)
    secret = "test-secret-" + "x" * 32
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": secret,
                      "ARTIFACTS_DIR": str(tmp_path / "artifacts")})
    token = jwt.encode({"iss": "tern", "jti": "no-such-token", "sub": "someone",
                        "kind": "user", "exp": 2**40}, secret, algorithm="HS256")
    client = app.test_client()

    def get():
        return client.get("/api/management/v1/devices",
                          headers={"Authorization": f"Bearer {token}"})

    assert get().status_code == 401  # the token was looked up: a pooled connection
    with psycopg.connect(host=str(postgres.directory), port=postgres.port, user="postgres",
                         dbname="tern_dropped", autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = 'tern_dropped' AND pid <> pg_backend_pid()")
    dropped = get()
    assert dropped.status_code == 503 and "retry" in dropped.json["error"]
    assert get().status_code == 401
    db.dispose(app)


def test_read_one_prepares_its_statement_again_when_the_database_forgot_it(postgres, tmp_path):
    """On PostgreSQL `db.read_one` runs a statement prepared on the connection; a connection
    whose prepared statements are gone (DEALLOCATE, as a pooler may do) prepares it again."""
    url = postgres.create_database("tern_prepared")
    upgrade(url)
    app = create_app({"DATABASE_URL": url, "SECRET_KEY": "test-secret-" + "x" * 32,
                      "ARTIFACTS_DIR": str(tmp_path / "artifacts")})
    reads = app.extensions["tern.db.reads"]
    statement = select(literal_column("'tern'").label("name"), true().label("yes"))

    def count_then_forget_prepared() -> int:
        connection = reads.raw_connection()  # the pool's only connection
        try:
            with connection.dbapi_connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_prepared_statements "
                               "WHERE name LIKE 'tern_%%'")
                count = cursor.fetchone()[0]
                cursor.execute("DEALLOCATE ALL")
            return count
        finally:
            connection.close()

    with app.app_context():
        assert tuple(db.read_one(statement)) == ("tern", True)
        assert count_then_forget_prepared() == 1  # and now forgotten
        assert tuple(db.read_one(statement)) == ("tern", True)
        assert count_then_forget_prepared() == 1
    db.dispose(app)


def test_read_one_raises_a_database_error_as_sqlalchemy_does(app):
    with app.app_context(), pytest.raises(DBAPIError) as raised:
        db.read_one(select(table("no_such_table", column("id"))))
    assert "no_such_table" in str(raised.value.orig)
    assert not raised.value.connection_invalidated
