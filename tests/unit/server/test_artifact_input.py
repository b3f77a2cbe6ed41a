"""Artifact input the server once answered 500 to, or kept for ever: malformed download
links, the staged files of uploads killed mid-way."""
import fcntl
import os

import pytest

from server import create_app
from server.database import db
from server.storage import staged_upload, storage, sweep_staged_uploads


@pytest.mark.parametrize("query", [
    "expire=%C2%B2&signature=abc",  # '²' is a digit to str.isdigit, not to int()
    "expire=%D9%A1%D9%A2&signature=abc",  # Arabic-Indic digits: int() takes them
    "expire=4102444800&signature=%C3%A9",  # compare_digest refuses non-ASCII str
    "expire=" + "9" * 5000 + "&signature=abc",  # over int()'s digit limit
])
def test_a_malformed_download_link_is_a_403(client, query):
    response = client.get(f"/api/devices/v1/deployments/download/some-id?{query}")
    assert response.status_code == 403
    assert response.json["error"] == "missing or malformed download signature"


def test_staged_uploads_of_dead_processes_are_swept_at_start(app, tmp_path):
    """An upload killed with its process leaves `.upload-*`; one still running (its file
    locked, in another worker or instance) is kept."""
    artifacts = tmp_path / "artifacts"
    orphan = artifacts / ".upload-orphan"
    orphan.write_bytes(b"half an artifact")
    running = artifacts / ".upload-running"
    running.write_bytes(b"an artifact arriving")
    with running.open("rb+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        restarted = create_app({**app.config, "ARTIFACTS_DIR": str(artifacts)})
        assert not orphan.exists()
        assert running.exists()
    db.dispose(restarted)


def test_an_upload_holds_its_staged_file_locked(app):
    with app.app_context(), staged_upload(storage()) as staged:
        staged.write(b"arriving")
        assert sweep_staged_uploads(storage()) == 0
        path = staged.name
    assert not os.path.exists(path)
