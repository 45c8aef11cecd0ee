"""judge_traversal: both methods, every gate, the fine rule at its boundary (enforcement.md)."""

import dataclasses
import random

import pytest

from section_speed.domain.events import (
    CameraEvent,
)
from section_speed.domain.geometry import (
    haversine_m,
    interpolate,
    path_length_m,
)
from section_speed.domain.judging import judge_traversal
from section_speed.domain.rules import SectionRule
from section_speed.domain.schemas import (
    output_record,
)
from section_speed.domain.traversal import (
    IMPLAUSIBLE,
    PARTIAL,
    SECTION_AVERAGE,
    SPOT_MEAN,
    UNMEASURABLE,
    Rejection,
    Traversal,
    kmh_to_mph,
    mph_to_kmh,
    traversal_id,
)
from tests.helpers import ENTRY, EXIT, T0_MS, at, section, track

# --- speed and the fine rule --------------------------------------------------------

SECTION = SectionRule(entry=ENTRY, exit=EXIT)  # the tests' 303.84 m section, ends known


def test_mph_conversion_uses_the_international_mile():
    assert mph_to_kmh(25) == pytest.approx(40.2336)
    assert kmh_to_mph(mph_to_kmh(31.7)) == pytest.approx(31.7)


def test_exactly_the_limit_is_not_fined_and_just_above_is():
    rule = SectionRule(speed_limit_mph=25, tolerance_mph=0)
    assert not rule.is_speeding(25.0)
    assert rule.is_speeding(25.000001)
    assert not SectionRule(25, tolerance_mph=3).is_speeding(27.9)


def test_judge_traversal_at_a_known_speed():
    events = track("v1", 54.0, points=5)
    traversal = judge_traversal(events, section())
    assert isinstance(traversal, Traversal)
    assert traversal.avg_speed_kmh == pytest.approx(54.0, abs=0.01)
    assert traversal.avg_speed_mph == pytest.approx(54.0 / 1.609344, abs=0.01)
    assert traversal.is_speeding and traversal.speed_method == SECTION_AVERAGE
    assert traversal.detections == 5
    assert (traversal.entry_time_ms, traversal.exit_time_ms) == (T0_MS, T0_MS + 20_256)
    assert traversal.duration_s == 20.256  # milliseconds kept, never rounded down
    assert traversal.traversal_id == traversal_id("radar-1", "v1", T0_MS)
    assert traversal.supersedes == ()


def test_ends_known_distance_is_the_straight_line_between_them():
    traversal = judge_traversal(track("v1", 54.0, points=5), SECTION)
    assert isinstance(traversal, Traversal)
    assert traversal.distance_m == haversine_m(ENTRY, EXIT)
    assert traversal.avg_speed_kmh == pytest.approx(haversine_m(ENTRY, EXIT) / 20.256 * 3.6)


def test_order_of_arrival_redeliveries_and_ids_do_not_change_the_result():
    events = track("v1", 47.0, points=6)
    expected = judge_traversal(events, SECTION)
    rng = random.Random(3)
    for _ in range(20):
        shuffled = events + rng.sample(events, 3)  # redelivered, same event_id
        rng.shuffle(shuffled)
        assert judge_traversal(shuffled, SECTION) == expected
    # Ids whose text order is not their time order ("11" sorts before "4") change nothing.
    renamed = [at(e, event_id=str(11 - i)) for i, e in enumerate(events)]
    assert judge_traversal(renamed, SECTION) == expected


def test_time_ties_are_ordered_by_position_never_by_id():
    a, b, c, d = track("v1", 36.0, points=4)
    # c is re-stamped to b's millisecond 3 m further on; its id sorts before b's.
    c_tied = at(b, event_id="a-first-by-id", location=interpolate(b.location, c.location, 0.03))
    events = [a, b, c_tied, d]
    traversal = judge_traversal(events, section())
    assert isinstance(traversal, Traversal)
    assert traversal.distance_m == path_length_m([a.location, b.location, c_tied.location,
                                                  d.location])  # fmt: skip
    assert traversal.distance_m == pytest.approx(haversine_m(a.location, d.location), abs=1e-6)


