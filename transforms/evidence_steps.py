"""The four evidence steps of EnrichFine, as DoFns over FineEvidence.

FetchPhotoFn -> StorePhotoFn -> (batched) ReadPlatesFn -> RecordReadingFn; why in this
order is told in transforms/enrich.py and docs/evidence.md.
"""

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms import window

from section_speed.clients.cars_api import CarsApiClient, EvidenceRejected, EvidenceUnavailable
from section_speed.clients.evidence_store import EvidenceStore, StoredPhoto
from section_speed.clients.images import InvalidImage, check_image
from section_speed.clients.plate_readers import PlateReader
from section_speed.domain.evidence import sha256_hex
from section_speed.domain.plate_reading import PlateReading
from section_speed.domain.schemas import output_record
from section_speed.domain.traversal import Traversal
from transforms.evidence_services import EvidenceServices
from transforms.failures import (
    FETCH_PHOTO_STAGE,
    READ_PLATE_STAGE,
    STORE_PHOTO_STAGE,
    DeadLetterStage,
    Failure,
    failed,
)
from transforms.fine_evidence import FineEvidence
from transforms.worker_clients import ClientHandler

_log = logging.getLogger(__name__)

# A reading that failed (service error, reader crash) is tried again this many times in
# all, waiting PLATE_READ_BACKOFF_S, then twice that, between tries.
PLATE_READ_ATTEMPTS = 3
PLATE_READ_BACKOFF_S = 1.0
# The output of FetchPhotoFn and StorePhotoFn for a fine whose stored photo already has
# its recorded reading: complete, it skips the plate reading.
STORED_WITH_READING = "stored"
T = TypeVar("T")


def _failure(
    evidence: FineEvidence, stage: DeadLetterStage, reason: str
) -> beam.pvalue.TaggedOutput:
    traversal = evidence.traversal
    return failed(
        Failure.of_record(
            stage.name,
            reason,
            output_record(traversal, int(time.time() * 1000)),
            fine_id=traversal.traversal_id,
            vehicle_id=traversal.vehicle_id,
        )
    )


def _stage_failed(evidence: FineEvidence, stage: DeadLetterStage, reason: str) -> Iterator[Any]:
    """A fetch or store that failed: its dead letter, and the fine going on with the error."""
    yield _failure(evidence, stage, reason)
    yield evidence.failed(stage.local_name, reason)


def _acquire(handler: ClientHandler[T] | None) -> T | None:
    """The process's client of an optional service (the evidence store without a bucket)."""
    return handler.acquire() if handler else None


def _release(handler: ClientHandler[T] | None, client: T | None) -> None:
    """Give back what `acquire` gave (a DoFn's teardown); None, for the DoFn to keep."""
    if handler is not None and client is not None:
        handler.release(client)


def _with_stored_bytes(evidence: FineEvidence, stored: StoredPhoto, photo: bytes) -> FineEvidence:
    """The evidence to read: the stored object's bytes, named by their own digest."""
    digest = sha256_hex(photo)
    if stored.sha256 and stored.sha256 != digest:
        _log.warning(
            "%s holds bytes with sha256 %s, its metadata says %s: the bytes are the evidence",
            stored.url,
            digest,
            stored.sha256,
        )
    return replace(evidence, photo=photo, stored=replace(stored, sha256=digest))


def _at_exit_time(evidence: FineEvidence) -> window.TimestampedValue:
    # Batches are stamped by the batching step; each fine goes on at its own time.
    return window.TimestampedValue(evidence, evidence.traversal.exit_time_ms / 1000)


