"""The transition table, the runner and the state store on their own."""
import json
import os

import pytest

from updater.agent.machine import CAP_SHARE, RECOVERY, TRANSITIONS, Machine
from updater.agent.states import Event, State
from updater.agent.statestore import StateStore, Stored
from updater.update import Update

S, E = State, Event
UPDATE_STATES = {state for state, _ in TRANSITIONS} - {S.SYNC}


def test_every_state_handles_success_failure_and_a_detected_loop():
    for state in UPDATE_STATES:
        assert (state, E.SUCCESS) in TRANSITIONS, state
        assert (state, E.FAILURE) in TRANSITIONS, state
        assert (state, E.LOOP_DETECTED) in TRANSITIONS, state
        assert state in CAP_SHARE


def test_a_detected_loop_leads_through_the_report_to_idle_from_every_state():
    for start in UPDATE_STATES:
        state, seen = start, set()
        while state is not S.IDLE:
            assert state not in seen, f"loop from {start} at {state}"
            seen.add(state)
            state = TRANSITIONS[(state, E.LOOP_DETECTED)]
        assert S.UPDATE_STATUS_REPORT in seen


def test_recovery_never_resumes_in_a_reboot_and_goes_on_with_a_download():
    for stored in UPDATE_STATES:
        resumed = RECOVERY.get(stored, stored)
        assert resumed not in (S.ARTIFACT_REBOOT, S.ARTIFACT_ROLLBACK_REBOOT)
    assert RECOVERY.get(S.DOWNLOAD, S.DOWNLOAD) is S.DOWNLOAD


def test_loop_in_the_failure_path_is_capped_too(tmp_path):
    """A step that always fails in the rollback path still ends in Idle within the caps."""
    class Steps:
        calls: list[State] = []

        def log(self, update, message):
            update.log.append(message)

        def run(self, state, update):
            self.calls.append(state)
            return E.NOT_REBOOTED if state is S.ARTIFACT_VERIFY_ROLLBACK_REBOOT else E.SUCCESS

    steps = Steps()
    store = StateStore(tmp_path / "state.json")
    update = Update("release-2.mender")
    end = Machine(steps, store, max_store_count=5).run(S.ARTIFACT_ROLLBACK, update)
    assert end is S.IDLE
    assert steps.calls.count(S.ARTIFACT_VERIFY_ROLLBACK_REBOOT) <= 5
    assert steps.calls[-2:] == [S.CLEANUP, S.UPDATE_STATUS_REPORT]
    assert "loop broken" in update.error
    assert store.load() == Stored(S.IDLE, 0, None)


def test_store_replaces_atomically_and_leaves_no_temp_file(tmp_path):
    store = StateStore(tmp_path / "state.json")
    store.save(S.DOWNLOAD, Update("a"), 1)
    inode = os.stat(tmp_path / "state.json").st_ino
    store.save(S.ARTIFACT_INSTALL, Update("b"), 2)
    assert os.stat(tmp_path / "state.json").st_ino != inode  # renamed over, not rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    assert json.loads((tmp_path / "state.json").read_text())["state"] == "ArtifactInstall"


def test_store_refuses_an_unknown_version(tmp_path):
    (tmp_path / "state.json").write_text('{"version": 99, "state": "Idle"}')
    with pytest.raises(ValueError, match="version 99"):
        StateStore(tmp_path / "state.json").load()
