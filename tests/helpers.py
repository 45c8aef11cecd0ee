"""Builders shared by the tests: camera events along a section at a chosen speed."""

import dataclasses

from section_speed.domain.events import CameraEvent
from section_speed.domain.geometry import LatLon, haversine_m, interpolate
from section_speed.domain.judging import judge_traversal
from section_speed.domain.rules import SectionRule
from section_speed.domain.traversal import Traversal

ENTRY: LatLon = (40.819390, -73.940744)
# A 305 m section, so that slow vehicles' detections stay within the tests' session gap.
EXIT: LatLon = interpolate(ENTRY, (40.811, -73.950), 0.25)
T0_MS = 1_795_000_000_000  # 2026-11-18T...Z, a fixed instant


def section(speed_limit_mph: float = 25.0, **settings: object) -> SectionRule:
    """The tests' section with its ends known: a section-average fine needs them."""
    return SectionRule(speed_limit_mph, entry=ENTRY, exit=EXIT, **settings)  # type: ignore[arg-type]


def track(
    vehicle_id: str,
    speed_kmh: float,
    *,
    start_ms: int = T0_MS,
    points: int = 3,
    radar_id: str = "radar-1",
    entry: LatLon = ENTRY,
    exit_: LatLon = EXIT,
) -> list[CameraEvent]:
    """Detections of one vehicle driving entry -> exit at `speed_kmh`."""
    locations = [interpolate(entry, exit_, i / (points - 1)) for i in range(points)]
    events, travelled = [], 0.0
    for i, location in enumerate(locations):
        if i:
            travelled += haversine_m(locations[i - 1], location)
        events.append(
            CameraEvent(
                event_id=f"{vehicle_id}-e{i}",
                radar_id=radar_id,
                vehicle_id=vehicle_id,
                location=location,
                event_time_ms=start_ms + round(travelled / (speed_kmh / 3.6) * 1000),
                speed_kmh=speed_kmh,
            )
        )
    return events


def at(event: CameraEvent, ms: int | None = None, **changes: object) -> CameraEvent:
    """A copy of `event` at another time (offset from T0) or with other fields."""
    if ms is not None:
        changes["event_time_ms"] = T0_MS + ms
    return dataclasses.replace(event, **changes)  # type: ignore[arg-type]


def measured(events: list[CameraEvent], rule: SectionRule) -> Traversal:
    """The traversal these detections make under `rule`; the test fails if it is rejected."""
    outcome = judge_traversal(events, rule)
    assert isinstance(outcome, Traversal), outcome
    return outcome
