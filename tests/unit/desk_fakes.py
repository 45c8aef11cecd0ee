"""The desk's unit tests: the real store on a fresh PostgreSQL database (tests/pg.py), an
in-memory photo source and topic, and helpers to look at what the desk recorded.
The browser and demo tests run the same desk on the emulators.
"""

import dataclasses
import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from desk import db
from desk.app import DeskConfig, create_app
from desk.services import Services
from desk.store import DeskStore, Fine
from section_speed.domain.rules import SectionRule
from section_speed.domain.schemas import output_record
from tests.helpers import ENTRY, EXIT, T0_MS, measured, track
from tests.pg import fresh_database

BUCKET = "evidence"
NOW = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)


class _Fines:
    """`store.fines.append(row)`: a fines record arriving (ingested as from the topic)."""

    def __init__(self, store: DeskStore) -> None:
        self._store = store

    def append(self, row: dict) -> None:
        self._store.ingest(Fine.from_record(row))

    def __iadd__(self, rows: list[dict]) -> "_Fines":
        for row in rows:
            self.append(row)
        return self


class StoreProbe(DeskStore):
    """The desk's store on its own database, plus what tests read back (as the owner)."""

    def __init__(self, config: db.DatabaseConfig) -> None:
        super().__init__(db.engine(config))
        self.config = config
        self.fines = _Fines(self)

    def rows(self, sql: str, **params: Any) -> list[dict]:
        with self.engine.connect() as connection:
            return [dict(r) for r in connection.execute(sa.text(sql), params).mappings()]

    @property
    def reviews_(self) -> list[dict]:
        return self.rows("SELECT * FROM decisions ORDER BY decided_at, review_id")

    @property
    def notices(self) -> list[dict]:
        rows = self.rows("SELECT record FROM notices ORDER BY issued_at, notice_id")
        return [json.loads(r["record"]) if isinstance(r["record"], str) else r["record"]
                for r in rows]  # fmt: skip

    @property
    def claims_(self) -> list[dict]:
        return self.rows("SELECT * FROM claims ORDER BY claimed_at")


def new_store() -> StoreProbe:
    return StoreProbe(fresh_database())


class MemoryPhotos:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.reads: list[str] = []

    def read(self, object_name: str) -> bytes | None:
        self.reads.append(object_name)
        return self.objects.get(object_name)


class MemoryPublisher:
    """The notices topic: every message with its attributes, in publishing order."""

    def __init__(self) -> None:
        self.messages: list[tuple[dict, dict]] = []

    def publish(self, record, attributes) -> None:
        self.messages.append((dict(record), dict(attributes)))

    def close(self) -> None:
        pass

    @property
    def published(self) -> list[tuple[dict, str]]:
        """The notices (record, notice_id) published so far."""
        return [(r, a["notice_id"]) for r, a in self.messages if a.get("kind") == "notice"]


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


def make_app(
    store=None, photos=None, publisher=None, clock=None, iap_keys=None, push_certs=None, **config
):
    """The desk app on `store`'s database (a fresh one by default). Enter its lifespan
    (`with TestClient(app) as client`) before requests."""
    store = store or new_store()
    photos = photos or MemoryPhotos()
    publisher = publisher or MemoryPublisher()
    clock = clock or Clock()
    settings = {"project": "p", "bucket": BUCKET, "notices_topic": "notices"}
    settings |= {"token": "secret-token", "database": store.config, **config}
    services = Services(lambda: photos, lambda: publisher, lambda: None)
    app = create_app(
        DeskConfig(**settings), services, clock=clock, iap_keys=iap_keys, push_certs=push_certs
    )
    return app, store, photos, publisher, clock


def jpeg(size=(640, 480), colour=(200, 30, 30)) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG")
    return out.getvalue()


def with_photo(row: dict, photos: MemoryPhotos, data: bytes | None = None) -> dict:
    """The row with its photo stored in `photos` under the name the pipeline gives it."""
    import hashlib

    from section_speed.domain.events import parse_rfc3339_ms
    from section_speed.domain.evidence import photo_object_name

    name = photo_object_name(row["radar_id"], parse_rfc3339_ms(row["entry_time"]), row["fine_id"])
    photos.objects[name] = data or jpeg()
    return {
        **row,
        "image_url": f"gs://{BUCKET}/{name}",
        "image_sha256": hashlib.sha256(photos.objects[name]).hexdigest(),
    }


def add_and_decide_one(store: StoreProbe):
    """One fine with its photo, claimed and confirmed by alice: its Review."""
    from desk.store import QueueFilter
    from desk.workflow import Decision, Desk

    desk = Desk(store, MemoryPhotos(), BUCKET, clock=Clock(), min_look_ms=0)
    store.fines.append(with_photo(fine_row(), desk.photos))
    fine_id = desk.next_fine("alice", QueueFilter())
    view = desk.view(fine_id)
    decision = Decision(fine_id, 0, view.holder.claim_id, "plate", view.fine.license_plate or "",
                        photo_sha256=view.fine.image_sha256 or "")  # fmt: skip
    return desk.decide("alice", decision)
