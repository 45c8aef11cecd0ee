"""Pure traffic simulation: vehicles crossing one section, as camera events plus ground truth.

No Pub/Sub here: `simulate_traffic` returns events and the truth the pipeline should
reproduce, so tests and the --output mode run without any service. The course's own
traffic is in `generator.course_traffic`, recordings in `generator.event_files`.
"""

import itertools
import math
import random
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from generator.checks import check_int, check_number, check_point, check_radar_id
from generator.truth import TruthRecord, course_verdict
from section_speed.domain import defaults
from section_speed.domain.events import CameraEvent, format_rfc3339_ms
from section_speed.domain.geometry import LatLon, haversine_m, interpolate
from section_speed.domain.rules import SectionCatalog, SectionRule
from section_speed.domain.traversal import kmh_to_mph, mph_to_kmh

# Speeds keep this distance from the fine threshold, so millisecond rounding of event times
# can never turn a speeder into a law-abiding driver or the reverse.
VERDICT_MARGIN_KMH = 5.0
SPEEDER_MAX_FACTOR = 2.2
LAWFUL_MIN_FACTOR = 0.6
SPOT_SPEED_JITTER = 0.03
# The event contract rejects spot speeds above this (domain.events keeps it private).
MAX_SPOT_SPEED_KMH = 1000.0
# Shorter sections make the measured speed depend on millisecond rounding.
MIN_SECTION_M = 10.0
# Detections closer in time than this could round to the same millisecond.
MIN_HOP_S = 0.002
# By default the slowest vehicle passes a camera at least every this share of the session
# gap: well within it, so that no traversal splits into sessions of one detection.
CAMERA_INTERVAL_SHARE_OF_GAP = 1 / 3
# Fewest cameras a default section gets (the simulation was built around five).
MIN_DEFAULT_POINTS = 5


@dataclass(frozen=True)
class TrafficConfig:
    """What to simulate: a section, its rule, and how many vehicles at what pace."""

    initial: LatLon
    final: LatLon
    radar_id: str
    vehicles: int
    rate: float
    speeding_fraction: float
    points: int
    seed: int | None
    speed_limit_mph: float = defaults.SPEED_LIMIT_MPH
    tolerance_mph: float = defaults.TOLERANCE_MPH

    def __post_init__(self) -> None:
        check_point("initial", self.initial)
        check_point("final", self.final)
        check_radar_id(self.radar_id)
        check_int("vehicles", self.vehicles, minimum=1)
        check_int("points", self.points, minimum=2)
        if self.seed is not None:
            check_int("seed", self.seed, minimum=None)
        check_number("rate", self.rate, lower=0.0, lower_inclusive=False)
        check_number("speeding_fraction", self.speeding_fraction, lower=0.0, upper=1.0)
        check_number("speed_limit_mph", self.speed_limit_mph, lower=0.0, lower_inclusive=False)
        check_number("tolerance_mph", self.tolerance_mph, lower=0.0)
        self._check_speeds()
        self._check_section()

    @property
    def limit_kmh(self) -> float:
        """The fine threshold (limit + tolerance) in km/h."""
        return mph_to_kmh(self.speed_limit_mph + self.tolerance_mph)

    @property
    def rule(self) -> SectionRule:
        """The simulated section's rule, its ends known (as its sections file gives them)."""
        return section_rule(self.initial, self.final, self.speed_limit_mph, self.tolerance_mph)

    def lawful_range_kmh(self) -> tuple[float, float]:
        return self.limit_kmh * LAWFUL_MIN_FACTOR, self.limit_kmh - VERDICT_MARGIN_KMH

    def speeding_range_kmh(self) -> tuple[float, float]:
        return self.limit_kmh + VERDICT_MARGIN_KMH, self.limit_kmh * SPEEDER_MAX_FACTOR

    def longest_hop_s(self) -> float:
        """Longest time between two detections of one vehicle (the slowest vehicle)."""
        hop_m = haversine_m(self.initial, self.final) / (self.points - 1)
        return hop_m / (self.lawful_range_kmh()[0] / 3.6)

    def _check_speeds(self) -> None:
        low, high = self.lawful_range_kmh()
        fast_low, fast_high = self.speeding_range_kmh()
        if low >= high or fast_low >= fast_high:
            raise ValueError(
                f"speed_limit_mph + tolerance_mph = {self.limit_kmh:.1f} km/h is too low to "
                f"keep speeds {VERDICT_MARGIN_KMH:g} km/h away from the threshold; "
                "use at least 8 mph"
            )
        if fast_high * (1 + SPOT_SPEED_JITTER) > MAX_SPOT_SPEED_KMH:
            raise ValueError(
                f"speed_limit_mph + tolerance_mph is too high: speeders would exceed "
                f"{MAX_SPOT_SPEED_KMH:g} km/h, which the event contract rejects"
            )
        if fast_high > mph_to_kmh(defaults.MAX_SPEED_MPH):
            raise ValueError(
                f"speed_limit_mph + tolerance_mph is too high: speeders would exceed "
                f"{defaults.MAX_SPEED_MPH:g} mph, which the pipeline rejects as implausible"
            )

    def _check_section(self) -> None:
        length_m = haversine_m(self.initial, self.final)
        if length_m < MIN_SECTION_M:
            raise ValueError(
                f"initial and final coordinates are {length_m:.1f} m apart; "
                f"a section needs at least {MIN_SECTION_M:g} m"
            )
        hop_s = length_m / (self.points - 1) / (self.speeding_range_kmh()[1] / 3.6)
        if hop_s < MIN_HOP_S:
            raise ValueError(
                f"{self.points} points on a {length_m:.0f} m section put detections of the "
                "fastest vehicles less than 2 ms apart; use fewer points"
            )


