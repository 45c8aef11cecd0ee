"""The limit in force (docs/enforcement.md, The limit in force): windows, temporary limits,
classes, signals, the highest limit during a traversal, and what the sections file refuses."""

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from section_speed.domain.judging import judge_traversal
from section_speed.domain.limits import (
    CLASS,
    DEFAULT,
    SIGNAL,
    TEMPORARY,
    WINDOW,
    LimitSignal,
)
from section_speed.domain.rules import SectionCatalog, SectionRule
from section_speed.domain.schemas import FINE_COLUMNS, output_record
from section_speed.domain.traversal import Traversal, mph_to_kmh
from tests.helpers import ENTRY, EXIT, at, track

NEW_YORK = ZoneInfo("America/New_York")
SCHOOL = {
    "time_zone": "America/New_York",
    "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "from": "07:00", "to": "16:00",
                 "speed_limit_mph": 15, "name": "school hours"}],
}  # fmt: skip
ROADWORKS = {
    "time_zone": "America/New_York",
    "temporary": [{"from": "2026-12-01T00:00", "to": "2026-12-20T00:00",
                   "speed_limit_mph": 20, "reference": "RW-2026-118"}],
}  # fmt: skip


def local_ms(text: str) -> int:
    """An instant given as New York local time, e.g. '2026-12-07T15:59:50' (a Monday)."""
    return round(datetime.fromisoformat(text).replace(tzinfo=NEW_YORK).timestamp() * 1000)


def rule_of(**limits: object) -> SectionRule:
    section = {"speed_limit_mph": 25, "entry": list(ENTRY), "exit": list(EXIT), **limits}
    return SectionCatalog.from_json(json.dumps({"radar-1": section}), SectionRule()).for_radar(
        "radar-1"
    )


def judged(rule: SectionRule, mph: float, start_ms: int, vehicle_class: str | None = None):
    events = track("v1", mph_to_kmh(mph), start_ms=start_ms, points=3)
    if vehicle_class is not None:
        events = [at(event, vehicle_class=vehicle_class) for event in events]
    verdict = judge_traversal(events, rule, "v-test")
    assert isinstance(verdict, Traversal), verdict
    return verdict


# --- school hours ---------------------------------------------------------------------------


def test_in_school_hours_the_window_applies():
    verdict = judged(rule_of(**SCHOOL), 20, local_ms("2026-12-07T10:00:00"))
    assert (verdict.speed_limit_mph, verdict.limit_source, verdict.limit_reference) == (
        15.0, WINDOW, "school hours")  # fmt: skip
    assert verdict.is_speeding and verdict.rules_version == "v-test"


def test_school_window_ending_mid_traversal_gives_the_driver_the_higher_limit():
    # 20 mph over 303.84 m takes 34 s: in at 15:59:50 (15 mph), out at 16:00:24 (25 mph).
    verdict = judged(rule_of(**SCHOOL), 20, local_ms("2026-12-07T15:59:50"))
    assert verdict.exit_time_ms > local_ms("2026-12-07T16:00:00")
    assert (verdict.speed_limit_mph, verdict.limit_source) == (25.0, DEFAULT)
    assert not verdict.is_speeding


def test_school_window_starting_mid_traversal_gives_the_driver_the_higher_limit():
    verdict = judged(rule_of(**SCHOOL), 20, local_ms("2026-12-07T06:59:50"))
    assert (verdict.speed_limit_mph, verdict.limit_source, verdict.is_speeding) == (
        25.0, DEFAULT, False)  # fmt: skip
    # Wholly inside the window a moment later: fined under it.
    later = judged(rule_of(**SCHOOL), 20, local_ms("2026-12-07T07:00:00"))
    assert (later.limit_source, later.is_speeding) == (WINDOW, True)


def test_school_window_does_not_apply_at_the_weekend():
    verdict = judged(rule_of(**SCHOOL), 20, local_ms("2026-12-05T10:00:00"))  # a Saturday
    assert (verdict.limit_source, verdict.is_speeding) == (DEFAULT, False)


# --- roadworks ------------------------------------------------------------------------------


