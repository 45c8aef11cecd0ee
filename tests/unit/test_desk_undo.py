"""The undo window (docs/desk.md, The undo window): a decision's notice is held back
`--undo_seconds`; an undo inside the window issues nothing and gives the fine back to the
officer, who may decide it again; an undo after it is refused with the reason; the
database decides an undo racing the publisher at the window's edge (real PostgreSQL)."""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from desk.outbox import OutboxPublisher
from desk.store import QueueFilter
from desk.workflow import Decision, Desk, UndoRefused
from local_stack.processes import wait_until
from section_speed.domain.verification import notice_id, verify_notice
from tests.unit.desk_fakes import (
    BUCKET,
    Clock,
    MemoryPhotos,
    MemoryPublisher,
    fine_row,
    make_app,
    new_store,
    with_photo,
)
from tests.unit.test_desk_app import csrf_of, hidden, signed_in


def decide_first(client, clock, action: str = "plate") -> tuple[str, str]:
    """Open the next fine, look, decide: (the fine's id, the page after the decision)."""
    answer = client.post("/next", data={"csrf": csrf_of(client.get("/queue").text)})
    fine_id = answer.headers["location"].removeprefix("/fines/")
    page = client.get(answer.headers["location"]).text
    clock.advance(1)
    form = {n: hidden(page, n) for n in ("csrf", "revision", "claim_id", "photo_sha256")}
    decided = client.post(
        f"/fines/{fine_id}/decision", data={**form, "action": action, "plate": "ABC1234"}
    )
    assert decided.status_code == 303, decided.text
    return fine_id, client.get(decided.headers["location"]).text


def test_an_undo_inside_the_window_issues_nothing_and_the_fine_can_be_decided_again():
    clock = Clock(datetime.now(UTC))  # the window is measured by the database's clock
    app, store, photos, publisher, _ = make_app(reviewer="alice", clock=clock, undo_seconds=2)
    fine = with_photo(fine_row(), photos)
    store.fines.append(fine)
    with TestClient(app, follow_redirects=False) as client:
        signed_in(client)
        fine_id, after = decide_first(client, clock)
        assert "<strong>ABC1234</strong> confirmed · Ctrl+Z to undo" in after
        (review,) = store.reviews_
        held = store.rows("SELECT kind, publish_after FROM outbox ORDER BY id")
        assert [r["kind"] for r in held] == ["review", "notice"]
        assert {r["publish_after"] for r in held} == {review["decided_at"] + timedelta(seconds=2)}
        undone = client.post(
            f"/decisions/{review['review_id']}/undo", data={"csrf": csrf_of(after)}
        )
        assert undone.status_code == 303 and undone.headers["location"] == f"/fines/{fine_id}"
        page = client.get(undone.headers["location"]).text
        assert 'id="decision"' in page  # hers again, to decide
        assert "confirmed · undone: nothing was issued" in page
        again = client.post(f"/decisions/{review['review_id']}/undo", data={"csrf": csrf_of(page)})
        assert again.status_code == 409 and "undone already" in again.text
        clock.advance(1)
        form = {n: hidden(page, n) for n in ("csrf", "revision", "claim_id", "photo_sha256")}
        redo = client.post(f"/fines/{fine_id}/decision",
                           data={**form, "action": "plate", "plate": "ABC1234"})  # fmt: skip
        assert redo.status_code == 303
        wait_until(lambda: publisher.published, timeout_s=15, what="the second decision's notice")
    decisions = store.rows("SELECT review_id, attempt FROM decisions ORDER BY attempt")
    assert [d["attempt"] for d in decisions] == [0, 1]  # the audit trail keeps both
    assert store.rows("SELECT review_id FROM undos") == [{"review_id": review["review_id"]}]
    ((record, sent_id),) = publisher.published  # exactly one notice went out
    assert sent_id == record["notice_id"] == notice_id(fine_id, 0, 1)
    assert record["review_id"] == decisions[1]["review_id"] and verify_notice(record)
    cancelled = store.rows("SELECT kind FROM outbox WHERE cancelled_at IS NOT NULL ORDER BY id")
    assert [r["kind"] for r in cancelled] == ["review", "notice"]
    assert store.rows("SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL "
                      "AND cancelled_at IS NULL") == [{"n": 0}]  # fmt: skip


