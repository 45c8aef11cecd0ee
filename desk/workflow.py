"""What the desk does, over its interfaces: claim the next fine, decide, issue the notice.

No web framework here: the routes translate requests into these calls and the exceptions
below into status codes (404, 409, 422). Every check is made on the server from the
warehouse's rows; nothing the browser sends is trusted beyond the ids and text it types.
"""

import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from desk.services import NoticePublisher, is_fine_id
from desk.store import (
    WITHDRAWN,
    DeskStore,
    QueueFilter,
    Row,
    latest_revision,
    now_text,
    queue_state,
)
from section_speed.domain.verification import (
    ACKNOWLEDGED,
    CONFIRMED,
    CORRECTED,
    ISSUING_DECISIONS,
    MAX_NOTE_CHARACTERS,
    REJECT_REASONS,
    REJECTED,
    notice_id,
    notice_record,
    review_id,
    validate_typed_plate,
    winning_claim,
)

QUEUE_SCAN = 50  # fines looked at per "next": enough to skip those others hold
# First look at a few: the queue's rows are whole fines, and with few officers the oldest
# free fine is among the first. Only when others hold them all is QUEUE_SCAN read.
QUEUE_FIRST = 5
# What an officer's keys submit (the form's `action`): the plate field (confirm or
# correct), a reject reason, or closing a fine withdrawn after a decision.
PLATE, ACKNOWLEDGE = "plate", "acknowledge"


class FineNotFound(LookupError):
    pass


class DecisionConflict(RuntimeError):
    """The decision no longer applies (claim lost or expired, fine revised, decided)."""


class InvalidDecision(ValueError):
    """The decision itself is wrong (no plate, bad plate, reason without its note)."""


@dataclass(frozen=True, slots=True)
class Decision:
    fine_id: str
    revision: int  # the revision the officer saw
    claim_id: str
    action: str  # PLATE, ACKNOWLEDGE or a key of REJECT_REASONS
    plate: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class FineView:
    """One fine as the desk shows it."""

    fine: Row  # latest revision
    revisions: list[Row]  # oldest first
    reviews: list[Row]  # oldest first
    state: str | None  # queue state; None when nothing is left to decide
    holder: Mapping[str, Any] | None  # the winning claim, if any