def section_rule(
    initial: LatLon,
    final: LatLon,
    speed_limit_mph: float = defaults.SPEED_LIMIT_MPH,
    tolerance_mph: float = defaults.TOLERANCE_MPH,
) -> SectionRule:
    """The rule of a simulated section: its ends and, as surveyed length, the great circle."""
    return SectionRule(
        speed_limit_mph=speed_limit_mph,
        tolerance_mph=tolerance_mph,
        length_m=haversine_m(initial, final),
        entry=initial,
        exit=final,
    )


def sections_file_text(radar_id: str, rule: SectionRule) -> str:
    """The sections file (`--sections_file` of the pipeline) for one simulated section."""
    return SectionCatalog(SectionRule(), {radar_id: rule}).to_json()


def default_points(
    initial: LatLon,
    final: LatLon,
    gap_seconds: float,
    speed_limit_mph: float = defaults.SPEED_LIMIT_MPH,
    tolerance_mph: float = defaults.TOLERANCE_MPH,
) -> int:
    """Cameras enough that the slowest vehicle passes one every third of the session gap."""
    slowest_mps = mph_to_kmh(speed_limit_mph + tolerance_mph) * LAWFUL_MIN_FACTOR / 3.6
    longest_hop_m = slowest_mps * gap_seconds * CAMERA_INTERVAL_SHARE_OF_GAP
    hops = math.ceil(haversine_m(initial, final) / longest_hop_m)
    return max(MIN_DEFAULT_POINTS, hops + 1)


def longest_camera_intervals(events: Iterable[CameraEvent]) -> dict[tuple[str, str], float]:
    """Per (radar_id, vehicle_id): the longest time in seconds between two detections."""
    times: dict[tuple[str, str], list[int]] = defaultdict(list)
    for event in events:
        times[(event.radar_id, event.vehicle_id)].append(event.event_time_ms)
    return {
        key: max((b - a for a, b in itertools.pairwise(sorted(ms))), default=0) / 1000
        for key, ms in times.items()
    }


def simulate_traffic(
    config: TrafficConfig, start_ms: int
) -> tuple[list[CameraEvent], list[TruthRecord]]:
    """Events sorted by (time, event_id) and truth sorted by vehicle_id.

    All randomness comes from one `random.Random(seed)`, drawn in an order that does not
    depend on start_ms: the same seed gives the same ids, speeds and relative timing.
    """
    rng = random.Random(config.seed)
    vehicle_ids = _vehicle_ids(rng, config.vehicles)
    speeders = set(
        rng.sample(range(config.vehicles), round(config.vehicles * config.speeding_fraction))
    )
    locations, cumulative_m = _section_points(config)
    events: list[CameraEvent] = []
    truth: list[TruthRecord] = []
    for k, vehicle_id in enumerate(vehicle_ids):
        low, high = config.speeding_range_kmh() if k in speeders else config.lawful_range_kmh()
        speed_kmh = rng.uniform(low, high)
        # Vehicles enter `points / rate` seconds apart, so the run averages `rate` events/s.
        entry_offset_s = k * config.points / config.rate
        times = [
            start_ms + round((entry_offset_s + distance / (speed_kmh / 3.6)) * 1000)
            for distance in cumulative_m
        ]
        vehicle_events = [
            _event(rng, config.radar_id, vehicle_id, location, time_ms, speed_kmh)
            for location, time_ms in zip(locations, times, strict=True)
        ]
        events.extend(vehicle_events)
        truth.append(_truth(config, vehicle_id, speed_kmh, vehicle_events))
    events.sort(key=lambda event: (event.event_time_ms, event.event_id))
    truth.sort(key=lambda record: record.vehicle_id)
    return events, truth


def _vehicle_ids(rng: random.Random, count: int) -> list[str]:
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < count:
        vehicle_id = f"veh-{rng.getrandbits(40):010x}"
        if vehicle_id not in seen:  # a repeated id would merge two vehicles' sessions
            seen.add(vehicle_id)
            ids.append(vehicle_id)
    return ids


def _section_points(config: TrafficConfig) -> tuple[list[LatLon], list[float]]:
    """Detection locations along the great circle, and the distance driven to reach each."""
    locations = [
        interpolate(config.initial, config.final, i / (config.points - 1))
        for i in range(config.points)
    ]
    hops = (haversine_m(a, b) for a, b in itertools.pairwise(locations))
    return locations, [0.0, *itertools.accumulate(hops)]


def _event(
    rng: random.Random,
    radar_id: str,
    vehicle_id: str,
    location: LatLon,
    time_ms: int,
    speed_kmh: float,
) -> CameraEvent:
    event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    factor = rng.uniform(1 - SPOT_SPEED_JITTER, 1 + SPOT_SPEED_JITTER)
    return CameraEvent(
        event_id=event_id,
        radar_id=radar_id,
        vehicle_id=vehicle_id,
        location=location,
        event_time_ms=time_ms,
        speed_kmh=round(speed_kmh * factor, 1),
    )


def _truth(
    config: TrafficConfig, vehicle_id: str, speed_kmh: float, events: list[CameraEvent]
) -> TruthRecord:
    speed_mph = kmh_to_mph(speed_kmh)
    return TruthRecord(
        radar_id=config.radar_id,
        vehicle_id=vehicle_id,
        avg_speed_kmh=speed_kmh,
        avg_speed_mph=speed_mph,
        must_be_fined=config.rule.is_speeding(speed_mph),
        entry_time=format_rfc3339_ms(events[0].event_time_ms),
        exit_time=format_rfc3339_ms(events[-1].event_time_ms),
        detections=len(events),
        course_fined=course_verdict(events),
    )
