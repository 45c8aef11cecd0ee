"""Section average speed, the plausibility gates and the fine rule (docs/enforcement.md).

`judge_traversal` is the one entry point: a session's detections (any order, redeliveries
included) and the section's rule give either a `Traversal` (measured, fined or not) or a
`Rejection` (no measurement, an implausible one, or a partial one; never fined). The
methods, gates and defaults are explained in docs/enforcement.md.
"""

import dataclasses
import hashlib
import itertools
import json
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from section_speed.domain import defaults
from section_speed.domain.events import CameraEvent, format_rfc3339_ms
from section_speed.domain.geometry import LatLon, along_track_m, format_location, haversine_m

KMH_PER_MPH = 1.609344
# How a traversal's average speed was measured (docs/enforcement.md, the two methods).
SECTION_AVERAGE = "section_average"  # distance / time between the first and last detection
SPOT_MEAN = "spot_mean"  # the course's rule for timeless detections: mean of spot speeds

# Why a session gives no fine (`Rejection.kind`).
UNMEASURABLE = "unmeasurable"  # no measurement: one detection, zero duration, no speeds
IMPLAUSIBLE = "implausible"  # contradicts itself or physics: a fault, never a fine
PARTIAL = "partial"  # does not span the section's known ends


@dataclass(frozen=True, slots=True)
class SectionRule:
    """What applies on one section: limit, tolerance, its geometry and the plausible maximum.

    `entry` and `exit` are the section's ends (both or neither); when known, only a
    traversal seen within `end_radius_m` of both is judged. `length_m` is the surveyed
    road length. Both only ever lower the distance used (docs/enforcement.md).
    """

    speed_limit_mph: float = defaults.SPEED_LIMIT_MPH
    tolerance_mph: float = defaults.TOLERANCE_MPH
    length_m: float | None = None
    entry: LatLon | None = None
    exit: LatLon | None = None
    end_radius_m: float = defaults.END_RADIUS_M
    max_speed_mph: float = defaults.MAX_SPEED_MPH

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            raise ValueError(problem)

    @property
    def ends_known(self) -> bool:
        return self.entry is not None and self.exit is not None

    def is_speeding(self, avg_speed_mph: float) -> bool:
        """Strictly over limit + tolerance: driving exactly at the limit is not fined."""
        return avg_speed_mph > self.speed_limit_mph + self.tolerance_mph

    def to_json(self) -> dict[str, object]:
        """This rule as one section of a sections file (what `SectionRules.from_json` reads)."""
        section: dict[str, object] = {
            "speed_limit_mph": self.speed_limit_mph,
            "tolerance_mph": self.tolerance_mph,
        }
        if self.length_m is not None:
            section["length_m"] = self.length_m
        if self.entry is not None and self.exit is not None:
            section["entry"] = [self.entry[0], self.entry[1]]
            section["exit"] = [self.exit[0], self.exit[1]]
        # Left out at their defaults, so that the reader's defaults (its options) apply.
        if self.end_radius_m != defaults.END_RADIUS_M:
            section["end_radius_m"] = self.end_radius_m
        if self.max_speed_mph != defaults.MAX_SPEED_MPH:
            section["max_speed_mph"] = self.max_speed_mph
        return section

    def _problem(self) -> str | None:
        if not (_finite(self.speed_limit_mph) and self.speed_limit_mph > 0):
            return f"speed_limit_mph must be a number > 0, got {self.speed_limit_mph!r}"
        if not (_finite(self.tolerance_mph) and self.tolerance_mph >= 0):
            return f"tolerance_mph must be a number >= 0, got {self.tolerance_mph!r}"
        if self.length_m is not None and not (_finite(self.length_m) and self.length_m > 0):
            return f"length_m must be a number > 0 (metres), got {self.length_m!r}"
        if not (_finite(self.end_radius_m) and self.end_radius_m > 0):
            return f"end_radius_m must be a number > 0 (metres), got {self.end_radius_m!r}"
        threshold = self.speed_limit_mph + self.tolerance_mph
        if not (_finite(self.max_speed_mph) and self.max_speed_mph > threshold):
            return (
                f"max_speed_mph must be a number above speed_limit_mph + tolerance_mph "
                f"({threshold:g}), or nobody could be fined; got {self.max_speed_mph!r}"
            )
        if (self.entry is None) != (self.exit is None):
            return "give both entry and exit, or neither"
        if self.entry is not None and self.exit is not None:
            for name, point in (("entry", self.entry), ("exit", self.exit)):
                problem = _point_problem(point)
                if problem is not None:
                    return f"{name} {problem}"
            apart_m = haversine_m(self.entry, self.exit)
            if apart_m <= 2 * self.end_radius_m:
                return (
                    f"entry and exit are {apart_m:.1f} m apart, not more than twice "
                    f"end_radius_m ({self.end_radius_m:g} m): a traversal could not be told "
                    "from a vehicle seen at one end"
                )
        return None


