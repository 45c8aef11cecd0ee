"""The truth: what the pipeline should conclude about each simulated or recorded vehicle.

`--truth` writes these records; the tests and benchmarks compare the pipeline's output
with them. Each record carries this project's verdict and the course's (mean spot speed
above 40 km/h) on the same detections.
"""

import dataclasses
import logging
import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from section_speed.domain.events import CameraEvent, format_rfc3339_ms
from section_speed.domain.judging import judge_traversal
from section_speed.domain.rules import SectionRule
from section_speed.domain.traversal import SECTION_AVERAGE, Rejection

logger = logging.getLogger(__name__)

# The course fines a mean spot speed strictly above 40 km/h ("25 miles per hour (40 km/h)");
# this project's limit is 25 mph = 40.2336 km/h.
COURSE_FINE_ABOVE_KMH = 40.0


@dataclass(frozen=True)
class TruthRecord:
    """What the pipeline should conclude about one vehicle.

    `must_be_fined` is this project's verdict; `course_fined` the course's rule (mean spot
    speed above 40 km/h) on the same detections, None when some detection has no speed.
    """

    radar_id: str
    vehicle_id: str
    avg_speed_kmh: float
    avg_speed_mph: float
    must_be_fined: bool
    entry_time: str
    exit_time: str
    detections: int
    speed_method: str = SECTION_AVERAGE
    course_fined: bool | None = None

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def truth_from_events(events: Iterable[CameraEvent], rule: SectionRule) -> list[TruthRecord]:
    """Truth measured from recorded events, one record per (radar_id, vehicle_id)."""
    groups: dict[tuple[str, str], list[CameraEvent]] = defaultdict(list)
    for event in events:
        groups[(event.radar_id, event.vehicle_id)].append(event)
    records = []
    for (radar_id, vehicle_id), group in groups.items():
        traversal = judge_traversal(group, rule)
        if isinstance(traversal, Rejection):
            logger.warning("no verdict for %s/%s: %s", radar_id, vehicle_id, traversal.reason)
            continue
        records.append(
            TruthRecord(
                radar_id=radar_id,
                vehicle_id=vehicle_id,
                avg_speed_kmh=traversal.avg_speed_kmh,
                avg_speed_mph=traversal.avg_speed_mph,
                must_be_fined=traversal.is_speeding,
                entry_time=format_rfc3339_ms(traversal.entry_time_ms),
                exit_time=format_rfc3339_ms(traversal.exit_time_ms),
                detections=traversal.detections,
                speed_method=traversal.speed_method,
                course_fined=course_verdict(group),
            )
        )
    records.sort(key=lambda record: (record.vehicle_id, record.radar_id))
    return records


def course_verdict(events: Iterable[CameraEvent]) -> bool | None:
    """The course's rule on these detections: their mean spot speed above 40 km/h."""
    speeds = [event.speed_kmh for event in events]
    if not speeds or any(speed is None for speed in speeds):
        return None
    return (
        math.fsum(speed for speed in speeds if speed is not None) / len(speeds)
        > COURSE_FINE_ABOVE_KMH
    )
