"""The four evidence steps of EnrichFine, as DoFns over FineEvidence.

FetchPhotoFn -> StorePhotoFn -> (batched) ReadPlatesFn -> RecordReadingFn; why in this
order is told in transforms/enrich.py and docs/evidence.md.

Each step catches what it means (docs/evidence.md, Failures): a service that is down, over
quota or not granted is an outage, waited out or raised so that the runner retries the
bundle; a refusal about one photo is that fine's dead letter, with its stack trace; any
other exception is a bug, and raises.
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
from section_speed.clients.evidence_store import (
    OUTAGE_ERRORS,
    REFUSED_ERRORS,
    EvidenceStore,
    StoredPhoto,
    unavailable,
)
from section_speed.clients.images import InvalidImage, check_image
from section_speed.clients.plate_readers import PlateReader
from section_speed.domain.evidence import sha256_hex
from section_speed.domain.plate_reading import PlateReaderUnavailable, PlateReading
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

# A photo the reader gave no reading of (its error is about that photo) is tried again this
# many times in all, waiting PLATE_READ_BACKOFF_S, then twice that, between tries.
PLATE_READ_ATTEMPTS = 3
PLATE_READ_BACKOFF_S = 1.0
# A reader that cannot read at all (PlateReaderUnavailable) is waited for this long within
# one call of `process`, polling from READER_POLL_S doubling to READER_POLL_MAX_S; then the
# bundle fails and the runner retries it (docs/evidence.md, Failures).
READER_OUTAGE_WAIT_S = 60.0
READER_POLL_S = 1.0
READER_POLL_MAX_S = 8.0
# The output of FetchPhotoFn and StorePhotoFn for a fine whose stored photo already has
# its recorded reading: complete, it skips the plate reading.
STORED_WITH_READING = "stored"
T = TypeVar("T")


def _failure(
    evidence: FineEvidence,
    stage: DeadLetterStage,
    reason: str,
    error: BaseException | None = None,
) -> beam.pvalue.TaggedOutput:
    traversal = evidence.traversal
    return failed(
        Failure.of_record(
            stage,
            reason,
            output_record(traversal, int(time.time() * 1000)),
            error,
            fine_id=traversal.traversal_id,
            vehicle_id=traversal.vehicle_id,
        )
    )


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:1000]


def _store_unavailable(store: EvidenceStore, error: Exception) -> Exception:
    """What a step raises for a storage outage: the runner retries the bundle."""
    return unavailable(error, getattr(store, "bucket_name", "BUCKET"))


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
        self.unavailable = Metrics.counter(self.__class__, "evidence_store_unavailable")

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
        except (*OUTAGE_ERRORS, *REFUSED_ERRORS) as error:
            # Only a shortcut: the photo is fetched as usual; StorePhoto stores it or waits.
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
            # No photo at all: the fine goes on with the error (nothing unstored is read).
            self.failed.inc()
            reason = _reason(error)
            yield _failure(evidence, FETCH_PHOTO_STAGE, reason, error)
            yield evidence.failed(FETCH_PHOTO_STAGE.local_name, reason)
            return
        self.fetched.inc()
        yield replace(
            evidence, photo=photo.data, photo_url=photo.url, content_type=info.content_type
        )

    def _stored_bytes(self, evidence: FineEvidence, stored: StoredPhoto) -> Iterator[Any]:
        try:
            photo = self.store.read(evidence.object_name)
        except OUTAGE_ERRORS as error:
            self.unavailable.inc()
            raise _store_unavailable(self.store, error) from error
        except REFUSED_ERRORS as error:  # the stored photo is gone: no evidence to read
            self.failed.inc()
            yield _failure(
                replace(evidence, stored=stored), FETCH_PHOTO_STAGE, _reason(error), error
            )
            return
        self.reused.inc()
        yield _with_stored_bytes(evidence, stored, photo)


class StorePhotoFn(beam.DoFn):
    """Store the photo at gs://BUCKET/fines/RADAR/DATE/FINE_ID.jpg unless one is stored.

    When another attempt stored first, its photo is the evidence: its recorded reading is
    taken (complete, tagged STORED_WITH_READING), or its bytes go on to be read. A photo
    that could not be stored goes no further: storage down or not granted raises
    (EvidenceStoreUnavailable, for the runner to retry); a refusal of this object is its
    dead letter.
    """

    def __init__(self, services: EvidenceServices) -> None:
        self.services = services
        self.store: EvidenceStore | None = None
        self.stored = Metrics.counter(self.__class__, "photos_stored")
        self.found = Metrics.counter(self.__class__, "photos_already_stored")
        self.failed = Metrics.counter(self.__class__, "store_failures")
        self.unavailable = Metrics.counter(self.__class__, "evidence_store_unavailable")

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
        except OUTAGE_ERRORS as error:  # after the storage library's own retries
            # Never read nor published unstored: the bundle fails, the runner retries it.
            self.unavailable.inc()
            raise _store_unavailable(self.store, error) from error
        except REFUSED_ERRORS as error:  # this object refused: the fine's dead letter
            self.failed.inc()
            yield _failure(evidence, STORE_PHOTO_STAGE, _reason(error), error)
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

    A photo the reader gave no reading of is tried again; one with no reading after
    PLATE_READ_ATTEMPTS is dead-lettered (read_plate), never published with a guessed or
    missing plate. A reader that cannot read at all (PlateReaderUnavailable: down, over
    quota, not granted) is no photo's fault: it is waited for, up to
    READER_OUTAGE_WAIT_S, and then the exception fails the bundle, so that the runner
    retries the batch, which its batching state still holds, until the reader is back.
    """

    def __init__(
        self,
        services: EvidenceServices,
        attempts: int = PLATE_READ_ATTEMPTS,
        backoff_s: float = PLATE_READ_BACKOFF_S,
        sleep: Callable[[float], None] = time.sleep,
        outage_wait_s: float = READER_OUTAGE_WAIT_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.services = services
        self.reader: PlateReader | None = None
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.sleep = sleep
        self.outage_wait_s = outage_wait_s
        self.monotonic = monotonic
        self.read = Metrics.counter(self.__class__, "plates_read")
        self.unreadable = Metrics.counter(self.__class__, "plates_unreadable")
        self.retried = Metrics.counter(self.__class__, "plate_reads_retried")
        self.dead_lettered = Metrics.counter(self.__class__, "plate_reads_exhausted")
        self.outages = Metrics.counter(self.__class__, "plate_reader_outages_waited")
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
            readings = self._read_when_the_reader_reads([photos[i] for i in pending])
            failed = []
            for index, reading in zip(pending, readings, strict=True):
                if reading.error is None:
                    results[index] = (reading, None)
                else:
                    failed.append(index)
                    results[index] = (None, reading.error)
            pending = failed
        return results

    def _read_when_the_reader_reads(self, photos: list[bytes | None]) -> list[PlateReading]:
        """The reader's readings; PlateReaderUnavailable once it has not read for
        `outage_wait_s` (the runner then retries the bundle)."""
        deadline, poll_s = None, READER_POLL_S
        while True:
            try:
                return list(self.reader.read(photos))
            except PlateReaderUnavailable as error:
                now = self.monotonic()
                if deadline is None:
                    deadline = now + self.outage_wait_s
                    self.outages.inc()
                    _log.warning("the plate reader cannot read (%s): the photos wait", error)
                if now >= deadline:
                    raise
                self.sleep(min(poll_s, deadline - now))
                poll_s = min(2 * poll_s, READER_POLL_MAX_S)


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
        except (*OUTAGE_ERRORS, *REFUSED_ERRORS) as error:
            # The reading is of these bytes all the same; a later revision records one.
            self.record_failures.inc()
            _log.warning("plate reading not recorded on %s: %s", evidence.stored.url, error)
            yield evidence
            return
        yield replace(evidence, reading=recorded)
