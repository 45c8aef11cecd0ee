"""The desk's lean path to the next fine: a short first look at the queue, a retry found
among the fine's own reviews. Same answers as the full scan, fewer reads."""

from desk.store import QueueFilter
from desk.workflow import PLATE, QUEUE_FIRST, QUEUE_SCAN, Decision, Desk
from tests.unit.desk_fakes import Clock, MemoryPublisher, MemoryStore, fine_row


class CountingStore(MemoryStore):
    """A MemoryStore that records the limits the queue is read with; `review` is refused,
    so a decision that still needed it would fail."""

    def __init__(self) -> None:
        super().__init__()
        self.limits: list[int] = []

    def queue(self, filters, limit):
        self.limits.append(limit)
        return super().queue(filters, limit)

    def review(self, review_id):
        raise AssertionError("decide reads the fine's reviews, not one review by id")


def make_desk() -> Desk:
    return Desk(CountingStore(), MemoryPublisher(), claim_seconds=300, clock=Clock())


def test_the_next_fine_comes_from_the_first_few_when_one_is_free():
    desk = make_desk()
    fines = [fine_row(f"v{n}", minute=n) for n in range(QUEUE_FIRST + 3)]
    desk.store.fines += fines
    assert desk.next_fine("alice", QueueFilter()) == fines[0]["fine_id"]
    assert desk.store.limits == [QUEUE_FIRST]


def test_when_others_hold_the_first_few_the_desk_looks_further():
    desk = make_desk()
    fines = [fine_row(f"v{n}", minute=n) for n in range(QUEUE_FIRST + 2)]
    desk.store.fines += fines
    for n in range(QUEUE_FIRST):
        assert desk.next_fine(f"officer-{n}", QueueFilter()) == fines[n]["fine_id"]
    desk.store.limits.clear()
    assert desk.next_fine("alice", QueueFilter()) == fines[QUEUE_FIRST]["fine_id"]
    assert desk.store.limits == [QUEUE_FIRST, QUEUE_SCAN]


def test_when_every_fine_is_held_and_the_first_page_was_short_no_second_read():
    desk = make_desk()
    fines = [fine_row(f"v{n}", minute=n) for n in range(2)]
    desk.store.fines += fines
    desk.next_fine("bob", QueueFilter())
    desk.next_fine("carol", QueueFilter())
    desk.store.limits.clear()
    assert desk.next_fine("alice", QueueFilter()) is None
    assert desk.store.limits == [QUEUE_FIRST]


def test_a_retried_decision_is_found_among_the_fines_reviews_and_adds_nothing():
    desk = make_desk()
    fine = fine_row("v1", minute=1)
    desk.store.fines.append(fine)
    assert desk.next_fine("alice", QueueFilter()) == fine["fine_id"]
    claim = desk.holder(fine["fine_id"])
    decision = Decision(fine["fine_id"], 0, claim["claim_id"], PLATE, fine["license_plate"])
    first = desk.decide("alice", decision)
    again = desk.decide("alice", decision)  # the POST sent twice
    assert again == first and first["decision"] == "confirmed"
    assert len(desk.store.reviews_) == 1 and len(desk.store.notices) == 1
    assert len(desk.notices.published) == 1
