"""The plausibility gates (docs/enforcement.md, section 3, numbered as there).

Each gate returns its `Rejection` (the session's detections, with the reason and its
numbers) or None when the session passes it; `judging.py` calls them in the documented
order. Gates 2, 8 and 9 apply to both methods, so both call the same function.
"""

import itertools
from collections.abc import Sequence

from section_speed.domain import defaults
from section_speed.domain.events import CameraEvent, format_rfc3339_ms
from section_speed.domain.geometry import LatLon, along_track_m, format_location, haversine_m
from section_speed.domain.rules import SectionRule
from section_speed.domain.traversal import (
    IMPLAUSIBLE,
    PARTIAL,
    UNMEASURABLE,
    Rejection,
    mph_to_kmh,
)

Detections = tuple[CameraEvent, ...]
# The direction of travel, (from, to); None when every detection is at one place.
Axis = tuple[LatLon, LatLon] | None


# --- the gates both methods apply ----------------------------------------------------------


def fewer_than_two(
    points: Sequence[CameraEvent], ordered: Detections, seen: str, measure: str
) -> Rejection | None:
    """Gate 2: `measure` needs two detections; `seen` describes the one there is."""
    if len(points) >= 2:
        return None
    return Rejection(
        UNMEASURABLE,
        f"one detection ({seen}): {measure} needs two; when many sessions have one, the "
        "session gap is shorter than the time between cameras",
        ordered,
    )


def impossible_speed(
    speed: float, possible: float, measured: str, detail: str, rule: SectionRule,
    ordered: Detections,
) -> Rejection | None:  # fmt: skip
    """Gate 8: `speed` above `possible`, the rule's maximum in the same unit, is a fault.

    `measured` says which speed it is, `detail` follows the maximum in the reason.
    """
    if speed <= possible:
        return None
    return Rejection(
        IMPLAUSIBLE,
        f"{measured} is above the physically possible {rule.max_speed_mph:g} mph{detail}",
        ordered,
    )


def partial(
    points: Sequence[CameraEvent], rule: SectionRule, ordered: Detections
) -> Rejection | None:
    """Gate 9: with the section's ends known, not seen near both of them."""
    if rule.entry is None or rule.exit is None:
        return None
    missed = []
    for name, end in (("entry", rule.entry), ("exit", rule.exit)):
        nearest_m = min(haversine_m(event.location, end) for event in points)
        if nearest_m > rule.end_radius_m:
            missed.append(f"{name} ({nearest_m:.0f} m away at the nearest)")
    if not missed:
        return None
    return Rejection(
        PARTIAL,
        f"not seen within {rule.end_radius_m:g} m of the section's {' nor '.join(missed)}: "
        "a partial traversal is no measurement of the section (the vehicle left the road, "
        "or the session closed before its last detections arrived)",
        ordered,
    )


# --- the gates of timed detections ---------------------------------------------------------


def several_places_at_once(by_content: Sequence[CameraEvent]) -> Rejection | None:
    """Gate 3: detections at one instant further apart than one place."""
    for instant, group in itertools.groupby(by_content, key=lambda event: event.event_time_ms):
        at_once = list(group)
        spread_m = max(haversine_m(at_once[0].location, event.location) for event in at_once)
        if spread_m > defaults.SAME_PLACE_M:
            return Rejection(
                IMPLAUSIBLE,
                f"{len(at_once)} detections at the same instant {format_rfc3339_ms(instant)} "
                f"are up to {spread_m:.1f} m apart (more than {defaults.SAME_PLACE_M:g} m): "
                "one vehicle cannot be in two places at once",
                tuple(by_content),
            )
    return None


def zero_duration(points: Sequence[CameraEvent], ordered: Detections) -> Rejection | None:
    """Gate 4: every detection at one instant."""
    first, last = points[0], points[-1]
    if first.event_time_ms != last.event_time_ms:
        return None
    return Rejection(
        UNMEASURABLE,
        f"{len(points)} detections all at {format_rfc3339_ms(first.event_time_ms)}: "
        "zero duration, so no speed can be measured",
        ordered,
    )


def one_place_only(
    points: Sequence[CameraEvent], path_m: float, ordered: Detections
) -> Rejection | None:
    """Gate 5: a path through the detections no longer than one place."""
    if path_m > defaults.SAME_PLACE_M:
        return None
    return Rejection(
        UNMEASURABLE,
        f"{len(points)} detections from {format_rfc3339_ms(points[0].event_time_ms)} to "
        f"{format_rfc3339_ms(points[-1].event_time_ms)} all within {path_m:.1f} m: the "
        "vehicle was seen at one place only, there is no distance to measure",
        ordered,
    )


