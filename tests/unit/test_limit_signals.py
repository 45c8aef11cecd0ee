"""Signalled limits through the whole composite, by event time (docs/enforcement.md,
Signalled limits): on time, after the detections they govern, late, out of order, wrong."""

import json

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from section_speed.domain.events import format_rfc3339_ms
from section_speed.domain.lateness import PUBLISH_TIME, LatenessRule
from section_speed.domain.rules import SectionCatalog
from section_speed.domain.traversal import mph_to_kmh
from tests.helpers import T0_MS, section, track
from tests.unit.test_enforcement import message
from tests.unit.test_transforms import ClockedStream, streaming_pipeline
from transforms.enforcement import EnforcementConfig, SectionSpeedEnforcement

GAP_S, LATENESS_S = 30, 60
CONFIG = EnforcementConfig(
    default_radar_id="radar-1",
    rules=SectionCatalog(section(25.0)),  # ends known
    gap_seconds=GAP_S,
    lateness=LatenessRule(GAP_S, LATENESS_S, PUBLISH_TIME),
    clock=lambda: T0_MS / 1000 + 30,
)
DETECTION, SIGNAL = "detection", "signal"
# The direct runner holds no watermark for a pending timer: its outputs would come after
# the end of input, too late for assert_that. Past every release first, then the end.
SETTLED_S = (T0_MS + 600_000) / 1000


def signal(signal_id: str, limit_mph: float | None, in_force_from_ms: int, sent_ms: int):
    body = {"signal_id": signal_id, "radar_id": "radar-1", "speed_limit_mph": limit_mph,
            "in_force_from": format_rfc3339_ms(in_force_from_ms)}  # fmt: skip
    return TimestampedValue((SIGNAL, PubsubMessage(json.dumps(body).encode(), {})), sent_ms / 1000)


def detections(events):
    return [TimestampedValue((DETECTION, message(e).value), e.event_time_ms / 1000) for e in events]


def outcome(t):
    return (t.vehicle_id, t.speed_limit_mph, t.limit_source, t.limit_reference, t.is_speeding,
            t.revision)  # fmt: skip


def run(stream, expected, failures=()):
    p = streaming_pipeline()
    both = p | stream
    messages = both | "Detections" >> beam.FlatMap(lambda kv: [kv[1]] if kv[0] == DETECTION else [])
    signals = both | "Signals" >> beam.FlatMap(lambda kv: [kv[1]] if kv[0] == SIGNAL else [])
    result = messages | SectionSpeedEnforcement(CONFIG, limit_signals=signals)
    judged = (result.fined, result.not_fined) | beam.Flatten()
    assert_that(judged | beam.Map(outcome), equal_to(expected))
    assert_that(
        result.failures | "Why" >> beam.Map(lambda f: (f.stage, f.reason)),
        equal_to(list(failures)),
        label="Failures",
    )
    p.run()


def test_a_signal_arriving_after_the_detections_it_governs_applies():
    car = track("car", mph_to_kmh(35), points=3)  # 35 mph: over 25, under the signalled 40
    exit_ms = car[-1].event_time_ms
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements(detections(car))
        # Sent 5 s after the car left, in force since a minute before it came.
        .add_elements([signal("vms-7", 40, T0_MS - 60_000, exit_ms + 5_000)])
        .advance_watermark_to(SETTLED_S)
        .advance_watermark_to_infinity()
    )
    run(stream, [("car", 40.0, "signal", "vms-7", False, 0)])


def test_a_late_signal_corrects_a_published_fine():
    car = track("car", mph_to_kmh(35), points=3)
    exit_ms = car[-1].event_time_ms
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements(detections(car))
        .advance_watermark_to((exit_ms + (GAP_S + 10) * 1000) / 1000)  # fined under 25 mph
        .add_elements([signal("vms-7", 40, T0_MS - 60_000, exit_ms + 41_000)])
        .advance_watermark_to(SETTLED_S)
        .advance_watermark_to_infinity()
    )
    run(
        stream,
        [("car", 25.0, "default", None, True, 0), ("car", 40.0, "signal", "vms-7", False, 1)],
    )


def test_signals_out_of_order_apply_by_their_time_and_the_driver_gets_the_highest():
    early = track("early", mph_to_kmh(35), points=3)
    late = track("late", mph_to_kmh(35), points=3, start_ms=T0_MS + 120_000)
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements(detections(early))
        .add_elements(detections(late))
        # Sent in the reverse order of their times: 30 mph from T0 + 100 s, 45 mph before.
        .add_elements([signal("vms-2", 30, T0_MS + 100_000, T0_MS + 1_000)])
        .add_elements([signal("vms-1", 45, T0_MS - 10_000, T0_MS + 2_000)])
        .advance_watermark_to(SETTLED_S)
        .advance_watermark_to_infinity()
    )
    run(
        stream,
        [("early", 45.0, "signal", "vms-1", False, 0), ("late", 30.0, "signal", "vms-2", True, 0)],
    )


def test_a_signal_that_ends_signalling_and_a_wrong_one():
    car = track("car", mph_to_kmh(35), points=3)
    bad = TimestampedValue((SIGNAL, PubsubMessage(b'{"signal_id": "x"}', {})), T0_MS / 1000)
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements([signal("vms-1", 40, T0_MS - 60_000, T0_MS - 60_000), bad])
        .add_elements([signal("vms-2", None, T0_MS - 30_000, T0_MS - 30_000)])
        .add_elements(detections(car))
        .advance_watermark_to(SETTLED_S)
        .advance_watermark_to_infinity()
    )
    run(
        stream,
        [("car", 25.0, "default", None, True, 0)],
        failures=[
            ("limit_signal", "signal: missing ['in_force_from', 'radar_id', 'speed_limit_mph']")
        ],
    )