class Desk:
    def __init__(
        self,
        store: DeskStore,
        notices: NoticePublisher,
        claim_seconds: float = 300.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.notices = notices
        self.claim_seconds = claim_seconds
        self.clock = clock

    def _now(self) -> str:
        return now_text(self.clock())

    # -- claims ------------------------------------------------------------------------
    def holder(self, fine_id: str) -> Mapping[str, Any] | None:
        now = self._now()
        return winning_claim(self.store.claims([fine_id], now), now)

    def claim(self, fine: Mapping[str, Any], reviewer: str) -> Mapping[str, Any] | None:
        """Append a claim, then read who holds the fine: this reviewer or an earlier one."""
        moment = self.clock()
        self.store.add_claim(
            {
                "claim_id": uuid.uuid4().hex,
                "fine_id": fine["fine_id"],
                "revision": int(fine["revision"]),
                "reviewer": reviewer,
                "claimed_at": now_text(moment),
                "expires_at": now_text(moment + timedelta(seconds=self.claim_seconds)),
            }
        )
        return self.holder(fine["fine_id"])

    def next_fine(self, reviewer: str, filters: QueueFilter) -> str | None:
        """The oldest fine awaiting a decision that this reviewer now holds, claimed; None
        when every awaiting fine is held by someone else (or none awaits)."""
        found, page_full = self._next_among(reviewer, filters, QUEUE_FIRST)
        if found is None and page_full:  # others hold the first few: look further
            found, _ = self._next_among(reviewer, filters, QUEUE_SCAN)
        return found

    def _next_among(
        self, reviewer: str, filters: QueueFilter, limit: int
    ) -> tuple[str | None, bool]:
        """The next fine among the queue's first `limit`, and whether the page was full."""
        entries = self.store.queue(filters, limit)
        now = self._now()
        claims: dict[str, list[Row]] = defaultdict(list)
        for claim in self.store.claims([e.fine["fine_id"] for e in entries], now):
            claims[claim["fine_id"]].append(claim)
        for entry in entries:
            fine_id = entry.fine["fine_id"]
            held = winning_claim(claims[fine_id], now)
            if held is not None and held["reviewer"] != reviewer:
                continue  # taken by someone else
            if held is None:
                held = self.claim(entry.fine, reviewer)
            if held is not None and held["reviewer"] == reviewer:
                return fine_id, len(entries) == limit
        return None, len(entries) == limit

    # -- one fine ----------------------------------------------------------------------
    def view(self, fine_id: str) -> FineView:
        if not is_fine_id(fine_id):
            raise FineNotFound(fine_id)
        revisions = self.store.fine_revisions(fine_id)
        latest = latest_revision(revisions)
        if latest is None:
            raise FineNotFound(fine_id)
        reviews = self.store.reviews(fine_id)
        state = queue_state(latest, _last_review(reviews))
        return FineView(latest, revisions, reviews, state, self.holder(fine_id))

    # -- decisions ---------------------------------------------------------------------
    def decide(self, reviewer: str, decision: Decision) -> Row:
        """Record the decision (one fine_reviews row) and, for a confirmed or corrected
        fine, its notice. A retry of the same decision (same claim and revision) records
        nothing twice and completes a notice a failure left unissued."""
        if not is_fine_id(decision.fine_id):
            raise FineNotFound(decision.fine_id)
        rid = review_id(decision.claim_id, decision.fine_id, decision.revision)
        view = self.view(decision.fine_id)
        # A retry finds its decision among the fine's (review ids name the fine).
        earlier = next((r for r in view.reviews if r["review_id"] == rid), None)
        if earlier is not None and earlier["reviewer"] == reviewer:
            self._issue_for(earlier, view.revisions)
            return earlier
        latest = view.fine
        if int(latest["revision"]) != decision.revision:
            raise DecisionConflict(
                f"the fine changed while you looked at it (now revision {latest['revision']})"
            )
        holder = view.holder
        if holder is None or holder["claim_id"] != decision.claim_id:
            who = f"is held by {holder['reviewer']}" if holder else "has expired"
            raise DecisionConflict(f"your claim on this fine {who}")
        if holder["reviewer"] != reviewer:
            raise DecisionConflict(f"this fine is held by {holder['reviewer']}")
        if view.state is None:
            raise DecisionConflict("this fine has been decided already")
        values = self._decision_values(latest, view.state, decision)
        review = {
            "review_id": rid,
            "fine_id": decision.fine_id,
            "revision": decision.revision,
            **values,
            "reader_plate": latest.get("license_plate"),
            "reviewer": reviewer,
            "opened_at": holder["claimed_at"],
            "decided_at": self._now(),
        }
        self.store.add_review(review)
        if review["decision"] in ISSUING_DECISIONS:
            self.issue_notice(latest, review)
        return review

    @staticmethod
    def _decision_values(latest: Mapping[str, Any], state: str, decision: Decision) -> Row:
        note = decision.note.strip()[:MAX_NOTE_CHARACTERS] or None
        values: Row = {"license_plate": None, "reason": None, "note": note}
        if state == WITHDRAWN:
            if decision.action != ACKNOWLEDGE:
                raise InvalidDecision(
                    "this fine was withdrawn after your decision: it can only be closed"
                )
            return {**values, "decision": ACKNOWLEDGED}
        if decision.action == PLATE:
            try:
                plate = validate_typed_plate(decision.plate)
            except ValueError as error:
                raise InvalidDecision(str(error)) from error
            same = plate == latest.get("license_plate")
            return {**values, "decision": CONFIRMED if same else CORRECTED, "license_plate": plate}
        if decision.action in REJECT_REASONS:
            if decision.action == "other" and note is None:
                raise InvalidDecision("a rejection for another reason needs a note")
            return {**values, "decision": REJECTED, "reason": decision.action}
        raise InvalidDecision(f"unknown action {decision.action[:32]!r}")

    # -- notices -----------------------------------------------------------------------
    def issue_notice(self, fine: Mapping[str, Any], review: Mapping[str, Any]) -> Row:
        """The notice of a confirmed or corrected fine, issued once.

        Topic first, table second: the table row is what says "issued", so a crash between
        the two republishes (consumers dedupe on the notice_id attribute) and never leaves
        a table row without a message.
        """
        nid = notice_id(str(fine["fine_id"]), int(fine["revision"]))
        existing = self.store.notice(nid)
        if existing is not None:
            return existing
        record = notice_record(fine, review)
        self.notices.publish(record, nid)
        self.store.add_notice(record)
        return record

    def _issue_for(
        self, review: Mapping[str, Any], revisions: Sequence[Mapping[str, Any]] | None = None
    ) -> None:
        if review["decision"] not in ISSUING_DECISIONS:
            return
        if revisions is None:
            revisions = self.store.fine_revisions(review["fine_id"])
        at_revision = [r for r in revisions if int(r["revision"]) == int(review["revision"])]
        fine = latest_revision(at_revision)
        if fine is not None:
            self.issue_notice(fine, review)

    def complete_pending_notices(self) -> int:
        """Issue the notices of decisions recorded without one (a crash between the review
        row and the notice); run when the desk starts. Returns how many were pending."""
        pending = self.store.reviews_without_notice()
        for review in pending:
            self._issue_for(review)
        return len(pending)


def _last_review(reviews: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    return max(
        reviews, key=lambda r: (int(r["revision"]), r["decided_at"], r["review_id"]), default=None
    )
