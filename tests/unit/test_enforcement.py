"""The whole enforcement composite on TestStream: messages in, verdicts and failures out.

Each test feeds Pub/Sub messages stamped with their publish time, as the read delivers
them, moves the watermark as the runner would, and asserts the exact traversals and
failures that come out of SectionSpeedEnforcement.
"""

import json
from dataclasses import replace

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from section_speed.domain import defaults
from section_speed.domain.events import CameraEvent
from section_speed.domain.lateness import PUBLISH_TIME, WALL_CLOCK, LatenessRule
from section_speed.domain.rules import SectionCatalog, SectionRule
from section_speed.domain.traversal import traversal_id
from tests.helpers import ENTRY, EXIT, T0_MS, section, track
from tests.unit.test_transforms import ClockedStream, streaming_pipeline
from transforms.enforcement import EnforcementConfig, SectionSpeedEnforcement

GAP_S, LATENESS_S = 30, 60
LATE_PANE_S = defaults.LATE_FIRING_DELAY_SECONDS + 1  # processing time until a late pane fires
COURSE_EXIT = (40.811, -73.950)  # the course's section end, 1.2 km from ENTRY
RULES = SectionCatalog(section(25.0))  # 40.23 km/h
FRAGMENT_RULES = SectionCatalog(SectionRule(60.0))


def config(
    clock_s: float, lateness_clock: str = PUBLISH_TIME, rules: SectionCatalog = RULES
) -> EnforcementConfig:
    return EnforcementConfig(
        default_radar_id="radar-course",
        rules=rules,
        gap_seconds=GAP_S,
        lateness=LatenessRule(GAP_S, LATENESS_S, lateness_clock),
        clock=lambda: clock_s,
    )


def message(event: CameraEvent, published_ms: int | None = None) -> TimestampedValue:
    """The event as a camera publishes it, stamped with its publish time (default: at once)."""
    data, attributes = event.to_pubsub()
    published_ms = event.event_time_ms if published_ms is None else published_ms
    return TimestampedValue(PubsubMessage(data, attributes), published_ms / 1000)


def course_message(vehicle_id, speed, location, published_ms, message_id):
    """A message of the course's generator: no id, no time, no attributes."""
    body = json.dumps({"vehicle_id": vehicle_id, "speed": speed, "location": list(location)})
    msg = PubsubMessage(body.encode(), None, message_id=message_id)
    return TimestampedValue(msg, published_ms / 1000)


def verdict(traversal):
    """What a test compares: who, where, how fast (0.1 km/h), from how many detections."""
    return (
        traversal.radar_id,
        traversal.vehicle_id,
        round(traversal.avg_speed_kmh, 1),
        traversal.detections,
        traversal.speed_method,
    )


def failure(f):
    return (f.stage.name, f.attributes.get("vehicle_id"))


def run(stream: TestStream, cfg: EnforcementConfig, fined, not_fined, failures, ids=None):
    p = streaming_pipeline()
    result = p | stream | SectionSpeedEnforcement(cfg)
    assert_that(result.fined | "F" >> beam.Map(verdict), equal_to(fined), label="Fined")
    assert_that(result.not_fined | "N" >> beam.Map(verdict), equal_to(not_fined), label="NotFined")
    assert_that(result.failures | "X" >> beam.Map(failure), equal_to(failures), label="Failed")
    if ids is not None:
        everything = (result.fined, result.not_fined) | beam.Flatten()
        assert_that(
            everything
            | "Ids" >> beam.Map(lambda t: (t.traversal_id, t.supersedes, t.detections, t.revision)),
            equal_to(ids),
            label="Ids",
        )
    p.run()


def test_on_time_traffic_of_two_radars_is_judged_per_section():
    # The same vehicle id on two sections is two traversals; each radar keyed on its own.
    events = [
        *track("car", 72.0, radar_id="radar-1"),
        *track("car", 30.0, radar_id="radar-2", start_ms=T0_MS + 200),
        *track("van", 50.0, radar_id="radar-2", start_ms=T0_MS + 400),
    ]
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements([message(e) for e in events])
        .advance_watermark_to_infinity()
    )
    run(
        stream,
        config(T0_MS / 1000 + 60),
        fined=[
            ("radar-1", "car", 72.0, 3, "section_average"),
            ("radar-2", "van", 50.0, 3, "section_average"),
        ],
        not_fined=[("radar-2", "car", 30.0, 3, "section_average")],
        failures=[],
    )


