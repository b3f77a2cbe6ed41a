"""RELIABILITY.md keeps the other sections when the replay rewrites its own."""
from testkit.replay import HEADING, replacing_section

OTHERS = "# Reliability\n\ncampaign\n\n## Failures\n\nNone.\n\n## Hangs\n\nwatchdog\n"


def test_the_section_is_added_then_replaced_in_place():
    added = replacing_section(f"{HEADING}\n\nfirst\n", OTHERS)
    assert added == OTHERS + f"\n{HEADING}\n\nfirst\n"
    moved = added.replace("## Hangs\n\nwatchdog\n", "") + "\n## Hangs\n\nwatchdog\n"
    replaced = replacing_section(f"{HEADING}\n\nsecond\n", moved)
    assert "first" not in replaced and "second" in replaced
    assert replaced.index("second") < replaced.index("## Hangs") and "watchdog" in replaced
    assert replaced.startswith(OTHERS.split("## Hangs")[0])
