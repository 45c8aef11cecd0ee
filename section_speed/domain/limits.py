"""The limit in force: a section's default limit, weekly windows, dated temporary limits,
per-class limits and signals, and which one a traversal is judged by (docs/enforcement.md,
The limit in force).

At one instant the road's limit is the first of: the signal in force, a temporary limit,
a weekly window, the section's default. A vehicle of a class with its own limit gets the
lower of that and the road's limit. Over a traversal the driver gets the benefit: the
highest limit in force at any moment between its first and its last detection applies.
"""

import functools
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from section_speed.domain.events import ID_PATTERN, InvalidEvent, is_valid_id, parse_rfc3339_ms

# Where the limit applied came from (`limit_source` of every record).
DEFAULT = "default"  # the section's limit (or the pipeline's --speed_limit_mph)
WINDOW = "window"  # a weekly window, e.g. school hours; reference: the window's name
TEMPORARY = "temporary"  # a dated temporary limit; reference: its order, e.g. roadworks
SIGNAL = "signal"  # a signalled limit from --limit_signals_subscription; reference: its id
CLASS = "class"  # the vehicle class's own limit; reference: the class
LIMIT_SOURCES = (DEFAULT, WINDOW, TEMPORARY, SIGNAL, CLASS)

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order
_CLOCK = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])|24:00")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:/#-]{0,63}")
_CLASS = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


@dataclass(frozen=True, slots=True)
class AppliedLimit:
    """A limit, where it came from, and which window, order, signal or class it was."""

    speed_limit_mph: float
    source: str = DEFAULT
    reference: str | None = None


@dataclass(frozen=True, slots=True)
class WeeklyWindow:
    """A limit on some weekdays between two local clock times: [start, end)."""

    days: frozenset[int]  # 0 = Monday
    start_minute: int
    end_minute: int  # up to 24 * 60
    speed_limit_mph: float
    name: str
    priority: int = 0

    def in_force(self, local: datetime) -> bool:
        minute = local.hour * 60 + local.minute + local.second / 60 + local.microsecond / 6e7
        return local.weekday() in self.days and self.start_minute <= minute < self.end_minute

    def boundaries_ms(self, zone: ZoneInfo, first: date, last: date) -> Iterator[int]:
        """Where the window starts and ends on each of its days from `first` to `last`."""
        day = first
        while day <= last:
            if day.weekday() in self.days:
                midnight = datetime(day.year, day.month, day.day, tzinfo=zone)
                for minute in (self.start_minute, self.end_minute):
                    # Aware arithmetic is wall-clock arithmetic: 07:00 local on a DST day too.
                    yield _ms(midnight + timedelta(minutes=minute))
            day += timedelta(days=1)


@dataclass(frozen=True, slots=True)
class TemporaryLimit:
    """A limit from one instant to another, [start, end), with its order's reference."""

    start_ms: int
    end_ms: int
    speed_limit_mph: float
    reference: str
    priority: int = 0

    def in_force(self, at_ms: int) -> bool:
        return self.start_ms <= at_ms < self.end_ms


@dataclass(frozen=True, slots=True)
class LimitSignal:
    """A signalled limit for one section from an instant on, until the next signal.

    `speed_limit_mph` None ends signalling: the section's own limits apply again.
    """

    signal_id: str
    radar_id: str
    in_force_from_ms: int
    speed_limit_mph: float | None

    def to_json(self) -> dict[str, object]:
        return {
            "signal_id": self.signal_id,
            "radar_id": self.radar_id,
            "in_force_from_ms": self.in_force_from_ms,
            "speed_limit_mph": self.speed_limit_mph,
        }

    @classmethod
    def parse(cls, data: bytes) -> "LimitSignal":
        """A signal message (docs/enforcement.md, Signalled limits); ValueError says why not."""
        try:
            body = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise ValueError(f"signal is not UTF-8 JSON: {error}") from error
        keys = frozenset({"signal_id", "radar_id", "speed_limit_mph", "in_force_from"})
        body = _object(body, "signal", keys, sorted(keys))
        for key in ("signal_id", "radar_id"):
            if not isinstance(body[key], str) or not is_valid_id(body[key]):
                raise ValueError(f"signal: {key} must match {ID_PATTERN.pattern}, got "
                                 f"{json.dumps(body[key])[:80]}")  # fmt: skip
        if not isinstance(body["in_force_from"], str):
            raise ValueError("signal: in_force_from must be an RFC 3339 string")
        try:
            in_force_from_ms = parse_rfc3339_ms(body["in_force_from"])
        except InvalidEvent as error:
            raise ValueError(f"signal: in_force_from {error}") from error
        limit = body["speed_limit_mph"]
        return cls(
            body["signal_id"],
            body["radar_id"],
            in_force_from_ms,
            None if limit is None else _limit(limit, "signal"),
        )

    @classmethod
    def from_json(cls, value: Mapping[str, object]) -> "LimitSignal":
        limit = value["speed_limit_mph"]
        return cls(
            str(value["signal_id"]),
            str(value["radar_id"]),
            int(value["in_force_from_ms"]),  # type: ignore[call-overload]
            None if limit is None else float(limit),  # type: ignore[arg-type]
        )