class FetchPhotoFn(beam.DoFn):
    """Traversal -> FineEvidence with the photo to read, or complete when already stored."""

    def __init__(self, services: EvidenceServices) -> None:
        self.services = services
        self.cars_api: CarsApiClient | None = None
        self.store: EvidenceStore | None = None
        self.fetched = Metrics.counter(self.__class__, "photos_fetched")
        self.reused = Metrics.counter(self.__class__, "evidence_reused")
        self.failed = Metrics.counter(self.__class__, "photo_failures")
        self.lookup_failures = Metrics.counter(self.__class__, "evidence_lookup_failures")

    def setup(self) -> None:
        self.cars_api = self.services.cars_api.acquire()
        self.store = _acquire(self.services.evidence_store)

    def teardown(self) -> None:
        self.cars_api = _release(self.services.cars_api, self.cars_api)
        self.store = _release(self.services.evidence_store, self.store)

    def process(self, traversal: Traversal) -> Iterator[Any]:
        evidence = FineEvidence(traversal)
        try:
            stored = self.store.find(evidence.object_name) if self.store else None
        except Exception as error:  # storage down: fetch as usual; the store step retries
            stored = None
            self.lookup_failures.inc()
            _log.warning("stored evidence lookup failed, fetching: %s", str(error)[:300])
        if stored is not None and stored.reading is not None:
            self.reused.inc()
            yield beam.pvalue.TaggedOutput(
                STORED_WITH_READING, replace(evidence, stored=stored, reading=stored.reading)
            )
            return
        if stored is not None:  # stored, never read successfully: read those very bytes
            yield from self._stored_bytes(evidence, stored)
            return
        try:
            photo = self.cars_api.fetch(traversal.vehicle_id)
            info = check_image(photo.data, self.cars_api.max_image_bytes)
        except (EvidenceUnavailable, EvidenceRejected, InvalidImage) as error:
            self.failed.inc()
            reason = f"{type(error).__name__}: {error}"
            yield from _stage_failed(evidence, FETCH_PHOTO_STAGE, reason)
            return
        self.fetched.inc()
        yield replace(
            evidence, photo=photo.data, photo_url=photo.url, content_type=info.content_type
        )

    def _stored_bytes(self, evidence: FineEvidence, stored: StoredPhoto) -> Iterator[Any]:
        try:
            photo = self.store.read(evidence.object_name)
        except Exception as error:  # after the library's retries: no photo to read
            self.failed.inc()
            reason = f"{type(error).__name__}: {error}"[:1000]
            yield from _stage_failed(replace(evidence, stored=stored), FETCH_PHOTO_STAGE, reason)
            return
        self.reused.inc()
        yield _with_stored_bytes(evidence, stored, photo)


class StorePhotoFn(beam.DoFn):
    """Store the photo at gs://BUCKET/fines/RADAR/DATE/FINE_ID.jpg unless one is stored.

    When another attempt stored first, its photo is the evidence: its recorded reading is
    taken (complete, tagged STORED_WITH_READING), or its bytes go on to be read.
    """

    def __init__(self, services: EvidenceServices) -> None:
        self.services = services
        self.store: EvidenceStore | None = None
        self.stored = Metrics.counter(self.__class__, "photos_stored")
        self.found = Metrics.counter(self.__class__, "photos_already_stored")
        self.failed = Metrics.counter(self.__class__, "store_failures")

    def setup(self) -> None:
        self.store = _acquire(self.services.evidence_store)

    def teardown(self) -> None:
        self.store = _release(self.services.evidence_store, self.store)

    def process(self, evidence: FineEvidence) -> Iterator[Any]:
        if evidence.photo is None or self.store is None or evidence.stored is not None:
            yield evidence
            return
        try:
            stored = self.store.store(
                evidence.object_name, evidence.photo, evidence.content_type or "image/jpeg"
            )
            if not stored.created and stored.reading is None:
                photo = self.store.read(evidence.object_name)
        except Exception as error:  # after the storage library's own retries
            self.failed.inc()
            # The fine goes on to be read as fetched, known by its cars API URL.
            reason = f"{type(error).__name__}: {error}"[:1000]
            yield from _stage_failed(evidence, STORE_PHOTO_STAGE, reason)
            return
        if stored.created:
            self.stored.inc()
            yield replace(evidence, stored=stored)
            return
        self.found.inc()
        if stored.reading is not None:
            complete = replace(evidence, photo=None, stored=stored, reading=stored.reading)
            yield beam.pvalue.TaggedOutput(STORED_WITH_READING, complete)
            return
        yield _with_stored_bytes(evidence, stored, photo)


