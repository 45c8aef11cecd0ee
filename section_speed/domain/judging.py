"""Section average speed, the plausibility gates and the fine rule (docs/enforcement.md).

`judge_traversal` is the one entry point: a session's detections (any order, redeliveries
included) and the section's rule give either a `Traversal` (measured, fined or not) or a
`Rejection` (no measurement, an implausible one, or a partial one; never fined). Each
method calls the gates (`gates.py`) in the order docs/enforcement.md gives them.
"""

import dataclasses
import itertools
import math
from collections.abc import Iterable, Sequence

from section_speed.domain import defaults, gates
from section_speed.domain.events import CameraEvent, format_rfc3339_ms
from section_speed.domain.geometry import LatLon, format_location, haversine_m
from section_speed.domain.limits import AppliedLimit, LimitSignal
from section_speed.domain.rules import SectionRule
from section_speed.domain.traversal import (
    IMPLAUSIBLE,
    PARTIAL,
    SECTION_AVERAGE,
    SPOT_MEAN,
    UNMEASURABLE,
    Rejection,
    Traversal,
    kmh_to_mph,
    mph_to_kmh,
    traversal_id,
)


def judge_traversal(
    events: Iterable[CameraEvent],
    rule: SectionRule,
    rules_version: str | None = None,
    *,
    min_spot_readings: int = defaults.MIN_SPOT_READINGS,
) -> Traversal | Rejection:
    """Measure one session's detections and judge them against the section's rule.

    Detections may come in any order and repeat (same event_id); the result depends only
    on their times, places and speeds, never on arrival order or ids. Timed detections
    are measured by distance / time (SECTION_AVERAGE), timeless ones by the mean of their
    spot speeds (SPOT_MEAN), and only from at least `min_spot_readings` distinct readings;
    a session mixing both is implausible. The limit is the highest in force during the
    traversal (`SectionRule.applied_limit`); the record names it, its source and
    `rules_version`.
    """
    unique = _by_event_id(events)
    if not unique:
        return Rejection(UNMEASURABLE, "the session has no detections", ())
    timed = sum(event.timed for event in unique)
    if timed and timed < len(unique):  # gate 1
        return Rejection(
            IMPLAUSIBLE,
            f"the session mixes {timed} detections that have an event time with "
            f"{len(unique) - timed} that have none (timeless detections): one vehicle id from two "
            "kinds of camera, which neither method can measure together",
            tuple(sorted(unique, key=_content_key)),
        )
    if timed:
        return _judge_timed(unique, rule, rules_version)
    return _judge_timeless(unique, rule, rules_version, min_spot_readings)


# --- the two methods -----------------------------------------------------------------------


def _judge_timed(
    unique: Sequence[CameraEvent], rule: SectionRule, rules_version: str | None
) -> Traversal | Rejection:
    """Distance / time, after the gates (docs/enforcement.md, in the order checked here)."""
    by_content = sorted(unique, key=_content_key)
    rejection = gates.several_places_at_once(by_content)
    if rejection is not None:
        return rejection
    axis = gates.direction_of_travel(by_content, rule)
    ordered = tuple(
        sorted(unique, key=lambda event: (event.event_time_ms, gates.along(event, axis),
                                          _content_key(event)))
    )  # fmt: skip
    # The same time and place under another event_id is the same detection (e.g. resent).
    points = [
        event
        for previous, event in zip((None, *ordered), ordered, strict=False)
        if previous is None
        or (previous.event_time_ms, previous.location) != (event.event_time_ms, event.location)
    ]
    first, last = points[0], points[-1]
    resent = f", sent {len(ordered)} times" if len(ordered) > 1 else ""
    path_m = sum(haversine_m(a.location, b.location) for a, b in itertools.pairwise(points))
    section_m, section_name = _section_length(rule, first, last)
    rejection = (
        gates.fewer_than_two(points, ordered, f"{gates.describe(first)}{resent}", "a speed")
        or gates.zero_duration(points, ordered)
        or gates.one_place_only(points, path_m, ordered)
        or gates.zigzag(len(points), path_m, section_m, section_name, ordered)
        or gates.backwards(points, axis, ordered)
    )
    if rejection is not None:
        return rejection
    # In the driver's favour: never more distance than the section allows, time exact.
    distance_m = min([path_m, *_section_caps(rule)])
    duration_s = (last.event_time_ms - first.event_time_ms) / 1000
    avg_speed_kmh = distance_m / duration_s * 3.6
    avg_speed_mph = kmh_to_mph(avg_speed_kmh)
    vehicle_class = _vehicle_class(points)
    limit = rule.applied_limit(first.event_time_ms, last.event_time_ms, vehicle_class)
    rejection = (
        gates.impossible_speed(
            avg_speed_mph,
            rule.max_speed_mph,
            f"average speed {avg_speed_kmh:.1f} km/h ({avg_speed_mph:.1f} mph) over "
            f"{distance_m:.0f} m in {duration_s:.3f} s",
            ": a clock or location fault, not a speeder",
            rule,
            ordered,
        )
        or gates.partial(points, rule, ordered)
        or gates.quicker_than_possible(first, last, duration_s, section_m, rule, ordered)
        or gates.over_limit_with_ends_unknown(
            first, avg_speed_kmh, avg_speed_mph, rule, ordered, limit.speed_limit_mph
        )
    )
    if rejection is not None:
        return rejection
    return _traversal(
        first, last, len(points), avg_speed_kmh, SECTION_AVERAGE, rule,
        (limit, vehicle_class, rules_version), distance_m=distance_m, duration_s=duration_s,
    )  # fmt: skip