@dataclass(frozen=True, slots=True)
class SectionLimits:
    """What varies on one section besides its default limit."""

    time_zone: str | None = None
    windows: tuple[WeeklyWindow, ...] = ()
    temporary: tuple[TemporaryLimit, ...] = ()
    classes: Mapping[str, float] = field(default_factory=dict)

    @property
    def varies_in_time(self) -> bool:
        return bool(self.windows or self.temporary)

    def all_limits(self) -> list[float]:
        return [
            *(w.speed_limit_mph for w in self.windows),
            *(t.speed_limit_mph for t in self.temporary),
            *self.classes.values(),
        ]

    def to_json(self) -> dict[str, object]:
        """The keys of a sections file's section that describe these limits."""
        section: dict[str, object] = {}
        if self.time_zone is not None:
            section["time_zone"] = self.time_zone
        if self.windows:
            section["windows"] = [_window_json(w) for w in self.windows]
        if self.temporary:
            section["temporary"] = [_temporary_json(t) for t in self.temporary]
        if self.classes:
            section["classes"] = dict(self.classes)
        return section


NO_LIMITS = SectionLimits()


def limit_at(
    default_mph: float,
    limits: SectionLimits,
    at_ms: int,
    vehicle_class: str | None = None,
    signal: LimitSignal | None = None,
) -> AppliedLimit:
    """The limit in force at one instant for a vehicle of `vehicle_class` (None: unknown)."""
    road = _road_limit_at(default_mph, limits, at_ms, signal)
    class_mph = limits.classes.get(vehicle_class) if vehicle_class is not None else None
    if class_mph is not None and class_mph < road.speed_limit_mph:
        return AppliedLimit(class_mph, CLASS, vehicle_class)
    return road


def limit_for_traversal(
    default_mph: float,
    limits: SectionLimits,
    entry_ms: int,
    exit_ms: int,
    vehicle_class: str | None = None,
    signals: Sequence[LimitSignal] = (),
) -> AppliedLimit:
    """The highest limit in force at any moment of [entry_ms, exit_ms]; on a tie, the
    earliest. `signals` are the section's, in any order."""
    if not limits.varies_in_time and not signals:  # the common case: one limit all along
        return limit_at(default_mph, limits, entry_ms, vehicle_class)
    ordered = sorted(signals, key=lambda s: (s.in_force_from_ms, s.signal_id))
    best: AppliedLimit | None = None
    for at_ms in _moments(limits, ordered, entry_ms, exit_ms):
        applied = limit_at(default_mph, limits, at_ms, vehicle_class, _signal_at(ordered, at_ms))
        if best is None or applied.speed_limit_mph > best.speed_limit_mph:
            best = applied
    assert best is not None
    return best


def _road_limit_at(
    default_mph: float, limits: SectionLimits, at_ms: int, signal: LimitSignal | None
) -> AppliedLimit:
    if signal is not None and signal.speed_limit_mph is not None:
        return AppliedLimit(signal.speed_limit_mph, SIGNAL, signal.signal_id)
    temporary = [t for t in limits.temporary if t.in_force(at_ms)]
    if temporary:
        chosen = max(temporary, key=lambda t: t.priority)
        return AppliedLimit(chosen.speed_limit_mph, TEMPORARY, chosen.reference)
    if limits.windows:
        local = datetime.fromtimestamp(at_ms / 1000, _zone(limits))
        windows = [w for w in limits.windows if w.in_force(local)]
        if windows:
            chosen_window = max(windows, key=lambda w: w.priority)
            return AppliedLimit(chosen_window.speed_limit_mph, WINDOW, chosen_window.name)
    return AppliedLimit(default_mph)