class ReadPlatesFn(beam.DoFn):
    """A batch of FineEvidence -> each with its PlateReading (one reader call per try).

    A reading that failed is tried again; a fine with no reading after PLATE_READ_ATTEMPTS
    is dead-lettered (read_plate), never published with a guessed or missing plate.
    """

    def __init__(
        self,
        services: EvidenceServices,
        attempts: int = PLATE_READ_ATTEMPTS,
        backoff_s: float = PLATE_READ_BACKOFF_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.services = services
        self.reader: PlateReader | None = None
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.read = Metrics.counter(self.__class__, "plates_read")
        self.unreadable = Metrics.counter(self.__class__, "plates_unreadable")
        self.retried = Metrics.counter(self.__class__, "plate_reads_retried")
        self.dead_lettered = Metrics.counter(self.__class__, "plate_reads_exhausted")
        self.batch_sizes = Metrics.distribution(self.__class__, "plate_batch_size")

    def setup(self) -> None:
        self.reader = self.services.plate_reader.acquire()

    def teardown(self) -> None:
        self.reader = _release(self.services.plate_reader, self.reader)

    def process(self, items: Iterable[FineEvidence]) -> Iterator[Any]:
        batch = list(items)  # GroupIntoBatches gives an iterable, BatchElements a list
        self.batch_sizes.update(len(batch))
        with_photo = [evidence for evidence in batch if evidence.photo is not None]
        readings = self._read_with_retries([evidence.photo for evidence in with_photo])
        for evidence, (reading, error) in zip(with_photo, readings, strict=True):
            if reading is None:
                self.dead_lettered.inc()
                reason = f"no plate reading after {self.attempts} attempts: {error}"[:1000]
                yield _failure(evidence, READ_PLATE_STAGE, reason)
                continue
            counter = self.read if reading.license_plate else self.unreadable
            counter.inc()
            yield _at_exit_time(replace(evidence, reading=reading))
        yield from (_at_exit_time(evidence) for evidence in batch if evidence.photo is None)

    def _read_with_retries(
        self, photos: list[bytes | None]
    ) -> list[tuple[PlateReading | None, str | None]]:
        """(reading, None) for each photo read, (None, last error) for each never read."""
        results: list[tuple[PlateReading | None, str | None]] = [(None, None)] * len(photos)
        pending = list(range(len(photos)))
        for attempt in range(self.attempts):
            if not pending:
                break
            if attempt:
                self.retried.inc(len(pending))
                self.sleep(self.backoff_s * 2 ** (attempt - 1))
            crash = "the reader gave no reading"
            try:
                readings = list(self.reader.read([photos[i] for i in pending]))
            except Exception as error:  # a reader bug must not lose the fines: try again
                readings = [None] * len(pending)
                crash = f"{type(error).__name__}: {error}"
            failed = []
            for index, reading in zip(pending, readings, strict=True):
                if reading is not None and reading.error is None:
                    results[index] = (reading, None)
                else:
                    failed.append(index)
                    results[index] = (None, reading.error if reading is not None else crash)
            pending = failed
        return results


class RecordReadingFn(beam.DoFn):
    """Record each successful reading on its stored photo; the recorded reading wins."""

    def __init__(self, services: EvidenceServices) -> None:
        self.services = services
        self.store: EvidenceStore | None = None
        self.record_failures = Metrics.counter(self.__class__, "reading_record_failures")

    def setup(self) -> None:
        self.store = _acquire(self.services.evidence_store)

    def teardown(self) -> None:
        self.store = _release(self.services.evidence_store, self.store)

    def process(self, evidence: FineEvidence) -> Iterator[FineEvidence]:
        if self.store is None or evidence.stored is None or evidence.reading is None:
            yield evidence
            return
        try:
            recorded = self.store.record_reading(
                evidence.object_name, evidence.reading, evidence.stored.sha256
            )
        except Exception as error:  # the reading is of these bytes; a later revision records
            self.record_failures.inc()
            _log.warning("plate reading not recorded on %s: %s", evidence.stored.url, error)
            yield evidence
            return
        yield replace(evidence, reading=recorded)
