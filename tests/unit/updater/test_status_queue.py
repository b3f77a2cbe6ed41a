"""The status queue against a fake server, and the deployment log's format."""
import json
import re

import pytest
import requests

from updater.agent.logcap import CUT
from updater.agent.statusqueue import StatusQueue
from updater.client import Aborted, ServerError


class FakeServer:
    """Records what it is sent; `down` fails every call, `aborted` and `refused` answer
    409 and 400 for those deployments."""

    def __init__(self):
        self.sent: list[tuple] = []
        self.down = False
        self.aborted: set[str] = set()
        self.refused: set[str] = set()

    def _answer(self, deployment_id: str) -> None:
        if self.down:
            raise requests.ConnectionError("connection refused")
        if deployment_id in self.aborted:
            raise Aborted("409 deployment aborted", 409)
        if deployment_id in self.refused:
            raise ServerError("400 bad status", 400)

    def report_status(self, deployment_id: str, status: str) -> None:
        self._answer(deployment_id)
        self.sent.append((deployment_id, status))

    def upload_log(self, deployment_id: str, messages: list[dict]) -> None:
        self._answer(deployment_id)
        self.sent.append((deployment_id, "log", len(messages)))


@pytest.fixture
def queue(tmp_path):
    return StatusQueue(tmp_path / "data" / "status-queue.json")


def test_statuses_wait_while_the_server_is_down_and_go_in_order(queue):
    server = FakeServer()
    server.down = True
    queue.push("d1", "downloading")
    queue.push("d1", "installing")
    queue.push("d1", "installing")  # the step ran again after a power cut
    queue.push("d1", "failure", [{"timestamp": "t", "level": "info", "message": "m"}])
    with pytest.raises(requests.ConnectionError):
        queue.flush(server)
    assert [e.get("status", "log") for e in StatusQueue(queue.path).load()] == \
        ["downloading", "installing", "log", "failure"]  # as a new process finds it
    server.down = False
    assert queue.flush(server) == set()
    assert server.sent == [("d1", "downloading"), ("d1", "installing"), ("d1", "log", 1),
                           ("d1", "failure")]
    assert queue.load() == []


def test_a_409_drops_that_deployments_statuses_only(queue):
    server = FakeServer()
    server.aborted = {"d1"}
    queue.push("d1", "installing")
    queue.push("d2", "downloading")
    queue.push("d1", "failure", [])
    assert queue.flush(server) == {"d1"}
    assert server.sent == [("d2", "downloading")]
    assert queue.load() == []


def test_a_status_refused_for_good_does_not_block_the_queue(queue):
    server = FakeServer()
    server.refused = {"d1"}
    queue.push("d1", "bogus")
    queue.push("d2", "success", [])
    assert queue.flush(server) == set()
    assert server.sent == [("d2", "log", 0), ("d2", "success")]


def test_unauthorized_keeps_the_statuses(queue):
    class NotAccepted(FakeServer):
        def report_status(self, deployment_id, status):
            raise ServerError("401", 401)

    queue.push("d1", "success")
    with pytest.raises(ServerError):
        queue.flush(NotAccepted())
    assert len(queue.load()) == 1


def test_the_log_is_in_menders_format_with_errors_marked(device, make_artifact):
    artifact = make_artifact(device_types=("other-device",))
    assert device.run("install", str(artifact)) == 1
    log = device.last_result()["log"]
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
    assert all(set(line) == {"timestamp", "level", "message"} for line in log)
    assert all(stamp.fullmatch(line["timestamp"]) for line in log)
    errors = [line for line in log if line["level"] == "error"]
    assert len(errors) == 1 and errors[0]["message"].startswith("Download: ")


def test_a_refused_log_costs_the_log_only_never_the_result(queue):
    class RefusesLogs(FakeServer):
        def upload_log(self, deployment_id, messages):
            raise ServerError("413 request body too large", 413)

    server = RefusesLogs()
    queue.push("d1", "success", [{"timestamp": "t", "level": "info", "message": "m"}])
    assert queue.flush(server) == set()
    assert server.sent == [("d1", "success")]
    assert queue.load() == []


def test_a_queue_of_the_previous_format_is_sent_log_then_status(queue):
    queue.path.parent.mkdir(parents=True)
    queue.path.write_text(json.dumps([
        {"deployment_id": "d1", "status": "installing", "log": None},
        {"deployment_id": "d1", "status": "success",
         "log": [{"timestamp": "t", "level": "info", "message": "m"}]}]))
    server = FakeServer()
    assert queue.flush(server) == set()
    assert server.sent == [("d1", "installing"), ("d1", "log", 1), ("d1", "success")]


def test_a_log_is_capped_when_queued(tmp_path):
    queue = StatusQueue(tmp_path / "status-queue.json", log_limit=10_000)
    log = [{"timestamp": "t", "level": "info", "message": f"line {n} " + "x" * 100}
           for n in range(1000)]
    queue.push("d1", "success", log)
    queued = queue.load()[0]["log"]
    assert len(json.dumps(queued)) <= 10_000
    assert queued[0] == log[0] and queued[-1] == log[-1]
    assert any(CUT.fullmatch(line["message"]) for line in queued)
