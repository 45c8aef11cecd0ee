"""Verification rules without a web server: notices, plates, claims, the decide workflow."""

import json

import pytest

from desk.store import CHANGED, NEW, WITHDRAWN, QueueFilter
from desk.workflow import Decision, DecisionConflict, Desk, InvalidDecision
from section_speed.domain.verification import (
    NOTICE_COLUMNS,
    canonical_json,
    notice_id,
    notice_record,
    validate_typed_plate,
    verify_notice,
    winning_claim,
)
from tests.unit.desk_fakes import Clock, MemoryPublisher, MemoryStore, fine_row


def review(fine, **values):
    return {
        "review_id": "r" * 32,
        "fine_id": fine["fine_id"],
        "revision": fine["revision"],
        "decision": "confirmed",
        "license_plate": "ABC1234",
        "reviewer": "alice",
        "decided_at": "2026-11-18T09:00:01.000Z",
        **values,
    }


def test_a_notice_is_the_evidence_record_with_a_verifiable_digest():
    fine = fine_row(plate="ABC1234", confidence=0.91, image_url="gs://b/fines/x.jpg")
    record = notice_record(fine, review(fine, decision="corrected", license_plate="ABC1284"))
    assert list(record) == [c.name for c in NOTICE_COLUMNS]
    assert record["notice_id"] == notice_id(fine["fine_id"], 0)
    assert record["license_plate"] == "ABC1284" and record["reader_plate"] == "ABC1234"
    assert record["entry_time"] == fine["entry_time"] and record["distance_m"] > 0
    assert verify_notice(record)
    assert verify_notice(json.loads(json.dumps(record)))  # as a consumer reads the topic
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    assert canonical_json(body) == json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    for field, value in (("license_plate", "XYZ9999"), ("avg_speed_mph", 30.0), ("reviewer", "x")):
        assert not verify_notice({**record, field: value}), field
    assert not verify_notice({k: v for k, v in record.items() if k != "record_sha256"})


def test_no_notice_for_a_rejection_or_another_revision():
    fine = fine_row()
    with pytest.raises(ValueError, match="issues no notice"):
        notice_record(fine, review(fine, decision="rejected", license_plate=None))
    with pytest.raises(ValueError, match="not of this fine revision"):
        notice_record(fine, review(fine, revision=1))
    assert notice_id("a" * 32, 0) != notice_id("a" * 32, 1)
    assert len(notice_id("a" * 32, 0)) == 32


@pytest.mark.parametrize(
    ("typed", "plate"),
    [
        ("ABC1234", "ABC1234"),
        (" abc-1234 ", "ABC1234"),
        ("7abc 123", "7ABC123"),
        ("ab1c2d", "AB1C2D"),
    ],
)
def test_a_typed_plate_is_normalised_as_the_readers_plates_are(typed, plate):
    assert validate_typed_plate(typed) == plate


@pytest.mark.parametrize(
    "typed",
    ["", "   ", "ABCDEFG", "1234567", "AB1", "ABC12345678", "ABC<b>1", "Ä BC1234", "A" * 30],
)
def test_text_that_is_no_plate_is_refused(typed):
    with pytest.raises(ValueError):
        validate_typed_plate(typed)


@pytest.mark.parametrize(
    ("typed", "folds_to"),
    [
        ("\u0131bc1234", "IBC1234"),
        ("\u017fbc1234", "SBC1234"),
        ("aßc123", "ASSC123"),
        ("\uff21BC1234", "\uff21BC1234"),  # fullwidth A,
    ],
)
def test_a_letter_that_only_folds_to_ascii_is_refused_before_folding(typed, folds_to):
    assert typed.upper() == folds_to  # what folding first would have let through
    with pytest.raises(ValueError, match=r"^not a plate: '.'; type letters A-Z"):
        validate_typed_plate(typed)


def test_a_typed_plate_too_long_says_how_long_and_what_a_plate_is():
    with pytest.raises(ValueError) as refused:
        validate_typed_plate("ABC 1234 " + "X" * 14)
    assert str(refused.value) == (
        "too long: 23 characters; a plate has at most 8 letters and digits"
    )


