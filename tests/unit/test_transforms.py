"""ParseEvents and MeasureTraversals on the streaming DirectRunner, TestStream for event time."""

import math
import random
from dataclasses import replace

import apache_beam as beam
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP

from section_speed.domain import defaults
from section_speed.domain.events import vehicle_key
from section_speed.domain.rules import SectionCatalog
from section_speed.domain.traversal import traversal_id
from tests.helpers import T0_MS, section, track
from transforms.parse import ParseEvents
from transforms.traversals import MeasureTraversals

GAP_S = 30
LATENESS_S = 60
RULES = SectionCatalog(section(25.0))  # 40.23 km/h


def streaming_pipeline() -> TestPipeline:
    # BundleBasedDirectRunner: the plain DirectRunner may hand streaming graphs to Prism,
    # which downloads a binary and fails offline.
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return TestPipeline(runner="BundleBasedDirectRunner", options=options)


class ClockedStream(TestStream):
    """A TestStream whose processing clock is its watermark, as on the local runner.

    The local runner's watermark is the wall clock. Beam's trigger driver releases a late
    pane's watermark hold only once processing time has passed the session's end, which
    a TestClock starting at 0 never does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.clock_s = 0.0

    def advance_watermark_to(self, new_watermark: float, tag: str | None = None) -> TestStream:
        if new_watermark != MAX_TIMESTAMP and float(new_watermark) > self.clock_s:
            # TestStream advances processing time in whole milliseconds.
            self.advance_processing_time(
                math.ceil((float(new_watermark) - self.clock_s) * 1000) / 1000
            )
        return super().advance_watermark_to(new_watermark, tag)

    def advance_processing_time(self, advance_by: float) -> TestStream:
        self.clock_s += float(advance_by)
        return super().advance_processing_time(advance_by)


def timestamped(events):
    """Keyed by vehicle and stamped, as ParseEvents hands them to MeasureTraversals."""
    return [TimestampedValue((vehicle_key(e), e), e.event_time_ms / 1000) for e in events]


def summary(traversal):
    """What a test compares: who, how fast (0.1 km/h), from how many detections."""
    return (traversal.vehicle_id, round(traversal.avg_speed_kmh, 1), traversal.detections)


def run_section_speed(stream: TestStream):
    """Apply MeasureTraversals to `stream`; return (pipeline, fined, not_fined) summaries."""
    p = streaming_pipeline()
    outputs = p | stream | MeasureTraversals(RULES, GAP_S, LATENESS_S)
    fined = outputs.fined | "SummariseFined" >> beam.Map(summary)
    not_fined = outputs.not_fined | "SummariseNotFined" >> beam.Map(summary)
    return p, fined, not_fined


def test_out_of_order_and_interleaved_vehicles_are_measured_separately():
    fast, slow = track("fast", 72.0, points=4), track("slow", 30.0, points=4, start_ms=T0_MS + 500)
    mixed = fast + slow
    random.Random(7).shuffle(mixed)  # out of order and interleaved
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements(timestamped(mixed))
        .advance_watermark_to_infinity()
    )
    p, fined, not_fined = run_section_speed(stream)
    assert_that(fined, equal_to([("fast", 72.0, 4)]), label="Fined")
    assert_that(not_fined, equal_to([("slow", 30.0, 4)]), label="NotFined")
    p.run()


def test_two_traversals_of_one_vehicle_more_than_a_gap_apart():
    first = track("v", 60.0)
    later_ms = first[-1].event_time_ms + (GAP_S + 5) * 1000
    second = [replace(e, event_id=f"2-{e.event_id}") for e in track("v", 35.0, start_ms=later_ms)]
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements(timestamped(first + second))
        .advance_watermark_to_infinity()
    )
    p, fined, not_fined = run_section_speed(stream)
    assert_that(fined, equal_to([("v", 60.0, 3)]), label="Fined")
    assert_that(not_fined, equal_to([("v", 35.0, 3)]), label="NotFined")
    p.run()


def test_duplicated_event_ids_count_once():
    events = track("v", 50.0, points=3)
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements(timestamped(events + events[:2]))  # a redelivery of two detections
        .advance_watermark_to_infinity()
    )
    p, fined, not_fined = run_section_speed(stream)
    assert_that(fined, equal_to([("v", 50.0, 3)]), label="Fined")
    assert_that(not_fined, equal_to([]), label="NotFined")
    p.run()


def test_late_detection_within_lateness_refires_and_beyond_it_is_dropped():
    entry, middle, exit_ = track("v", 45.0, points=3)
    session_end_s = exit_.event_time_ms / 1000 + GAP_S
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements(timestamped([entry, exit_]))
        # The watermark passes the session's end: the on-time pane fires with 2 detections.
        .advance_watermark_to(session_end_s + 1)
        # The middle detection is late but within allowed lateness: a late pane, complete.
        .add_elements(timestamped([middle]))
        .advance_processing_time(defaults.LATE_FIRING_DELAY_SECONDS + 1)  # it fires
        .advance_watermark_to(session_end_s + LATENESS_S + 1)
        # Beyond allowed lateness: dropped, no third pane.
        .add_elements(timestamped([replace(middle, event_id="too-late")]))
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    outputs = p | stream | MeasureTraversals(RULES, GAP_S, LATENESS_S)
    panes = outputs.fined | beam.Map(
        lambda t: (t.traversal_id, t.detections, round(t.avg_speed_kmh, 1))
    )
    fine_id = traversal_id("radar-1", "v", entry.event_time_ms)
    assert_that(
        panes,
        equal_to([
            (fine_id, 2, 45.0),  # the on-time pane
            (fine_id, 3, 45.0),  # the late pane corrects it under the same fine_id
        ]),
    )  # fmt: skip
    p.run()


def test_a_late_detection_in_the_last_second_of_its_lateness_corrects_the_fine_once():
    # A detection within a gap after the published exit still joins the session: it is
    # taken while the watermark is before its own time + gap + allowed lateness, which is
    # after the published exit + gap + allowed lateness. Its late pane then fires
    # LATE_FIRING_DELAY_SECONDS of processing time later. The vehicle's identity state must
    # still be there, or the pane is published afresh: a second revision 0 of one fine
    # (docs/architecture.md, Time).
    points = track("v", 45.0, points=25)  # about 1 s apart
    on_time, late = points[:-1], points[-1]
    published_exit_s = on_time[-1].event_time_ms / 1000
    budget_end_s = late.event_time_ms / 1000 + GAP_S + LATENESS_S  # taken until then
    assert budget_end_s > published_exit_s + GAP_S + LATENESS_S + 0.5
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements(timestamped(on_time))
        .advance_watermark_to(published_exit_s + GAP_S + 1)  # the on-time pane: revision 0
        .advance_watermark_to(budget_end_s - 0.5)  # the last second of the late one's budget
        .add_elements(timestamped([late]))  # late, and still taken into the session
        .advance_processing_time(defaults.LATE_FIRING_DELAY_SECONDS)  # its pane fires
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    outputs = p | stream | MeasureTraversals(RULES, GAP_S, LATENESS_S)
    fine_id = traversal_id("radar-1", "v", points[0].event_time_ms)
    assert_that(
        outputs.fined | beam.Map(lambda t: (t.traversal_id, t.revision, t.detections)),
        equal_to([(fine_id, 0, 24), (fine_id, 1, 25)]),
    )
    p.run()


def test_late_detections_arriving_together_make_one_late_pane():
    # A backlog the local runner reads after its clock-driven watermark passed, or a camera
    # flushing its buffer: the late pane waits for the rest and measures them all, once.
    points = track("v", 45.0, points=5)
    session_end_s = points[-1].event_time_ms / 1000 + GAP_S
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements(timestamped([points[0], points[-1]]))
        .advance_watermark_to(session_end_s + 1)  # the on-time pane fires with two
        .add_elements(timestamped([points[1]]))  # late; then two more, in later bundles
        .advance_processing_time(1)
        .add_elements(timestamped([points[2]]))
        .advance_processing_time(1)
        .add_elements(timestamped([points[3]]))
        .advance_processing_time(defaults.LATE_FIRING_DELAY_SECONDS)
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    outputs = p | stream | MeasureTraversals(RULES, GAP_S, LATENESS_S)
    fine_id = traversal_id("radar-1", "v", points[0].event_time_ms)
    assert_that(
        outputs.fined | beam.Map(lambda t: (t.traversal_id, t.detections)),
        equal_to([(fine_id, 2), (fine_id, 5)]),  # not one pane per late bundle
    )
    p.run()


def test_single_detection_is_not_a_measurement():
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements(timestamped(track("v", 90.0)[:1]))
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    outputs = p | stream | MeasureTraversals(RULES, GAP_S, LATENESS_S)
    assert_that(outputs.fined, equal_to([]), label="Fined")
    assert_that(outputs.not_fined, equal_to([]), label="NotFined")
    assert_that(
        outputs.failures | beam.Map(lambda f: (f.stage.name, len(f.payload.splitlines()))),
        equal_to([("unmeasurable", 1)]),
        label="DeadLettered",
    )
    result = p.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query()["counters"]}
    assert counters["unmeasurable_sessions"] == 1
    assert counters.get("traversals", 0) == 0


# --- ParseEvents ---------------------------------------------------------------------


def message(data: bytes, attributes=None, message_id="m-1") -> PubsubMessage:
    msg = PubsubMessage(data, attributes or {})
    msg.message_id = message_id
    return msg


OUT_OF_RANGE = b'{"vehicle_id": "v", "location": [100, 0]}'


def test_parse_events_routes_good_legacy_and_bad_messages():
    good = track("v", 30.0)[0]
    data, attributes = good.to_pubsub()
    legacy = message(b'{"vehicle_id": "car-7", "speed": 20, "location": [40.8, -73.9]}',
                     message_id="pubsub-42")  # fmt: skip
    publish_s = T0_MS / 1000 + 5
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements(
            [
                TimestampedValue(message(data, attributes), good.event_time_ms / 1000),
                TimestampedValue(legacy, publish_s),  # no ts attribute: read stamps publish time
                TimestampedValue(message(b"\x00\xff garbage"), publish_s),
                TimestampedValue(message(OUT_OF_RANGE), publish_s),
            ]
        )
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    parsed = p | stream | ParseEvents(default_radar_id="radar-legacy", lateness=None)
    events = parsed.events | beam.MapTuple(
        lambda key, e, ts=beam.DoFn.TimestampParam: (
            key,
            e.event_id,
            e.radar_id,
            e.vehicle_id,
            ts.micros,
        )
    )
    letters = parsed.failures | beam.Map(lambda f: (f.stage.name, f.reason, f.payload))
    assert_that(
        events,
        equal_to([
            (("radar-1", "v"), good.event_id, "radar-1", "v", good.event_time_ms * 1000),
            (("radar-legacy", "car-7"), "pubsub-42", "radar-legacy", "car-7",
             int(publish_s * 1_000_000)),
        ]),
        label="Events",
    )  # fmt: skip
    assert_that(
        letters,
        equal_to([
            ("parse", "body is not UTF-8: invalid start byte at byte 1", b"\x00\xff garbage"),
            ("parse", "latitude 100.0 outside [-90, 90]", OUT_OF_RANGE),
        ]),
        label="DeadLetters",
    )  # fmt: skip
    p.run()


def test_dead_letter_keeps_the_attributes():
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements([TimestampedValue(message(b"{}", {"event_id": "x"}), T0_MS / 1000)])
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    parsed = p | stream | ParseEvents(default_radar_id="r", lateness=None)
    assert_that(
        parsed.failures | beam.Map(lambda f: dict(f.attributes)),
        equal_to([{"event_id": "x"}]),
    )
    p.run()


@pytest.mark.parametrize("speed", [40.0, 40.4])
def test_boundary_speed_through_the_transform(speed):
    # 40.0 km/h is under 25 mph (40.2336 km/h); 40.4 is over.
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements(timestamped(track("v", speed, points=2)))
        .advance_watermark_to_infinity()
    )
    p, fined, not_fined = run_section_speed(stream)
    expected = [("v", speed, 2)]
    assert_that(fined, equal_to(expected if speed > 40.2336 else []), label="Fined")
    assert_that(not_fined, equal_to([] if speed > 40.2336 else expected), label="NotFined")
    p.run()
