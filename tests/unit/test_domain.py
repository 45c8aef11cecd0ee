import json
import math

import pytest

from pipeline.domain import defaults
from pipeline.domain.events import (
    CameraEvent,
    InvalidEvent,
    format_rfc3339_ms,
    parse_camera_event,
    parse_rfc3339_ms,
)
from pipeline.domain.geometry import haversine_m, interpolate, path_length_m
from pipeline.domain.schemas import (
    DEAD_LETTER_COLUMNS,
    FINE_COLUMNS,
    VEHICLE_SPEED_COLUMNS,
    bigquery_schema,
    dead_letter_record,
    fine_record,
    vehicle_speed_record,
)
from pipeline.domain.speed import (
    SectionRule,
    SectionRules,
    distinct_detections,
    kmh_to_mph,
    measure_traversal,
    mph_to_kmh,
    traversal_id,
)
from tests.helpers import T0_MS, track

# --- geometry -----------------------------------------------------------------------


def test_one_degree_of_latitude_is_111_2_km():
    assert haversine_m((0.0, 0.0), (1.0, 0.0)) == pytest.approx(111_195.08, rel=1e-6)


def test_points_one_km_apart_measure_one_km_within_0_1_percent():
    # 1 km north of a point in Manhattan: 1000 m / (R * pi / 180) degrees of latitude.
    one_km_deg = 1000 / (6_371_008.8 * math.pi / 180)
    start = (40.8, -73.95)
    assert haversine_m(start, (start[0] + one_km_deg, start[1])) == pytest.approx(1000, rel=1e-3)


def test_known_city_distance_paris_london():
    # Paris (48.8566, 2.3522) to London (51.5074, -0.1278): 343.5 km great circle.
    assert haversine_m((48.8566, 2.3522), (51.5074, -0.1278)) / 1000 == pytest.approx(
        343.5, abs=0.5
    )


def test_interpolated_points_lie_on_the_path():
    a, b = defaults.INITIAL_COORDINATES, defaults.FINAL_COORDINATES
    points = [interpolate(a, b, i / 4) for i in range(5)]
    assert points[0] == a and points[-1] == b
    assert path_length_m(points) == pytest.approx(haversine_m(a, b), rel=1e-9)


# --- speed and the fine rule --------------------------------------------------------


def test_mph_conversion_uses_the_international_mile():
    assert mph_to_kmh(25) == pytest.approx(40.2336)
    assert kmh_to_mph(mph_to_kmh(31.7)) == pytest.approx(31.7)


def test_exactly_the_limit_is_not_fined_and_just_above_is():
    rule = SectionRule(speed_limit_mph=25, tolerance_mph=0)
    assert not rule.is_speeding(25.0)
    assert rule.is_speeding(25.000001)
    assert not SectionRule(25, tolerance_mph=3).is_speeding(27.9)


def test_measure_traversal_at_a_known_speed():
    events = track("v1", 54.0, points=5)
    traversal = measure_traversal(events, SectionRule())
    assert traversal is not None
    assert traversal.avg_speed_kmh == pytest.approx(54.0, abs=0.01)
    assert traversal.avg_speed_mph == pytest.approx(54.0 / 1.609344, abs=0.01)
    assert traversal.is_speeding
    assert traversal.detections == 5
    assert traversal.entry_time_ms == T0_MS
    assert traversal.traversal_id == traversal_id("radar-1", "v1", T0_MS)


def test_surveyed_length_replaces_camera_hops():
    events = track("v1", 36.0, points=2)  # duration fixed by the true path
    duration_s = (events[1].event_time_ms - events[0].event_time_ms) / 1000
    traversal = measure_traversal(events, SectionRule(length_m=2000.0))
    assert traversal is not None
    assert traversal.distance_m == 2000.0
    assert traversal.avg_speed_kmh == pytest.approx(2000 / duration_s * 3.6)


def test_fewer_than_two_detections_or_zero_duration_is_no_measurement():
    one = track("v1", 30.0)[:1]
    assert measure_traversal(one, SectionRule()) is None
    same_instant = [one[0], CameraEvent("x", "radar-1", "v1", (40.81, -73.95), T0_MS)]
    assert measure_traversal(same_instant, SectionRule()) is None


def test_distinct_detections_orders_by_time_and_drops_redeliveries():
    events = track("v1", 30.0, points=4)
    shuffled = [events[2], events[0], events[3], events[0], events[1], events[2]]
    assert distinct_detections(shuffled) == events


def test_traversal_id_is_deterministic_and_distinguishes_traversals():
    assert traversal_id("r", "v", 1) == traversal_id("r", "v", 1)
    assert (
        len({traversal_id("r", "v", 1), traversal_id("r", "v", 2), traversal_id("r", "w", 1)}) == 3
    )
    # No separator ambiguity: ("a|b", "c") and ("a", "b|c") are different vehicles.
    assert traversal_id("a|b", "c", 1) != traversal_id("a", "b|c", 1)


def test_sections_file_overrides_per_radar_and_keeps_defaults_elsewhere():
    default = SectionRule(25, 0)
    rules = SectionRules.from_json(
        json.dumps({"radar-9": {"speed_limit_mph": 40, "length_m": 1500}}), default
    )
    assert rules.for_radar("radar-9") == SectionRule(40, 0, 1500.0)
    assert rules.for_radar("radar-1") is default


@pytest.mark.parametrize(
    "text",
    ["[]", "not json", '{"r": {"speed_limit": 3}}', '{"r": {"speed_limit_mph": -1}}'],
)
def test_bad_sections_file_is_rejected_with_a_reason(text):
    with pytest.raises(ValueError, match="section"):
        SectionRules.from_json(text, SectionRule())


