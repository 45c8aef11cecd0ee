"""Detections beyond allowed lateness are dead-lettered; repeated traversals are dropped."""

import json
from dataclasses import replace

import apache_beam as beam
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from pipeline.domain import defaults
from pipeline.domain.speed import SectionRule, measure_traversal, measurement_key, too_late
from pipeline.transforms.lateness import DropRepeatedTraversals, RejectTooLate
from tests.helpers import T0_MS, track
from tests.unit.test_transforms import streaming_pipeline

GAP_S, LATENESS_S = 30, 60
MARGIN_MS = defaults.LATE_MARGIN_SECONDS * 1000


def test_too_late_is_judged_on_gap_plus_lateness_with_a_margin():
    deadline_ms = T0_MS + (GAP_S + LATENESS_S) * 1000
    assert not too_late(T0_MS, T0_MS, GAP_S, LATENESS_S)
    assert not too_late(T0_MS, deadline_ms - MARGIN_MS, GAP_S, LATENESS_S)
    assert too_late(T0_MS, deadline_ms - MARGIN_MS + 1, GAP_S, LATENESS_S)
    assert too_late(T0_MS, T0_MS + 3_600_000, GAP_S, LATENESS_S)


def test_reject_too_late_routes_stale_detections_to_the_dead_letter():
    now_s = T0_MS / 1000 + 120  # two minutes after the first vehicle's detections
    fresh = track("fresh", 50.0, start_ms=T0_MS + 100_000)
    stale = track("stale", 50.0, start_ms=T0_MS)  # 120 s old > 30 + 60 - 10
    with streaming_pipeline() as p:
        outputs = (
            p | beam.Create(fresh + stale) | RejectTooLate(GAP_S, LATENESS_S, clock=lambda: now_s)
        )
        assert_that(
            outputs.events | beam.Map(lambda e: e.event_id),
            equal_to([e.event_id for e in fresh]),
            label="OnTime",
        )
        assert_that(
            outputs.dead_letter
            | beam.Map(lambda r: (r["stage"], json.loads(r["payload"])["event_id"])),
            equal_to([("too_late", e.event_id) for e in stale]),
            label="DeadLettered",
        )


def test_a_repeated_traversal_is_dropped_and_a_correction_passes():
    rule = SectionRule(25.0)
    events = track("v", 60.0, points=3)
    first = measure_traversal(events[::2], rule)  # entry and exit only
    corrected = measure_traversal(events, rule)  # the middle detection arrived late
    assert first.traversal_id == corrected.traversal_id
    assert measurement_key(first) != measurement_key(corrected)
    assert measurement_key(first) == measurement_key(replace(first))
    stream = (
        TestStream()
        .add_elements(timestamped_traversals([first]))
        .add_elements(timestamped_traversals([first]))  # a redelivery: same measurement
        .add_elements(timestamped_traversals([corrected]))
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        kept = p | stream | DropRepeatedTraversals(600) | beam.Map(lambda t: t.detections)
        assert_that(kept, equal_to([2, 3]))


def timestamped_traversals(traversals):
    return [TimestampedValue(t, t.exit_time_ms / 1000) for t in traversals]
