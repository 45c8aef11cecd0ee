"""An in-memory DeskStore, photo source and publisher for the desk's unit tests only.

The interface is small; the browser test runs the BigQuery store on the emulator.
"""

import dataclasses
import itertools
from datetime import UTC, datetime, timedelta

from desk.app import DeskConfig, create_app
from desk.services import Services
from desk.store import QueueEntry, QueueFilter, latest_revision, queue_state
from section_speed.domain.rules import SectionRule
from section_speed.domain.schemas import output_record
from tests.helpers import ENTRY, EXIT, T0_MS, measured, track

BUCKET = "evidence"
NOW = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)


class MemoryStore:
    def __init__(self) -> None:
        self.fines: list[dict] = []
        self.reviews_: list[dict] = []
        self.claims_: list[dict] = []
        self.notices: list[dict] = []

    def queue(self, filters: QueueFilter, limit: int) -> list[QueueEntry]:
        by_id: dict[str, list[dict]] = {}
        for row in self.fines:
            by_id.setdefault(row["fine_id"], []).append(row)
        latest = [latest_revision(rows) for rows in by_id.values()]
        superseded = {s for row in latest for s in row.get("supersedes") or []}
        entries = []
        for fine in sorted(latest, key=lambda r: (r["exit_time"], r["fine_id"])):
            confidence = fine.get("plate_confidence") or 0.0
            if fine["fine_id"] in superseded:
                continue
            if filters.radar_id is not None and fine["radar_id"] != filters.radar_id:
                continue
            if filters.day is not None and fine["exit_time"][:10] != filters.day.isoformat():
                continue
            if filters.min_confidence is not None and confidence < filters.min_confidence:
                continue
            if filters.max_confidence is not None and confidence > filters.max_confidence:
                continue
            reviews = [r for r in self.reviews_ if r["fine_id"] == fine["fine_id"]]
            last = max(reviews, key=lambda r: (r["revision"], r["decided_at"]), default=None)
            state = queue_state(fine, last)
            if state is not None:
                entries.append(QueueEntry(fine, state, last))
        return entries[:limit]

    def fine_revisions(self, fine_id: str) -> list[dict]:
        rows = [r for r in self.fines if r["fine_id"] == fine_id]
        return sorted(rows, key=lambda r: (r["revision"], r["processed_at"]))

    def reviews(self, fine_id: str) -> list[dict]:
        return [r for r in self.reviews_ if r["fine_id"] == fine_id]

    def review(self, review_id: str) -> dict | None:
        return next((r for r in self.reviews_ if r["review_id"] == review_id), None)

    def add_review(self, review: dict) -> None:
        self.reviews_.append(dict(review))

    def claims(self, fine_ids, now: str) -> list[dict]:
        return [c for c in self.claims_ if c["fine_id"] in fine_ids and c["expires_at"] > now]

    def add_claim(self, claim: dict) -> None:
        self.claims_.append(dict(claim))

    def notice(self, notice_id: str) -> dict | None:
        return next((n for n in self.notices if n["notice_id"] == notice_id), None)

    def add_notice(self, notice: dict) -> None:
        self.notices.append(dict(notice))

    def reviews_without_notice(self) -> list[dict]:
        issued = {(n["fine_id"], n["revision"]) for n in self.notices}
        return [
            r
            for r in self.reviews_
            if r["decision"] in ("confirmed", "corrected")
            and (r["fine_id"], r["revision"]) not in issued
        ]


class MemoryPhotos:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.reads: list[str] = []

    def read(self, object_name: str) -> bytes | None:
        self.reads.append(object_name)
        return self.objects.get(object_name)


class MemoryPublisher:
    def __init__(self) -> None:
        self.published: list[tuple[dict, str]] = []

    def publish(self, record, notice_id: str) -> None:
        self.published.append((dict(record), notice_id))


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


_minutes = itertools.count()


def fine_row(
    vehicle: str = "v1",
    kmh: float = 90.0,
    *,
    minute: int | None = None,
    plate: str | None = "ABC1234",
    confidence: float | None = 0.97,
    radar: str = "radar-1",
    revision: int = 0,
    **evidence,
) -> dict:
    """A realistic fines row, built as the pipeline builds it."""
    start = T0_MS + (next(_minutes) if minute is None else minute) * 60_000
    traversal = measured(
        track(vehicle, kmh, start_ms=start, radar_id=radar), SectionRule(entry=ENTRY, exit=EXIT)
    )
    traversal = dataclasses.replace(traversal, revision=revision)
    values = {"license_plate": plate, "plate_confidence": confidence, "plate_reader": "embedded"}
    return output_record(traversal, start + 60_000 + revision, {**values, **evidence})


def make_app(store=None, photos=None, publisher=None, clock=None, iap_keys=None, **config):
    store = store or MemoryStore()
    photos = photos or MemoryPhotos()
    publisher = publisher or MemoryPublisher()
    clock = clock or Clock()
    settings = {"project": "p", "bq_dataset": "d", "bucket": BUCKET, "notices_topic": "notices"}
    settings |= {"token": "secret-token", **config}
    services = Services(lambda: store, lambda: photos, lambda: publisher)
    app = create_app(DeskConfig(**settings), services, clock=clock, iap_keys=iap_keys)
    return app, store, photos, publisher, clock
