"""What the desk does: hand out the next fine, show one, decide, issue the notice.

No web framework here: the routes translate requests into these calls and the exceptions
below into status codes (404, 409, 422). Every rule is checked on the server, inside the
transaction that records the decision (desk/store.py `deciding`); the database's
constraints back each one (docs/desk.md, Store).
"""

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from threading import Lock, Thread

import sqlalchemy as sa

from desk.services import PhotoSource, photo_matches_record, stored_photo
from desk.store import (
    WITHDRAWN,
    Claim,
    DeskStore,
    Fine,
    FineRecord,
    LastDecision,
    QueueEntry,
    QueueFilter,
    Review,
    UndoRefused,
    now_text,
    parse_time,
)
from section_speed.domain.verification import (
    ACKNOWLEDGED,
    CONFIRMED,
    CORRECTED,
    ISSUING_DECISIONS,
    MAX_NOTE_CHARACTERS,
    REJECT_REASONS,
    REJECTED,
    is_hex32,
    notice_id,
    notice_record,
    record_sha256,
    review_id,
    validate_typed_plate,
)

_log = logging.getLogger(__name__)
# What an officer's keys submit (the form's `action`): the plate field (confirm or
# correct), a reject reason, or closing a fine withdrawn after a decision.
PLATE, ACKNOWLEDGE = "plate", "acknowledge"
# The minimum look: a decision key counts only once the fine's photo has been on screen
# this long (desk.js, `shown_ms`), and the server refuses a decision arriving sooner than
# this after it served the fine to the officer (claims.served_at): below it no one has
# looked at a photo; an officer deciding 200 fines a shift spends seconds on each, so it
# never waits (docs/desk.md, The minimum look).
MIN_LOOK_MS = 500
PHOTO_CACHE = 64
# A claim's lease: short, renewed by the open page every third of it (docs/desk.md, Claims),
# so a closed laptop holds a fine at most this long.
CLAIM_SECONDS = 60.0  # photos kept per desk process: the page, /photo, /plate and the decision
NOT_OWN_PHOTO = "a plate is confirmed only against the record's own photo: reject this fine"


class FineNotFound(LookupError):
    pass


class DecisionConflict(RuntimeError):
    """The decision no longer applies (claim lost or expired, fine revised, decided)."""


class InvalidDecision(ValueError):
    """The decision itself is wrong (no plate, bad plate, reason without its note, a plate
    without the record's own photo)."""


@dataclass(frozen=True, slots=True)
class Decision:
    fine_id: str
    revision: int  # the revision the officer saw
    claim_id: str
    action: str  # PLATE, ACKNOWLEDGE or a key of REJECT_REASONS
    plate: str = ""
    note: str = ""
    photo_sha256: str = ""  # the photo the officer saw ("" when none was shown)


@dataclass(frozen=True, slots=True)
class Photo:
    """A fine's stored photo: its bytes (None when missing) and whether they are the ones
    its record's image_sha256 names."""

    data: bytes | None
    verified: bool

    @property
    def mismatch(self) -> bool:
        return self.data is not None and not self.verified


@dataclass(frozen=True, slots=True)
class FineView:
    """One fine as the desk shows it."""

    record: FineRecord
    photo: Photo

    @property
    def fine(self) -> Fine:
        return self.record.fine

    @property
    def state(self) -> str | None:
        return self.record.state

    @property
    def holder(self) -> Claim | None:
        return self.record.holder

    @property
    def revisions(self) -> list[Fine]:
        return self.record.revisions

    @property
    def reviews(self) -> list[Review]:
        return self.record.reviews


@dataclass(frozen=True, slots=True)
class Outcome:
    decision: str
    license_plate: str | None = None
    reason: str | None = None

    def detail(self) -> str:
        return self.license_plate or self.reason or ""