def test_the_same_time_and_place_under_another_id_counts_once():
    events = track("v1", 36.0, points=3)
    resent = at(events[1], event_id="resent-copy")
    traversal = judge_traversal([*events, resent], section())
    assert isinstance(traversal, Traversal)
    assert traversal.detections == 3
    assert traversal == judge_traversal(events, section())


@pytest.mark.parametrize(
    ("events", "reason"),
    [
        (track("v1", 30.0)[:1], "one detection (2026-11-18T11:06:40.000Z, 40.819390,-73.940744)"),
        ([track("v1", 30.0)[0], at(track("v1", 30.0)[0], event_id="x")], "sent 2 times"),
        ([track("v1", 30.0)[0],
          at(track("v1", 30.0)[0], 0, event_id="y", location=(ENTRY[0] + 1e-5, ENTRY[1]))],
         "zero duration"),
        ([at(e, 5_000 * i, location=ENTRY) for i, e in enumerate(track("v1", 30.0))],
         "seen at one place only"),
        ([], "no detections"),
    ],
)  # fmt: skip
def test_no_measurement_is_unmeasurable_with_a_reason(events, reason):
    outcome = judge_traversal(events, SECTION)
    assert isinstance(outcome, Rejection)
    assert outcome.kind == UNMEASURABLE
    assert reason in outcome.reason
    assert len(outcome.detections) == len({e.event_id for e in events})


def test_several_places_at_one_instant_are_implausible():
    events = [at(e, 0) for e in track("v1", 30.0, points=3)]  # the course's same-ms bursts
    outcome = judge_traversal(events, SECTION)
    assert isinstance(outcome, Rejection) and outcome.kind == IMPLAUSIBLE
    assert outcome.reason == (
        "3 detections at the same instant 2026-11-18T11:06:40.000Z are up to 303.8 m apart "
        "(more than 5 m): one vehicle cannot be in two places at once"
    )
    assert {e.event_id for e in outcome.detections} == {"v1-e0", "v1-e1", "v1-e2"}


def test_order_contradicting_the_times_is_implausible():
    a, b, c, *rest = track("v1", 36.0, points=6)  # 60.8 m apart
    swapped = [a, at(b, location=c.location), at(c, location=b.location), *rest]
    outcome = judge_traversal(swapped, SECTION)
    assert isinstance(outcome, Rejection) and outcome.kind == IMPLAUSIBLE
    assert outcome.reason == (
        "the detection at 2026-11-18T11:06:52.154Z, 40.818971,-73.941207 lies 61 m behind the "
        "one at 2026-11-18T11:06:46.077Z, 40.818551,-73.941670 along the section (more than "
        "10 m): the order of the detections contradicts their times"
    )
    # Without known ends the direction is first -> last detection: the same verdict.
    assert judge_traversal(swapped, SectionRule()).kind == IMPLAUSIBLE
    # Within the order tolerance (10 m) it is survey noise, not a contradiction.
    nine_back = interpolate(c.location, b.location, 9 / haversine_m(b.location, c.location))
    noisy = [a, at(b, location=c.location), at(c, location=nine_back), *rest]
    assert isinstance(judge_traversal(noisy, SECTION), Traversal)


def test_a_path_much_longer_than_the_section_is_implausible():
    a, b, c = track("v1", 36.0, points=3)
    far_off = interpolate(ENTRY, (40.811, -73.950), 0.6)  # 425 m beyond the exit
    zigzag = [a, at(b, location=far_off), c]
    outcome = judge_traversal(zigzag, SECTION)
    assert isinstance(outcome, Rejection) and outcome.kind == IMPLAUSIBLE
    path = path_length_m([a.location, far_off, c.location])
    assert outcome.reason.startswith(f"the path through the 3 detections is {path:.0f} m")
    assert "1.5 times the straight line between the section's ends (304 m)" in outcome.reason
    surveyed = judge_traversal(zigzag, SectionRule(length_m=500.0))
    assert "1.5 times the section's surveyed length (500 m)" in surveyed.reason
    assert "from first to last detection (304 m)" in judge_traversal(zigzag, SectionRule()).reason


