"""What the agent keeps of long outputs and logs: head and tail, and how much was cut."""
import json

from updater.agent.logcap import CUT, cap_log, cap_text


def test_short_text_is_kept_whole():
    assert cap_text("a\nb", 10) == "a\nb"


def test_long_text_keeps_head_and_tail_and_says_what_was_cut():
    text = "".join(f"line {n}\n" for n in range(100_000))
    capped = cap_text(text, 1000)
    assert len(capped.encode()) < 1100
    assert capped.startswith("line 0\n") and capped.endswith("line 99999\n")
    cut = len(text.encode()) - 1000
    assert f"[... {cut} bytes (" in capped


def entries(count: int, size: int = 100) -> list[dict]:
    return [{"timestamp": f"t{n}", "level": "info", "message": f"{n} " + "x" * size}
            for n in range(count)]


def test_a_log_under_the_limit_is_kept():
    log = entries(10)
    assert cap_log(log, 10_000) is log


def test_a_long_log_keeps_head_and_tail_with_one_cut_line():
    log = entries(1000)
    capped = cap_log(log, 10_000)
    assert len(json.dumps(capped)) <= 10_000
    cuts = [n for n, entry in enumerate(capped) if CUT.fullmatch(entry["message"])]
    assert len(cuts) == 1
    head, tail = capped[:cuts[0]], capped[cuts[0] + 1:]
    assert head == log[:len(head)] and tail == log[len(log) - len(tail):]
    lines, size = map(int, CUT.fullmatch(capped[cuts[0]]["message"]).groups())
    assert lines == 1000 - len(head) - len(tail)
    assert size == sum(len(entry["message"]) for entry in log[len(head):len(log) - len(tail)])


def test_capping_as_lines_come_keeps_the_first_head_and_counts_every_cut_line():
    log: list[dict] = []
    for entry in entries(1000):
        log = cap_log([*log, entry], 10_000)
    assert len(json.dumps(log)) <= 10_000
    assert log[0]["message"].startswith("0 ") and log[-1]["message"].startswith("999 ")
    cuts = [entry for entry in log if CUT.fullmatch(entry["message"])]
    assert len(cuts) == 1
    assert int(CUT.fullmatch(cuts[0]["message"])[1]) + len(log) - 1 == 1000