class Desk:
    def __init__(
        self,
        store: DeskStore,
        photos: PhotoSource,
        bucket: str,
        claim_seconds: float = CLAIM_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        recorded: Callable[[], None] = lambda: None,
        min_look_ms: int = MIN_LOOK_MS,
        undo_seconds: float = 0.0,
    ) -> None:
        self.min_look_ms = min_look_ms
        self.undo_seconds = undo_seconds  # a decision's outbox rows wait this long
        self.store = store
        self.photos = photos
        self.bucket = bucket
        self.claim_seconds = claim_seconds
        self.clock = clock
        self.recorded = recorded  # told after each decision: the publisher wakes up
        self._photos: OrderedDict[tuple[str, str | None], bytes | None] = OrderedDict()
        self._photos_lock = Lock()
        self._warming = Lock()  # one warm-up at a time per process

    def now(self) -> str:
        return now_text(self.clock())

    # -- the queue and claims ----------------------------------------------------------
    def queue(self, filters: QueueFilter, limit: int) -> list[QueueEntry]:
        return self.store.queue(filters, limit, self.now())

    def next_fine(self, reviewer: str, filters: QueueFilter) -> str | None:
        """The oldest awaiting fine nobody else holds, now claimed by this reviewer."""
        claim = self.store.next_claim(reviewer, filters, self.now(), self.claim_seconds)
        return claim.fine_id if claim else None

    def claim(self, fine_id: str, reviewer: str) -> Claim:
        """Claim (or renew) one fine; DecisionConflict when another holds it or it awaits
        nothing."""
        record = self._record(fine_id)
        if record.state is None:
            raise DecisionConflict("this fine awaits no decision")
        holder = self.store.claim(fine_id, reviewer, self.now(), self.claim_seconds)
        if holder is None:
            raise DecisionConflict("this fine awaits no decision")
        if holder.reviewer != reviewer:
            raise DecisionConflict(f"taken by {holder.reviewer}")
        return holder

    def renew(self, fine_id: str, claim_id: str, reviewer: str) -> None:
        """The fine's page is still open: its claim lasts another lease; DecisionConflict
        when it has ended (expired, released, decided, or taken over)."""
        if not self.store.renew(fine_id, claim_id, reviewer, self.now(), self.claim_seconds):
            raise DecisionConflict("your claim on this fine has ended: reload the page")

    def release(
        self, fine_id: str, claim_id: str, reviewer: str, served_at: str | None = None
    ) -> None:
        """The page served at `served_at` was left. A reload's release can reach the desk
        after the new page was served and renewed the claim: a page served later than the
        one leaving keeps the claim."""
        self.store.release(fine_id, claim_id, reviewer, self.now(), served_at)

    # -- one fine ----------------------------------------------------------------------
    def _record(self, fine_id: str) -> FineRecord:
        record = self.store.fine(fine_id, self.now()) if is_hex32(fine_id) else None
        if record is None:
            raise FineNotFound(fine_id)
        return record

    def view(self, fine_id: str) -> FineView:
        record = self._record(fine_id)
        return FineView(record, self.photo(record.fine))

    def warm_next(self, reviewer: str, filters: QueueFilter, current: str) -> None:
        """While the officer looks at `current`, read the likely next fine's photo into the
        cache in the background: the next page then waits for no bucket read."""
        if self._warming.acquire(blocking=False):
            Thread(target=self._warm, args=(reviewer, filters, current), daemon=True).start()

    def _warm(self, reviewer: str, filters: QueueFilter, current: str) -> None:
        try:
            fine = self.store.likely_next(reviewer, filters, self.now(), current)
            if fine is not None:
                self.photo(fine)
        except Exception:  # a warm-up only: the page reads the photo itself if need be
            _log.debug("warming the next photo failed", exc_info=True)
        finally:
            self._warming.release()

    def serve(self, view: FineView, reviewer: str) -> str | None:
        """The fine's page goes to `reviewer`: when it holds the fine, its minimum look
        starts now. Returns that moment (the page's own: a release it sends names it)."""
        holder = view.holder
        if holder is None or holder.reviewer != reviewer:
            return None
        now = self.now()
        self.store.served(view.fine.fine_id, reviewer, now)
        return now

    def photo(self, fine: Fine) -> Photo:
        """The fine's photo, read from the bucket once per (fine, digest) and kept."""
        key = (fine.fine_id, fine.image_sha256)
        with self._photos_lock:
            known = key in self._photos
            data = self._photos.get(key)
            if known:
                self._photos.move_to_end(key)
        if not known:
            data = stored_photo(fine, self.bucket, self.photos)
            if data is not None:  # a missing photo may yet arrive: ask again next time
                with self._photos_lock:
                    self._photos[key] = data
                    while len(self._photos) > PHOTO_CACHE:
                        self._photos.popitem(last=False)
        return Photo(data, data is not None and photo_matches_record(fine, data))

    # -- decisions ---------------------------------------------------------------------
    def decide(self, reviewer: str, decision: Decision) -> Review:
        """Record the decision and, for a confirmed or corrected fine, its notice, in one
        transaction. The same decision again (same claim, revision and outcome) records
        nothing and returns the first; a different one on a revision already decided is a
        DecisionConflict naming what was recorded."""
        if not is_hex32(decision.fine_id):
            raise FineNotFound(decision.fine_id)
        now = self.now()
        rid = ""
        try:
            with self.store.deciding(decision.fine_id, now) as tx:
                if tx.record is None:
                    raise FineNotFound(decision.fine_id)
                revisions = tx.record.revisions
                seen = next((f for f in revisions if f.revision == decision.revision), None)
                if seen is None:
                    raise DecisionConflict(f"this fine has no revision {decision.revision}")
                outcome = _outcome(seen, decision)
                rid = review_id(
                    decision.claim_id, decision.fine_id, decision.revision, outcome.decision,
                    outcome.detail(),
                )  # fmt: skip
                earlier = tx.decision_at(decision.revision)
                if earlier is not None:
                    return _same_or_conflict(earlier, rid)
                review = self._checked(tx.record, reviewer, decision, outcome, rid, now)
                # Usually in this process's cache (its page showed it): rarely a read under lock.
                photo = self.photo(seen)
                if review.decision in ISSUING_DECISIONS and not photo.verified:
                    raise InvalidDecision(NOT_OWN_PHOTO)
                shown = seen.image_sha256 if photo.verified else None
                if decision.photo_sha256 != (shown or ""):
                    raise DecisionConflict(
                        "the photo you decided on is not this fine's photo"
                        + (f" (sha256 {shown[:12]}…)" if shown else " (it has none to show)")
                        + ": look at the fine again"
                    )
                attempt = tx.record.attempt(decision.revision)
                notice = None
                if review.decision in ISSUING_DECISIONS:
                    notice = notice_record(tx.record.fine.record(), review.record())
                    if attempt:  # decided again after an undo: a notice id of its own
                        notice = _renamed(notice, notice_id(seen.fine_id, seen.revision, attempt))
                tx.add(review, notice, attempt, self.undo_seconds)
        except sa.exc.IntegrityError as error:
            # decisions_one_per_revision: another desk committed first (the row lock makes
            # this rare; the constraint makes it harmless).
            earlier = self.store.fine(decision.fine_id, self.now())
            found = earlier and next(
                (r for r in earlier.reviews if r.revision == decision.revision), None
            )
            if found:
                return _same_or_conflict(found, rid)
            raise DecisionConflict("the decision could not be recorded: try again") from error
        self.recorded()
        return review

    def undo(self, reviewer: str, review_id: str) -> str:
        """Undo the officer's decision inside its window: nothing is issued and the fine is
        theirs again (its id returned); UndoRefused says why not."""
        return self.store.undo(review_id, reviewer, self.now(), self.claim_seconds)

    def last_decision(self, reviewer: str, since_s: float) -> LastDecision | None:
        since = now_text(self.clock() - timedelta(seconds=since_s))
        return self.store.last_decision(reviewer, since)

    def _checked(
        self,
        record: FineRecord,
        reviewer: str,
        decision: Decision,
        outcome: Outcome,
        rid: str,
        now: str,
    ) -> Review:
        latest = record.fine
        if latest.revision != decision.revision:
            raise DecisionConflict(
                f"the fine changed while you looked at it (now revision {latest.revision})"
            )
        if record.state is None:
            raise DecisionConflict("this fine awaits no decision")
        holder = record.holder
        if holder is None or holder.claim_id != decision.claim_id:
            who = f"is held by {holder.reviewer}" if holder else "has expired"
            raise DecisionConflict(f"your claim on this fine {who}")
        if holder.reviewer != reviewer:
            raise DecisionConflict(f"this fine is held by {holder.reviewer}")
        served = parse_time(holder.served_at or holder.claimed_at)
        looked_ms = (parse_time(now) - served).total_seconds() * 1000
        if looked_ms < self.min_look_ms:
            raise InvalidDecision(
                f"too soon: decided {max(0, round(looked_ms))} ms after the fine was shown; "
                f"look at the photo for at least {self.min_look_ms} ms"
            )
        if (record.state == WITHDRAWN) != (outcome.decision == ACKNOWLEDGED):
            raise InvalidDecision(
                "this fine was withdrawn after your decision: it can only be closed"
                if record.state == WITHDRAWN
                else "only a fine withdrawn after a decision is closed"
            )
        note = decision.note.strip()[:MAX_NOTE_CHARACTERS] or None
        if outcome.reason == "other" and note is None:
            raise InvalidDecision("a rejection for another reason needs a note")
        return Review(
            review_id=rid,
            fine_id=decision.fine_id,
            revision=decision.revision,
            decision=outcome.decision,
            license_plate=outcome.license_plate,
            reader_plate=latest.license_plate,
            reason=outcome.reason,
            note=note,
            reviewer=reviewer,
            opened_at=holder.claimed_at,
            decided_at=now,
        )