def test_an_undo_after_the_window_is_refused_with_the_reason():
    clock = Clock(datetime.now(UTC) - timedelta(seconds=30))  # decided 30 s ago
    app, store, photos, publisher, _ = make_app(reviewer="alice", clock=clock, undo_seconds=10)
    store.fines.append(with_photo(fine_row(), photos))
    with TestClient(app, follow_redirects=False) as client:
        signed_in(client)
        _, after = decide_first(client, clock)
        (review,) = store.reviews_
        assert 'id="undo"' not in after and "confirmed · notice issued" in after
        refused = client.post(
            f"/decisions/{review['review_id']}/undo", data={"csrf": csrf_of(after)}
        )
        assert refused.status_code == 409 and "too late" in refused.text
        assert "undo window closed" in refused.text or "went out at" in refused.text
        wait_until(lambda: publisher.published, timeout_s=10, what="the notice")
    assert store.rows("SELECT * FROM undos") == []


def test_only_the_deciding_officer_may_undo():
    store = new_store()
    desk = Desk(store, MemoryPhotos(), BUCKET, clock=Clock(datetime.now(UTC)), min_look_ms=0,
                undo_seconds=60)  # fmt: skip
    store.fines.append(with_photo(fine_row(), desk.photos))
    review = _decide(desk, "alice")
    with pytest.raises(UndoRefused, match="no such decision of yours"):
        desk.undo("bob", review.review_id)
    assert desk.undo("alice", review.review_id) == review.fine_id


def _decide(desk: Desk, reviewer: str):
    fine_id = desk.next_fine(reviewer, QueueFilter())
    view = desk.view(fine_id)
    decision = Decision(fine_id, 0, view.holder.claim_id, "plate", "ABC1234",
                        photo_sha256=view.fine.image_sha256 or "")  # fmt: skip
    return desk.decide(reviewer, decision)


def _at_once(publisher: OutboxPublisher, desk: Desk, review_id: str) -> dict[str, object]:
    """The publisher's batch and the officer's undo, started together."""
    start = threading.Barrier(2)
    result: dict[str, object] = {}

    def publish() -> None:
        start.wait()
        result["sent"] = publisher.publish_due()

    def undo() -> None:
        start.wait()
        try:
            desk.undo("alice", review_id)
            result["undo"] = "done"
        except UndoRefused as error:
            result["undo"] = str(error)

    threads = [threading.Thread(target=publish), threading.Thread(target=undo)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return result


def test_an_undo_racing_the_publisher_at_the_windows_edge_is_decided_by_the_database():
    """At the window's edge either the undo wins (nothing issued, the undo recorded) or the
    publisher does (the notice sent, the undo refused): never both, never neither."""
    rounds = 12
    store = new_store()
    topic = MemoryPublisher()
    publisher = OutboxPublisher(store, topic)
    desk = Desk(store, MemoryPhotos(), BUCKET, clock=lambda: datetime.now(UTC), min_look_ms=0,
                undo_seconds=0.3)  # fmt: skip
    for n in range(rounds):
        store.fines.append(with_photo(fine_row(f"race-{n}", minute=n), desk.photos))
    outcomes = []
    for n in range(rounds):
        review = _decide(desk, "alice")
        due = datetime.fromisoformat(review.decided_at.replace("Z", "+00:00")) + timedelta(
            seconds=0.3
        )
        # Both start within a few milliseconds of the edge, either side (the scenario, not
        # synchronisation: the database's locks decide).
        time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds() + (n % 5 - 2) * 0.004))
        result = _at_once(publisher, desk, review.review_id)
        publisher.publish_due()  # whatever was not yet due is due now
        sent = [nid for _, nid in topic.published if nid == notice_id(review.fine_id, 0)]
        undone = store.rows("SELECT 1 FROM undos WHERE review_id = :r", r=review.review_id)
        assert (result["undo"] == "done") == bool(undone), result
        assert bool(undone) != bool(sent), (result, sent, undone)  # exactly one happened
        if not undone:
            assert "too late" in str(result["undo"])
        outcomes.append("undo" if undone else "sent")
        if undone:  # leave it decided, so the next round takes the next fine
            view = desk.view(review.fine_id)
            seen = view.fine.image_sha256 or ""
            again = Decision(review.fine_id, 0, view.holder.claim_id, "wrong_vehicle", "", "", seen)
            desk.decide("alice", again)
    assert len(topic.published) == len(set(nid for _, nid in topic.published))
    print("undo vs publisher at the edge:", outcomes)
