"""Lateness judged against the runner's clock, and one identity per traversal."""

from dataclasses import replace

import pytest

from section_speed.domain import defaults
from section_speed.domain.identity import (
    RejectedSession,
    dumps_publications,
    identify,
    loads_publications,
    unseen_publication,
    withdraw,
)
from section_speed.domain.judging import judge_traversal
from section_speed.domain.lateness import PUBLISH_TIME, WALL_CLOCK, LatenessRule
from section_speed.domain.rules import SectionRule
from section_speed.domain.traversal import IMPLAUSIBLE, Rejection, traversal_id
from tests.helpers import T0_MS, section, track

GAP_S, LATENESS_S = 30, 60
BUDGET_MS = (GAP_S + LATENESS_S - defaults.LATE_MARGIN_SECONDS) * 1000


def test_publish_time_lateness_ignores_how_late_the_job_reads():
    rule = LatenessRule(GAP_S, LATENESS_S, PUBLISH_TIME)
    a_day_later = T0_MS + 86_400_000
    assert rule.lateness_reason(T0_MS, T0_MS + BUDGET_MS, now_ms=a_day_later) is None
    reason = rule.lateness_reason(T0_MS, T0_MS + BUDGET_MS + 1, now_ms=T0_MS)
    assert reason == (
        "published 80.0 s after its event time: beyond the session gap (30 s) plus allowed "
        "lateness (60 s) less a 10 s margin"
    )


def test_wall_clock_lateness_is_what_the_direct_runner_drops():
    rule = LatenessRule(GAP_S, LATENESS_S, WALL_CLOCK)
    assert rule.lateness_reason(T0_MS, T0_MS, now_ms=T0_MS + BUDGET_MS) is None
    assert rule.lateness_reason(T0_MS, T0_MS, now_ms=T0_MS + BUDGET_MS + 1).startswith(
        "read 80.0 s after"
    )


def test_a_too_late_reason_names_the_clock_that_made_it_late():
    rule = LatenessRule(GAP_S, LATENESS_S, WALL_CLOCK)
    # Published at once, read 95 s later: the pipeline is behind (a timeless message's
    # event time is its publish time, so this is every course message read too late).
    behind = rule.lateness_reason(T0_MS, T0_MS, now_ms=T0_MS + 95_000)
    assert behind == (
        "read 95.0 s after its event time (95.0 s waiting to be read: the pipeline is "
        "behind): beyond the session gap (30 s) plus allowed lateness (60 s) less a 10 s margin"
    )
    # Published late by the camera, read at once: not the pipeline's lag.
    camera = rule.lateness_reason(T0_MS, T0_MS + 90_000, now_ms=T0_MS + 90_500)
    assert camera.startswith(
        "read 90.5 s after its event time (published 90.0 s after it, read 0.5 s later): "
    )


def test_an_unknown_lateness_clock_is_refused():
    with pytest.raises(ValueError, match="one of publish_time, wall_clock"):
        LatenessRule(GAP_S, LATENESS_S, "sundial")


# An end zone of 110 m: a track of four detections 101 m apart that lacks its first one
# still spans the section, so a late entry detection corrects a measured traversal.
RULE = section(25.0, end_radius_m=110.0)


def measured(events):
    return judge_traversal(events, RULE)


# Fragments of one vehicle's pass, each measured on its own: no section ends and a limit
# above the tracks' speeds, so the identity step sees what a merge or withdrawal joins.
FRAGMENT_RULE = SectionRule(60.0)


def fragment(events):
    return judge_traversal(events, FRAGMENT_RULE)


def test_a_traversal_is_published_once_and_a_repeat_dropped():
    traversal = measured(track("v", 60.0))
    published, publications = identify(traversal, [])
    assert published == traversal
    again, publications_after = identify(traversal, publications)
    assert again is None and publications_after == publications


def test_a_correction_keeps_the_published_id_even_when_the_entry_moves_earlier():
    events = track("v", 60.0, points=4)
    first = measured(events[1:])  # the entry detection arrives late
    corrected = measured(events)
    assert corrected.traversal_id != first.traversal_id  # measured afresh, another id
    _, publications = identify(first, [])
    published, publications = identify(corrected, publications)
    assert published.traversal_id == first.traversal_id
    assert published.detections == 4 and published.supersedes == ()
    assert (first.revision, published.revision) == (0, 1)  # consumers keep the highest
    assert [record.traversal_id for record in publications] == [first.traversal_id]


def test_a_merge_keeps_the_oldest_id_and_supersedes_the_other():
    events = track("v", 54.0, points=5, start_ms=T0_MS)
    head, tail = fragment(events[:2]), fragment(events[3:])
    merged = fragment(events)
    _, publications = identify(head, [])
    _, publications = identify(tail, publications)
    published, publications = identify(merged, publications)
    assert published.traversal_id == traversal_id("radar-1", "v", T0_MS)
    assert published.supersedes == (tail.traversal_id,)
    assert published.revision == 1 and len(publications) == 1
    # The merged traversal fired again unchanged: nothing new to publish.
    assert identify(merged, publications)[0] is None