def _judge_timeless(
    unique: Sequence[CameraEvent],
    rule: SectionRule,
    rules_version: str | None,
    min_spot_readings: int,
) -> Traversal | Rejection:
    """The spot mean: the mean of the spot speeds; publish times only group and order.

    Nothing else is measured: the record carries no distance nor duration (the detections
    have no time of their own) and says how many spot readings were averaged. Entry and
    exit are the first and last detection as sent (docs/enforcement.md, timeless detections).
    A session with fewer readings than a vehicle's traversal has is a part of one, and its
    mean no measure of the vehicle: partial, never judged.
    """
    ordered = tuple(sorted(unique, key=_sent_key))
    # A publisher's retry sends the same body again under a new message id: count it once.
    seen: set[tuple[LatLon, float | None]] = set()
    points = []
    for event in ordered:
        if (event.location, event.speed_kmh) not in seen:
            seen.add((event.location, event.speed_kmh))
            points.append(event)
    first = points[0]
    seen_at = (
        f"{format_location(first.location)}, published {format_rfc3339_ms(first.event_time_ms)}"
    )
    if len(points) < min_spot_readings:
        return _too_few_readings(points, ordered, seen_at, min_spot_readings)
    rejection = gates.fewer_than_two(
        points, ordered, seen_at, "the mean of spot speeds"
    ) or gates.spot_speed_missing(points, ordered)
    if rejection is not None:
        return rejection
    fastest = max(points, key=lambda event: (event.speed_kmh or 0.0, _content_key(event)))
    speeds = [event.speed_kmh for event in points if event.speed_kmh is not None]
    max_kmh = mph_to_kmh(rule.max_speed_mph)
    rejection = gates.impossible_speed(
        max(speeds),
        max_kmh,
        f"spot speed {fastest.speed_kmh:g} km/h at {format_location(fastest.location)}",
        f" ({max_kmh:.1f} km/h)",
        rule,
        ordered,
    ) or gates.partial(points, rule, ordered)
    if rejection is not None:
        return rejection
    avg_speed_kmh = math.fsum(speeds) / len(speeds)  # exact sum: independent of order
    # Publish times stand in for event times: the limit in force while they were sent.
    vehicle_class = _vehicle_class(points)
    limit = rule.applied_limit(first.event_time_ms, points[-1].event_time_ms, vehicle_class)
    return _traversal(
        first, points[-1], len(points), avg_speed_kmh, SPOT_MEAN, rule,
        (limit, vehicle_class, rules_version), spot_readings=len(speeds),
    )  # fmt: skip


def _too_few_readings(
    points: Sequence[CameraEvent], ordered: tuple[CameraEvent, ...], seen_at: str, minimum: int
) -> Rejection:
    """A timeless session cut short: its mean would average a subset of the readings."""
    return Rejection(
        PARTIAL,
        f"{len(points)} spot readings, fewer than the {minimum} of a vehicle's traversal "
        f"(--min_spot_readings; the first at {seen_at}): a part of a traversal, most often "
        "split by a pipeline that fell behind (it closed the session before the rest were "
        "read, or read them too late); a later firing with all of them is judged anew",
        ordered,
    )