def test_impossible_speed_and_duration_are_implausible():
    fast = track("v1", 400.0, points=3)  # 248.5 mph, above the 200 mph maximum
    outcome = judge_traversal(fast, SECTION)
    assert isinstance(outcome, Rejection) and outcome.kind == IMPLAUSIBLE
    assert "above the physically possible 200 mph" in outcome.reason
    assert isinstance(judge_traversal(fast, dataclasses.replace(SECTION, max_speed_mph=300)),
                      Traversal)  # fmt: skip
    # A curving road surveyed at 1000 m between ends 304 m apart: 5 s is 137 mph over the
    # straight line, but nobody drives the 880 m it is at least (1000 m less both 60 m
    # end zones) in 5 s (at most 200 mph: 9.843 s).
    quick = [at(e, 2_500 * i) for i, e in enumerate(track("v1", 30.0, points=3))]
    curvy = dataclasses.replace(SECTION, length_m=1000.0)
    outcome = judge_traversal(quick, curvy)
    assert isinstance(outcome, Rejection) and outcome.kind == IMPLAUSIBLE
    assert outcome.reason.startswith("5.000 s between the first and last detection is less "
                                     "than the 9.843 s that the 880 m")  # fmt: skip


def test_a_traversal_not_seen_near_both_ends_is_partial_and_never_fined():
    first_half = track("v1", 90.0, points=5)[:3]  # fast, but only to the middle
    outcome = judge_traversal(first_half, SECTION)
    assert isinstance(outcome, Rejection) and outcome.kind == PARTIAL
    assert outcome.reason.startswith(
        "not seen within 60 m of the section's exit (152 m away at the nearest)"
    )
    assert [e.event_id for e in outcome.detections] == ["v1-e0", "v1-e1", "v1-e2"]
    # Without known ends nothing shows that it covers the section: over the limit, it is
    # partial all the same (never fined); under it, measured (a pass is nobody's letter).
    unknown = judge_traversal(first_half, SectionRule())
    assert isinstance(unknown, Rejection) and unknown.kind == PARTIAL
    assert "entry and exit of section 'radar-1' are not known" in unknown.reason
    slow = judge_traversal(track("v1", 30.0, points=5)[:3], SectionRule())
    assert isinstance(slow, Traversal) and not slow.is_speeding
    # A wider end zone counts the middle (152 m) as near the exit... but the ends are too
    # close for a 152 m radius, which the rule refuses.
    with pytest.raises(ValueError, match="twice end_radius_m"):
        dataclasses.replace(SECTION, end_radius_m=152.0)


def test_uncertainty_goes_the_drivers_way():
    events = track("v1", 40.0, points=5)
    # Every other detection 22 m to the side: the path grows, the distance does not.
    scattered = [
        at(e, location=(e.location[0] + (2e-4 if i % 2 else 0.0), e.location[1]))
        for i, e in enumerate(events)
    ]
    traversal = judge_traversal(scattered, SECTION)
    assert isinstance(traversal, Traversal)
    assert path_length_m([e.location for e in scattered]) > haversine_m(ENTRY, EXIT) + 5
    assert traversal.distance_m == haversine_m(ENTRY, EXIT)
    # A surveyed length shorter than the path caps it too; a longer one never adds to it.
    assert judge_traversal(events, dataclasses.replace(SECTION, length_m=250.0)).distance_m == 250
    path = path_length_m([e.location for e in events])
    assert judge_traversal(events, SectionRule(length_m=2000.0)).distance_m == path


def test_the_fine_needs_the_average_strictly_above_limit_plus_tolerance():
    events = track("v1", 45.0, points=3)  # 27.96 mph
    assert judge_traversal(events, section(25.0)).is_speeding
    assert not judge_traversal(events, section(25.0, tolerance_mph=3.0)).is_speeding


# --- timeless detections: the course's messages, measured by the mean of spot speeds --------


# Short sessions test the mean and the gates; the minimum of readings has its own test.
SHORT = {"min_spot_readings": 2}


