"""EnrichFine: the evidence for each fine (photo, plate, stored image), and nothing else.

    fined Traversal -> FetchPhoto (cars API) -> ReadPlates (batched) -> StorePhoto (GCS)
                    -> fine record with license_plate, plate_confidence, plate_reader,
                       image_url (gs://) and image_sha256

Only fines come here: vehicles under the limit are never photographed nor read. A stage
that fails (after its client's bounded retries) does not stop the fine: the fine goes on
with what is known and `evidence_error` saying what is missing, and a dead-letter record
names the stage. A fine is never lost because its evidence failed.
"""

import functools
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms import window

from pipeline.clients.cars_api import CarsApiClient, EvidenceRejected, EvidenceUnavailable
from pipeline.clients.images import InvalidImage, check_image
from pipeline.clients.plate_readers import PlateReader, shared_plate_reader
from pipeline.domain.evidence import evidence_fields, photo_object_name
from pipeline.domain.plates import PlateReading
from pipeline.domain.schemas import dead_letter_record, fine_record
from pipeline.domain.speed import Traversal

DEAD_LETTER = "dead_letter"
FETCH_STAGE, READ_STAGE, STORE_STAGE = "fetch_photo", "read_plate", "store_photo"
OCR_BATCH_SIZE = 8


@dataclass(frozen=True)
class EvidenceConfig:
    """Where the evidence comes from and goes; the knobs of the retries."""

    cars_api: str
    bucket: str
    project: str
    plate_reader: str
    min_confidence: float
    fetch_attempts: int = 6  # 0.5+1+2+4+8 s of backoff: rides out a ~15 s outage
    fetch_backoff_s: float = 0.5


@dataclass(frozen=True)
class FineEvidence:
    """A fine on its way through the evidence stages; `error` keeps the first failure."""

    traversal: Traversal
    photo: bytes | None = None
    content_type: str | None = None
    reading: PlateReading | None = None
    image_url: str | None = None
    image_sha256: str | None = None
    error: str | None = None

    def failed(self, stage: str, reason: str) -> "FineEvidence":
        return replace(self, error=self.error or f"{stage}: {reason}")


# Clients are made once per worker process: Beam's direct runner calls DoFn.setup for
# every bundle, and Dataflow runs several DoFn instances per process. Both clients are
# safe to share between threads.
@functools.cache
def _cars_api_client(base_url: str, attempts: int, backoff_s: float) -> CarsApiClient:
    return CarsApiClient(base_url, attempts=attempts, backoff_s=backoff_s)


@functools.cache
def _evidence_store(bucket: str, project: str, _endpoint: str | None) -> Any:
    from pipeline.clients.evidence_store import (
        EvidenceStore,  # google-cloud-storage, on workers only
    )

    return EvidenceStore(bucket, project)


def _dead_letter(evidence: FineEvidence, stage: str, reason: str) -> beam.pvalue.TaggedOutput:
    traversal = evidence.traversal
    now_ms = int(time.time() * 1000)
    payload = json.dumps(fine_record(traversal, now_ms), separators=(",", ":"))
    attributes = {"fine_id": traversal.traversal_id, "vehicle_id": traversal.vehicle_id}
    record = dead_letter_record(
        stage=f"enrich_fine/{stage}",
        error=reason,
        payload=payload,
        attributes=attributes,
        timestamp_ms=now_ms,
    )
    return beam.pvalue.TaggedOutput(DEAD_LETTER, record)


class FetchPhotoFn(beam.DoFn):
    """Traversal -> FineEvidence with the vehicle's photo from the cars API."""

    def __init__(self, config: EvidenceConfig) -> None:
        self.config = config
        self.fetched = Metrics.counter(self.__class__, "photos_fetched")
        self.failed = Metrics.counter(self.__class__, "photo_failures")
        self.client: CarsApiClient | None = None

    def setup(self) -> None:  # one HTTP session (connection pool) per worker process
        config = self.config
        self.client = _cars_api_client(
            config.cars_api, config.fetch_attempts, config.fetch_backoff_s
        )

    def process(self, traversal: Traversal) -> Iterator[Any]:
        evidence = FineEvidence(traversal)
        assert self.client is not None
        try:
            photo = self.client.photo(traversal.vehicle_id)
            info = check_image(photo, self.client.max_image_bytes)
        except (EvidenceUnavailable, EvidenceRejected, InvalidImage) as error:
            self.failed.inc()
            reason = f"{type(error).__name__}: {error}"
            yield _dead_letter(evidence, FETCH_STAGE, reason)
            yield evidence.failed(FETCH_STAGE, reason)
            return
        self.fetched.inc()
        yield replace(evidence, photo=photo, content_type=info.content_type)