def _moments(
    limits: SectionLimits, signals: Sequence[LimitSignal], entry_ms: int, exit_ms: int
) -> list[int]:
    """The entry and every instant within the traversal at which the limit may change."""
    moments = {entry_ms}
    for temporary in limits.temporary:
        moments.update((temporary.start_ms, temporary.end_ms))
    moments.update(signal.in_force_from_ms for signal in signals)
    if limits.windows:
        zone = _zone(limits)
        day = datetime.fromtimestamp(entry_ms / 1000, zone).date()
        last = datetime.fromtimestamp(exit_ms / 1000, zone).date()
        while day <= last:  # a boundary within the traversal lies on one of its local days
            moments.update(_day_boundaries(limits.windows, zone, day))
            day += timedelta(days=1)
    return sorted(m for m in moments if entry_ms <= m <= exit_ms)


@functools.lru_cache(maxsize=1024)
def _day_boundaries(windows: tuple[WeeklyWindow, ...], zone: ZoneInfo, day: date) -> list[int]:
    """Where the windows start and end on one local day (cached: traversals share days)."""
    return [ms for window in windows for ms in window.boundaries_ms(zone, day, day)]


def _signal_at(ordered: Sequence[LimitSignal], at_ms: int) -> LimitSignal | None:
    current = None
    for signal in ordered:
        if signal.in_force_from_ms > at_ms:
            break
        current = signal
    return current


_ZONES: dict[str, ZoneInfo] = {}


def _zone(limits: SectionLimits) -> ZoneInfo:
    name = limits.time_zone or "UTC"
    zone = _ZONES.get(name)
    if zone is None:
        zone = _ZONES[name] = ZoneInfo(name)
    return zone


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


# --- the sections file's keys --------------------------------------------------------------

LIMIT_KEYS = frozenset({"time_zone", "windows", "temporary", "classes"})


def limits_from_json(entry: Mapping[str, object]) -> SectionLimits:
    """The varying limits of one section of a sections file; ValueError says what is wrong."""
    time_zone = entry.get("time_zone")
    if time_zone is not None:
        if not isinstance(time_zone, str):
            raise ValueError(f"time_zone must be an IANA name such as America/New_York, "
                             f"got {json.dumps(time_zone)}")  # fmt: skip
        try:
            zone = ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"time_zone {time_zone!r} is not a known IANA time zone") from error
    else:
        zone = None
    windows = tuple(_window(value, index) for index, value in enumerate(_list(entry, "windows")))
    if windows and zone is None:
        raise ValueError("windows are in the section's local time: give its time_zone")
    temporary = tuple(
        _temporary(value, index, zone) for index, value in enumerate(_list(entry, "temporary"))
    )
    classes = _classes(entry.get("classes"))
    limits = SectionLimits(time_zone, windows, temporary, classes)
    problem = _overlap(limits)
    if problem:
        raise ValueError(problem)
    return limits


def _list(entry: Mapping[str, object], key: str) -> list[object]:
    value = entry.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{key} must be a list, got {json.dumps(value)}")
    return value


def _limit(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what}: speed_limit_mph must be a number > 0, got {json.dumps(value)}")
    if value <= 0:
        raise ValueError(f"{what}: speed_limit_mph must be a number > 0, got {value}")
    return float(value)


def _priority(value: Mapping[str, object], what: str) -> int:
    priority = value.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ValueError(f"{what}: priority must be an integer, got {json.dumps(priority)}")
    return priority


def _object(value: object, what: str, keys: frozenset[str], required: Iterable[str]) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be an object, got {json.dumps(value)}")
    unknown = sorted(set(value) - keys)
    if unknown:
        raise ValueError(f"{what}: unknown keys {unknown}; expected among {sorted(keys)}")
    missing = [key for key in required if key not in value]
    if missing:
        raise ValueError(f"{what}: missing {missing}")
    return value


def _clock(value: object, what: str) -> int:
    if not isinstance(value, str) or not _CLOCK.fullmatch(value):
        raise ValueError(f"{what} must be a local time HH:MM (00:00 to 24:00), got "
                         f"{json.dumps(value)}")  # fmt: skip
    hours, minutes = value.split(":")
    return int(hours) * 60 + int(minutes)


