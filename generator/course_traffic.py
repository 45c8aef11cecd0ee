"""The course's traffic: its generator's timeless messages, and the truth about them.

`simulate_course_traffic` reproduces the course's own generator (docs/course.md): timeless
messages `{"vehicle_id", "speed", "location"}` in bursts, with truth by the course's rule
(mean spot speed above 40 km/h) and by this project's.
"""

import dataclasses
import math
import random
import string
from dataclasses import dataclass

from generator.checks import check_int, check_number, check_point, check_radar_id
from generator.simulate import section_rule
from generator.truth import COURSE_FINE_ABOVE_KMH, TruthRecord
from section_speed.domain import defaults
from section_speed.domain.course import timeless_event_id
from section_speed.domain.events import CameraEvent, format_rfc3339_ms
from section_speed.domain.geometry import LatLon
from section_speed.domain.rules import SectionRule
from section_speed.domain.traversal import SPOT_MEAN, kmh_to_mph

# The course's generator (docs/course.md), as it is: per loop 3 threads each send
# 5 vehicles x 10 points in a tight loop, then it sleeps uniform(1, 10) s. Each message
# draws its own speed: uniform(25, 40) km/h with probability 0.75, else uniform(40, 90).
COURSE_POINTS = 10
COURSE_THREADS = 3
COURSE_VEHICLES_PER_THREAD = 5
COURSE_PAUSE_S = (1.0, 10.0)
COURSE_SLOW_SHARE = 0.75
COURSE_SLOW_KMH = (25.0, 40.0)
COURSE_FAST_KMH = (40.0, 90.0)
COURSE_ID_ALPHABET = string.ascii_letters + string.digits
COURSE_ID_LENGTH = 6


@dataclass(frozen=True)
class CourseTrafficConfig:
    """The course's generator: its section, and how many vehicles to send."""

    initial: LatLon
    final: LatLon
    radar_id: str = defaults.RADAR_ID
    vehicles: int = COURSE_THREADS * COURSE_VEHICLES_PER_THREAD
    seed: int | None = None
    speed_limit_mph: float = defaults.SPEED_LIMIT_MPH
    tolerance_mph: float = defaults.TOLERANCE_MPH

    def __post_init__(self) -> None:
        check_point("initial", self.initial)
        check_point("final", self.final)
        check_radar_id(self.radar_id)
        check_int("vehicles", self.vehicles, minimum=1)
        if self.seed is not None:
            check_int("seed", self.seed, minimum=None)
        check_number("speed_limit_mph", self.speed_limit_mph, lower=0.0, lower_inclusive=False)
        check_number("tolerance_mph", self.tolerance_mph, lower=0.0)

    @property
    def rule(self) -> SectionRule:
        """The simulated section's rule, its ends known (as its sections file gives them)."""
        return section_rule(self.initial, self.final, self.speed_limit_mph, self.tolerance_mph)


def simulate_course_traffic(
    config: CourseTrafficConfig, start_ms: int
) -> tuple[list[CameraEvent], list[TruthRecord]]:
    """The course generator's messages, in publish order, and the truth sorted by vehicle.

    Loop k publishes its 3 x 5 vehicles' 10 messages each at one planned instant (the
    course sends them in a tight loop: in practice within a few milliseconds), then waits
    uniform(1, 10) s. Each event's id is what the pipeline derives when the read gives no
    message id, so a recording read back is the same list.
    """
    rng = random.Random(config.seed)
    per_loop = COURSE_THREADS * COURSE_VEHICLES_PER_THREAD
    locations = _course_locations(config.initial, config.final)
    events: list[CameraEvent] = []
    truth: list[TruthRecord] = []
    seen: set[str] = set()
    loop_start_ms = start_ms
    for k in range(config.vehicles):
        if k and k % per_loop == 0:
            loop_start_ms += round(rng.uniform(*COURSE_PAUSE_S) * 1000)
        vehicle_id = _course_vehicle_id(rng, seen)
        vehicle_events = []
        for location in locations:
            slow = rng.random() < COURSE_SLOW_SHARE
            speed = rng.uniform(*(COURSE_SLOW_KMH if slow else COURSE_FAST_KMH))
            event = CameraEvent("pending", config.radar_id, vehicle_id, location, loop_start_ms,
                                speed, timed=False)  # fmt: skip
            data, _ = event.to_pubsub()
            vehicle_events.append(
                dataclasses.replace(event, event_id=timeless_event_id(data, loop_start_ms))
            )
        events.extend(vehicle_events)
        truth.append(_spot_mean_truth(vehicle_events, config.rule))
    truth.sort(key=lambda record: record.vehicle_id)
    return events, truth


def course_loops(events: list[CameraEvent]) -> list[list[CameraEvent]]:
    """`simulate_course_traffic`'s messages as the course's loops send them: per loop, the
    3 threads' vehicles interleaved message by message, as its threads run at once."""
    vehicles = [events[i : i + COURSE_POINTS] for i in range(0, len(events), COURSE_POINTS)]
    per_loop = COURSE_THREADS * COURSE_VEHICLES_PER_THREAD
    loops = []
    for first in range(0, len(vehicles), per_loop):
        loop = vehicles[first : first + per_loop]
        threads = [
            [event for vehicle in loop[t::COURSE_THREADS] for event in vehicle]
            for t in range(COURSE_THREADS)
        ]
        longest = max(len(thread) for thread in threads)
        loops.append([thread[i] for i in range(longest) for thread in threads if i < len(thread)])
    return loops


def _spot_mean_truth(events: list[CameraEvent], rule: SectionRule) -> TruthRecord:
    """The course's measure, computed here on its own rather than by judge_traversal."""
    speeds = [event.speed_kmh for event in events if event.speed_kmh is not None]
    mean_kmh = math.fsum(speeds) / len(speeds)
    return TruthRecord(
        radar_id=events[0].radar_id,
        vehicle_id=events[0].vehicle_id,
        avg_speed_kmh=mean_kmh,
        avg_speed_mph=kmh_to_mph(mean_kmh),
        must_be_fined=rule.is_speeding(kmh_to_mph(mean_kmh)),
        entry_time=format_rfc3339_ms(min(event.event_time_ms for event in events)),
        exit_time=format_rfc3339_ms(max(event.event_time_ms for event in events)),
        detections=len(events),
        speed_method=SPOT_MEAN,
        course_fined=mean_kmh > COURSE_FINE_ABOVE_KMH,
    )


def _course_locations(initial: LatLon, final: LatLon) -> list[LatLon]:
    """The course's getVehicleLocation: linear in degrees, both ends included."""
    (i_lat, i_lon), (f_lat, f_lon) = initial, final
    points = []
    for i in range(COURSE_POINTS):
        factor = i / (COURSE_POINTS - 1)
        points.append((i_lat + factor * (f_lat - i_lat), i_lon + factor * (f_lon - i_lon)))
    return points


def _course_vehicle_id(rng: random.Random, seen: set[str]) -> str:
    while True:  # a repeated id would merge two vehicles' sessions
        vehicle_id = "".join(rng.choice(COURSE_ID_ALPHABET) for _ in range(COURSE_ID_LENGTH))
        if vehicle_id not in seen:
            seen.add(vehicle_id)
            return vehicle_id