class ReadPlatesFn(beam.DoFn):
    """A batch of FineEvidence -> each with its PlateReading (the reader loads once)."""

    def __init__(self, config: EvidenceConfig) -> None:
        self.config = config
        self.read = Metrics.counter(self.__class__, "plates_read")
        self.unreadable = Metrics.counter(self.__class__, "plates_unreadable")
        self.reader: PlateReader | None = None

    def setup(self) -> None:
        self.reader = shared_plate_reader(self.config.plate_reader, self.config.min_confidence)

    def process(self, batch: list[FineEvidence]) -> Iterator[Any]:
        assert self.reader is not None
        with_photo = [evidence for evidence in batch if evidence.photo is not None]
        try:
            readings = self.reader.read([evidence.photo for evidence in with_photo])  # type: ignore[misc]
        except Exception as error:  # a reader bug must not lose the fines: each one goes on
            reason = f"{type(error).__name__}: {error}"
            readings = [None] * len(with_photo)
            for evidence in with_photo:
                yield _dead_letter(evidence, READ_STAGE, reason)
            with_photo = [evidence.failed(READ_STAGE, reason) for evidence in with_photo]
        for evidence, reading in zip(with_photo, readings, strict=True):
            if reading is not None and reading.error:
                yield _dead_letter(evidence, READ_STAGE, reading.error)
                evidence = evidence.failed(READ_STAGE, reading.error)
            counter = self.read if reading and reading.license_plate else self.unreadable
            counter.inc()
            yield replace(evidence, reading=reading)
        yield from (evidence for evidence in batch if evidence.photo is None)


class StorePhotoFn(beam.DoFn):
    """Store the photo at gs://BUCKET/fines/RADAR/DATE/FINE_ID.jpg (once per fine)."""

    def __init__(self, config: EvidenceConfig) -> None:
        self.config = config
        self.stored = Metrics.counter(self.__class__, "photos_stored")
        self.failed = Metrics.counter(self.__class__, "store_failures")
        self.store: Any = None

    def setup(self) -> None:
        endpoint = os.environ.get("STORAGE_EMULATOR_HOST")  # a new stack, a new client
        self.store = _evidence_store(self.config.bucket, self.config.project, endpoint)

    def process(self, evidence: FineEvidence) -> Iterator[Any]:
        if evidence.photo is None:
            yield evidence
            return
        traversal = evidence.traversal
        try:
            name = photo_object_name(
                traversal.radar_id, traversal.entry_time_ms, traversal.traversal_id
            )
            stored = self.store.store(name, evidence.photo, evidence.content_type or "image/jpeg")
        except Exception as error:  # after the storage library's own retries
            self.failed.inc()
            reason = f"{type(error).__name__}: {error}"[:1000]
            yield _dead_letter(evidence, STORE_STAGE, reason)
            yield evidence.failed(STORE_STAGE, reason)
            return
        self.stored.inc()
        yield replace(evidence, image_url=stored.url, image_sha256=stored.sha256)


def to_fine_record(evidence: FineEvidence) -> dict[str, Any]:
    fields = evidence_fields(
        evidence.reading, evidence.image_url, evidence.image_sha256, evidence.error
    )
    return fine_record(evidence.traversal, int(time.time() * 1000), fields)


def _at_exit_time(evidence: FineEvidence) -> window.TimestampedValue:
    # BatchElements stamps its batches at the end of the window; back to the fine's own time.
    return window.TimestampedValue(evidence, evidence.traversal.exit_time_ms / 1000)


class EnrichFine(beam.PTransform):
    """Fined traversals -> (fine records with evidence, dead-letter records)."""

    def __init__(self, config: EvidenceConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, fines: beam.PCollection) -> tuple[beam.PCollection, beam.PCollection]:
        config = self.config
        fetched = (
            fines
            # One window for all fines, so that BatchElements can put several in one OCR call.
            | "GlobalWindow" >> beam.WindowInto(window.GlobalWindows())
            | "FetchPhoto" >> beam.ParDo(FetchPhotoFn(config)).with_outputs(DEAD_LETTER, main="ok")
        )
        read = (
            fetched.ok
            | "BatchForOcr" >> beam.BatchElements(min_batch_size=1, max_batch_size=OCR_BATCH_SIZE)
            | "ReadPlates" >> beam.ParDo(ReadPlatesFn(config)).with_outputs(DEAD_LETTER, main="ok")
        )
        stored = (
            read.ok
            | "RestoreTimestamps" >> beam.Map(_at_exit_time)
            | "StorePhoto" >> beam.ParDo(StorePhotoFn(config)).with_outputs(DEAD_LETTER, main="ok")
        )
        records = stored.ok | "ToFineRecord" >> beam.Map(to_fine_record)
        dead_letters = (
            fetched[DEAD_LETTER],
            read[DEAD_LETTER],
            stored[DEAD_LETTER],
        ) | "EvidenceDeadLetters" >> beam.Flatten()
        return records, dead_letters
