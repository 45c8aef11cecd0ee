"""The camera-event contract (docs/reference.md, Input): validation, parsing and serialisation.

`parse_camera_event` turns one Pub/Sub message into a `CameraEvent` or raises
`InvalidEvent` with a reason a person can act on. It never raises anything else,
so the transform around it can dead-letter every bad input and keep running.

Event times are plausible or rejected: not before 2000-01-01 nor from 2100 on (a clock
fault, not traffic), and, when the caller passes its clock (`now_ms`), not more than
`defaults.MAX_EVENT_TIME_AHEAD_SECONDS` ahead of it: a session keyed on a far-future
detection would stay open, holding state, until the watermark reached it. There is no
bound on age: old detections are only late, and the windowing drops them by itself.

A message with none of the contract's id and time keys is a *timeless* detection
(`timed=False`): its id, time and section come from its delivery (`from_transport`), its
time only groups a vehicle's detections into a session and is never used for a speed.
Its form, read and written, is in section_speed/domain/course.py.
"""

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from section_speed.domain import defaults
from section_speed.domain.course import (
    from_transport,
    text_vehicle_id,
    timeless_message,
    timeless_pubsub,
)
from section_speed.domain.geometry import LatLon

EVENT_ID_ATTRIBUTE = "event_id"
# Epoch milliseconds; checked against the body. Not used as ReadFromPubSub's
# timestamp_attribute: a malformed value would fail Beam's reader (docs/architecture.md).
TIMESTAMP_ATTRIBUTE = "ts"

# Ids end up in object names and table rows: a conservative alphabet keeps them safe there.
# Always used with fullmatch: `$` would let a trailing newline through.
# Every id of the contract (event, section's radar_id, vehicle); object names and URLs are
# built from them.
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def is_valid_id(value: str) -> bool:
    return ID_PATTERN.fullmatch(value) is not None


# RFC 3339 date-time only: fromisoformat alone also takes week dates, basic format and
# hour-only times. The zone is optional here so that its absence gets its own reason.
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?"
    r"(?P<zone>[Zz]|[+-][0-9]{2}:[0-9]{2})?"
)
_SHOWN_CHARS = 64  # of a bad value quoted in a reason: the payload keeps the rest
# Far-past or far-future event times are clock faults, not traffic.
_EARLIEST_MS = int(datetime(2000, 1, 1, tzinfo=UTC).timestamp() * 1000)
_LATEST_MS = int(datetime(2100, 1, 1, tzinfo=UTC).timestamp() * 1000)
_MAX_SPEED_KMH = 1000.0
# Any of these keys marks the contract's own (timed) format; none, a timeless message.
TIMED_FORMAT_KEYS = ("event_id", "radar_id", "timestamp")


_TS_ATTRIBUTE = re.compile(r"-?[0-9]{1,19}")  # epoch milliseconds, ASCII digits only


class InvalidEvent(ValueError):
    """A message that is not a camera event; the message says why."""


@dataclass(frozen=True, slots=True)
class CameraEvent:
    event_id: str
    radar_id: str
    vehicle_id: str
    location: LatLon
    event_time_ms: int  # for a timeless detection, its publish time (sessions only)
    speed_kmh: float | None = None
    timed: bool = True  # False: no event time of its own (timeless)
    # The camera's classification, e.g. "hgv", "bus"; None: not classified (docs/reference.md)
    vehicle_class: str | None = None

    def to_json(self) -> dict[str, object]:
        """The message body: the contract's form, or the timeless form for a timeless event."""
        if not self.timed:
            return timeless_message(self.vehicle_id, self.speed_kmh, self.location)
        body: dict[str, object] = {
            "event_id": self.event_id,
            "radar_id": self.radar_id,
            "vehicle_id": self.vehicle_id,
            "location": [self.location[0], self.location[1]],
            "timestamp": format_rfc3339_ms(self.event_time_ms),
        }
        if self.speed_kmh is not None:
            body["speed"] = self.speed_kmh
        if self.vehicle_class is not None:
            body["vehicle_class"] = self.vehicle_class
        return body

    def to_pubsub(self) -> tuple[bytes, dict[str, str]]:
        """The message body and attributes a camera publishes for this event.

        A timeless event carries no attributes: Pub/Sub assigns its id and time.
        """
        if not self.timed:
            return timeless_pubsub(self.to_json())
        data = json.dumps(self.to_json(), separators=(",", ":")).encode()
        return data, {
            EVENT_ID_ATTRIBUTE: self.event_id,
            TIMESTAMP_ATTRIBUTE: str(self.event_time_ms),
        }


