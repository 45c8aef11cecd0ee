"""Camera events: the message contract, its validation and its ids."""

import json

import pytest

from section_speed.domain import defaults
from section_speed.domain.events import (
    InvalidEvent,
    format_rfc3339_ms,
    parse_camera_event,
    parse_rfc3339_ms,
)
from tests.helpers import T0_MS, at, track

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


def test_a_vehicle_class_is_read_lower_cased_and_round_trips():
    event = at(track("v1", 30.0)[1], vehicle_class="hgv")
    data, attributes = event.to_pubsub()
    assert json.loads(data)["vehicle_class"] == "hgv"
    assert _parse(data, attributes) == event
    shouted = json.dumps({**json.loads(data), "vehicle_class": "HGV"}).encode()
    assert _parse(shouted, attributes).vehicle_class == "hgv"


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
        (
            b'{"vehicle_id": "v", "location": [1, 2], "vehicle_class": "heavy goods"}',
            "vehicle_class must match",
        ),
        (b'{"vehicle_id": "v", "location": [1, 2], "vehicle_class": 3}', "vehicle_class"),
    ],
)
def test_malformed_messages_are_rejected_with_a_reason(data, reason):
    with pytest.raises(InvalidEvent, match=reason):
        _parse(data)


@pytest.mark.parametrize("offset_ms", [0, 1, -1, 400, -600, 1000, -1000])
def test_a_ts_attribute_that_differs_by_rounding_never_rejects(offset_ms):
    event = at(track("v1", 30.0)[1], 250)  # 12:..:40.250: to the second, 40 or 41
    data, _ = event.to_pubsub()
    assert defaults.TS_ATTRIBUTE_TOLERANCE_MS == 1000
    assert _parse(data, {"ts": str(event.event_time_ms + offset_ms)}) == event  # body wins


@pytest.mark.parametrize(
    ("ts", "reason"),
    [
        (str(T0_MS + 1001), f"disagrees with timestamp '2026-11-18T11:06:40.000Z' ({T0_MS} ms) "
                            "by 1001 ms, more than 1000 ms"),
        (str(T0_MS - 1001), "by 1001 ms"),
        ("1", f"by {T0_MS - 1} ms"),
        (str(T0_MS // 1000), "ms) by"),  # epoch seconds, not milliseconds
        ("abc", "attribute ts='abc' is not epoch milliseconds"),
        (" 123", "is not epoch milliseconds"),
        ("1e3", "is not epoch milliseconds"),
        ("\u0661\u0662", "is not epoch milliseconds"),  # digits, but not ASCII ones
    ],
)  # fmt: skip
def test_a_ts_attribute_further_from_the_body_is_rejected(ts, reason):
    data, _ = track("v1", 30.0)[0].to_pubsub()
    with pytest.raises(InvalidEvent) as error:
        _parse(data, {"ts": ts})
    assert reason in str(error.value)


def test_far_future_timestamp_is_rejected():
    body = track("v1", 30.0)[0].to_json() | {"timestamp": "2999-01-01T00:00:00Z"}
    with pytest.raises(InvalidEvent, match="out of range"):
        _parse(json.dumps(body).encode())
