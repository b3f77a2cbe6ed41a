"""One simulated device without a server: its files, its boot (trial, fallback), its
faults, and the payload step in both modes against real signed artifacts."""
import random
from pathlib import Path

import pytest

from fleet.artifacts import write_rootfs_artifact
from fleet.device import (
    CUT_POINTS,
    TRIAL_FAULTS,
    Faults,
    FleetDaemonSteps,
    FleetDevice,
    PowerCut,
    Settings,
    WorkerSessions,
    choose_faults,
    mac_address,
)
from updater.agent.states import Event, State
from updater.bootloader import make_bootloader
from updater.client import Client
from updater.source import ArtifactSource
from updater.update import Update


def make_device(tmp_path: Path, keys, faults=None, payload="discard") -> FleetDevice:
    settings = Settings("https://127.0.0.1:9", verify_keys=(str(keys["ed25519"].public_path),),
                        payload=payload, fleet_id=7)
    device = FleetDevice(tmp_path / "dev", 3, settings, WorkerSessions(), faults)
    device.manufacture()
    return device


def download(device: FleetDevice, artifact: Path) -> tuple[Event, Update]:
    """Download with the daemon's steps, the artifact read from a file."""
    steps = FleetDaemonSteps(device, Client(device.settings.server_url, None, {}))
    steps.source = ArtifactSource(device.config)
    update = Update(str(artifact), deployment_id="d1")
    return steps.run(State.DOWNLOAD, update), update


def test_macs_are_unique_per_fleet_and_index():
    assert mac_address(7, 3) == "02:07:00:00:00:03"
    macs = {mac_address(fleet, index) for fleet in (0, 1, 255) for index in range(1000)}
    assert len(macs) == 3000


def test_a_fresh_device_boots_slot_a_on_release_1(tmp_path, keys):
    device = make_device(tmp_path, keys)
    device.boot()
    assert device.record.phase == "polling"
    assert device.installed_artifact() == "release-1"
    assert device.inconsistency("release-2") is None  # no result yet: factory state
    assert device.daemon.client.identity == {"mac": "02:07:00:00:00:03"}


def test_a_trial_slot_that_cannot_boot_falls_back_to_a(tmp_path, keys):
    device = make_device(tmp_path, keys, Faults(trial="boot"))
    device.boot()
    make_bootloader(device.config).set_trial("b")
    device.boot()
    env = make_bootloader(device.config).read()
    assert (env["mender_boot_part"], env["upgrade_available"]) == ("2", "0")
    assert "slot2" in Path(device.config.cmdline_file).read_text()


def test_a_healthy_trial_slot_boots(tmp_path, keys):
    device = make_device(tmp_path, keys)
    device.boot()
    make_bootloader(device.config).set_trial("b")
    device.boot()
    assert "slot3" in Path(device.config.cmdline_file).read_text()


@pytest.mark.parametrize("payload", ["discard", "write"])
def test_download_verifies_the_signature_and_checksums(tmp_path, keys, payload):
    device = make_device(tmp_path, keys, payload=payload)
    device.boot()
    good = write_rootfs_artifact(tmp_path / "good.mender", "release-2", "tern-simulated",
                                 keys["ed25519"].private_key, size=100_000)
    event, update = download(device, good)
    assert event is Event.SUCCESS, update.log
    assert (update.from_slot, update.to_slot) == ("a", "b")
    slot_b = (device.root / "slot3.img").read_bytes()
    assert slot_b.startswith(b"release-2\n")
    assert len(slot_b) == (100_000 if payload == "write" else len(b"release-2\n"))

    plain = write_rootfs_artifact(tmp_path / "plain.mender", "release-2", "tern-simulated",
                                  keys["ed25519"].private_key, compression="none")
    data = bytearray(plain.read_bytes())
    data[data.index(b"release-2\nrelease-2\n") + 5000] ^= 0x01  # a payload byte
    tampered = tmp_path / "tampered.mender"
    tampered.write_bytes(bytes(data))
    event, update = download(device, tampered)
    assert event is Event.FAILURE
    assert "invalid checksum" in update.error
    other = write_rootfs_artifact(tmp_path / "other.mender", "release-2", "tern-simulated",
                                  keys["ecdsa"].private_key)
    event, update = download(device, other)
    assert event is Event.FAILURE
    assert "signature" in update.error.lower()


def test_a_power_cut_strikes_once_at_its_state(tmp_path, keys):
    device = make_device(tmp_path, keys, Faults(power_cut=("before", State.DOWNLOAD)))
    device.boot()
    artifact = write_rootfs_artifact(tmp_path / "a.mender", "release-2", "tern-simulated",
                                     keys["ed25519"].private_key)
    with pytest.raises(PowerCut):
        download(device, artifact)
    assert device.record.power_cuts == 1
    event, _ = download(device, artifact)
    assert event is Event.SUCCESS


def test_a_power_cut_during_the_download_strikes_in_the_middle_of_it(tmp_path, keys):
    device = make_device(tmp_path, keys, Faults(power_cut=("during", State.DOWNLOAD)))
    device.boot()
    artifact = write_rootfs_artifact(tmp_path / "a.mender", "release-2", "tern-simulated",
                                     keys["ed25519"].private_key)
    with pytest.raises(PowerCut, match="during Download"):
        download(device, artifact)
    assert device.record.power_cuts == 1
    event, _ = download(device, artifact)
    assert event is Event.SUCCESS


def test_faults_strike_exactly_the_share_asked_for():
    faults = choose_faults(50, 0.2, 0.3, random.Random(1))
    assert sum(f.trial is not None for f in faults) == 10
    assert {f.trial for f in faults} == {None, *TRIAL_FAULTS}
    cuts = [f.power_cut for f in faults if f.power_cut]
    assert len(cuts) == 15
    assert all(cut in CUT_POINTS for cut in cuts)
    assert choose_faults(50, 0.2, 0.3, random.Random(1)) == faults
