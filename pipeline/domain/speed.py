"""Section average speed and the fine rule (DESIGN.md §3)."""

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pipeline.domain import defaults
from pipeline.domain.events import CameraEvent
from pipeline.domain.geometry import LatLon, path_length_m

KMH_PER_MPH = 1.609344
# How a traversal's average speed was measured (DESIGN.md §3).
SECTION_AVERAGE = "section_average"  # distance / time between the first and last detection
SPOT_MEAN = "spot_mean"  # the course's rule for timeless detections: mean of spot speeds


@dataclass(frozen=True, slots=True)
class SectionRule:
    """What applies on one section: its limit, the tolerance, and its surveyed length."""

    speed_limit_mph: float = defaults.SPEED_LIMIT_MPH
    tolerance_mph: float = defaults.TOLERANCE_MPH
    length_m: float | None = None  # when surveyed, it replaces the sum of camera-to-camera hops

    def is_speeding(self, avg_speed_mph: float) -> bool:
        """Strictly over limit + tolerance: driving exactly at the limit is not fined."""
        return avg_speed_mph > self.speed_limit_mph + self.tolerance_mph


@dataclass(frozen=True, slots=True)
class Traversal:
    """One vehicle's pass through one section: a measured session of detections."""

    traversal_id: str
    radar_id: str
    vehicle_id: str
    distance_m: float
    duration_s: float
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


def kmh_to_mph(kmh: float) -> float:
    return kmh / KMH_PER_MPH


def mph_to_kmh(mph: float) -> float:
    return mph * KMH_PER_MPH


def traversal_id(radar_id: str, vehicle_id: str, entry_time_ms: int) -> str:
    """Deterministic id: a replay or a redelivery of the same traversal gets the same id."""
    key = json.dumps([radar_id, vehicle_id, entry_time_ms], separators=(",", ":"))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def distinct_detections(events: Iterable[CameraEvent]) -> list[CameraEvent]:
    """Detections in event-time order, each event_id once (redeliveries dropped)."""
    unique = {event.event_id: event for event in events}
    return sorted(unique.values(), key=lambda event: (event.event_time_ms, event.event_id))


def measure_traversal(detections: list[CameraEvent], rule: SectionRule) -> Traversal | None:
    """Average speed over ordered, distinct detections; None when it is no measurement."""
    if len(detections) < 2:
        return None
    first, last = detections[0], detections[-1]
    duration_s = (last.event_time_ms - first.event_time_ms) / 1000
    if duration_s <= 0:
        return None
    distance_m = (
        rule.length_m
        if rule.length_m is not None
        else path_length_m([event.location for event in detections])
    )
    avg_speed_kmh = distance_m / duration_s * 3.6
    avg_speed_mph = kmh_to_mph(avg_speed_kmh)
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
        detections=len(detections),
        is_speeding=rule.is_speeding(avg_speed_mph),
    )


class SectionRules:
    """Per-section rules from a sections file, with the pipeline's defaults for the rest.

    The file is JSON keyed by radar_id, e.g.
    ``{"radar-1": {"speed_limit_mph": 30, "tolerance_mph": 2, "length_m": 1210.5}}``.
    """

    _KEYS = frozenset({"speed_limit_mph", "tolerance_mph", "length_m"})

    def __init__(
        self, default: SectionRule, sections: Mapping[str, SectionRule] | None = None
    ) -> None:
        self.default = default
        self.sections = dict(sections or {})

    def for_radar(self, radar_id: str) -> SectionRule:
        return self.sections.get(radar_id, self.default)

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
                raise ValueError(
                    f"section {radar_id!r}: expected an object with keys {sorted(cls._KEYS)}"
                )
            rule = SectionRule(
                speed_limit_mph=float(entry.get("speed_limit_mph", default.speed_limit_mph)),
                tolerance_mph=float(entry.get("tolerance_mph", default.tolerance_mph)),
                length_m=float(entry["length_m"]) if entry.get("length_m") is not None else None,
            )
            if (
                rule.speed_limit_mph <= 0
                or rule.tolerance_mph < 0
                or (rule.length_m is not None and rule.length_m <= 0)
            ):
                raise ValueError(f"section {radar_id!r}: limits and length must be positive")
            sections[radar_id] = rule
        return cls(default, sections)


def measurement_key(traversal: Traversal) -> str:
    """The traversal's id plus a digest of its whole measurement.

    A redelivery or an identical late re-fire repeats the key; a late detection that
    changes the measurement gives a new key (a correction, published again).
    """
    content = json.dumps(dataclasses.asdict(traversal), sort_keys=True, default=list)
    return f"{traversal.traversal_id}-{hashlib.sha256(content.encode()).hexdigest()[:16]}"


def too_late(
    event_time_ms: int, now_ms: int, gap_seconds: int, allowed_lateness_seconds: int
) -> bool:
    """Whether a detection arrives after its traversal can no longer take it.

    Its session ends at the earliest one gap after it; Beam drops it once the watermark
    passes that end plus the allowed lateness. The watermark never runs ahead of the
    clock, so judged against the clock (with a margin for the trip to the grouping step)
    every detection Beam would drop silently is caught here first.
    """
    deadline_ms = event_time_ms + (gap_seconds + allowed_lateness_seconds) * 1000
    return deadline_ms < now_ms + defaults.LATE_MARGIN_SECONDS * 1000
