"""Pure traffic simulation: vehicles crossing one section, as camera events plus ground truth.

No Pub/Sub here: `simulate_traffic` returns events and the truth the pipeline should
reproduce, so tests and the --output mode run without any service.
`simulate_course_traffic` reproduces the course's own generator (jabrio/Serverless_EDEM_2024,
02_Code/generator.py): timeless messages `{"vehicle_id", "speed", "location"}` in bursts,
with truth by the course's rule (mean spot speed above 40 km/h) and by this project's.
"""

import dataclasses
import itertools
import json
import logging
import math
import random
import re
import string
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

from section_speed.domain import defaults
from section_speed.domain.course import timeless_event_id
from section_speed.domain.events import (
    TIMED_FORMAT_KEYS,
    CameraEvent,
    InvalidEvent,
    format_rfc3339_ms,
    parse_camera_event,
    parse_rfc3339_ms,
)
from section_speed.domain.geometry import LatLon, haversine_m, interpolate
from section_speed.domain.judging import judge_traversal
from section_speed.domain.rules import SectionCatalog, SectionRule
from section_speed.domain.traversal import (
    SECTION_AVERAGE,
    SPOT_MEAN,
    Rejection,
    kmh_to_mph,
    mph_to_kmh,
)

logger = logging.getLogger(__name__)

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

# The course's generator (02_Code/generator.py), as it is: per loop 3 threads each send
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
# The course fines a mean spot speed strictly above 40 km/h ("25 miles per hour (40 km/h)");
# this project's limit is 25 mph = 40.2336 km/h.
COURSE_FINE_ABOVE_KMH = 40.0
# A recorded course message keeps its publish time under this key (not part of the body).
PUBLISH_TIME_KEY = "publish_time"

PathArg = str | PathLike[str]

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_COORDINATES = re.compile(rf"^\s*([(\[]?)\s*({_NUMBER})\s*,\s*({_NUMBER})\s*([)\]]?)\s*$")
_BRACKETS = {"": "", "(": ")", "[": "]"}


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
        _check_point("initial", self.initial)
        _check_point("final", self.final)
        _check_radar_id(self.radar_id)
        _check_int("vehicles", self.vehicles, minimum=1)
        _check_int("points", self.points, minimum=2)
        if self.seed is not None:
            _check_int("seed", self.seed, minimum=None)
        _check_number("rate", self.rate, lower=0.0, lower_inclusive=False)
        _check_number("speeding_fraction", self.speeding_fraction, lower=0.0, upper=1.0)
        _check_number("speed_limit_mph", self.speed_limit_mph, lower=0.0, lower_inclusive=False)
        _check_number("tolerance_mph", self.tolerance_mph, lower=0.0)
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
        _check_point("initial", self.initial)
        _check_point("final", self.final)
        _check_radar_id(self.radar_id)
        _check_int("vehicles", self.vehicles, minimum=1)
        if self.seed is not None:
            _check_int("seed", self.seed, minimum=None)
        _check_number("speed_limit_mph", self.speed_limit_mph, lower=0.0, lower_inclusive=False)
        _check_number("tolerance_mph", self.tolerance_mph, lower=0.0)

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
                course_fined=_course_verdict(group),
            )
        )
    records.sort(key=lambda record: (record.vehicle_id, record.radar_id))
    return records


def parse_coordinates(text: str) -> LatLon:
    """Parse "(40.8, -73.9)", "40.8,-73.9" or "[40.8, -73.9]" as (lat, lon); never evaluates."""
    match = _COORDINATES.match(text)
    if match is None or _BRACKETS[match.group(1)] != match.group(4):
        raise ValueError(f"coordinates must look like '(40.819390, -73.940744)', got {text!r}")
    point = (float(match.group(2)), float(match.group(3)))
    _check_point("coordinates", point)
    return point


def read_events_jsonl(
    path: PathArg, default_radar_id: str = defaults.RADAR_ID
) -> list[CameraEvent]:
    """Camera events, one JSON object a line, validated by the event contract.

    A course message (no event time) is recorded with its publish time under
    `publish_time`; it takes `default_radar_id`, as the pipeline's --radar_id gives it.
    """
    events = []
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                event = _read_line(line, default_radar_id)
            except InvalidEvent as error:
                raise ValueError(f"{path}:{number}: {error}") from error
            events.append(event)
    return events


def write_events_jsonl(path: PathArg, events: Iterable[CameraEvent]) -> int:
    """Write one event a line: its body, and a course message's publish time beside it."""
    return write_jsonl(path, (_recorded(event) for event in events))


def write_jsonl(path: PathArg, rows: Iterable[dict[str, object]]) -> int:
    count = 0
    with Path(path).open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
            count += 1
    return count


def rebase(events: Iterable[CameraEvent], new_start_ms: int) -> list[CameraEvent]:
    """Shift every event time so the earliest is new_start_ms; ids and gaps unchanged."""
    events = list(events)
    if not events:
        return []
    shift = new_start_ms - min(event.event_time_ms for event in events)
    return [
        dataclasses.replace(event, event_time_ms=event.event_time_ms + shift) for event in events
    ]


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
        course_fined=_course_verdict(events),
    )


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


def _course_verdict(events: Iterable[CameraEvent]) -> bool | None:
    """The course's rule on these detections: their mean spot speed above 40 km/h."""
    speeds = [event.speed_kmh for event in events]
    if not speeds or any(speed is None for speed in speeds):
        return None
    return (
        math.fsum(speed for speed in speeds if speed is not None) / len(speeds)
        > COURSE_FINE_ABOVE_KMH
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


def _recorded(event: CameraEvent) -> dict[str, object]:
    if event.timed:
        return event.to_json()
    return event.to_json() | {PUBLISH_TIME_KEY: format_rfc3339_ms(event.event_time_ms)}


def _read_line(line: str, default_radar_id: str) -> CameraEvent:
    try:
        body = json.loads(line)
    except ValueError:
        body = None  # the parser below gives the reason
    if not isinstance(body, dict) or any(key in body for key in TIMED_FORMAT_KEYS):
        return parse_camera_event(
            line.encode("utf-8"), {}, message_id=None, publish_time_ms=0, default_radar_id=""
        )
    published = body.pop(PUBLISH_TIME_KEY, None)
    if not isinstance(published, str):
        raise InvalidEvent(
            f"a course message (no timestamp) needs its {PUBLISH_TIME_KEY} in a recording"
        )
    publish_time_ms = parse_rfc3339_ms(published)
    # The bytes the course would publish: the id is what the pipeline derives from them.
    data = json.dumps(body).encode("utf-8")
    return parse_camera_event(
        data, {}, message_id=None, publish_time_ms=publish_time_ms,
        default_radar_id=default_radar_id,
    )  # fmt: skip


def _check_point(name: str, point: object) -> None:
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


def _check_int(name: str, value: object, *, minimum: int | None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")


def _check_number(
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


def _check_radar_id(radar_id: object) -> None:
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
