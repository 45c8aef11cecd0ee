"""The sections file: each section's rule by radar_id, and what it refuses."""

import json

import pytest

from section_speed.domain.rules import SectionCatalog, SectionRule
from tests.helpers import ENTRY, EXIT

# --- sections file -------------------------------------------------------------------


def test_sections_file_overrides_per_radar_and_keeps_defaults_elsewhere():
    default = SectionRule(25, 0)
    rules = SectionCatalog.from_json(
        json.dumps({"radar-9": {"speed_limit_mph": 40, "length_m": 1500}}), default
    )
    assert rules.for_radar("radar-9") == SectionRule(40, 0, 1500.0)
    assert rules.for_radar("radar-1") is default


def test_sections_file_gives_the_ends_radius_and_maximum():
    text = json.dumps({"radar-1": {"entry": list(ENTRY), "exit": list(EXIT), "length_m": 310,
                                   "end_radius_m": 40, "max_speed_mph": 150}})  # fmt: skip
    rule = SectionCatalog.from_json(text, SectionRule(30.0, 2.0)).for_radar("radar-1")
    assert rule == SectionRule(30.0, 2.0, 310.0, ENTRY, EXIT, 40.0, 150.0)
    assert rule.ends_known
    written = SectionCatalog(SectionRule(), {"radar-1": rule}).to_json()
    assert SectionCatalog.from_json(written, SectionRule()).for_radar("radar-1") == rule


@pytest.mark.parametrize(
    ("section", "reason"),
    [
        ({"speed_limit": 3}, "unknown: ['speed_limit']"),
        ({"speed_limit_mph": -1}, "speed_limit_mph must be a number > 0"),
        ({"speed_limit_mph": "fast"}, 'speed_limit_mph must be a number, got "fast"'),
        ({"tolerance_mph": True}, "tolerance_mph must be a number, got true"),
        ({"entry": [40.8, -73.9]}, "give both entry and exit, or neither"),
        ({"entry": [40.8], "exit": [40.8, -73.9]}, "entry must be [lat, lon], got [40.8]"),
        ({"entry": "40.8,-73.9", "exit": [40.8, -73.9]}, "entry must be [lat, lon]"),
        ({"entry": [40.8, -73.9], "exit": [91, 0]}, "exit latitude 91 outside [-90, 90]"),
        ({"entry": [40.8, -73.9], "exit": [40.8, -73.9]}, "entry and exit are 0.0 m apart"),
        ({"end_radius_m": 0}, "end_radius_m must be a number > 0"),
        ({"max_speed_mph": 20}, "max_speed_mph must be a number above speed_limit_mph + "
                                "tolerance_mph (25)"),
        ({"length_m": 0}, "length_m must be a number > 0"),
    ],
)  # fmt: skip
def test_bad_sections_file_is_rejected_with_a_reason(section, reason):
    with pytest.raises(ValueError, match="section 'r'") as error:
        SectionCatalog.from_json(json.dumps({"r": section}), SectionRule())
    assert reason in str(error.value)


@pytest.mark.parametrize("text", ["[]", "not json"])
def test_a_sections_file_that_is_no_object_is_rejected(text):
    with pytest.raises(ValueError, match="sections file"):
        SectionCatalog.from_json(text, SectionRule())
