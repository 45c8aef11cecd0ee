"""Plates for the verifier: ranked candidates, the state printed on a plate, the reading's JSON.

The candidates are for a person to pick from; none of these rules may make a plate that the
character gates refuse an accepted one.
"""

import dataclasses
import json

import pytest

from section_speed.domain.plate_candidates import (
    MAX_CANDIDATES,
    rank_candidates,
    state_matters,
    with_candidates,
)
from section_speed.domain.plate_formats import fits_state, state_named
from section_speed.domain.plate_gates import choose_plate
from section_speed.domain.plate_reading import PlateCandidate, PlateReading, TextLine

GATE = 0.8


def view(text: str, confidences: list[float], runner_ups: list[tuple[str, float]]) -> TextLine:
    return TextLine(text, tuple(confidences), 420, 110, runner_ups=tuple(runner_ups))


def no_doubt(text: str, confidence: float = 0.999) -> TextLine:
    return view(text, [confidence] * len(text), [("", 0.0)] * len(text))


# "0CT1890" with its first character in doubt: the recogniser's second choice there is O.
DOUBTFUL_ZERO = view(
    "0CT1890", [0.6, 0.99, 0.99, 0.999, 0.999, 0.999, 0.999], [("O", 0.38)] + [("", 0.0)] * 6
)


def plates(candidates: list[tuple[PlateCandidate, int]]) -> list[str]:
    return [candidate.plate for candidate, _ in candidates]


def test_a_doubtful_character_offers_the_recognisers_second_choice_ranked_by_probability():
    ranked = rank_candidates([[DOUBTFUL_ZERO, DOUBTFUL_ZERO]])
    assert plates(ranked)[:2] == ["0CT1890", "OCT1890"]
    # Then a look-alike's twin where the recogniser offered no second choice.
    assert plates(ranked)[2] in ("0CTI890", "0CT189O")
    first, second, third = (candidate for candidate, _ in ranked)
    assert second.score > third.score
    assert first.score > second.score
    assert first.char_confidences[0] == pytest.approx(0.6)
    assert second.char_confidences[0] == pytest.approx(0.38)
    assert second.fits_format == "LLLDDDD"  # a report: no state was read


def test_the_state_printed_on_the_plate_ranks_the_candidate_that_fits_it_first():
    ranked = rank_candidates([[DOUBTFUL_ZERO]], state="NEW YORK")
    assert plates(ranked)[:2] == ["OCT1890", "0CT1890"]
    assert ranked[0][0].fits_format == "LLLDDDD"
    assert ranked[1][0].fits_format is None


def test_ranking_by_state_never_accepts_what_the_gates_refuse():
    reading = choose_plate([dataclasses.replace(DOUBTFUL_ZERO)], "test", GATE)
    assert reading.license_plate is None
    ranked = rank_candidates([[DOUBTFUL_ZERO]], state="NEW YORK")
    final = with_candidates(reading, [c for c, _ in ranked], (1, 2, 3, 4), "NEW YORK")
    assert final.license_plate is None
    assert final.reason == reading.reason
    assert [c.plate for c in final.candidates][:2] == ["OCT1890", "0CT1890"]


def test_an_accepted_plate_that_does_not_fit_its_state_while_a_candidate_does_is_refused():
    reading = choose_plate([no_doubt("BDJC529")], "test", GATE)
    assert reading.license_plate == "BDJC529"  # every character above the gate
    read = PlateCandidate("BDJC529", (0.999,) * 7, 0.99)
    other = PlateCandidate("8DJC529", (0.3,) * 7, 0.2)
    final = with_candidates(reading, [read, other])
    assert final.license_plate == "BDJC529"  # no state read: nothing to doubt
    doubted = with_candidates(reading, [other, read], state="CALIFORNIA")
    assert doubted.license_plate is None
    assert doubted.reason == "BDJC529 does not fit CALIFORNIA's plates; 8DJC529 does"
    alone = with_candidates(reading, [read], None, "CALIFORNIA")
    assert alone.license_plate == "BDJC529"  # an odd plate, but no candidate fits better


def test_the_accepted_plate_ranks_first_and_candidates_are_at_most_three():
    reading = choose_plate([no_doubt("ABC1234")], "test", GATE)
    others = [PlateCandidate(p, (0.9,) * 7, 0.9) for p in ("ABC1284", "A8C1234", "ABG1234")]
    accepted = PlateCandidate("ABC1234", (0.999,) * 7, 0.5)
    final = with_candidates(reading, [*others, accepted], (10, 20, 110, 60))
    assert [c.plate for c in final.candidates] == ["ABC1234", "ABC1284", "A8C1234"]
    assert len(final.candidates) == MAX_CANDIDATES
    assert final.plate_box == (10, 20, 110, 60)


def test_crops_that_disagree_share_the_score_and_each_gives_a_candidate():
    ranked = rank_candidates([[no_doubt("ABC1234"), no_doubt("ABC1234"), no_doubt("ABC1284")]])
    assert plates(ranked)[:2] == ["ABC1234", "ABC1284"]
    assert ranked[0][0].score == pytest.approx(2 / 3, abs=0.01)
    assert ranked[1][0].score == pytest.approx(1 / 3, abs=0.01)