def _renamed(notice: dict, new_id: str) -> dict:
    """The notice under another id, its digest recomputed over it."""
    renamed = {k: v for k, v in notice.items() if k != "record_sha256"}
    renamed["notice_id"] = new_id
    renamed["record_sha256"] = record_sha256(renamed)
    return renamed


def _outcome(fine: Fine, decision: Decision) -> Outcome:
    """What the officer's action means on this revision; InvalidDecision if nothing."""
    if decision.action == ACKNOWLEDGE:
        return Outcome(ACKNOWLEDGED)
    if decision.action == PLATE:
        try:
            plate = validate_typed_plate(decision.plate)
        except ValueError as error:
            raise InvalidDecision(str(error)) from error
        return Outcome(CONFIRMED if plate == fine.license_plate else CORRECTED, plate)
    if decision.action in REJECT_REASONS:
        return Outcome(REJECTED, reason=decision.action)
    raise InvalidDecision(f"unknown action {decision.action[:32]!r}")


def _same_or_conflict(earlier: Review, rid: str) -> Review:
    if earlier.review_id == rid:
        return earlier  # a retried POST: recorded once, answered alike
    what = earlier.decision
    if earlier.license_plate:
        what += f" as {earlier.license_plate}"
    elif earlier.reason:
        what += f" ({REJECT_REASONS.get(earlier.reason, earlier.reason)})"
    raise DecisionConflict(f"already {what} by {earlier.reviewer} at {earlier.decided_at}")


__all__ = [
    "ACKNOWLEDGE",
    "PLATE",
    "Decision",
    "DecisionConflict",
    "Desk",
    "FineNotFound",
    "FineView",
    "InvalidDecision",
    "UndoRefused",
]