def test_every_foreign_character_is_named_once():
    with pytest.raises(ValueError) as refused:
        validate_typed_plate("Äbc<1234<")
    assert str(refused.value) == (
        "not a plate: '<', 'Ä'; type letters A-Z, digits 0-9, spaces, dashes"
    )


def claim(claim_id, reviewer, claimed_at, expires_at="2026-11-18T09:05:00.000Z"):
    return {
        "claim_id": claim_id,
        "reviewer": reviewer,
        "claimed_at": claimed_at,
        "expires_at": expires_at,
    }


def test_the_earliest_unexpired_claim_wins_whatever_the_order_read():
    now = "2026-11-18T09:00:00.000Z"
    a = claim("b" * 32, "alice", "2026-11-18T08:59:00.000Z")
    b = claim("a" * 32, "bob", "2026-11-18T08:59:00.000Z")  # same instant: claim_id decides
    late = claim("0" * 32, "carol", "2026-11-18T08:59:30.000Z")
    expired = claim("c" * 32, "dave", "2026-11-18T08:50:00.000Z", "2026-11-18T08:55:00.000Z")
    for order in ([a, b, late, expired], [expired, late, b, a]):
        assert winning_claim(order, now)["reviewer"] == "bob"
    assert winning_claim([expired], now) is None
    assert winning_claim([], now) is None


@pytest.fixture
def desk():
    store, publisher, clock = MemoryStore(), MemoryPublisher(), Clock()
    return Desk(store, publisher, claim_seconds=300, clock=clock)


def test_two_officers_get_two_fines_and_a_claim_expires(desk):
    first, second = fine_row("v1", minute=1), fine_row("v2", minute=2)
    desk.store.fines += [second, first]
    assert desk.next_fine("alice", QueueFilter()) == first["fine_id"]  # oldest first
    assert desk.next_fine("alice", QueueFilter()) == first["fine_id"]  # still hers
    assert desk.next_fine("bob", QueueFilter()) == second["fine_id"]
    assert desk.next_fine("carol", QueueFilter()) is None
    desk.clock.advance(301)
    assert desk.next_fine("carol", QueueFilter()) == first["fine_id"]


def test_a_lost_race_backs_off_to_the_next_fine(desk):
    first, second = fine_row("v1", minute=1), fine_row("v2", minute=2)
    desk.store.fines += [first, second]
    # Bob's claim was written a moment earlier by another desk, not yet seen when the queue
    # was read: Alice's desk appends its own claim, reads both, and moves on.
    original = desk.store.claims
    calls = []

    def claims_after_bob(fine_ids, now):
        calls.append(list(fine_ids))
        if len(calls) == 2:
            desk.store.claims_.insert(
                0,
                {
                    **claim(
                        "f" * 32, "bob", "2026-11-18T08:59:59.000Z", "2026-11-18T09:05:00.000Z"
                    ),
                    "fine_id": first["fine_id"],
                },
            )
        return original(fine_ids, now)

    desk.store.claims = claims_after_bob
    assert desk.next_fine("alice", QueueFilter()) == second["fine_id"]


def decide_all(desk, reviewer, action, plate="", note=""):
    fine_id = desk.next_fine(reviewer, QueueFilter())
    view = desk.view(fine_id)
    decision = Decision(
        fine_id, int(view.fine["revision"]), view.holder["claim_id"], action, plate, note
    )
    return decision, desk.decide(reviewer, decision)


def test_confirm_correct_reject_and_one_notice_per_fine_whatever_the_retries(desk):
    desk.store.fines += [fine_row(f"v{i}", minute=i, plate="ABC1234") for i in range(3)]
    decision, confirmed = decide_all(desk, "alice", "plate", "abc 1234")
    assert (confirmed["decision"], confirmed["license_plate"]) == ("confirmed", "ABC1234")
    assert desk.decide("alice", decision) == confirmed  # a retried POST
    _, corrected = decide_all(desk, "alice", "plate", "ABC1284")
    assert (corrected["decision"], corrected["reader_plate"]) == ("corrected", "ABC1234")
    with pytest.raises(InvalidDecision, match="needs a note"):
        decide_all(desk, "alice", "other")
    _, rejected = decide_all(desk, "alice", "other", note="a trailer hides the plate")
    assert (rejected["decision"], rejected["reason"], rejected["license_plate"]) == (
        "rejected",
        "other",
        None,
    )
    assert len(desk.store.reviews_) == 3
    ids = [n for _, n in desk.notices.published]
    assert ids == [n["notice_id"] for n in desk.store.notices] and len(set(ids)) == 2
    assert all(verify_notice(n) for n in desk.store.notices)
    assert desk.store.queue(QueueFilter(), 10) == []


