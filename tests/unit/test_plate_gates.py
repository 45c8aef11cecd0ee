"""Each rule of the automatic read, alone: a reading only that rule refuses, and its twin just
on the other side of the rule, which is accepted.

Remove a rule and its refused reading is accepted: its test fails. docs/plates.md lists the
rules; a wrong plate accepted is a fine sent to a stranger.
"""

import pytest

from section_speed.domain.plate_candidates import with_candidates
from section_speed.domain.plate_gates import choose_plate, merge_views, second_opinion_doubt
from section_speed.domain.plate_reading import PlateCandidate, TextLine

GATE = 0.8
SURE = 0.999
HEIGHT = 720  # the photo's


def line(text: str, low: dict[int, float] | None = None, width: float | None = 420,
         height: float | None = 100) -> TextLine:  # fmt: skip
    values = [SURE] * len(text)
    for index, value in (low or {}).items():
        values[index] = value
    return TextLine(text, tuple(values), width, height)


def read(*lines: TextLine) -> tuple[str | None, str]:
    reading = choose_plate(lines, "test", GATE, HEIGHT)
    return reading.license_plate, reading.reason or ""


# (rule, refused lines, what the reason says, accepted twin lines, the plate accepted)
RULES = [
    ("character gate", [line("ABC2345", {6: 0.79})], "under the gate 0.800",
     [line("ABC2345", {6: 0.81})], "ABC2345"),
    ("look-alike gate", [line("ABC1234", {3: 0.988})], "under the gate 0.989",
     [line("ABC1234", {3: 0.990})], "ABC1234"),
    ("at least 5 characters", [line("AB12")], "no plate among",
     [line("AB123")], "AB123"),
    ("at most 8 characters", [line("ABCD12345")], "no plate among",
     [line("ABC12345")], "ABC12345"),
    ("a letter and a digit", [line("2345678")], "no plate among",
     [line("A345678")], "A345678"),
    ("no foreign character", [line("ABc2345")], "no plate among",
     [line("ABC2345")], "ABC2345"),
    ("at most two separator runs", [line("AB-23-CD-5")], "no plate among",
     [line("AB-23-CD5")], "AB23CD5"),
    ("a plate's aspect", [line("ABC2345", width=660)], "not plate-shaped",
     [line("ABC2345", width=640)], "ABC2345"),
    ("tall enough to read", [line("ABC2345", width=30, height=7.5)], "not plate-shaped",
     [line("ABC2345", width=30, height=8)], "ABC2345"),
    ("not most of the photo", [line("ABC2345", width=1000, height=370)], "not plate-shaped",
     [line("ABC2345", width=1000, height=350)], "ABC2345"),
    ("one plate in view", [line("ABC2345"), line("XYZ6789", height=81)], "several plates",
     [line("ABC2345"), line("XYZ6789", height=79)], "ABC2345"),
    ("a look-alike's twin fits a known format", [line("BA3020Z")], "one look-alike away",
     [line("BA3028Z")], "BA3028Z"),
    ("a taller non-plate is a rival", [line("ABC2345"), line("EXIT", width=200, height=100)],
     "several plates", [line("ABC2345"), line("EXIT", width=200, height=99)], "ABC2345"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("refused", "why", "accepted", "plate"),
    [pytest.param(*rule[1:], id=rule[0]) for rule in RULES],
)
def test_each_rule_refuses_alone_and_its_twin_is_accepted(refused, why, accepted, plate):
    got, reason = read(*refused)
    assert got is None
    assert why in reason
    assert read(*accepted) == (plate, "")


def test_merge_views_refuses_crops_of_different_lengths():
    doubt = merge_views([line("ABC2345"), line("ABC23456")], GATE).doubt
    assert doubt == "crops read ABC2345, ABC23456"
    assert merge_views([line("ABC2345"), line("ABC2345")], GATE).doubt == ""


def test_merge_views_refuses_two_plates_read_surely():
    doubt = merge_views([line("ABC2345"), line("ABC2845"), line("ABC2345")], GATE).doubt
    assert doubt.startswith("crops read ")
    unsure_other = line("ABC2845", {4: 0.5})
    assert merge_views([line("ABC2345"), unsure_other, line("ABC2345")], GATE).doubt == ""


def test_merge_views_needs_two_sure_crops_and_most_of_them():
    assert "1 of 1 readings sure" in merge_views([line("ABC2345")], GATE).doubt
    half = [line("ABC2345"), line("ABC2345"), line("ABC2345", {0: 0.5}), line("ABC2345", {0: 0.5})]
    assert "2 of 4 readings sure" in merge_views(half, GATE).doubt
    most = [*half[:3], line("ABC2345")]
    assert merge_views(most, GATE).doubt == ""


def test_a_doubtful_character_needs_the_second_recogniser():
    doubtful = line("ABC2345", {0: 0.9})
    assert "not confirmed by the second recogniser" in second_opinion_doubt(
        doubtful, [line("ABC2345", {0: 0.5})] * 3, GATE
    )
    assert second_opinion_doubt(doubtful, [line("ABC2345")] * 2 + [line("XBC2345")], GATE) == ""
    nearly_sure = line("ABC2345", {0: 0.95})
    assert second_opinion_doubt(nearly_sure, [line("XBC2345")] * 3, GATE) == ""


def test_a_plate_that_does_not_fit_its_state_while_a_candidate_does_is_refused():
    reading = choose_plate([line("BDJC529")], "test", GATE, HEIGHT)
    assert reading.license_plate == "BDJC529"  # no known format, and no look-alike in it
    fitting = PlateCandidate("8DJC529", (0.4,) * 7, 0.1)
    refused = with_candidates(reading, [fitting], state="CALIFORNIA")
    assert (refused.license_plate, refused.reason) == (
        None,
        "BDJC529 does not fit CALIFORNIA's plates; 8DJC529 does",
    )
    twin = with_candidates(reading, [fitting], state="NEW YORK")  # no candidate fits it
    assert twin.license_plate == "BDJC529"