def test_roadworks_limit_applies_in_its_first_minute():
    start = local_ms("2026-12-01T00:00:00")
    verdict = judged(rule_of(**ROADWORKS), 23, start)
    assert (verdict.speed_limit_mph, verdict.limit_source, verdict.limit_reference) == (
        20.0, TEMPORARY, "RW-2026-118")  # fmt: skip
    assert verdict.is_speeding
    # Entering a second before it begins: the 25 mph in force then applies.
    before = judged(rule_of(**ROADWORKS), 23, start - 1000)
    assert (before.limit_source, before.is_speeding) == (DEFAULT, False)


def test_roadworks_limit_applies_in_its_last_minute_and_not_across_its_end():
    end = local_ms("2026-12-20T00:00:00")
    inside = judged(rule_of(**ROADWORKS), 23, end - 50_000)  # out 13 s before the end
    assert inside.exit_time_ms < end
    assert (inside.limit_source, inside.limit_reference, inside.is_speeding) == (
        TEMPORARY, "RW-2026-118", True)  # fmt: skip
    across = judged(rule_of(**ROADWORKS), 23, end - 20_000)
    assert (across.speed_limit_mph, across.limit_source, across.is_speeding) == (
        25.0, DEFAULT, False)  # fmt: skip


def test_temporary_limit_takes_precedence_over_a_window():
    rule = rule_of(**SCHOOL, temporary=ROADWORKS["temporary"])
    verdict = judged(rule, 22, local_ms("2026-12-07T10:00:00"))
    assert (verdict.speed_limit_mph, verdict.limit_source) == (20.0, TEMPORARY)


# --- vehicle classes ------------------------------------------------------------------------


def test_heavy_goods_vehicle_is_judged_by_its_class_limit():
    rule = rule_of(classes={"hgv": 20, "bus": 20})
    hgv = judged(rule, 23, local_ms("2026-12-07T20:00:00"), vehicle_class="hgv")
    assert (hgv.speed_limit_mph, hgv.limit_source, hgv.limit_reference) == (20.0, CLASS, "hgv")
    assert hgv.is_speeding and hgv.vehicle_class == "hgv"
    car = judged(rule, 23, local_ms("2026-12-07T20:00:00"))  # no class: the general limit
    assert (car.speed_limit_mph, car.limit_source, car.is_speeding) == (25.0, DEFAULT, False)
    assert car.vehicle_class is None


def test_a_lower_road_limit_wins_over_a_class_limit():
    rule = rule_of(**SCHOOL, classes={"hgv": 20})
    hgv = judged(rule, 18, local_ms("2026-12-07T10:00:00"), vehicle_class="hgv")
    assert (hgv.speed_limit_mph, hgv.limit_source) == (15.0, WINDOW)


def test_detections_that_disagree_on_the_class_leave_it_unknown():
    rule = rule_of(classes={"hgv": 20})
    events = track("v1", mph_to_kmh(23), start_ms=local_ms("2026-12-07T20:00:00"))
    events = [at(events[0], vehicle_class="hgv"), at(events[1], vehicle_class="bus"), events[2]]
    verdict = judge_traversal(events, rule)
    assert isinstance(verdict, Traversal)
    assert (verdict.vehicle_class, verdict.limit_source, verdict.is_speeding) == (
        None, DEFAULT, False)  # fmt: skip


# --- signals (the domain rule; the pipeline's handling is in test_limit_signals.py) ----------


def test_the_signal_in_force_applies_and_a_change_mid_traversal_favours_the_driver():
    rule = rule_of()
    start = local_ms("2026-12-07T20:00:00")
    low = LimitSignal("sig-1", "radar-1", start - 60_000, 15.0)
    high = LimitSignal("sig-2", "radar-1", start + 10_000, 40.0)
    assert rule.applied_limit(start, start + 34_000, None, [low]).source == SIGNAL
    applied = rule.applied_limit(start, start + 34_000, None, [high, low])  # any order
    assert (applied.speed_limit_mph, applied.source, applied.reference) == (40.0, SIGNAL, "sig-2")
    # A signal that ends signalling: the section's own limits again.
    off = LimitSignal("sig-3", "radar-1", start - 1000, None)
    assert rule.applied_limit(start, start + 34_000, None, [low, off]).source == DEFAULT


