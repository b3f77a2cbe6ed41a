"""What a device fetched, read back from its deployment log's `download stats` line."""
import pytest

from server.deployments.downloads import DownloadStats, describe, download_stats


def line(message: str) -> dict:
    return {"timestamp": "", "level": "info", "message": message}


def test_the_last_stats_line_counts():
    log = [line('download stats {"mode": "full", "fetched": 10, "full": 9}'),
           line("other"),
           line('download stats {"mode": "adaptive", "fetched": 2048, "full": 4096}')]
    assert download_stats(log) == DownloadStats("adaptive", 2048, 4096)
    assert describe(download_stats(log)) == "2.0 KiB of 4.0 KiB (adaptive)"


@pytest.mark.parametrize("message", [
    "download stats {", 'download stats ["adaptive"]',
    'download stats {"mode": "xdelta", "fetched": 1, "full": 1}',
    'download stats {"mode": "full", "fetched": -1, "full": 1}',
    'download stats {"mode": "full", "fetched": true, "full": 1}',
    'download stats {"mode": "full", "fetched": "1", "full": 1}'])
def test_a_malformed_stats_line_shows_nothing(message):
    assert download_stats([line(message)]) is None
    assert describe(None) == ""


def test_logs_without_a_stats_line_show_nothing():
    assert download_stats(None) is None
    assert download_stats([line("ArtifactInstall: no space left")]) is None
