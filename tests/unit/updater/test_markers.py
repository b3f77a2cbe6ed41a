"""Console markers: each state the machine enters and the write progress, only when set."""
from testkit.host_device import payload_bytes
from updater import markers


def test_install_announces_states_and_write_progress(device, make_artifact, tmp_path):
    console = tmp_path / "console"
    device.settings["console_markers"] = str(console)
    payload = payload_bytes("release-2", size=10 << 20)  # 1 MiB writes: each tenth
    assert device.run("install", str(make_artifact({"rootfs.ext4": payload}))) == 0
    assert device.power_on() == "b"
    assert device.run("resume") == 0
    lines = console.read_text().splitlines()
    offsets = [int(line.split()[1]) for line in lines if line.startswith("tern-written: ")]
    assert offsets == [*range(1 << 20, len(payload), 1 << 20), len(payload)]  # each write
    assert [line for line in lines if not line.startswith("tern-written: ")] == [
        "tern-state: Download", *(f"tern-write: {percent}%" for percent in range(10, 101, 10)),
        "tern-state: ArtifactInstall", "tern-state: ArtifactReboot",
        "tern-state: ArtifactVerifyReboot", "tern-state: ArtifactCommit",
        "tern-state: Cleanup", "tern-state: UpdateStatusReport"]


def test_write_progress_announces_each_tenth_once(tmp_path, monkeypatch):
    console = tmp_path / "console"
    monkeypatch.setattr(markers, "_target", str(console))
    progress = markers.WriteProgress(1000)
    for written in range(0, 1001, 7):
        progress.update(written)
    progress.update(1000)
    lines = console.read_text().splitlines()
    assert [line for line in lines if line.startswith("tern-write: ")] == \
        [f"tern-write: {p}%" for p in range(10, 101, 10)]
    assert lines[-1] == "tern-written: 1000"


def test_a_write_that_passes_several_tenths_announces_each_and_its_slot_offset(tmp_path,
                                                                               monkeypatch):
    """An adaptive install writes only what the slot lacks: its tenths are of those bytes,
    a write may pass several, and `tern-written` is where in the slot it ended."""
    console = tmp_path / "console"
    monkeypatch.setattr(markers, "_target", str(console))
    progress = markers.WriteProgress(1000)
    progress.update(350, offset=90_000)
    progress.update(1000, offset=150_000)
    assert console.read_text().splitlines() == [
        "tern-write: 10%", "tern-write: 20%", "tern-write: 30%", "tern-written: 90000",
        *(f"tern-write: {p}%" for p in range(40, 101, 10)), "tern-written: 150000"]