def test_a_late_detection_corrects_the_traversal_under_its_id():
    # (A late detection that extends a fired session stalls the direct runner's watermark
    # under TestStream; a late one inside the session's span is what it can show.)
    first, middle, last = track("v", 60.0)
    session_end_s = last.event_time_ms / 1000 + GAP_S
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements([message(first), message(last)])
        .advance_watermark_to(session_end_s + 1)  # the on-time pane fires with two
        .add_elements([message(middle)])  # late, within the allowed lateness
        .advance_processing_time(LATE_PANE_S)  # the late pane fires
        .advance_watermark_to_infinity()
    )
    tid = traversal_id("radar-1", "v", first.event_time_ms)
    run(
        stream,
        config(session_end_s + 2),
        fined=[
            ("radar-1", "v", 60.0, 2, "section_average"),
            ("radar-1", "v", 60.0, 3, "section_average"),
        ],
        not_fined=[],
        failures=[],
        ids=[(tid, (), 2, 0), (tid, (), 3, 1)],
    )


def test_a_redelivered_detection_publishes_nothing_twice():
    events = track("v", 60.0)
    late_copy = events[1]  # Pub/Sub redelivers a detection after its session fired
    session_end_s = events[-1].event_time_ms / 1000 + GAP_S
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements([message(e) for e in events])
        .advance_watermark_to(session_end_s + 1)
        .add_elements([message(late_copy, published_ms=late_copy.event_time_ms)])
        .advance_processing_time(LATE_PANE_S)
        .advance_watermark_to_infinity()
    )
    tid = traversal_id("radar-1", "v", events[0].event_time_ms)
    run(
        stream,
        config(session_end_s + 2),
        fined=[("radar-1", "v", 60.0, 3, "section_average")],
        not_fined=[],
        failures=[],
        ids=[(tid, (), 3, 0)],
    )


def test_a_detection_that_bridges_two_sessions_merges_them_and_names_what_it_replaces():
    # 20 s between cameras; the middle detection is delayed, so the others fall into two
    # sessions (40 s apart > gap), each measured and published before it arrives.
    events = track("m", 54.0, points=5, exit_=COURSE_EXIT)
    middle = events.pop(2)
    first_id = traversal_id("radar-1", "m", events[0].event_time_ms)
    second_id = traversal_id("radar-1", "m", events[2].event_time_ms)
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements([message(e) for e in events])
        .advance_watermark_to(events[-1].event_time_ms / 1000 + GAP_S + 1)
        .add_elements([message(middle)])  # late, within the allowed lateness
        .advance_processing_time(LATE_PANE_S)  # the late pane fires
        .advance_watermark_to_infinity()
    )
    # No section ends and a limit above 54 km/h: each fragment is measured and published
    # (fragments of a fine would be partial, never published).
    run(
        stream,
        config(events[-1].event_time_ms / 1000 + GAP_S + 2, rules=FRAGMENT_RULES),
        fined=[],
        not_fined=[("radar-1", "m", 54.0, n, "section_average") for n in (2, 2, 5)],
        failures=[],
        ids=[(first_id, (), 2, 0), (second_id, (), 2, 0), (first_id, (second_id,), 5, 1)],
    )


def test_course_messages_are_judged_by_their_spot_speeds_and_malformed_ones_dead_lettered():
    # One course burst: ten messages of a vehicle published within the same millisecond.
    published_ms = T0_MS
    points = [_along(i / 9) for i in range(10)]
    fast = [
        course_message("aZ3k9Q", 45.0 + i, point, published_ms, str(100 + i))
        for i, point in enumerate(points)
    ]
    slow = [
        course_message("Qq1234", 30.0, point, published_ms + 1, str(200 + i))
        for i, point in enumerate(points)
    ]
    garbage = TimestampedValue(PubsubMessage(b"\xff not json", {"k": "v"}), T0_MS / 1000)
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements([*fast, *slow, garbage])
        .advance_watermark_to_infinity()
    )
    run(
        stream,
        config(T0_MS / 1000 + 5),
        fined=[("radar-course", "aZ3k9Q", 49.5, 10, "spot_mean")],
        not_fined=[("radar-course", "Qq1234", 30.0, 10, "spot_mean")],
        failures=[("parse", None)],
    )