def test_another_traversal_of_the_same_vehicle_gets_its_own_id():
    first = measured(track("v", 60.0))
    later = measured(track("v", 30.0, start_ms=T0_MS + 3_600_000))
    _, publications = identify(first, [])
    published, publications = identify(later, publications)
    assert published.traversal_id == later.traversal_id != first.traversal_id
    assert len(publications) == 2


def test_publications_round_trip_through_their_text_form():
    _, publications = identify(measured(track("v", 60.0)), [])
    assert loads_publications(dumps_publications(publications)) == publications
    assert loads_publications(None) == []
    assert replace(publications[0]) == publications[0]


def test_a_merge_after_a_correction_still_keeps_the_oldest_id():
    events = track("v", 54.0, points=6, start_ms=T0_MS)
    head, tail = fragment(events[:2]), fragment(events[4:])
    _, publications = identify(head, [])
    _, publications = identify(tail, publications)
    # The head is corrected first (a late detection inside it), then the middle arrives.
    corrected_head, publications = identify(fragment(events[:3]), publications)
    assert corrected_head.traversal_id == head.traversal_id
    merged, publications = identify(fragment(events), publications)
    assert merged.traversal_id == head.traversal_id  # the oldest published id
    assert merged.supersedes == (tail.traversal_id,)
    assert merged.revision == 2 and [r.traversal_id for r in publications] == [head.traversal_id]


def _far_off(event):
    """The same detection reported 5 km off the section: the session becomes implausible."""
    return replace(event, event_id=event.event_id + "-far", location=(40.85, -73.90))


def test_a_late_detection_that_makes_a_published_fine_implausible_withdraws_it():
    events = track("v", 72.0, points=3)
    fine = measured([events[0], events[2]])
    assert fine.is_speeding
    _, publications = identify(fine, [])
    rejection = measured([*events, _far_off(events[1])])
    assert isinstance(rejection, Rejection) and rejection.kind == IMPLAUSIBLE
    taken_back, publications = withdraw(RejectedSession.of(rejection), publications)
    assert taken_back.of_fine
    withdrawal = taken_back.traversal
    assert withdrawal.traversal_id == fine.traversal_id and withdrawal.revision == 1
    assert not withdrawal.is_speeding
    assert withdrawal.withdrawn_reason.startswith("implausible: ")
    assert withdrawal.avg_speed_kmh == fine.avg_speed_kmh  # what was published, withdrawn
    # The same rejection firing again withdraws nothing more, and the span keeps growing.
    later = RejectedSession("implausible", "why", fine.entry_time_ms, fine.exit_time_ms + 5000)
    again, grown = withdraw(later, publications)
    assert again is None and grown[0].exit_time_ms == fine.exit_time_ms + 5000
    assert loads_publications(dumps_publications(publications)) == publications


def test_a_rejected_session_that_covers_nothing_published_withdraws_nothing():
    _, publications = identify(measured(track("v", 60.0)), [])
    elsewhere = measured([_far_off(e) for e in track("v", 60.0, start_ms=T0_MS + 3_600_000)][:1])
    assert isinstance(elsewhere, Rejection)
    assert withdraw(RejectedSession.of(elsewhere), publications) == (None, publications)


def test_a_plausible_correction_after_a_withdrawal_is_published_again():
    events = track("v", 72.0, points=3)
    fine = measured([events[0], events[2]])
    _, publications = identify(fine, [])
    rejected = measured([*events, _far_off(events[1])])
    _, publications = withdraw(RejectedSession.of(rejected), publications)
    # (Accumulating panes keep every detection; a plausible session here stands for one
    # whose contradiction a later detection resolves, e.g. a too-short duration.)
    again, publications = identify(measured(events), publications)
    assert again.traversal_id == fine.traversal_id and again.revision == 2
    assert again.is_speeding and again.withdrawn_reason is None


def test_a_repeat_after_an_update_is_still_a_repeat():
    # State saved before withdrawals existed: no `published`, digest without the new field.
    traversal = measured(track("v", 60.0))
    _, publications = identify(traversal, [])
    old = [replace(record, published=None) for record in publications]
    assert identify(traversal, old)[0] is None
    # ...and a rejected session over it cannot withdraw what it never saw published.
    span = (traversal.entry_time_ms, traversal.exit_time_ms)
    rejected = RejectedSession("implausible", "why", *span)
    assert withdraw(rejected, old)[0] is None
    assert unseen_publication(rejected, old) == traversal.traversal_id  # counted, logged
    assert unseen_publication(rejected, publications) is None  # this version withdraws it


def test_a_withdrawal_that_absorbs_a_published_fine_supersedes_it():
    events = track("v", 72.0, points=5, start_ms=T0_MS)
    # Whatever was published as a fine, however it was judged, is taken back as a fine.
    head = replace(fragment(events[:2]), is_speeding=True)
    tail = fragment(events[3:])
    _, publications = identify(head, [])
    _, publications = identify(tail, publications)
    bridged = fragment([*events, _far_off(events[2])])
    taken_back, publications = withdraw(RejectedSession.of(bridged), publications)
    assert taken_back.traversal.traversal_id == head.traversal_id
    assert taken_back.traversal.supersedes == (tail.traversal_id,)
    assert taken_back.of_fine and [r.traversal_id for r in publications] == [head.traversal_id]