VehicleKey = tuple[str, str]  # (radar_id, vehicle_id): one section's traversals of one vehicle


def vehicle_key(event: CameraEvent) -> VehicleKey:
    return event.radar_id, event.vehicle_id


def format_rfc3339_ms(epoch_ms: int) -> str:
    """`2026-11-22T12:00:00.250Z` for an epoch-milliseconds instant."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def parse_rfc3339_ms(text: str) -> int:
    """Epoch milliseconds of an RFC 3339 timestamp that carries a zone, in 2000..2100."""
    match = _RFC3339.fullmatch(text)
    try:
        if match is None:
            raise ValueError("not the RFC 3339 date-time form")
        moment = datetime.fromisoformat(text.upper())  # RFC 3339 allows "t" and "z"
    except ValueError as error:
        raise InvalidEvent(f"timestamp is not RFC 3339: {_shown(text)}") from error
    if match["zone"] is None or moment.tzinfo is None:
        raise InvalidEvent(f"timestamp has no time zone: {_shown(text)}")
    epoch_ms = round(moment.timestamp() * 1000)
    if not _EARLIEST_MS <= epoch_ms < _LATEST_MS:
        raise InvalidEvent(f"timestamp out of range 2000..2100: {_shown(text)}")
    return epoch_ms


def parse_camera_event(
    data: bytes,
    attributes: Mapping[str, str],
    *,
    message_id: str | None,
    publish_time_ms: int,
    default_radar_id: str,
    now_ms: int | None = None,
) -> CameraEvent:
    """Validate one message; a timeless one takes its id, time and section from its delivery.

    `now_ms` is the caller's clock: given, event times too far ahead of it are rejected
    (the pipeline passes it; tools that read recorded files, whose times may lie
    anywhere, do not).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidEvent(f"body is not UTF-8: {error.reason} at byte {error.start}") from error
    try:
        body = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:
        raise InvalidEvent(f"body is not JSON: {error}") from error
    if not isinstance(body, dict):
        raise InvalidEvent(f"body is a JSON {type(body).__name__}, not an object")

    if any(key in body for key in TIMED_FORMAT_KEYS):
        missing = [key for key in (*TIMED_FORMAT_KEYS, "vehicle_id", "location") if key not in body]
        if missing:
            raise InvalidEvent(f"missing required field(s): {', '.join(missing)}")
        event_id = _id_field(body, "event_id")
        radar_id = _id_field(body, "radar_id")
        if not isinstance(body["timestamp"], str):
            raise InvalidEvent("timestamp must be an RFC 3339 string")
        event_time_ms = parse_rfc3339_ms(body["timestamp"])
        _check_ts_attribute(attributes.get(TIMESTAMP_ATTRIBUTE), body["timestamp"], event_time_ms)
        timed = True
    else:
        missing = [key for key in ("vehicle_id", "location") if key not in body]
        if missing:
            raise InvalidEvent(f"missing required field(s): {', '.join(missing)}")
        if message_id:
            _checked_id(message_id, "Pub/Sub message id")
        if not _EARLIEST_MS <= publish_time_ms < _LATEST_MS:
            raise InvalidEvent(f"publish time {publish_time_ms} ms out of range 2000..2100")
        event_id, radar_id, event_time_ms = from_transport(
            data,
            message_id=message_id,
            publish_time_ms=publish_time_ms,
            default_radar_id=default_radar_id,
        )
        body["vehicle_id"] = text_vehicle_id(body["vehicle_id"])
        timed = False

    if now_ms is not None:
        ahead_ms = event_time_ms - now_ms
        if ahead_ms > defaults.MAX_EVENT_TIME_AHEAD_SECONDS * 1000:
            raise InvalidEvent(
                f"event time {format_rfc3339_ms(event_time_ms)} is {ahead_ms / 1000:.0f} s "
                f"ahead of the pipeline clock (at most {defaults.MAX_EVENT_TIME_AHEAD_SECONDS}"
                " s): camera clock fault"
            )
    return CameraEvent(
        event_id=event_id,
        radar_id=radar_id,
        vehicle_id=_id_field(body, "vehicle_id"),
        location=_location_field(body["location"]),
        event_time_ms=event_time_ms,
        speed_kmh=_speed_field(body.get("speed")),
        timed=timed,
        vehicle_class=_vehicle_class_field(body.get("vehicle_class")),
    )


