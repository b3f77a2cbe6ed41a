"""Files that must survive a power cut: what reaches the medium before the caller goes on."""
import os
import stat

from updater.atomic import write_atomically, write_files_durably


def recording_fsyncs(monkeypatch) -> list[str]:
    """The paths of the files and directories fsynced from now on."""
    synced, real_fsync = [], os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_state_scripts_and_their_directory_are_fsynced_before_it_returns(tmp_path, monkeypatch):
    """An unsynced script can come back empty after a power cut, and an empty script exits 0
    (its check would pass unrun): each one, its directory and the parent are synced."""
    synced = recording_fsyncs(monkeypatch)
    scripts = tmp_path / "data" / "scripts"
    write_files_durably(scripts, {"ArtifactInstall_Enter_01": b"#!/bin/sh\nexit 1\n",
                                  "ArtifactCommit_Enter_01": b"#!/bin/sh\ntrue\n"}, mode=0o755)
    assert synced == [str(scripts / "ArtifactInstall_Enter_01"),
                      str(scripts / "ArtifactCommit_Enter_01"), str(scripts), str(scripts.parent)]
    script = scripts / "ArtifactInstall_Enter_01"
    assert script.read_bytes() == b"#!/bin/sh\nexit 1\n"
    assert stat.S_IMODE(script.stat().st_mode) == 0o755


def test_a_replaced_file_is_synced_before_its_rename_and_the_directory_after(tmp_path,
                                                                             monkeypatch):
    synced = recording_fsyncs(monkeypatch)
    write_atomically(tmp_path / "state.json", b"{}")
    assert synced == [str(tmp_path / "state.json.tmp"), str(tmp_path)]
    assert (tmp_path / "state.json").read_bytes() == b"{}"