def zigzag(
    detections: int, path_m: float, section_m: float, section_name: str, ordered: Detections
) -> Rejection | None:
    """Gate 6: a path through the detections much longer than the section."""
    if path_m <= defaults.MAX_PATH_RATIO * section_m:
        return None
    return Rejection(
        IMPLAUSIBLE,
        f"the path through the {detections} detections is {path_m:.0f} m, more than "
        f"{defaults.MAX_PATH_RATIO:g} times the {section_name} ({section_m:.0f} m): the "
        "locations zig-zag (wrong camera positions, or two vehicles under one id)",
        ordered,
    )


def backwards(points: Sequence[CameraEvent], axis: Axis, ordered: Detections) -> Rejection | None:
    """Gate 7: a detection lying behind an earlier one by more than the order tolerance."""
    if axis is None:
        return None
    furthest, furthest_m = points[0], along(points[0], axis)
    for event in points[1:]:
        along_m = along(event, axis)
        if along_m < furthest_m - defaults.ORDER_TOLERANCE_M:
            return Rejection(
                IMPLAUSIBLE,
                f"the detection at {describe(event)} lies {furthest_m - along_m:.0f} m behind "
                f"the one at {describe(furthest)} along the section (more than "
                f"{defaults.ORDER_TOLERANCE_M:g} m): the order of the detections contradicts "
                "their times",
                ordered,
            )
        if along_m > furthest_m:
            furthest, furthest_m = event, along_m
    return None


def quicker_than_possible(
    first: CameraEvent,
    last: CameraEvent,
    duration_s: float,
    section_m: float,
    rule: SectionRule,
    ordered: Detections,
) -> Rejection | None:
    """Gate 10: less time than the distance surely driven takes at the maximum speed."""
    covered_m = haversine_m(first.location, last.location)
    if rule.ends_known:  # seen near both ends: at least the section less both end zones
        covered_m = max(covered_m, section_m - 2 * rule.end_radius_m)
    shortest_s = covered_m / (mph_to_kmh(rule.max_speed_mph) / 3.6)
    if duration_s >= shortest_s:
        return None
    return Rejection(
        IMPLAUSIBLE,
        f"{duration_s:.3f} s between the first and last detection is less than the "
        f"{shortest_s:.3f} s that the {covered_m:.0f} m they are at least apart take at "
        f"the physically possible {rule.max_speed_mph:g} mph: a clock fault",
        ordered,
    )


def over_limit_with_ends_unknown(
    first: CameraEvent,
    avg_speed_kmh: float,
    avg_speed_mph: float,
    rule: SectionRule,
    ordered: Detections,
    limit_mph: float | None = None,
) -> Rejection | None:
    """Partial: over the limit applied (`limit_mph`; None: the section's default), but
    nothing shows that the detections cover the section."""
    if not rule.is_speeding(avg_speed_mph, limit_mph) or rule.ends_known:
        return None
    return Rejection(
        PARTIAL,
        f"average speed {avg_speed_kmh:.1f} km/h ({avg_speed_mph:.1f} mph) is over the "
        f"limit, but the entry and exit of section {first.radar_id!r} are not known (no "
        "sections file entry): nothing shows that the detections cover the section, so "
        "a section-average fine cannot be issued; give the section's ends in --sections_file",
        ordered,
    )


# --- the gate of timeless detections -------------------------------------------------------


def spot_speed_missing(points: Sequence[CameraEvent], ordered: Detections) -> Rejection | None:
    """Every detection needs a spot speed: the mean needs them all."""
    without_speed = [event for event in points if event.speed_kmh is None]
    if not without_speed:
        return None
    return Rejection(
        UNMEASURABLE,
        f"{len(without_speed)} of {len(points)} detections have no speed (first: "
        f"{format_location(without_speed[0].location)}): detections without an event "
        "time are measured by the mean of their spot speeds, so each needs a speed",
        ordered,
    )


# --- the direction of travel --------------------------------------------------------------


def direction_of_travel(by_content: Sequence[CameraEvent], rule: SectionRule) -> Axis:
    """The direction of travel: entry -> exit, else first -> last detection (None: a point)."""
    if rule.entry is not None and rule.exit is not None:
        return rule.entry, rule.exit
    start, end = by_content[0].location, by_content[-1].location
    if haversine_m(start, end) <= defaults.SAME_PLACE_M:
        return None
    return start, end


def along(event: CameraEvent, axis: Axis) -> float:
    """How far along the direction of travel `event` lies (0 without a direction)."""
    return 0.0 if axis is None else along_track_m(event.location, *axis)


def describe(event: CameraEvent) -> str:
    """A detection for a reason: its time and place."""
    return f"{format_rfc3339_ms(event.event_time_ms)}, {format_location(event.location)}"
