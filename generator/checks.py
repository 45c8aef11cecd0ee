"""Checks of the generator's inputs: a bad value fails at once, with a message naming it.

Shared by the traffic configs and the coordinates parser, so that a section's ends and a
radar id are judged the same way whether they come from code or the command line.
"""

import math

from section_speed.domain.events import CameraEvent, InvalidEvent, parse_camera_event


def check_point(name: str, point: object) -> None:
    if not isinstance(point, tuple | list) or len(point) != 2:
        raise ValueError(f"{name} must be a (lat, lon) pair, got {point!r}")
    lat, lon = point
    for label, value in (("latitude", lat), ("longitude", lon)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{name}: {label} must be a finite number, got {value!r}")
    if not -90 <= lat <= 90:
        raise ValueError(f"{name}: latitude {lat} outside [-90, 90]")
    if not -180 <= lon <= 180:
        raise ValueError(f"{name}: longitude {lon} outside [-180, 180]")


def check_int(name: str, value: object, *, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


def check_number(
    name: str,
    value: object,
    *,
    lower: float,
    upper: float | None = None,
    lower_inclusive: bool = True,
) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    too_low = value < lower if lower_inclusive else value <= lower
    if too_low or (upper is not None and value > upper):
        low = f"[{lower:g}" if lower_inclusive else f"({lower:g}"
        high = f"{upper:g}]" if upper is not None else "inf)"
        raise ValueError(f"{name} must be in {low}, {high}, got {value}")


def check_radar_id(radar_id: object) -> None:
    # The event contract owns the id alphabet: probe it rather than copy its pattern.
    if not isinstance(radar_id, str):
        raise ValueError(f"radar_id must be a string, got {radar_id!r}")
    probe = CameraEvent("probe", radar_id, "probe", (0.0, 0.0), 1_700_000_000_000)
    data, attributes = probe.to_pubsub()
    try:
        parse_camera_event(
            data, attributes, message_id=None, publish_time_ms=0, default_radar_id=""
        )
    except InvalidEvent as error:
        raise ValueError(f"invalid radar_id: {error}") from error