def _window(value: object, index: int) -> WeeklyWindow:
    what = f"windows[{index}]"
    keys = frozenset({"days", "from", "to", "speed_limit_mph", "name", "priority"})
    window = _object(value, what, keys, ("days", "from", "to", "speed_limit_mph"))
    days = window["days"]
    if not isinstance(days, list) or not days or not all(d in DAYS for d in days):
        raise ValueError(f"{what}: days must be a non-empty list among {list(DAYS)}, got "
                         f"{json.dumps(days)}")  # fmt: skip
    start, end = _clock(window["from"], f"{what}.from"), _clock(window["to"], f"{what}.to")
    if start >= end:
        raise ValueError(
            f"{what}: from {window['from']} is not before to {window['to']}; a window across "
            "midnight is two windows (one to 24:00, one from 00:00 the next day)"
        )
    name = window.get("name", f"window {index}")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{what}: name must match {_NAME.pattern}, got {json.dumps(name)}")
    return WeeklyWindow(
        frozenset(DAYS.index(d) for d in days),
        start,
        end,
        _limit(window["speed_limit_mph"], what),
        name,
        _priority(window, what),
    )


def _instant(value: object, what: str, zone: ZoneInfo | None) -> int:
    """RFC 3339 with an offset, or a local date-time (YYYY-MM-DDTHH:MM) in the section's zone."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a date-time string, got {json.dumps(value)}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as error:
        raise ValueError(f"{what} {value!r} is not a date-time (YYYY-MM-DDTHH:MM)") from error
    if moment.tzinfo is None:
        if zone is None:
            raise ValueError(f"{what} {value!r} has no offset: give the section's time_zone, "
                             "or an offset such as -05:00")  # fmt: skip
        moment = moment.replace(tzinfo=zone)
    return _ms(moment)


def _temporary(value: object, index: int, zone: ZoneInfo | None) -> TemporaryLimit:
    what = f"temporary[{index}]"
    keys = frozenset({"from", "to", "speed_limit_mph", "reference", "priority"})
    temporary = _object(value, what, keys, ("from", "to", "speed_limit_mph", "reference"))
    start = _instant(temporary["from"], f"{what}.from", zone)
    end = _instant(temporary["to"], f"{what}.to", zone)
    if start >= end:
        raise ValueError(f"{what}: from {temporary['from']} is not before to {temporary['to']}")
    reference = temporary["reference"]
    if not isinstance(reference, str) or not _NAME.fullmatch(reference):
        raise ValueError(f"{what}: reference (e.g. the roadworks order) must match "
                         f"{_NAME.pattern}, got {json.dumps(reference)}")  # fmt: skip
    return TemporaryLimit(
        start, end, _limit(temporary["speed_limit_mph"], what), reference,
        _priority(temporary, what),
    )  # fmt: skip


def _classes(value: object) -> dict[str, float]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f'classes must be an object such as {{"hgv": 20}}, got '
                         f"{json.dumps(value)}")  # fmt: skip
    classes = {}
    for name, limit in value.items():
        if not _CLASS.fullmatch(name):
            raise ValueError(f"classes: class {name!r} must match {_CLASS.pattern}")
        classes[name] = _limit(limit, f"classes.{name}")
    return classes


def _overlap(limits: SectionLimits) -> str | None:
    """Two windows or two temporary limits in force at once need distinct priorities."""
    for i, a in enumerate(limits.windows):
        for b in limits.windows[i + 1 :]:
            days = a.days & b.days
            start, end = max(a.start_minute, b.start_minute), min(a.end_minute, b.end_minute)
            if days and start < end and a.priority == b.priority:
                day = DAYS[min(days)]
                return (
                    f"windows {a.name!r} and {b.name!r} overlap ({day} "
                    f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}) with "
                    "no precedence: give the one that applies a higher priority"
                )
    for i, t in enumerate(limits.temporary):
        for u in limits.temporary[i + 1 :]:
            if t.start_ms < u.end_ms and u.start_ms < t.end_ms and t.priority == u.priority:
                return (
                    f"temporary limits {t.reference!r} and {u.reference!r} overlap with no "
                    "precedence: give the one that applies a higher priority"
                )
    return None


def _window_json(window: WeeklyWindow) -> dict[str, object]:
    value: dict[str, object] = {
        "days": [DAYS[d] for d in sorted(window.days)],
        "from": f"{window.start_minute // 60:02d}:{window.start_minute % 60:02d}",
        "to": f"{window.end_minute // 60:02d}:{window.end_minute % 60:02d}",
        "speed_limit_mph": window.speed_limit_mph,
        "name": window.name,
    }
    if window.priority:
        value["priority"] = window.priority
    return value


def _temporary_json(temporary: TemporaryLimit) -> dict[str, object]:
    def instant(ms: int) -> str:
        return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")

    value: dict[str, object] = {
        "from": instant(temporary.start_ms),
        "to": instant(temporary.end_ms),
        "speed_limit_mph": temporary.speed_limit_mph,
        "reference": temporary.reference,
    }
    if temporary.priority:
        value["priority"] = temporary.priority
    return value
