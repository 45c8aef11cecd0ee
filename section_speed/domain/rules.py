"""What applies on a section (`SectionRule`) and the sections file (`SectionCatalog`).

A rule is the section's limit and tolerance, the limits that vary (weekly windows,
temporary limits, vehicle classes: `limits.py`), its geometry (surveyed length, entry and
exit) and the plausible maximum; the sections file gives one per `radar_id`, the pipeline's
defaults apply elsewhere (docs/enforcement.md, the sections file). A catalog carries the
version of the rules it holds, which every record names.
"""

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from section_speed.domain import defaults
from section_speed.domain.geometry import LatLon, haversine_m
from section_speed.domain.limits import (
    LIMIT_KEYS,
    NO_LIMITS,
    AppliedLimit,
    LimitSignal,
    SectionLimits,
    limit_for_traversal,
    limits_from_json,
)


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
    limits: SectionLimits = NO_LIMITS

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem is not None:
            raise ValueError(problem)

    @property
    def ends_known(self) -> bool:
        return self.entry is not None and self.exit is not None

    def is_speeding(self, avg_speed_mph: float, limit_mph: float | None = None) -> bool:
        """Strictly over limit + tolerance: driving exactly at the limit is not fined.

        `limit_mph` is the limit applied to the traversal (`applied_limit`); None: the
        section's default limit."""
        limit = self.speed_limit_mph if limit_mph is None else limit_mph
        return avg_speed_mph > limit + self.tolerance_mph

    def applied_limit(
        self,
        entry_ms: int,
        exit_ms: int,
        vehicle_class: str | None = None,
        signals: Sequence[LimitSignal] = (),
    ) -> AppliedLimit:
        """The limit a traversal from entry to exit is judged by: the highest in force at
        any moment of it (docs/enforcement.md, The limit in force)."""
        return limit_for_traversal(
            self.speed_limit_mph, self.limits, entry_ms, exit_ms, vehicle_class, signals
        )

    def to_json(self) -> dict[str, object]:
        """This rule as one section of a sections file (what `SectionCatalog.from_json` reads)."""
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
        return section | self.limits.to_json()

    def _problem(self) -> str | None:
        if not (_finite(self.speed_limit_mph) and self.speed_limit_mph > 0):
            return f"speed_limit_mph must be a number > 0, got {self.speed_limit_mph!r}"
        if not (_finite(self.tolerance_mph) and self.tolerance_mph >= 0):
            return f"tolerance_mph must be a number >= 0, got {self.tolerance_mph!r}"
        if self.length_m is not None and not (_finite(self.length_m) and self.length_m > 0):
            return f"length_m must be a number > 0 (metres), got {self.length_m!r}"
        if not (_finite(self.end_radius_m) and self.end_radius_m > 0):
            return f"end_radius_m must be a number > 0 (metres), got {self.end_radius_m!r}"
        threshold = max([self.speed_limit_mph, *self.limits.all_limits()]) + self.tolerance_mph
        if not (_finite(self.max_speed_mph) and self.max_speed_mph > threshold):
            highest = " (its highest limit)" if self.limits.all_limits() else ""
            return (
                f"max_speed_mph must be a number above speed_limit_mph{highest} + "
                f"tolerance_mph ({threshold:g}), or nobody could be fined; got "
                f"{self.max_speed_mph!r}"
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


class SectionCatalog:
    """Every section's rule by radar_id, as a sections file gives them, and the default rule
    (the pipeline's options) for the sections it leaves out.

    The file is JSON keyed by radar_id; every key of a section may be left out, e.g.
    ``{"radar-1": {"speed_limit_mph": 30, "tolerance_mph": 2, "length_m": 1210.5,
    "entry": [40.81939, -73.940744], "exit": [40.811, -73.95], "end_radius_m": 60,
    "max_speed_mph": 200}}``.
    """

    _NUMBER_KEYS = ("speed_limit_mph", "tolerance_mph", "length_m", "end_radius_m",
                    "max_speed_mph")  # fmt: skip
    _KEYS = frozenset({*_NUMBER_KEYS, "entry", "exit", *LIMIT_KEYS})

    def __init__(
        self,
        default: SectionRule,
        sections: Mapping[str, SectionRule] | None = None,
        version: str | None = None,
    ) -> None:
        self.default = default
        self.sections = dict(sections or {})
        # Names the rules in every record: of the file as read, or of these rules' JSON.
        self.version = version or rules_version(
            {radar_id: rule.to_json() for radar_id, rule in self.sections.items()}, default
        )

    def for_radar(self, radar_id: str) -> SectionRule:
        return self.sections.get(radar_id, self.default)

    def to_json(self) -> str:
        """The sections file text for these sections (the default rule is not written)."""
        body = {radar_id: rule.to_json() for radar_id, rule in self.sections.items()}
        return json.dumps(body, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, default: SectionRule) -> "SectionCatalog":
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
        return cls(default, sections, rules_version(raw, default))

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
        values["limits"] = limits_from_json(entry)
        # Length and ends describe one section: never inherited from the default rule.
        return dataclasses.replace(default, **({"length_m": None, "entry": None, "exit": None}
                                               | values))  # fmt: skip


def rules_version(sections: object, default: SectionRule) -> str:
    """16 hex digits of sha256 over the canonical JSON of the sections and the default rule
    (the options): the same rules give the same version, whatever the file's layout."""
    body = {"default": dataclasses.replace(default, limits=NO_LIMITS).to_json(),
            "sections": sections}  # fmt: skip
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


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


def rule_from_json(section: Mapping[str, object]) -> SectionRule:
    """A rule from its `SectionRule.to_json` form (what the signals step keeps in state)."""
    return SectionCatalog._rule(section, SectionRule())


@dataclass(frozen=True, slots=True)
class RulesSnapshot:
    """The sections file as read at one instant (the side input's element)."""

    read_at_ms: int
    catalog: SectionCatalog


def newest_rules(snapshots: Iterable[RulesSnapshot], fallback: SectionCatalog) -> SectionCatalog:
    """The most recently read of `snapshots`; `fallback` (the rules read at start) when none."""
    newest = max(snapshots, key=lambda snapshot: snapshot.read_at_ms, default=None)
    return fallback if newest is None else newest.catalog