def _traversal(
    entry: CameraEvent,
    exit_: CameraEvent,
    detections: int,
    avg_speed_kmh: float,
    speed_method: str,
    rule: SectionRule,
    applied: tuple[AppliedLimit, str | None, str | None],
    *,
    distance_m: float | None = None,
    duration_s: float | None = None,
    spot_readings: int | None = None,
) -> Traversal:
    """The measured traversal from `entry` to `exit_`, fined when the rule says so.

    `applied`: the limit applied, the vehicle class and the rules' version."""
    limit, vehicle_class, rules_version = applied
    avg_speed_mph = kmh_to_mph(avg_speed_kmh)
    return Traversal(
        traversal_id=traversal_id(entry.radar_id, entry.vehicle_id, entry.event_time_ms),
        radar_id=entry.radar_id,
        vehicle_id=entry.vehicle_id,
        distance_m=distance_m,
        duration_s=duration_s,
        avg_speed_kmh=avg_speed_kmh,
        avg_speed_mph=avg_speed_mph,
        speed_limit_mph=limit.speed_limit_mph,
        entry_time_ms=entry.event_time_ms,
        exit_time_ms=exit_.event_time_ms,
        entry_location=entry.location,
        exit_location=exit_.location,
        detections=detections,
        is_speeding=rule.is_speeding(avg_speed_mph, limit.speed_limit_mph),
        speed_method=speed_method,
        tolerance_mph=rule.tolerance_mph,
        spot_readings=spot_readings,
        limit_source=limit.source,
        limit_reference=limit.reference,
        vehicle_class=vehicle_class,
        rules_version=rules_version,
    )


def with_signals(
    traversal: Traversal, rule: SectionRule, signals: Sequence[LimitSignal]
) -> Traversal:
    """The traversal judged again with its section's signalled limits (any order); the same
    traversal when they change nothing. Only for sections whose ends are known (gate 9:
    over the limit with the ends unknown is partial, which signals do not change)."""
    limit = rule.applied_limit(
        traversal.entry_time_ms, traversal.exit_time_ms, traversal.vehicle_class, signals
    )
    if (limit.speed_limit_mph, limit.source, limit.reference) == (
        traversal.speed_limit_mph, traversal.limit_source, traversal.limit_reference
    ):  # fmt: skip
        return traversal
    return dataclasses.replace(
        traversal,
        speed_limit_mph=limit.speed_limit_mph,
        limit_source=limit.source,
        limit_reference=limit.reference,
        is_speeding=rule.is_speeding(traversal.avg_speed_mph, limit.speed_limit_mph),
    )


# --- the section's length, the order of detections -----------------------------------------


def _section_caps(rule: SectionRule) -> list[float]:
    """What the section allows at most: its surveyed length, the straight line of its ends."""
    caps = [] if rule.length_m is None else [rule.length_m]
    if rule.entry is not None and rule.exit is not None:
        caps.append(haversine_m(rule.entry, rule.exit))
    return caps


def _section_length(rule: SectionRule, first: CameraEvent, last: CameraEvent) -> tuple[float, str]:
    """The section's length, as well as it is known, and what it is (for reasons)."""
    if rule.length_m is not None:
        return rule.length_m, "section's surveyed length"
    if rule.entry is not None and rule.exit is not None:
        return haversine_m(rule.entry, rule.exit), "straight line between the section's ends"
    return haversine_m(first.location, last.location), "straight line from first to last detection"


def _vehicle_class(points: Sequence[CameraEvent]) -> str | None:
    """The class the detections give; None (unknown: the general limit) when none gives
    one or two disagree, in the driver's favour."""
    classes = {event.vehicle_class for event in points if event.vehicle_class is not None}
    return classes.pop() if len(classes) == 1 else None


def _by_event_id(events: Iterable[CameraEvent]) -> list[CameraEvent]:
    """Each event_id once; should one id carry two contents, the same one is always kept."""
    unique: dict[str, CameraEvent] = {}
    for event in events:
        kept = unique.get(event.event_id)
        if kept is None or _content_key(event) < _content_key(kept):
            unique[event.event_id] = event
    return list(unique.values())


def _content_key(event: CameraEvent) -> tuple[int, LatLon, float, bool, str]:
    """Time, then place and speed; the id only breaks ties between identical detections."""
    speed = -1.0 if event.speed_kmh is None else event.speed_kmh
    return (event.event_time_ms, event.location, speed, event.timed, event.event_id)


def _sent_key(event: CameraEvent) -> tuple[int, int, str]:
    """Publish order: publish time, then Pub/Sub's message id, a decimal number that grows
    in publish order within a batch (compared by length, then text, i.e. as a number).
    Ids of messages read without one (digests) only make the order deterministic."""
    return (event.event_time_ms, len(event.event_id), event.event_id)
