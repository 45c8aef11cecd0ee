"""The desk's workflow on its PostgreSQL store (a fresh database per test): claims, the
queue's states, decisions and their conflicts, notices and recalls through the outbox,
ingest. The contract docs/desk.md states, each rule checked on values."""

import json
import threading

import pytest
import sqlalchemy as sa

from desk.outbox import OutboxPublisher
from desk.store import CHANGED, NEW, WITHDRAWN, Fine, QueueFilter
from desk.workflow import NOT_OWN_PHOTO, Decision, DecisionConflict, Desk, InvalidDecision
from section_speed.domain.verification import notice_id, recall_id, verify_notice
from tests.unit.desk_fakes import (
    BUCKET,
    Clock,
    MemoryPhotos,
    MemoryPublisher,
    fine_row,
    jpeg,
    new_store,
    with_photo,
)


@pytest.fixture
def desk():
    # The minimum look has its own tests (test_desk_decisions.py): here a frozen clock.
    made = Desk(new_store(), MemoryPhotos(), BUCKET, claim_seconds=300, clock=Clock(),
                min_look_ms=0)  # fmt: skip
    yield made
    made.store.engine.dispose()


def add(desk: Desk, **row) -> dict:
    """A fine with its photo, ingested as from the fines topic."""
    fine = with_photo(fine_row(**row), desk.photos)
    desk.store.fines.append(fine)
    return fine


def decide_next(desk: Desk, reviewer: str, action: str, plate: str = "", note: str = ""):
    fine_id = desk.next_fine(reviewer, QueueFilter())
    view = desk.view(fine_id)
    seen = view.fine.image_sha256 if view.photo.verified else ""
    decision = Decision(fine_id, view.fine.revision, view.holder.claim_id, action, plate, note,
                        seen or "")  # fmt: skip
    return decision, desk.decide(reviewer, decision)


def outbox(desk: Desk) -> list[tuple[str, str]]:
    return [(r["kind"], r["key"]) for r in desk.store.rows("SELECT * FROM outbox ORDER BY id")]


def test_two_officers_get_two_fines_and_a_claim_expires(desk):
    first, second = fine_row("v1", minute=1), fine_row("v2", minute=2)
    desk.store.fines += [second, first]
    assert desk.next_fine("alice", QueueFilter()) == first["fine_id"]  # oldest first
    claim_id = desk.view(first["fine_id"]).holder.claim_id
    assert desk.next_fine("alice", QueueFilter()) == first["fine_id"]  # still hers, renewed
    assert desk.view(first["fine_id"]).holder.claim_id == claim_id  # the same lease
    assert desk.next_fine("bob", QueueFilter()) == second["fine_id"]
    assert desk.next_fine("carol", QueueFilter()) is None
    desk.clock.advance(301)
    assert desk.next_fine("carol", QueueFilter()) == first["fine_id"]
    assert desk.view(first["fine_id"]).holder.reviewer == "carol"


