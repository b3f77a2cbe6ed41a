"""The installers' seam: a payload type the steps get an installer for is installed by it,
state by state, with no update module involved (the way a delta installer joins)."""
from updater.agent.standalone import Standalone
from updater.agent.steps import Steps
from updater.bootloader import make_bootloader
from updater.install import INSTALLERS, Installer
from updater.source import ArtifactSource
from updater.update import Update


class RecordingInstaller(Installer):
    kind = "recording"
    calls: list[str] = []
    fail_install = False

    def write_payload(self, update: Update, reader, payload) -> None:
        data = b"".join(chunk for file in payload.files() for chunk in file)
        self.calls.append(f"write_payload {payload.type} {len(data)}")

    def download(self, update: Update) -> None:
        self.calls.append("download")

    def install(self, update: Update) -> None:
        self.calls.append("install")
        if self.fail_install:
            raise RuntimeError("no room for the delta")
        update.needs_reboot = False

    def commit(self, update: Update) -> None:
        self.calls.append("commit")

    def rollback(self, update: Update) -> bool:
        self.calls.append("rollback")
        return False

    def failure(self, update: Update) -> None:
        self.calls.append("failure")

    def cleanup(self, update: Update) -> None:
        self.calls.append("cleanup")


def standalone(device) -> Standalone:
    config = device.config
    steps = Steps(config, make_bootloader(config), ArtifactSource(config), quiet=True,
                  installers={**INSTALLERS, "test-delta": RecordingInstaller})
    return Standalone(config, steps=steps)


def test_an_injected_installer_takes_its_payload_type_through_commit(device, make_artifact,
                                                                     monkeypatch):
    monkeypatch.setattr(RecordingInstaller, "calls", [])
    artifact = make_artifact({"patch.bin": b"x" * 1000}, module_type="test-delta")
    updater = standalone(device)
    assert updater.install(str(artifact)).state == "ArtifactCommit"  # no reboot needed
    assert updater.commit().message == "release-2: installed and committed"
    assert RecordingInstaller.calls == ["write_payload test-delta 1000", "download", "install",
                                        "commit", "cleanup"]
    assert device.provides()["artifact_name"] == "release-2"


def test_an_injected_installer_that_fails_is_rolled_back(device, make_artifact, monkeypatch):
    monkeypatch.setattr(RecordingInstaller, "calls", [])
    monkeypatch.setattr(RecordingInstaller, "fail_install", True)
    artifact = make_artifact({"patch.bin": b"x" * 1000}, module_type="test-delta")
    outcome = standalone(device).install(str(artifact))
    assert "ArtifactInstall: no room for the delta" in outcome.message
    assert RecordingInstaller.calls == ["write_payload test-delta 1000", "download", "install",
                                        "rollback", "failure", "cleanup"]
    assert device.last_result()["status"] == "failure"