def course(speeds: list[float], *, published_ms: int = 0, ids: str = "", section=True):
    """Course messages of one vehicle along the section, all published in one millisecond."""
    points = [interpolate(ENTRY, EXIT, i / (len(speeds) - 1)) for i in range(len(speeds))]
    return [
        CameraEvent(f"{ids}{i + 1}", "radar-1", "aZ3k9Q", point, T0_MS + published_ms, speed,
                    timed=False)
        for i, (point, speed) in enumerate(zip(points, speeds, strict=True))
    ]  # fmt: skip


def test_timeless_detections_are_measured_by_the_mean_of_spot_speeds():
    events = course([30.0, 45.5, 50.0])
    traversal = judge_traversal(events, SECTION, **SHORT)
    assert isinstance(traversal, Traversal)
    assert traversal.speed_method == SPOT_MEAN
    assert traversal.avg_speed_kmh == 41.833333333333336
    assert traversal.avg_speed_mph == 25.994028208595136
    assert traversal.is_speeding  # 41.83 km/h > 25 mph (40.23 km/h)
    assert (traversal.entry_location, traversal.exit_location) == (ENTRY, EXIT)
    # Nothing but spot speeds was measured: no distance over a zero duration.
    assert (traversal.distance_m, traversal.duration_s) == (None, None)
    assert traversal.spot_readings == 3
    assert traversal.traversal_id == traversal_id("radar-1", "aZ3k9Q", T0_MS)
    assert traversal.detections == 3


def test_the_course_band_between_40_and_40_23_kmh_is_not_fined_here():
    traversal = judge_traversal(
        course([40.1, 40.2]), SECTION, **SHORT
    )  # the course fines > 40 km/h
    assert traversal.avg_speed_kmh == pytest.approx(40.15)
    assert not traversal.is_speeding


def test_timeless_entry_and_exit_follow_the_order_sent():
    # The course's burst: ten messages in one millisecond, sent from the section's start to
    # its end; Pub/Sub's message ids grow in publish order ("10" after "9", as numbers).
    events = course([30.0] * 10)
    traversal = judge_traversal(list(reversed(events)), SectionRule())
    assert (traversal.entry_location, traversal.exit_location) == (ENTRY, EXIT)
    assert (traversal.entry_time_ms, traversal.exit_time_ms) == (T0_MS, T0_MS)
    assert (traversal.distance_m, traversal.duration_s, traversal.spot_readings) == (
        None,
        None,
        10,
    )
    # Sent from the end to the start: the first sent is the entry, wherever it lies.
    backwards = [at(e, 10 - i) for i, e in enumerate(events)]
    traversal = judge_traversal(backwards, SECTION)
    assert (traversal.entry_location, traversal.exit_location) == (EXIT, ENTRY)
    assert (traversal.entry_time_ms, traversal.exit_time_ms) == (T0_MS + 1, T0_MS + 10)
    assert traversal.avg_speed_kmh == 30.0


def test_every_record_agrees_with_itself():
    """speed = distance / duration wherever both are given; neither is given otherwise."""
    outcomes = [
        judge_traversal(track("v1", speed, points=points), section(**settings))
        for speed in (20.0, 54.0, 90.0)
        for points in (2, 5)
        for settings in ({}, {"length_m": 280.0}, {"tolerance_mph": 3.0})
    ] + [
        judge_traversal(course([30.0, 45.5, 50.0]), rule, **SHORT)
        for rule in (SECTION, SectionRule())
    ]
    records = [output_record(t, T0_MS) for t in outcomes if isinstance(t, Traversal)]
    assert len(records) == 20
    for record in records:
        if record["speed_method"] == SPOT_MEAN:
            assert (record["distance_m"], record["duration_s"]) == (None, None)
            assert record["spot_readings"] >= 2
            continue
        assert record["duration_s"] > 0 and record["spot_readings"] is None
        assert record["avg_speed_kmh"] == pytest.approx(
            record["distance_m"] / record["duration_s"] * 3.6, rel=1e-9
        )
        assert record["tolerance_mph"] in (0.0, 3.0)


