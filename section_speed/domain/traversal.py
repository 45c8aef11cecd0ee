"""What judging a session gives: a measured `Traversal` or a `Rejection`, and their forms.

The value types, their JSON, the deterministic traversal id and the mph/km/h conversion;
how a session becomes one or the other is `judging.py` (docs/enforcement.md).
"""

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from section_speed.domain import defaults
from section_speed.domain.events import CameraEvent
from section_speed.domain.geometry import LatLon

KMH_PER_MPH = 1.609344
# How a traversal's average speed was measured (docs/enforcement.md, the two methods).
SECTION_AVERAGE = "section_average"  # distance / time between the first and last detection
SPOT_MEAN = "spot_mean"  # mean of spot speeds, for timeless detections (docs/course.md)

# Why a session gives no fine (`Rejection.kind`).
UNMEASURABLE = "unmeasurable"  # no measurement: one detection, zero duration, no speeds
IMPLAUSIBLE = "implausible"  # contradicts itself or physics: a fault, never a fine
PARTIAL = "partial"  # does not span the section's known ends


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
    # Which limit was applied and why (docs/enforcement.md, The limit in force): its source
    # (limits.LIMIT_SOURCES), the window's name, temporary order, signal id or class, the
    # vehicle class the detections gave (None: unknown), and the rules' version.
    limit_source: str = "default"
    limit_reference: str | None = None
    vehicle_class: str | None = None
    rules_version: str | None = None


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