def test_text_that_is_no_plate_gives_no_candidate_but_a_plate_of_digits_does():
    ranked = rank_candidates([[no_doubt("TEXAS")], [no_doubt("A4")], [no_doubt("2345678")]])
    assert next((c.plate, box) for c, box in ranked) == ("2345678", 2)
    assert {box for _, box in ranked} == {2}  # its confusable twins (Z345678) come after
    # A word's look-alike twin (NEWY0RK) is offered only after what was read as a plate.
    ranked = rank_candidates([[no_doubt("NEW YORK")], [no_doubt("ACE7349", 0.9)]])
    assert plates(ranked) == ["ACE7349", "NEWY0RK"]


def test_a_plate_of_letters_and_digits_ranks_before_a_surer_one_of_digits_only():
    ranked = rank_candidates([[no_doubt("20140513")], [no_doubt("CJ8P4V", 0.7)]])
    assert plates(ranked)[0] == "CJ8P4V"
    assert plates(ranked).index("CJ8P4V") < plates(ranked).index("20140513")


def test_the_best_candidate_of_several_boxes_comes_with_its_box():
    ranked = rank_candidates([[no_doubt("ABC2345", 0.7)], [no_doubt("XYZ9876", 0.99)]])
    assert [(c.plate, box) for c, box in ranked][:2] == [("XYZ9876", 1), ("ABC2345", 0)]


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("NEW YORK", "NEW YORK"),
        ("New York", "NEW YORK"),
        ("ONEW YORKC", "NEW YORK"),
        ("Caligotn", "CALIFORNIA"),  # California's script as the recogniser reads it
        ("LO TEXAS", "TEXAS"),
        ("THE EMPIRE STATE", None),
        ("TEX", None),
        ("", None),
    ],
)
def test_the_state_is_named_by_its_first_letters(text, state):
    assert state_named(text) == state


def test_a_state_fits_only_its_own_formats():
    assert fits_state("OCT1890", "NEW YORK") == "LLLDDDD"
    assert fits_state("0CT1890", "NEW YORK") is None
    assert fits_state("5DJC529", "CALIFORNIA") == "DLLLDDD"
    assert fits_state("59321P1", "CALIFORNIA") == "DDDDDLD"
    assert fits_state("OCT1890", None) is None


# A New York plate refused for its doubtful first character, with what the officer is offered.
REFUSED_WITH_CANDIDATES = PlateReading(
    None,
    0.6,
    "0CT-1890",
    "embedded-rapidocr",
    reason="'0' read at 0.60, under the gate 0.989",
    candidates=(
        PlateCandidate("OCT1890", (0.38, 0.99, 0.99, 1.0, 1.0, 1.0, 1.0), 0.37, "LLLDDDD"),
        PlateCandidate("0CT1890", (0.6, 0.99, 0.99, 1.0, 1.0, 1.0, 1.0), 0.58),
    ),
    plate_box=(10, 20, 110, 60),
    state="NEW YORK",
)


def test_a_reading_round_trips_through_json_with_its_candidates():
    reading = REFUSED_WITH_CANDIDATES
    assert PlateReading.from_json(reading.to_json()) == reading
    # As the Beam coder and the evidence store do it: asdict, JSON, keyword arguments.
    assert PlateReading(**json.loads(json.dumps(dataclasses.asdict(reading)))) == reading
    assert PlateReading.from_json(dataclasses.asdict(reading)) == reading
    bare = PlateReading("ABC1234", 0.99, "ABC 1234", "cloud-vision")
    assert PlateReading.from_json(bare.to_json()) == bare
    assert bare.candidates == () and bare.plate_box is None


def test_a_candidate_needs_one_confidence_per_character():
    with pytest.raises(ValueError, match="one confidence per character"):
        PlateCandidate("ABC1234", (0.9,) * 6)
    assert PlateCandidate("AB123", (0.991, 0.5, 1.0, 0.87, 0.9)).confidences_text() == (
        "0.99,0.50,1.00,0.87,0.90"
    )


def test_the_state_is_read_only_when_its_formats_would_tell_candidates_apart():
    same_format = [PlateCandidate("ABC2345", (0.9,) * 7), PlateCandidate("ABC2845", (0.9,) * 7)]
    assert not state_matters(same_format)
    assert state_matters([*same_format, PlateCandidate("0BC2345", (0.9,) * 7)])


def test_a_sure_reading_is_not_outranked_by_a_state_fit_two_look_alikes_away():
    # Issue 12's trap: R107555 on a New York plate, every character read surely.
    sure = view("R107555", [0.999] * 7, [("", 0.0)] * 7)
    ranked = rank_candidates([[sure, sure]], state="NEW YORK")
    assert plates(ranked)[0] == "R107555"
    reading = choose_plate([sure], "test", GATE)
    final = with_candidates(reading, [c for c, _ in ranked], state="NEW YORK")
    assert final.license_plate == "R107555"
    assert "RIO7555" not in [c.plate for c in final.candidates][:1]