# --- camera events -------------------------------------------------------------------


def _parse(data: bytes, attributes=None, message_id="m-1", publish_ms=T0_MS):
    return parse_camera_event(
        data,
        attributes or {},
        message_id=message_id,
        publish_time_ms=publish_ms,
        default_radar_id="radar-default",
    )


def test_rfc3339_round_trip_and_zone_required():
    assert format_rfc3339_ms(T0_MS + 250).endswith(".250Z")
    assert parse_rfc3339_ms(format_rfc3339_ms(T0_MS + 250)) == T0_MS + 250
    assert parse_rfc3339_ms("2026-11-22T13:00:00.250+01:00") == parse_rfc3339_ms(
        "2026-11-22T12:00:00.250Z"
    )
    with pytest.raises(InvalidEvent, match="time zone"):
        parse_rfc3339_ms("2026-11-22T12:00:00")


def test_event_round_trips_through_its_pubsub_form():
    event = track("v1", 30.0)[1]
    data, attributes = event.to_pubsub()
    assert attributes == {"event_id": event.event_id, "ts": str(event.event_time_ms)}
    assert _parse(data, attributes) == event


def test_legacy_course_message_borrows_id_time_and_radar_from_transport():
    event = _parse(b'{"vehicle_id": 17, "speed": 31.5, "location": [40.81, -73.95]}')
    assert event == CameraEvent("m-1", "radar-default", "17", (40.81, -73.95), T0_MS, 31.5)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"vehicle_id": "v", "location": [1, NaN]}', "not JSON"),
        (b'{"event_id": "e", "vehicle_id": "v", "location": [1, 2]}', "missing"),
        (b'{"speed": 3}', "missing required field"),
        (b'{"vehicle_id": "v", "location": [91, 0]}', "latitude"),
        (b'{"vehicle_id": "v", "location": [0, 181]}', "longitude"),
        (b'{"vehicle_id": "v", "location": [0]}', "location"),
        (b'{"vehicle_id": "v", "location": ["1", 2]}', "number"),
        (b'{"vehicle_id": true, "location": [1, 2]}', "string"),
        (b'{"vehicle_id": "../etc/passwd", "location": [1, 2]}', "must match"),
        (b'{"vehicle_id": "v", "location": [1, 2], "speed": -1}', "speed"),
        (b'{"vehicle_id": "v", "location": [1, 2], "speed": 1e400}', "finite"),
    ],
)
def test_malformed_messages_are_rejected_with_a_reason(data, reason):
    with pytest.raises(InvalidEvent, match=reason):
        _parse(data)


def test_timestamp_attribute_must_agree_with_the_body():
    data, attributes = track("v1", 30.0)[0].to_pubsub()
    with pytest.raises(InvalidEvent, match="disagrees"):
        _parse(data, {**attributes, "ts": "1"})


def test_far_future_timestamp_is_rejected():
    body = track("v1", 30.0)[0].to_json() | {"timestamp": "2999-01-01T00:00:00Z"}
    with pytest.raises(InvalidEvent, match="out of range"):
        _parse(json.dumps(body).encode())


# --- schemas ------------------------------------------------------------------------

DESIGN_FINE_FIELDS = {
    "fine_id": "STRING", "radar_id": "STRING", "vehicle_id": "STRING",
    "license_plate": "STRING", "plate_confidence": "FLOAT", "plate_reader": "STRING",
    "avg_speed_kmh": "FLOAT", "avg_speed_mph": "FLOAT", "speed_limit_mph": "FLOAT",
    "distance_m": "FLOAT", "duration_s": "FLOAT", "entry_time": "TIMESTAMP",
    "exit_time": "TIMESTAMP", "entry_location": "STRING", "exit_location": "STRING",
    "image_url": "STRING", "image_sha256": "STRING", "is_ticketed": "BOOLEAN",
    "processed_at": "TIMESTAMP",
    "speed_method": "STRING",
    # Added to DESIGN.md §4: why the plate or photo is missing, for analysts; and the ids a
    # correction replaces, so each traversal is counted once (issue 13).
    "evidence_error": "STRING", "supersedes": "STRING",
}  # fmt: skip


def test_fine_schema_matches_design_field_by_field():
    fields = bigquery_schema(FINE_COLUMNS)["fields"]
    assert {f["name"]: f["type"] for f in fields} == DESIGN_FINE_FIELDS
    assert {f["name"] for f in fields if f["mode"] == "NULLABLE"} == {
        "license_plate", "plate_confidence", "plate_reader", "image_url", "image_sha256",
        "evidence_error",
    }  # fmt: skip


def test_records_have_exactly_their_schema_columns():
    traversal = measure_traversal(track("v1", 70.0), SectionRule())
    fine = fine_record(traversal, processed_at_ms=T0_MS)
    assert list(fine) == [c.name for c in FINE_COLUMNS]
    assert fine["is_ticketed"] is True and fine["license_plate"] is None
    assert (
        fine["entry_location"] == "40.819390,-73.940744"
        and fine["fine_id"] == traversal.traversal_id
    )
    row = vehicle_speed_record(traversal, processed_at_ms=T0_MS)
    assert list(row) == [c.name for c in VEHICLE_SPEED_COLUMNS]
    assert row["detections"] == 3
    letter = dead_letter_record(
        stage="parse", error="bad", payload=b"\xff", attributes={"a": "1"}, timestamp_ms=T0_MS
    )
    assert list(letter) == [c.name for c in DEAD_LETTER_COLUMNS]
    assert letter["payload"] == "base64:/w==" and letter["attributes"] == '{"a": "1"}'