def test_timeless_gates():
    no_speed = course([30.0, 40.0])
    no_speed[1] = at(no_speed[1], speed_kmh=None)
    outcome = judge_traversal(no_speed, SECTION, **SHORT)
    assert (outcome.kind, outcome.reason.split(" (")[0]) == (
        UNMEASURABLE,
        "1 of 2 detections have no speed",
    )
    too_fast = judge_traversal(course([30.0, 330.0]), SECTION, **SHORT)  # 200 mph = 321.9 km/h
    assert too_fast.kind == IMPLAUSIBLE
    assert too_fast.reason.startswith("spot speed 330 km/h at 40.817293,-73.943058 is above")
    partial = judge_traversal(course([30.0, 30.0, 30.0])[:2], SECTION, **SHORT)
    assert partial.kind == PARTIAL and "exit (152 m away" in partial.reason
    # One reading is fewer than any minimum: a part of a traversal, whatever the gap.
    assert judge_traversal(course([30.0, 31.0])[:1], SECTION, **SHORT).kind == PARTIAL


def test_a_publishers_retry_of_the_same_body_counts_once():
    events = course([30.0, 45.0, 60.0])
    retried = at(events[2], 7, event_id="retry")  # same body, new message id, later
    traversal = judge_traversal([*events, retried], SECTION, **SHORT)
    assert traversal.detections == 3
    assert traversal.avg_speed_kmh == 45.0


def test_a_timeless_session_with_fewer_readings_than_the_minimum_is_partial_never_judged():
    """A course vehicle sends 10 readings: a session of 9 is one the runner split."""
    speeds = [30.0, 31.0, 29.0, 30.0, 80.0, 85.0, 90.0, 30.0, 31.0, 30.0]  # mean 46.6: fined
    events = course(speeds)
    whole = judge_traversal(events, SECTION)
    assert (whole.spot_readings, whole.is_speeding) == (10, True)
    # The first four readings alone would pass a speeder; four of the fast ones, fine at 71.
    for part in (events[:4], events[3:7], events[:9]):
        outcome = judge_traversal(part, SectionRule())
        assert outcome.kind == PARTIAL, outcome
        assert outcome.reason.startswith(
            f"{len(part)} spot readings, fewer than the 10 of a vehicle's traversal "
            "(--min_spot_readings; the first at "
        )
        assert "split by a pipeline that fell behind" in outcome.reason
        assert outcome.detections == tuple(part)
    # One reading: partial for the same reason, not "the session gap is too short".
    single = judge_traversal(events[:1], SectionRule())
    assert single.kind == PARTIAL and "session gap" not in single.reason
    # A publisher's retry adds no reading: 9 distinct readings sent 10 times are still 9.
    retried = [*events[:9], at(events[8], 9, event_id="retry")]
    assert judge_traversal(retried, SectionRule()).kind == PARTIAL
    # The minimum is an option: a generator of 4 readings per vehicle sets 4.
    assert judge_traversal(events[:4], SectionRule(), min_spot_readings=4).spot_readings == 4


def test_a_session_mixing_timed_and_timeless_detections_is_implausible():
    mixed = [*track("v1", 40.0, points=3), at(course([30.0, 30.0])[0], vehicle_id="v1")]
    outcome = judge_traversal(mixed, SECTION)
    assert outcome.kind == IMPLAUSIBLE
    assert outcome.reason.startswith("the session mixes 3 detections that have an event time "
                                     "with 1 that have none (timeless detections)")  # fmt: skip
    assert len(outcome.detections) == 4


def test_traversal_id_is_deterministic_and_distinguishes_traversals():
    assert traversal_id("r", "v", 1) == traversal_id("r", "v", 1)
    assert (
        len({traversal_id("r", "v", 1), traversal_id("r", "v", 2), traversal_id("r", "w", 1)}) == 3
    )
    # No separator ambiguity: ("a|b", "c") and ("a", "b|c") are different vehicles.
    assert traversal_id("a|b", "c", 1) != traversal_id("a", "b|c", 1)