@dataclass(frozen=True, slots=True)
class Traversal:
    """One vehicle's pass through one section: a measured session of detections."""

    traversal_id: str
    radar_id: str
    vehicle_id: str
    # Measured for SECTION_AVERAGE; None for SPOT_MEAN, which measures neither.
    distance_m: float | None
    duration_s: float | None
    avg_speed_kmh: float
    avg_speed_mph: float
    speed_limit_mph: float
    entry_time_ms: int
    exit_time_ms: int
    entry_location: LatLon
    exit_location: LatLon
    detections: int
    is_speeding: bool
    speed_method: str = SECTION_AVERAGE
    # Ids of traversals published before that this one corrects (a session merge).
    supersedes: tuple[str, ...] = ()
    # 0 when first published, +1 for each correction of the same id: consumers keep the
    # highest (messages of one id can arrive out of order, a fine waiting for evidence).
    revision: int = 0
    # Set when a late detection made this published traversal's session no measurement,
    # implausible or partial: it is withdrawn (never a fine), and this says why.
    withdrawn_reason: str | None = None
    # The tolerance applied on top of the limit (the fine rule is speed > limit + tolerance).
    tolerance_mph: float = defaults.TOLERANCE_MPH
    # SPOT_MEAN only: how many spot readings were averaged.
    spot_readings: int | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A session that gives no fine, why, and every detection it had (each event_id once).

    `kind` is UNMEASURABLE, IMPLAUSIBLE or PARTIAL; `reason` says what was found, with the
    numbers, so that a person can act on it.
    """

    kind: str
    reason: str
    detections: tuple[CameraEvent, ...]


def traversal_to_json(traversal: Traversal) -> dict[str, Any]:
    return dataclasses.asdict(traversal)


def traversal_from_json(value: dict[str, Any]) -> Traversal:
    return Traversal(
        **{
            **value,
            "entry_location": tuple(value["entry_location"]),
            "exit_location": tuple(value["exit_location"]),
            "supersedes": tuple(value["supersedes"]),
        }
    )


def kmh_to_mph(kmh: float) -> float:
    return kmh / KMH_PER_MPH


def mph_to_kmh(mph: float) -> float:
    return mph * KMH_PER_MPH


def traversal_id(radar_id: str, vehicle_id: str, entry_time_ms: int) -> str:
    """Deterministic id: a replay or a redelivery of the same traversal gets the same id."""
    key = json.dumps([radar_id, vehicle_id, entry_time_ms], separators=(",", ":"))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def judge_traversal(events: Iterable[CameraEvent], rule: SectionRule) -> Traversal | Rejection:
    """Measure one session's detections and judge them against the section's rule.

    Detections may come in any order and repeat (same event_id); the result depends only
    on their times, places and speeds, never on arrival order or ids. Timed detections
    are measured by distance / time (SECTION_AVERAGE), timeless ones (course messages) by
    the mean of their spot speeds (SPOT_MEAN); a session mixing both is implausible.
    """
    unique = _by_event_id(events)
    timed = sum(event.timed for event in unique)
    if timed and timed < len(unique):
        return Rejection(
            IMPLAUSIBLE,
            f"the session mixes {timed} detections that have an event time with "
            f"{len(unique) - timed} that have none (course messages): one vehicle id from two "
            "kinds of camera, which neither method can measure together",
            tuple(sorted(unique, key=_content_key)),
        )
    if timed:
        return _judge_timed(unique, rule)
    return _judge_timeless(unique, rule)


def is_single_detection(outcome: Traversal | Rejection) -> bool:
    """A session that saw its vehicle at one place only: the symptom of a too-short gap."""
    return (
        isinstance(outcome, Rejection)
        and outcome.kind == UNMEASURABLE
        and len({event.location for event in outcome.detections}) == 1
    )


class SingleDetectionMonitor:
    """Says once when sessions of one detection pile up (the session gap is too short).

    Feed it every session's outcome; it returns the warning text the first time at least
    `threshold` of the last `window` sessions (and at least `min_sessions` of them) had
    one detection, then stays quiet until the share falls below half the threshold.
    """

    def __init__(
        self,
        gap_seconds: float,
        window: int = 200,
        threshold: float = 0.5,
        min_sessions: int = 20,
    ) -> None:
        if window < 1 or not 0 < threshold <= 1 or min_sessions < 1:
            raise ValueError("window and min_sessions must be >= 1, threshold in (0, 1]")
        self.gap_seconds = gap_seconds
        self.threshold = threshold
        self.min_sessions = min_sessions
        self._recent: deque[bool] = deque(maxlen=window)
        self._singles = 0
        self._warned = False

    def observe(self, outcome: Traversal | Rejection) -> str | None:
        single = is_single_detection(outcome)
        if len(self._recent) == self._recent.maxlen and self._recent[0]:
            self._singles -= 1  # the oldest falls out of the window
        self._recent.append(single)
        self._singles += single
        share = self._singles / len(self._recent)
        if self._warned:
            if share < self.threshold / 2:
                self._warned = False
            return None
        if len(self._recent) < self.min_sessions or share < self.threshold:
            return None
        self._warned = True
        return (
            f"{self._singles} of the last {len(self._recent)} sessions had one detection: "
            f"the session gap ({self.gap_seconds:g} s) is probably shorter than the time "
            "between cameras"
        )


class SectionRules:
    """Per-section rules from a sections file, with the pipeline's defaults for the rest.

    The file is JSON keyed by radar_id; every key of a section may be left out, e.g.
    ``{"radar-1": {"speed_limit_mph": 30, "tolerance_mph": 2, "length_m": 1210.5,
    "entry": [40.81939, -73.940744], "exit": [40.811, -73.95], "end_radius_m": 60,
    "max_speed_mph": 200}}``.
    """

    _NUMBER_KEYS = ("speed_limit_mph", "tolerance_mph", "length_m", "end_radius_m",
                    "max_speed_mph")  # fmt: skip
    _KEYS = frozenset({*_NUMBER_KEYS, "entry", "exit"})

    def __init__(
        self, default: SectionRule, sections: Mapping[str, SectionRule] | None = None
    ) -> None:
        self.default = default
        self.sections = dict(sections or {})

    def for_radar(self, radar_id: str) -> SectionRule:
        return self.sections.get(radar_id, self.default)

    def to_json(self) -> str:
        """The sections file text for these sections (the default rule is not written)."""
        body = {radar_id: rule.to_json() for radar_id, rule in self.sections.items()}
        return json.dumps(body, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, default: SectionRule) -> "SectionRules":
        try:
            raw = json.loads(text)
        except ValueError as error:
            raise ValueError(f"sections file is not JSON: {error}") from error
        if not isinstance(raw, dict):
            raise ValueError("sections file must be a JSON object keyed by radar_id")
        sections = {}
        for radar_id, entry in raw.items():
            if not isinstance(entry, dict) or not set(entry) <= cls._KEYS:
                unknown = sorted(set(entry) - cls._KEYS) if isinstance(entry, dict) else []
                raise ValueError(
                    f"section {radar_id!r}: expected an object with keys among "
                    f"{sorted(cls._KEYS)}" + (f"; unknown: {unknown}" if unknown else "")
                )
            try:
                sections[radar_id] = cls._rule(entry, default)
            except ValueError as error:
                raise ValueError(f"section {radar_id!r}: {error}") from error
        return cls(default, sections)

    @classmethod
    def _rule(cls, entry: Mapping[str, object], default: SectionRule) -> SectionRule:
        values: dict[str, object] = {}
        for key in cls._NUMBER_KEYS:
            value = entry.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{key} must be a number, got {json.dumps(value)}")
            values[key] = float(value)
        for key in ("entry", "exit"):
            if entry.get(key) is not None:
                values[key] = _lat_lon(entry[key], key)
        # Length and ends describe one section: never inherited from the default rule.
        return dataclasses.replace(default, **({"length_m": None, "entry": None, "exit": None}
                                               | values))  # fmt: skip


# --- judging -----------------------------------------------------------------------------


def _judge_timed(unique: Sequence[CameraEvent], rule: SectionRule) -> Traversal | Rejection:
    """Distance / time, after the gates (docs/enforcement.md, in the order checked here)."""
    by_content = sorted(unique, key=_content_key)
    if not by_content:
        return Rejection(UNMEASURABLE, "the session has no detections", ())
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
    axis = _axis(by_content, rule)
    ordered = tuple(
        sorted(unique, key=lambda event: (event.event_time_ms, _along(event, axis),
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
    if len(points) < 2:
        return Rejection(
            UNMEASURABLE,
            f"one detection ({_describe(first)}"
            + (f", sent {len(ordered)} times" if len(ordered) > 1 else "")
            + "): a speed needs two; when many sessions have one, the session gap is "
            "shorter than the time between cameras",
            ordered,
        )
    if first.event_time_ms == last.event_time_ms:
        return Rejection(
            UNMEASURABLE,
            f"{len(points)} detections all at {format_rfc3339_ms(first.event_time_ms)}: "
            "zero duration, so no speed can be measured",
            ordered,
        )
    path_m = sum(haversine_m(a.location, b.location) for a, b in itertools.pairwise(points))
    if path_m <= defaults.SAME_PLACE_M:
        return Rejection(
            UNMEASURABLE,
            f"{len(points)} detections from {format_rfc3339_ms(first.event_time_ms)} to "
            f"{format_rfc3339_ms(last.event_time_ms)} all within {path_m:.1f} m: the vehicle "
            "was seen at one place only, there is no distance to measure",
            ordered,
        )
    section_m, section_name = _section_length(rule, first, last)
    if path_m > defaults.MAX_PATH_RATIO * section_m:
        return Rejection(
            IMPLAUSIBLE,
            f"the path through the {len(points)} detections is {path_m:.0f} m, more than "
            f"{defaults.MAX_PATH_RATIO:g} times the {section_name} ({section_m:.0f} m): the "
            "locations zig-zag (wrong camera positions, or two vehicles under one id)",
            ordered,
        )
    backwards = _backwards(points, axis)
    if backwards is not None:
        earlier, later, behind_m = backwards
        return Rejection(
            IMPLAUSIBLE,
            f"the detection at {_describe(later)} lies {behind_m:.0f} m behind the one at "
            f"{_describe(earlier)} along the section (more than "
            f"{defaults.ORDER_TOLERANCE_M:g} m): the order of the detections contradicts "
            "their times",
            ordered,
        )
    # In the driver's favour: never more distance than the section allows, time exact.
    distance_m = min([path_m, *_section_caps(rule)])
    duration_s = (last.event_time_ms - first.event_time_ms) / 1000
    avg_speed_kmh = distance_m / duration_s * 3.6
    avg_speed_mph = kmh_to_mph(avg_speed_kmh)
    if avg_speed_mph > rule.max_speed_mph:
        return Rejection(
            IMPLAUSIBLE,
            f"average speed {avg_speed_kmh:.1f} km/h ({avg_speed_mph:.1f} mph) over "
            f"{distance_m:.0f} m in {duration_s:.3f} s is above the physically possible "
            f"{rule.max_speed_mph:g} mph: a clock or location fault, not a speeder",
            ordered,
        )
    partial = _partial_reason(points, rule)
    if partial is not None:
        return Rejection(PARTIAL, partial, ordered)
    covered_m = haversine_m(first.location, last.location)
    if rule.ends_known:  # seen near both ends: at least the section less both end zones
        covered_m = max(covered_m, section_m - 2 * rule.end_radius_m)
    shortest_s = covered_m / (mph_to_kmh(rule.max_speed_mph) / 3.6)
    if duration_s < shortest_s:
        return Rejection(
            IMPLAUSIBLE,
            f"{duration_s:.3f} s between the first and last detection is less than the "
            f"{shortest_s:.3f} s that the {covered_m:.0f} m they are at least apart take at "
            f"the physically possible {rule.max_speed_mph:g} mph: a clock fault",
            ordered,
        )
    if rule.is_speeding(avg_speed_mph) and not rule.ends_known:
        return Rejection(
            PARTIAL,
            f"average speed {avg_speed_kmh:.1f} km/h ({avg_speed_mph:.1f} mph) is over the "
            f"limit, but the entry and exit of section {first.radar_id!r} are not known (no "
            "sections file entry): nothing shows that the detections cover the section, so "
            "a section-average fine cannot be issued; give the section's ends in --sections_file",
            ordered,
        )
    return Traversal(
        traversal_id=traversal_id(first.radar_id, first.vehicle_id, first.event_time_ms),
        radar_id=first.radar_id,
        vehicle_id=first.vehicle_id,
        distance_m=distance_m,
        duration_s=duration_s,
        avg_speed_kmh=avg_speed_kmh,
        avg_speed_mph=avg_speed_mph,
        speed_limit_mph=rule.speed_limit_mph,
        entry_time_ms=first.event_time_ms,
        exit_time_ms=last.event_time_ms,
        entry_location=first.location,
        exit_location=last.location,
        detections=len(points),
        is_speeding=rule.is_speeding(avg_speed_mph),
        speed_method=SECTION_AVERAGE,
        tolerance_mph=rule.tolerance_mph,
    )


def _judge_timeless(unique: Sequence[CameraEvent], rule: SectionRule) -> Traversal | Rejection:
    """The course's rule: the mean of the spot speeds; publish times only group and order.

    Nothing else is measured: the record carries no distance nor duration (the detections
    have no time of their own) and says how many spot readings were averaged. Entry and
    exit are the first and last detection as sent (docs/enforcement.md, timeless detections).
    """
    ordered = tuple(sorted(unique, key=_sent_key))
    # A publisher's retry sends the same body again under a new message id: count it once.
    seen: set[tuple[LatLon, float | None]] = set()
    points = []
    for event in ordered:
        if (event.location, event.speed_kmh) not in seen:
            seen.add((event.location, event.speed_kmh))
            points.append(event)
    if len(points) < 2:
        return Rejection(
            UNMEASURABLE,
            f"one detection ({format_location(ordered[0].location)}, published "
            f"{format_rfc3339_ms(ordered[0].event_time_ms)}): the mean of spot speeds needs "
            "two; when many sessions have one, the session gap is shorter than the time "
            "between cameras"
            if ordered
            else "the session has no detections",
            ordered,
        )
    without_speed = [event for event in points if event.speed_kmh is None]
    if without_speed:
        return Rejection(
            UNMEASURABLE,
            f"{len(without_speed)} of {len(points)} detections have no speed (first: "
            f"{format_location(without_speed[0].location)}): detections without an event "
            "time are measured by the mean of their spot speeds, so each needs a speed",
            ordered,
        )
    speeds = [event.speed_kmh for event in points if event.speed_kmh is not None]
    max_kmh = mph_to_kmh(rule.max_speed_mph)
    if max(speeds) > max_kmh:
        fastest = max(points, key=lambda event: (event.speed_kmh or 0.0, _content_key(event)))
        return Rejection(
            IMPLAUSIBLE,
            f"spot speed {fastest.speed_kmh:g} km/h at {format_location(fastest.location)} is "
            f"above the physically possible {rule.max_speed_mph:g} mph ({max_kmh:.1f} km/h)",
            ordered,
        )
    partial = _partial_reason(points, rule)
    if partial is not None:
        return Rejection(PARTIAL, partial, ordered)
    entry, exit_ = points[0], points[-1]
    avg_speed_kmh = math.fsum(speeds) / len(speeds)  # exact sum: independent of order
    avg_speed_mph = kmh_to_mph(avg_speed_kmh)
    return Traversal(
        traversal_id=traversal_id(entry.radar_id, entry.vehicle_id, entry.event_time_ms),
        radar_id=entry.radar_id,
        vehicle_id=entry.vehicle_id,
        distance_m=None,
        duration_s=None,
        avg_speed_kmh=avg_speed_kmh,
        avg_speed_mph=avg_speed_mph,
        speed_limit_mph=rule.speed_limit_mph,
        entry_time_ms=entry.event_time_ms,
        exit_time_ms=exit_.event_time_ms,
        entry_location=entry.location,
        exit_location=exit_.location,
        detections=len(points),
        is_speeding=rule.is_speeding(avg_speed_mph),
        speed_method=SPOT_MEAN,
        tolerance_mph=rule.tolerance_mph,
        spot_readings=len(speeds),
    )


Axis = tuple[LatLon, LatLon] | None


def _axis(by_content: Sequence[CameraEvent], rule: SectionRule) -> Axis:
    """The direction of travel: entry -> exit, else first -> last detection (None: a point)."""
    if rule.entry is not None and rule.exit is not None:
        return rule.entry, rule.exit
    start, end = by_content[0].location, by_content[-1].location
    if haversine_m(start, end) <= defaults.SAME_PLACE_M:
        return None
    return start, end


def _along(event: CameraEvent, axis: Axis) -> float:
    return 0.0 if axis is None else along_track_m(event.location, *axis)


def _backwards(
    points: Sequence[CameraEvent], axis: Axis
) -> tuple[CameraEvent, CameraEvent, float] | None:
    """The first detection lying behind an earlier one by more than the order tolerance."""
    if axis is None:
        return None
    furthest, furthest_m = points[0], _along(points[0], axis)
    for event in points[1:]:
        along_m = _along(event, axis)
        if along_m < furthest_m - defaults.ORDER_TOLERANCE_M:
            return furthest, event, furthest_m - along_m
        if along_m > furthest_m:
            furthest, furthest_m = event, along_m
    return None


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


def _partial_reason(points: Sequence[CameraEvent], rule: SectionRule) -> str | None:
    if rule.entry is None or rule.exit is None:
        return None
    missed = []
    for name, end in (("entry", rule.entry), ("exit", rule.exit)):
        nearest_m = min(haversine_m(event.location, end) for event in points)
        if nearest_m > rule.end_radius_m:
            missed.append(f"{name} ({nearest_m:.0f} m away at the nearest)")
    if not missed:
        return None
    return (
        f"not seen within {rule.end_radius_m:g} m of the section's {' nor '.join(missed)}: "
        "a partial traversal is no measurement of the section (the vehicle left the road, "
        "or the session closed before its last detections arrived)"
    )


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


def _describe(event: CameraEvent) -> str:
    return f"{format_rfc3339_ms(event.event_time_ms)}, {format_location(event.location)}"


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _point_problem(point: object) -> str | None:
    if not isinstance(point, tuple | list) or len(point) != 2:
        return f"must be [lat, lon], got {point!r}"
    lat, lon = point
    if not (_finite(lat) and _finite(lon)):
        return f"must be [lat, lon] numbers, got {point!r}"
    if not -90 <= lat <= 90:
        return f"latitude {lat} outside [-90, 90]"
    if not -180 <= lon <= 180:
        return f"longitude {lon} outside [-180, 180]"
    return None


def _lat_lon(value: object, name: str) -> LatLon:
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError(f"{name} must be [lat, lon], got {json.dumps(value)}")
    problem = _point_problem(tuple(value))
    if problem is not None:
        raise ValueError(f"{name} {problem}")
    return (float(value[0]), float(value[1]))
