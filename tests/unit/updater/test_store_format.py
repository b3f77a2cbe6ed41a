"""A store written before the update was typed (format 1) still loads, and its update
goes on: a device whose updater is replaced in the middle of a deployment resumes it."""
import json

from updater.agent.states import State
from updater.agent.statestore import StateStore
from updater.bootloader import make_bootloader

# What the updater of commit 84cdc59 stored for deployment d1 of release-2, waiting in
# ArtifactReboot: its Standalone machine run from Download with the update the daemon
# makes, on a device under /tmp/uc-gen (the paths are only text here).
FORMAT_1 = """\
{
 "version": 1,
 "state": "ArtifactReboot",
 "store_count": 3,
 "update": {
  "source": "/tmp/uc-gen/release-2.mender",
  "artifact_name": "release-2",
  "kind": "rootfs",
  "payload_type": "rootfs-image",
  "from_slot": "a",
  "to_slot": "b",
  "needs_reboot": true,
  "supports_rollback": null,
  "previous_provides": {
   "artifact_name": "factory"
  },
  "provides": {
   "artifact_name": "release-2",
   "rootfs-image.checksum": "5370054211fedd074e169366d6b3309afc792ac99525b53d36f85c98f5edd0fa",
   "rootfs-image.version": "release-2"
  },
  "status": null,
  "error": null,
  "log": [
   {
    "timestamp": "2026-11-29T18:58:51.987Z",
    "level": "info",
    "message": "writing rootfs.ext4 to slot b (/tmp/uc-gen/device/slot3.img); running a"
   },
   {
    "timestamp": "2026-11-29T18:58:51.991Z",
    "level": "info",
    "message": "slot b: 300004 bytes written and verified"
   },
   {
    "timestamp": "2026-11-29T18:58:51.991Z",
    "level": "info",
    "message": "release-2: downloaded and verified (signature: unsigned)"
   },
   {
    "timestamp": "2026-11-29T18:58:52.005Z",
    "level": "info",
    "message": "slot b is the boot candidate (trial boot)"
   },
   {
    "timestamp": "2026-11-29T18:58:52.025Z",
    "level": "info",
    "message": "waiting for a reboot into the new artifact"
   }
  ],
  "health": null,
  "started": 1795978731.9848392,
  "deployment_id": "d1",
  "boot_id": "af53be77-23ae-4dfc-9383-6d5c789d5390"
 }
}
"""


def test_a_format_1_store_loads_as_the_typed_update(tmp_path):
    (tmp_path / "state.json").write_text(FORMAT_1)
    stored = StateStore(tmp_path / "state.json").load()
    assert (stored.state, stored.store_count) == (State.ARTIFACT_REBOOT, 3)
    update = stored.update
    assert (update.deployment_id, update.artifact_name, update.kind) == \
        ("d1", "release-2", "rootfs")
    assert (update.from_slot, update.to_slot, update.needs_reboot) == ("a", "b", True)
    assert update.boot_id == "af53be77-23ae-4dfc-9383-6d5c789d5390"
    assert update.previous_provides == {"artifact_name": "factory"}
    assert update.paused is False and update.status is None
    assert [line["message"] for line in update.log][-1] == \
        "waiting for a reboot into the new artifact"


def test_a_format_1_store_resumes_after_the_reboot_and_is_saved_as_format_2(device):
    """The trial boot of slot b, then `resume` as at boot: commit, and stop before the
    report, which is the daemon's (the update belongs to a deployment)."""
    device.config.data.mkdir(parents=True, exist_ok=True)
    (device.config.data / "state.json").write_text(FORMAT_1)
    make_bootloader(device.config).set_trial("b")  # what ArtifactInstall did
    assert device.power_on() == "b"

    assert device.run("resume") == 0
    document = json.loads((device.config.data / "state.json").read_text())
    assert (document["version"], document["state"]) == (2, "UpdateStatusReport")
    assert document["update"]["deployment_id"] == "d1"
    assert document["update"]["status"] == "success" and document["update"]["paused"]
    assert device.provides()["artifact_name"] == "release-2"
    assert device.env()["upgrade_available"] == "0"


def test_auto_reboot_is_stored_and_a_store_without_it_still_loads(tmp_path):
    """`install --auto-reboot` is recorded with the update, so that the `resume` after a
    cut makes the reboot; a format 2 store written before it was recorded loads as False."""
    store = StateStore(tmp_path / "state.json")
    (tmp_path / "old.json").write_text(FORMAT_1)
    old = StateStore(tmp_path / "old.json").load().update
    assert old.auto_reboot is False
    old.auto_reboot = True
    store.save(State.ARTIFACT_INSTALL, old, 4)
    assert json.loads((tmp_path / "state.json").read_text())["update"]["auto_reboot"] is True
    stored = store.load()
    assert (stored.state, stored.update) == (State.ARTIFACT_INSTALL, old)

    document = json.loads((tmp_path / "state.json").read_text())
    del document["update"]["auto_reboot"]  # as the updater before this field wrote it
    (tmp_path / "state.json").write_text(json.dumps(document))
    assert store.load().update.auto_reboot is False