def _check_ts_attribute(attribute: str | None, timestamp: str, event_time_ms: int) -> None:
    """A `ts` that is the body's time written another way passes; a different time does not."""
    if attribute is None:
        return
    if _TS_ATTRIBUTE.fullmatch(attribute) is None:
        raise InvalidEvent(
            f"attribute ts={_shown(attribute)} is not epoch milliseconds (timestamp "
            f"{_shown(timestamp)} is {event_time_ms} ms)"
        )
    apart_ms = abs(int(attribute) - event_time_ms)
    if apart_ms > defaults.TS_ATTRIBUTE_TOLERANCE_MS:
        raise InvalidEvent(
            f"attribute ts={_shown(attribute)} disagrees with timestamp {_shown(timestamp)} "
            f"({event_time_ms} ms) by {apart_ms} ms, more than "
            f"{defaults.TS_ATTRIBUTE_TOLERANCE_MS} ms: one of the camera's clocks is wrong"
        )


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _shown(value: str) -> str:
    """A bad value quoted in a reason, cut short: a 1 MB field must not make a 1 MB reason."""
    if len(value) <= _SHOWN_CHARS:
        return repr(value)
    return f"{value[:_SHOWN_CHARS]!r}... ({len(value)} chars)"


def _id_field(body: Mapping[str, object], key: str) -> str:
    value = body[key]
    if not isinstance(value, str):
        raise InvalidEvent(f"{key} must be a string, got {type(value).__name__}")
    return _checked_id(value, key)


def _checked_id(value: str, what: str) -> str:
    if not ID_PATTERN.fullmatch(value):
        raise InvalidEvent(f"{what} must match {ID_PATTERN.pattern}: {_shown(value)}")
    return value


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidEvent(f"{what} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError as error:  # a JSON integer like 10**400
        raise InvalidEvent(f"{what} must be finite") from error
    if not math.isfinite(number):
        raise InvalidEvent(f"{what} must be finite")
    return number


def _location_field(value: object) -> LatLon:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise InvalidEvent("location must be [lat, lon]")
    lat, lon = _number(value[0], "latitude"), _number(value[1], "longitude")
    if not -90 <= lat <= 90:
        raise InvalidEvent(f"latitude {lat} outside [-90, 90]")
    if not -180 <= lon <= 180:
        raise InvalidEvent(f"longitude {lon} outside [-180, 180]")
    return (lat, lon)


_VEHICLE_CLASS = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def _vehicle_class_field(value: object) -> str | None:
    """A class name, lower-cased ("HGV" is "hgv"); absent or null: not classified."""
    if value is None:
        return None
    if not isinstance(value, str) or not _VEHICLE_CLASS.fullmatch(value.lower()):
        shown = _shown(value) if isinstance(value, str) else type(value).__name__
        raise InvalidEvent(f"vehicle_class must match {_VEHICLE_CLASS.pattern}: {shown}")
    return value.lower()


def _speed_field(value: object) -> float | None:
    if value is None:
        return None
    speed = _number(value, "speed")
    if not 0 <= speed <= _MAX_SPEED_KMH:
        raise InvalidEvent(f"speed {speed} outside [0, {_MAX_SPEED_KMH:g}] km/h")
    return speed + 0.0  # -0.0 becomes 0.0