def test_a_crash_between_review_and_notice_is_completed_at_start(desk):
    desk.store.fines.append(fine_row())

    def crash(record, notice_id):
        raise ConnectionError("publisher down")

    desk.notices.publish = crash
    with pytest.raises(ConnectionError):
        decide_all(desk, "alice", "plate", "ABC1234")
    assert desk.store.notices == [] and len(desk.store.reviews_) == 1
    restarted = Desk(desk.store, MemoryPublisher(), clock=desk.clock)
    assert restarted.complete_pending_notices() == 1
    assert restarted.complete_pending_notices() == 0
    (notice,) = desk.store.notices
    assert verify_notice(notice) and restarted.notices.published[0][1] == notice["notice_id"]


def test_a_decision_needs_the_claim_and_the_current_revision(desk):
    fine = fine_row()
    desk.store.fines.append(fine)
    fine_id = desk.next_fine("alice", QueueFilter())
    claim_id = desk.view(fine_id).holder["claim_id"]
    with pytest.raises(DecisionConflict, match="held by alice"):
        desk.decide("bob", Decision(fine_id, 0, "e" * 32, "plate", "ABC1234"))
    desk.store.fines.append({**fine, "revision": 1, "processed_at": "2026-11-18T10:00:00.000Z"})
    with pytest.raises(DecisionConflict, match="changed while you looked"):
        desk.decide("alice", Decision(fine_id, 0, claim_id, "plate", "ABC1234"))
    desk.clock.advance(301)
    with pytest.raises(DecisionConflict, match="expired"):
        desk.decide("alice", Decision(fine_id, 1, claim_id, "plate", "ABC1234"))


def test_revised_or_withdrawn_after_a_decision_comes_back_marked(desk):
    fine = fine_row()
    desk.store.fines.append(fine)
    decide_all(desk, "alice", "plate", "ABC1234")
    revised = {
        **fine,
        "revision": 1,
        "avg_speed_mph": 50.0,
        "processed_at": "2026-11-18T10:00:00.000Z",
    }
    desk.store.fines.append(revised)
    (entry,) = desk.store.queue(QueueFilter(), 10)
    assert (entry.state, entry.last_review["revision"]) == (CHANGED, 0)
    decide_all(desk, "alice", "plate", "ABC1234")
    assert len(desk.store.notices) == 2  # one per revision decided
    withdrawn = {
        **revised,
        "revision": 2,
        "is_ticketed": False,
        "withdrawn_reason": "implausible: x",
        "processed_at": "2026-11-18T11:00:00.000Z",
    }
    desk.store.fines.append(withdrawn)
    (entry,) = desk.store.queue(QueueFilter(), 10)
    assert entry.state == WITHDRAWN
    with pytest.raises(InvalidDecision, match="only be closed"):
        decide_all(desk, "alice", "plate", "ABC1234")
    _, closed = decide_all(desk, "alice", "acknowledge")
    assert closed["decision"] == "acknowledged" and len(desk.store.notices) == 2
    assert desk.store.queue(QueueFilter(), 10) == []


def test_a_withdrawn_fine_never_decided_is_not_in_the_queue(desk):
    fine = fine_row()
    desk.store.fines += [
        fine,
        {**fine, "revision": 1, "is_ticketed": False, "withdrawn_reason": "partial: x"},
    ]
    assert desk.store.queue(QueueFilter(), 10) == []
    assert desk.view(fine["fine_id"]).state is None
    assert NEW != CHANGED


def test_docs_desk_md_shows_the_tables_as_defined():
    from pathlib import Path

    from section_speed.domain.schemas import markdown_table
    from section_speed.domain.verification import VERIFICATION_TABLES

    text = (Path(__file__).resolve().parents[2] / "docs" / "desk.md").read_text()
    for table in VERIFICATION_TABLES:
        assert f"### `{table.name}`\n\n{markdown_table(table.columns)}\n" in text, table.name