def test_a_course_vehicle_the_runner_splits_is_judged_only_on_all_its_readings():
    """A lagging local runner closes the session after 4 of the 10 messages: the 4 (a fine
    at 50 km/h) are dead-lettered as partial; the late pane with all 10 (38 km/h) is judged."""
    points = [_along(i / 9) for i in range(10)]
    sent = [
        course_message("aZ3k9Q", 50.0 if i < 4 else 30.0, point, T0_MS, str(100 + i))
        for i, point in enumerate(points)
    ]
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements(sent[:4])
        .advance_watermark_to(T0_MS / 1000 + GAP_S + 1)  # the session fires with 4
        .add_elements(sent[4:])  # late, within the allowed lateness
        .advance_processing_time(LATE_PANE_S)
        .advance_watermark_to_infinity()
    )
    run(
        stream,
        # The course's command line: no sections file, so no section's ends to miss.
        config(T0_MS / 1000 + GAP_S + 1, rules=SectionCatalog(SectionRule(25.0))),
        fined=[],
        not_fined=[("radar-course", "aZ3k9Q", 38.0, 10, "spot_mean")],
        failures=[("partial", "aZ3k9Q")],
    )


def test_a_late_detection_that_makes_a_published_fine_implausible_withdraws_the_fine():
    first, middle, last = track("v", 60.0)
    far_off = replace(middle, location=(40.85, -73.90))  # 5 km off the section, same time
    session_end_s = last.event_time_ms / 1000 + GAP_S
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements([message(first), message(last)])
        .advance_watermark_to(session_end_s + 1)  # the on-time pane fires: a fine
        .add_elements([message(far_off)])  # late: the session no longer holds up
        .advance_processing_time(LATE_PANE_S)
        .advance_watermark_to_infinity()
    )
    tid = traversal_id("radar-1", "v", first.event_time_ms)
    p = streaming_pipeline()
    result = p | stream | SectionSpeedEnforcement(config(session_end_s + 2))
    assert_that(
        result.fined | "F" >> beam.Map(lambda t: (t.traversal_id, t.revision)),
        equal_to([(tid, 0)]),
        label="Fined",
    )
    assert_that(
        result.not_fined
        | "N"
        >> beam.Map(
            lambda t: (t.traversal_id, t.revision, t.is_speeding, t.withdrawn_reason.split(":")[0])
        ),
        equal_to([(tid, 1, False, "implausible")]),
        label="Withdrawn",
    )
    assert_that(
        result.failures | "X" >> beam.Map(failure), equal_to([("implausible", "v")]), label="DL"
    )
    assert_that(  # a fine was taken back: the fines table hears of it too
        result.withdrawn_fines | "W" >> beam.Map(lambda t: (t.traversal_id, t.revision)),
        equal_to([(tid, 1)]),
        label="WithdrawnFines",
    )
    p.run()


def _along(fraction):
    return (
        ENTRY[0] + fraction * (EXIT[0] - ENTRY[0]),
        ENTRY[1] + fraction * (EXIT[1] - ENTRY[1]),
    )


def test_an_impossible_speed_is_never_fined_but_dead_lettered_with_every_detection():
    events = track("rocket", 900.0)
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements([message(e) for e in events])
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    result = p | stream | SectionSpeedEnforcement(config(T0_MS / 1000 + 5))
    assert_that(result.fined, equal_to([]), label="NeverFined")
    payloads = result.failures | beam.Map(
        lambda f: (
            f.stage.name,
            sorted(json.loads(line)["event_id"] for line in f.payload.split(b"\n")),
        )
    )
    assert_that(payloads, equal_to([("implausible", [e.event_id for e in events])]), label="Failed")
    p.run()


def test_a_backlog_published_in_time_is_measured_however_late_it_is_read():
    # 20 vehicles published while the pipeline was down, read an hour later. Dataflow's
    # watermark follows the backlog's publish times, so nothing of it is late.
    events = [e for i in range(20) for e in track(f"v{i}", 30.0 + 2 * i, start_ms=T0_MS + i)]
    read_at_s = T0_MS / 1000 + 3600
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements([message(e, published_ms=e.event_time_ms + 500) for e in events])
        .advance_watermark_to_infinity()
    )
    speeds = [(f"v{i}", 30.0 + 2 * i) for i in range(20)]
    over = [("radar-1", v, s, 3, "section_average") for v, s in speeds if s > 40.2336]
    under = [("radar-1", v, s, 3, "section_average") for v, s in speeds if s <= 40.2336]
    run(stream, config(read_at_s, PUBLISH_TIME), fined=over, not_fined=under, failures=[])


def test_on_the_direct_runner_a_backlog_read_too_late_is_dead_lettered_not_dropped():
    # The local runner's watermark is the clock: it would drop these silently.
    events = track("v", 50.0)
    read_at_s = T0_MS / 1000 + 3600
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements([message(e, published_ms=e.event_time_ms + 500) for e in events])
        .advance_watermark_to_infinity()
    )
    run(
        stream,
        config(read_at_s, WALL_CLOCK),
        fined=[],
        not_fined=[],
        failures=[("too_late", None)] * 3,
    )
