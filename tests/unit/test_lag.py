"""Behind, never wrong nor silent: the lag warning, the stop report, the judged count."""

import pytest

from pipeline.stop_report import TALLIED, counts, describe
from section_speed.domain.lag import LagMonitor
from transforms.accounting import added_by


def test_the_lag_warning_says_how_far_behind_at_most_once_per_interval():
    monitor = LagMonitor(gap_seconds=60, threshold_s=10, interval_s=30)
    assert monitor.observe(0.2, now_s=1000) is None  # keeping up: nothing to say
    warning = monitor.observe(12.5, now_s=1001)
    assert warning is not None and warning.startswith(
        "the pipeline is behind: a message was read 12.5 s after it was published "
        "(1 of 2 reads more than 10 s late since the last such warning)."
    )
    assert "session gap (60 s)" in warning
    # Rate-limited: within the interval nothing more, however far behind.
    assert [monitor.observe(lag, now_s=1001 + lag) for lag in (20.0, 25.0, 28.0)] == [None] * 3
    again = monitor.observe(3.0, now_s=1031)
    assert again is not None and again.startswith(
        "the pipeline is behind: a message was read 28.0 s after it was published (3 of 4 reads"
    )
    # A whole interval within the threshold: it says once that it caught up, then nothing.
    assert monitor.observe(1.0, now_s=1061) == (
        "the pipeline has caught up: every read within 10 s"
    )
    assert monitor.observe(1.0, now_s=1100) is None


def test_on_dataflow_the_warning_says_the_watermark_waits():
    monitor = LagMonitor(gap_seconds=60, interval_s=0, watermark_is_clock=False)
    warning = monitor.observe(300.0, now_s=0)
    assert warning is not None and warning.endswith(
        "The watermark waits for the backlog: verdicts come later. Add workers if it grows"
    )


def test_the_lag_threshold_is_half_the_gap_when_that_is_shorter():
    monitor = LagMonitor(gap_seconds=6, threshold_s=10, interval_s=0)
    assert monitor.threshold_s == 3
    assert monitor.observe(2.9, now_s=0) is None
    assert monitor.observe(3.1, now_s=1) is not None
    with pytest.raises(ValueError):
        LagMonitor(gap_seconds=0)


def test_each_firing_counts_only_the_detections_it_adds():
    added, panes = added_by((0, 10_000, 6), [])  # on time: 6 of a vehicle's 10
    assert added == 6
    added, panes = added_by((0, 10_000, 10), panes)  # the late pane has all 10
    assert (added, panes) == (4, [(0, 10_000, 10)])
    added, panes = added_by((60_000, 70_000, 3), panes)  # the vehicle's next session
    assert (added, panes) == (3, [(0, 10_000, 10), (60_000, 70_000, 3)])
    # A late detection that bridges both sessions: the merged pane replaces them.
    added, panes = added_by((0, 70_000, 14), panes)
    assert (added, panes) == (1, [(0, 70_000, 14)])


def test_the_stop_report_accounts_for_every_detection_read():
    monitor = LagMonitor(gap_seconds=60)
    for lag in (0.1, 5.4, 0.3, 0.2):
        monitor.observe(lag, now_s=0)
    for outcome in ("parsed", "parsed", "too_late"):
        monitor.record(outcome)
    monitor.record("judged", 1)  # one of the two parsed detections is in a judged session
    figures = counts(monitor.tally())
    assert set(TALLIED) <= set(figures)
    assert (figures["read"], figures["parsed"], figures["dead_lettered_at_parse"]) == (4, 2, 1)
    assert (figures["in_flight"], figures["held_in_open_sessions"]) == (1, 1)
    assert figures["max_read_lag_s"] == 5.4
    text = describe(figures)
    assert text.startswith("stopping: read 4 messages; 1 dead-lettered at parse (1 too late)")
    assert "neither judged nor dead-lettered: 1 detections in open sessions and 1 in" in text
    assert text.splitlines()[-1].startswith('stop report: {"read": 4, "parsed": 2,')