def test_many_officers_at_once_never_share_a_fine(desk):
    fines = [fine_row(f"v{n}", minute=n) for n in range(12)]
    desk.store.fines += fines
    officers = [f"o{n}" for n in range(8)]
    got: dict[str, str | None] = {}
    barrier = threading.Barrier(len(officers))

    def officer(name: str) -> None:
        barrier.wait()  # all ask for the next fine at the same moment
        got[name] = desk.next_fine(name, QueueFilter())

    threads = [threading.Thread(target=officer, args=(name,)) for name in officers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    taken = [fine_id for fine_id in got.values() if fine_id is not None]
    assert len(taken) == len(set(taken)) == len(officers)  # each its own fine
    # The oldest were handed out: none of them skipped while a newer one went.
    assert set(taken) == {f["fine_id"] for f in fines[: len(officers)]}
    holders = {r["fine_id"]: r["reviewer"] for r in desk.store.claims_}
    assert all(holders[fine_id] == name for name, fine_id in got.items())


def test_confirm_correct_reject_each_once_whatever_the_retries(desk):
    for i in range(3):
        add(desk, vehicle=f"v{i}", minute=i, plate="ABC1234")
    decision, confirmed = decide_next(desk, "alice", "plate", "abc 1234")
    assert (confirmed.decision, confirmed.license_plate) == ("confirmed", "ABC1234")
    assert desk.decide("alice", decision) == confirmed  # a retried POST
    _, corrected = decide_next(desk, "alice", "plate", "ABC1284")
    assert (corrected.decision, corrected.reader_plate) == ("corrected", "ABC1234")
    with pytest.raises(InvalidDecision, match="needs a note"):
        decide_next(desk, "alice", "other")
    _, rejected = decide_next(desk, "alice", "other", note="a trailer hides the plate")
    assert (rejected.decision, rejected.reason, rejected.license_plate) == (
        "rejected",
        "other",
        None,
    )
    assert len(desk.store.reviews_) == 3
    notices = desk.store.notices
    assert len(notices) == 2 and all(verify_notice(n) for n in notices)
    kinds = sorted(kind for kind, _ in outbox(desk))
    assert kinds == ["notice", "notice", "review", "review", "review"]
    assert desk.queue(QueueFilter(), 10) == []


def test_a_different_decision_on_a_decided_revision_names_what_was_recorded(desk):
    add(desk)
    decision, _ = decide_next(desk, "alice", "plate", "ABC1234")
    reject = Decision(decision.fine_id, 0, decision.claim_id, "plate_unreadable")
    with pytest.raises(DecisionConflict, match=r"already confirmed as ABC1234 by alice at 2026-"):
        desk.decide("alice", reject)
    other_plate = Decision(decision.fine_id, 0, decision.claim_id, "plate", "XYZ9876")
    with pytest.raises(DecisionConflict, match="already confirmed"):
        desk.decide("alice", other_plate)
    assert [r["decision"] for r in desk.store.reviews_] == ["confirmed"]


def test_a_confirm_racing_a_reject_records_one_and_refuses_the_other(desk):
    fine = add(desk)
    fine_id = desk.next_fine("alice", QueueFilter())
    claim_id = desk.view(fine_id).holder.claim_id
    seen = fine["image_sha256"]
    decisions = [Decision(fine_id, 0, claim_id, "plate", fine["license_plate"], "", seen),
                 Decision(fine_id, 0, claim_id, "wrong_vehicle", "", "", seen)] * 4  # fmt: skip
    results: list[object] = []
    barrier = threading.Barrier(len(decisions))

    def send(decision: Decision) -> None:
        barrier.wait()
        try:
            results.append(desk.decide("alice", decision).decision)
        except DecisionConflict as error:
            results.append(str(error))

    threads = [threading.Thread(target=send, args=(d,)) for d in decisions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    (recorded,) = desk.store.reviews_
    assert results.count(recorded["decision"]) == 4  # the winner's retries all answered alike
    assert all(r.startswith(f"already {recorded['decision']}") for r in results if " " in r)
    assert len(desk.store.notices) == (1 if recorded["decision"] == "confirmed" else 0)


def test_a_decision_needs_the_claim_and_the_current_revision(desk):
    fine = add(desk)
    fine_id = desk.next_fine("alice", QueueFilter())
    claim_id = desk.view(fine_id).holder.claim_id
    with pytest.raises(DecisionConflict, match="held by alice"):
        desk.decide("bob", Decision(fine_id, 0, "e" * 32, "plate", "ABC1234"))
    desk.store.fines.append({**fine, "revision": 1, "processed_at": "2026-11-18T10:00:00.000Z"})
    with pytest.raises(DecisionConflict, match="changed while you looked"):
        desk.decide("alice", Decision(fine_id, 0, claim_id, "plate", "ABC1234"))
    desk.clock.advance(301)
    with pytest.raises(DecisionConflict, match="expired"):
        desk.decide("alice", Decision(fine_id, 1, claim_id, "plate", "ABC1234"))
    assert desk.store.reviews_ == []


def test_a_plate_is_confirmed_only_against_the_records_own_photo_read_once(desk):
    fine = add(desk)
    name = fine["image_url"].removeprefix(f"gs://{BUCKET}/")
    desk.photos.objects[name] = jpeg(size=(80, 60))  # replaced since the pipeline stored it
    decision = Decision(fine["fine_id"], 0, "", "plate", "ABC1234")
    fine_id = desk.next_fine("alice", QueueFilter())
    view = desk.view(fine_id)
    assert view.photo.mismatch and not view.photo.verified
    decision = Decision(fine_id, 0, view.holder.claim_id, "plate", "ABC1234")
    with pytest.raises(InvalidDecision, match=NOT_OWN_PHOTO[:30]):
        desk.decide("alice", decision)
    assert desk.decide("alice", Decision(fine_id, 0, view.holder.claim_id, "wrong_vehicle"))
    assert desk.photos.reads == [name]  # the page, the check: one read


def test_revised_or_withdrawn_after_a_notice_recalls_it_once_and_requeues(desk):
    fine = add(desk)
    decide_next(desk, "alice", "plate", "ABC1234")
    first_notice = notice_id(fine["fine_id"], 0)
    revised = {**fine, "revision": 1, "avg_speed_mph": 50.0,
               "processed_at": "2026-11-18T10:00:00.000Z"}  # fmt: skip
    desk.store.fines.append(revised)
    desk.store.fines.append(revised)  # redelivered: nothing more
    (entry,) = desk.queue(QueueFilter(), 10)
    assert (entry.state, entry.last_review.revision) == (CHANGED, 0)
    recalls = desk.store.rows("SELECT * FROM recalls")
    assert [(r["notice_id"], r["new_revision"], r["reason"]) for r in recalls] == [
        (first_notice, 1, "revised")
    ]
    decide_next(desk, "alice", "plate", "ABC1234")
    assert len(desk.store.notices) == 2  # one per revision decided
    withdrawn = {
        **revised,
        "revision": 2,
        "is_ticketed": False,
        "withdrawn_reason": "implausible: x",
        "processed_at": "2026-11-18T11:00:00.000Z",
    }
    desk.store.fines.append(withdrawn)
    (entry,) = desk.queue(QueueFilter(), 10)
    assert entry.state == WITHDRAWN
    with pytest.raises(InvalidDecision, match="only be closed"):
        decide_next(desk, "alice", "plate", "ABC1234")
    _, closed = decide_next(desk, "alice", "acknowledge")
    assert closed.decision == "acknowledged" and len(desk.store.notices) == 2
    assert desk.queue(QueueFilter(), 10) == []
    recalls = desk.store.rows("SELECT notice_id, reason FROM recalls ORDER BY recalled_at")
    assert [r["reason"] for r in recalls] == ["revised", "withdrawn: implausible: x"]
    recall_keys = [key for kind, key in outbox(desk) if kind == "recall"]
    assert recall_keys == [recall_id(r["notice_id"]) for r in recalls]


def test_revisions_arrive_in_any_order_and_twice(desk):
    fine = fine_row()
    later = {**fine, "revision": 2, "is_ticketed": False, "withdrawn_reason": "partial: x"}
    middle = {**fine, "revision": 1, "avg_speed_mph": 99.0}
    for row in (later, fine, middle, later, fine):
        desk.store.fines.append(row)
    assert [f.revision for f in desk.view(fine["fine_id"]).revisions] == [0, 1, 2]
    assert desk.view(fine["fine_id"]).fine.revision == 2
    assert desk.queue(QueueFilter(), 10) == []  # withdrawn, never decided: not queued
    assert desk.view(fine["fine_id"]).state is None


def test_a_fine_merged_into_another_leaves_the_queue_and_its_notice_is_recalled(desk):
    absorbed = add(desk, vehicle="v1", minute=1)
    decide_next(desk, "alice", "plate", "ABC1234")
    merged = fine_row("v1", minute=2)
    desk.store.fines.append({**merged, "supersedes": [absorbed["fine_id"]]})
    (entry,) = desk.queue(QueueFilter(), 10)
    assert entry.fine.fine_id == merged["fine_id"] and entry.state == NEW
    (recall,) = desk.store.rows("SELECT * FROM recalls")
    assert recall["reason"] == f"merged into fine {merged['fine_id']}"


def test_the_queue_holds_only_what_the_pipeline_fined(desk):
    from desk.ingest import fine_from_message

    passed = {**fine_row("v9"), "is_ticketed": False}
    assert fine_from_message(__import__("json").dumps(passed).encode()) is None
    later_pass = {**passed, "revision": 1}
    assert isinstance(fine_from_message(__import__("json").dumps(later_pass).encode()), Fine)


def test_the_outbox_sends_each_notice_once_and_a_failed_send_again_with_the_same_id(desk):
    add(desk)
    _, review = decide_next(desk, "alice", "plate", "ABC1234")
    topic = MemoryPublisher()
    failing = MemoryPublisher()
    failing.publish = lambda record, attributes: (_ for _ in ()).throw(ConnectionError("down"))
    assert OutboxPublisher(desk.store, failing).publish_due() == 1  # the review; the notice kept
    (row,) = desk.store.rows("SELECT * FROM outbox WHERE kind = 'notice'")
    assert row["sent_at"] is None and row["attempts"] == 1 and "down" in row["last_error"]
    with desk.store.engine.begin() as connection:  # the retry delay over
        connection.execute(sa.text("UPDATE outbox SET publish_after = now()"))
    publisher = OutboxPublisher(desk.store, topic)
    assert publisher.publish_due() == 1
    assert publisher.publish_due() == 0
    ((record, attributes),) = topic.messages  # once, under the id the table holds
    assert attributes == {"kind": "notice", "notice_id": record["notice_id"]}
    assert record["review_id"] == review.review_id and verify_notice(record)
    assert desk.store.outbox_pending() == 0


def test_the_notice_carries_the_limit_applied_and_where_it_came_from(desk):
    add(
        desk,
        limit_source="temporary",
        limit_reference="RW-2026-114",
        vehicle_class="hgv",
        rules_version="0123456789abcdef",
    )
    decide_next(desk, "alice", "plate", "ABC1234")
    (view,) = [desk.view(row["fine_id"]) for row in desk.store.rows("SELECT fine_id FROM fines")]
    assert (view.fine.limit_source, view.fine.limit_reference) == ("temporary", "RW-2026-114")
    (row,) = desk.store.rows("SELECT record FROM notices")
    record = row["record"] if isinstance(row["record"], dict) else json.loads(row["record"])
    assert {k: record[k] for k in ("limit_source", "limit_reference", "vehicle_class")} == {
        "limit_source": "temporary",
        "limit_reference": "RW-2026-114",
        "vehicle_class": "hgv",
    }
    assert record["rules_version"] == "0123456789abcdef" and verify_notice(record)
