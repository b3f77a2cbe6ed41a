"""Power loss at every state and fail point, generated over the transition table.

Each case runs a scenario with one fail point armed, "once" (the first process that
reaches it dies; after that the device runs clean) or "always" (every process that
reaches it dies: a reboot loop that only the store-count cap can break). After each
death the device is power-cycled — the boot script counts a pending trial boot — and
`tern-updater resume` runs, as at boot, until the store is Idle. Then the device must
have converged: the bootloader boots the slot that runs, no trial pending, and either
the new artifact is committed in slot b or slot a still holds the factory image — with
the final result recorded. A healthy update cut once outside its trial boot ends in success.
"""
import pytest

from testkit.host_device import FACTORY_A, add_health_check, new_device, payload_bytes
from updater.agent.machine import CAP_SHARE, TRANSITIONS
from updater.agent.states import State
from updater.failpoints import CRASH_EXIT

S = State
# The states each scenario passes through (checked by test_scenarios_visit_the_table).
SCENARIOS = {
    "healthy": [S.DOWNLOAD, S.ARTIFACT_INSTALL, S.ARTIFACT_REBOOT, S.ARTIFACT_VERIFY_REBOOT,
                S.ARTIFACT_COMMIT, S.CLEANUP, S.UPDATE_STATUS_REPORT],
    "unhealthy": [S.DOWNLOAD, S.ARTIFACT_INSTALL, S.ARTIFACT_REBOOT, S.ARTIFACT_VERIFY_REBOOT,
                  S.ARTIFACT_ROLLBACK, S.ARTIFACT_ROLLBACK_REBOOT,
                  S.ARTIFACT_VERIFY_ROLLBACK_REBOOT, S.ARTIFACT_FAILURE, S.CLEANUP,
                  S.UPDATE_STATUS_REPORT],
    "corrupt": [S.DOWNLOAD, S.ARTIFACT_FAILURE, S.CLEANUP, S.UPDATE_STATUS_REPORT],
}
# A cut during the trial boot (after the reboot into b, before the commit) counts as a
# failed boot: with bootlimit 1 the boot script falls back to a, and the update fails.
# Any other single cut ends in success: before the reboot the download or install goes on,
# after the commit nothing can undo it (a crash loop can: the cap then rolls back).
TRIAL_BOOT = {"before:ArtifactVerifyReboot", "after:ArtifactVerifyReboot",
              "before:ArtifactCommit"}
PAYLOAD = payload_bytes("release-2")
MAX_STORE_COUNT = 10


def cases():
    for scenario, states in SCENARIOS.items():
        for state in states:
            for when in ("before", "after"):
                for mode in ("once", "always"):
                    yield pytest.param(scenario, f"{when}:{state}", mode, "file",
                                       id=f"{scenario}-{when}:{state}-{mode}")
    for offset in (0, 4 << 20 >> 4, len(PAYLOAD) - 1):
        yield pytest.param("healthy", f"payload:{offset}", "once", "file",
                           id=f"healthy-payload:{offset}")
    for count in range(1, 6):  # the install's four writes, then the resume's fifth (Idle)
        yield pytest.param("healthy", f"store-before-rename:{count}", "once", "file",
                           id=f"healthy-store-before-rename:{count}")
    for mode in ("once", "always"):
        yield pytest.param("healthy", "bootenv-torn-write", mode, "uboot",
                           id=f"healthy-bootenv-torn-write-{mode}-uboot")
    yield pytest.param("healthy", "before:ArtifactCommit", "once", "uboot",
                       id="healthy-before:ArtifactCommit-once-uboot")


def test_scenarios_visit_the_table():
    """Every state of the table but Sync (the daemon's) is exercised by some scenario."""
    table_states = {state for state, _ in TRANSITIONS} - {S.SYNC}
    assert table_states == {state for states in SCENARIOS.values() for state in states}


@pytest.mark.parametrize("scenario,failpoint,mode,bootloader", list(cases()))
def test_power_loss_converges(tmp_path, make_artifact, scenario, failpoint, mode, bootloader):
    device = new_device(tmp_path / "device", bootloader, max_store_count=MAX_STORE_COUNT)
    artifact = make_artifact({"rootfs.ext4": PAYLOAD})
    if scenario == "unhealthy":
        add_health_check(device, "10-fails", "echo service down; exit 1")
    if scenario == "corrupt":
        data = bytearray(artifact.read_bytes())
        data[-3000] ^= 0xFF
        artifact.write_bytes(data)

    armed = failpoint
    crashes = 0
    max_store_count = 0
    code = device.run("install", str(artifact), failpoints=armed)
    for _ in range(6 * MAX_STORE_COUNT):
        if code == CRASH_EXIT:
            crashes += 1
            if mode == "once":
                armed = ""
        else:
            assert code in (0, 1, 2, 3)  # 3: resume, the update failed and is over
        max_store_count = max(max_store_count, device.stored()["store_count"])
        if device.stored()["state"] == S.IDLE:
            break
        device.power_on()
        code = device.run("resume", failpoints=armed)
    else:
        pytest.fail(f"no convergence: stored {device.stored()}")

    assert crashes >= 1, f"fail point {failpoint} never fired"
    assert max_store_count <= MAX_STORE_COUNT * max(CAP_SHARE.values()) + 1
    running = device.power_on()
    assert device.power_on() == running  # stable: no trial pending, no fallback due
    env = device.env()
    assert env["upgrade_available"] == "0"
    result = device.last_result()
    if failpoint == "store-before-rename:1":  # Download was never stored: nothing happened
        assert result is None and running == "a" and device.provides() == {}
        assert device.slot("a").read_bytes() == FACTORY_A
        return
    if failpoint == "before:UpdateStatusReport" and mode == "always":
        assert result is None  # the report never gets written; the cap ends the loop
        return
    assert result is not None and result["source"] == str(artifact)
    if result["status"] == "success":
        assert running == "b"
        assert device.slot("b").read_bytes() == PAYLOAD
        assert device.provides()["artifact_name"] == "release-2"
    else:
        assert result["status"] == "failure" and result["error"]
        assert running == "a"
        assert device.slot("a").read_bytes() == FACTORY_A
        assert device.provides().get("artifact_name", "factory") == "factory"
    if scenario != "healthy":
        assert result["status"] == "failure"
    elif mode == "once" and failpoint not in TRIAL_BOOT:
        assert result["status"] == "success"