# --- the sections file ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        ({"time_zone": "Mars/Olympus", "windows": SCHOOL["windows"]},
         "time_zone 'Mars/Olympus' is not a known IANA time zone"),
        ({"windows": SCHOOL["windows"]}, "windows are in the section's local time"),
        ({**SCHOOL, "windows": [*SCHOOL["windows"], {"days": ["fri"], "from": "15:00",
          "to": "18:00", "speed_limit_mph": 20, "name": "market"}]},
         "windows 'school hours' and 'market' overlap (fri 15:00-16:00) with no precedence"),
        ({"time_zone": "UTC", "windows": [{"days": ["mon"], "from": "22:00", "to": "02:00",
          "speed_limit_mph": 20}]}, "a window across midnight is two windows"),
        ({"time_zone": "UTC", "windows": [{"days": ["monday"], "from": "07:00", "to": "08:00",
          "speed_limit_mph": 20}]}, "days must be a non-empty list"),
        ({"temporary": [{"from": "2026-12-01T00:00", "to": "2026-12-02T00:00",
          "speed_limit_mph": 20, "reference": "RW-1"}]}, "has no offset"),
        ({"temporary": [{"from": "2026-12-02T00:00Z", "to": "2026-12-01T00:00Z",
          "speed_limit_mph": 20, "reference": "RW-1"}]}, "is not before to"),
        ({"temporary": [{"from": "2026-12-01T00:00Z", "to": "2026-12-03T00:00Z",
          "speed_limit_mph": 20, "reference": "RW-1"}, {"from": "2026-12-02T00:00Z",
          "to": "2026-12-04T00:00Z", "speed_limit_mph": 30, "reference": "RW-2"}]},
         "temporary limits 'RW-1' and 'RW-2' overlap with no precedence"),
        ({"temporary": [{"from": "2026-12-01T00:00Z", "to": "2026-12-03T00:00Z",
          "speed_limit_mph": 20}]}, "missing ['reference']"),
        ({"classes": {"HGV": 20}}, "class 'HGV' must match"),
        ({"classes": {"hgv": 0}}, "speed_limit_mph must be a number > 0"),
        ({"max_speed_mph": 60, "classes": {"hgv": 70}},
         "above speed_limit_mph (its highest limit) + tolerance_mph (70)"),
    ],
)  # fmt: skip
def test_sections_file_refuses_limits_that_cannot_be_applied(limits, reason):
    with pytest.raises(ValueError, match="section 'radar-1'") as refused:
        rule_of(**limits)
    assert reason in str(refused.value)


def test_overlapping_windows_with_stated_precedence_are_accepted():
    market = {"days": ["fri"], "from": "15:00", "to": "18:00", "speed_limit_mph": 20,
              "name": "market", "priority": 1}  # fmt: skip
    rule = rule_of(**{**SCHOOL, "windows": [*SCHOOL["windows"], market]})
    verdict = judged(rule, 22, local_ms("2026-12-11T15:10:00"))  # a Friday, both in force
    assert (verdict.limit_reference, verdict.is_speeding) == ("market", True)


def test_the_file_round_trips_and_its_version_names_its_content():
    text = json.dumps({"radar-1": {"speed_limit_mph": 25, **SCHOOL, **ROADWORKS,
                                   "classes": {"hgv": 20}}})  # fmt: skip
    catalog = SectionCatalog.from_json(text, SectionRule())
    again = SectionCatalog.from_json(catalog.to_json(), SectionRule())
    assert again.for_radar("radar-1") == catalog.for_radar("radar-1")
    relaid = json.dumps(json.loads(text), indent=4, sort_keys=True)
    assert SectionCatalog.from_json(relaid, SectionRule()).version == catalog.version
    changed = text.replace('"speed_limit_mph": 15', '"speed_limit_mph": 10')
    assert SectionCatalog.from_json(changed, SectionRule()).version != catalog.version
    # The options are rules too: another default limit is another version.
    assert SectionCatalog.from_json(text, SectionRule(30)).version != catalog.version
    assert len(catalog.version) == 16


def test_every_record_names_the_limit_its_source_and_the_rules_version():
    verdict = judged(rule_of(**ROADWORKS), 23, local_ms("2026-12-01T00:00:00"))
    record = output_record(verdict, 0)
    assert list(record) == [column.name for column in FINE_COLUMNS]
    assert {key: record[key] for key in ("speed_limit_mph", "limit_source", "limit_reference",
                                         "vehicle_class", "rules_version")} == {
        "speed_limit_mph": 20.0, "limit_source": TEMPORARY, "limit_reference": "RW-2026-118",
        "vehicle_class": None, "rules_version": "v-test"}  # fmt: skip
