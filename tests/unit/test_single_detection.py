"""The warning when sessions of one detection pile up (a session gap too short)."""

from section_speed.domain.judging import judge_traversal
from section_speed.domain.rules import SectionRule
from section_speed.domain.single_detection import SingleDetectionMonitor
from section_speed.domain.traversal import (
    PARTIAL,
)
from tests.helpers import ENTRY, EXIT, track

SECTION = SectionRule(entry=ENTRY, exit=EXIT)  # the tests' 303.84 m section, ends known


# --- the warning when sessions of one detection pile up ------------------------------------


def test_monitor_warns_once_when_single_detection_sessions_pile_up():
    single = judge_traversal(track("v1", 30.0)[:1], SECTION)
    measured = judge_traversal(track("v1", 30.0), SECTION)
    monitor = SingleDetectionMonitor(gap_seconds=20, window=200, threshold=0.5, min_sessions=20)
    said = [monitor.observe(single) for _ in range(19)]
    assert said == [None] * 19  # too few sessions yet to tell
    assert monitor.observe(single) == (
        "20 of the last 20 sessions had one detection: the session gap (20 s) is probably "
        "shorter than the time between cameras, unless the pipeline is behind (a warning "
        "says so) and closes sessions before their detections are read"
    )
    assert [monitor.observe(single) for _ in range(50)] == [None] * 50  # said once
    # Measured sessions bring the share under half the threshold (25 %): it re-arms.
    assert {monitor.observe(measured) for _ in range(200)} == {None}
    said = [monitor.observe(single) for _ in range(100)]
    assert said.index(next(s for s in said if s)) == 99  # 100 of 200 = 50 %
    assert said[99].startswith("100 of the last 200 sessions had one detection")


def test_monitor_ignores_other_rejections():
    monitor = SingleDetectionMonitor(gap_seconds=60, min_sessions=1)
    partial = judge_traversal(track("v1", 30.0, points=5)[:3], SECTION)
    assert partial.kind == PARTIAL
    assert {monitor.observe(partial) for _ in range(30)} == {None}
