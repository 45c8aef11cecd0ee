"""EnrichFine: the evidence for each fine (photo, plate, stored image), and nothing else.

    fined Traversal -> FetchPhoto (stored evidence first, else the cars API)
                    -> StorePhoto (Cloud Storage: the first stored photo is the evidence)
                    -> BatchForPlates -> ReadPlates (from the evidence's own bytes)
                    -> RecordReading (on the stored object, once)
                    -> fine record with license_plate, plate_confidence, plate_reader,
                       image_url and image_sha256

Only fines come here: vehicles under the limit are never photographed nor read. The photo
is stored before its plate is read, and the plate is read from the stored bytes, so two
attempts or revisions of one fine racing with different photos (a fixed-URL cars API
may answer a random car) both end with the photo that was stored and its own reading. A
correction of a fine (same fine_id) reuses the stored evidence instead of fetching and
reading again. Without a bucket nothing is stored and `image_url` is the cars API's
photo URL.

A failed plate reading is not evidence: it is read again (PLATE_READ_ATTEMPTS in all),
and a fine still unread then is dead-lettered, not published; a later revision reads the
stored photo afresh. With a bucket, a photo that was not stored is neither read nor
published. An outage (storage or plate reader down, over quota, not granted) is waited
for briefly and then raised, so that the runner retries the bundle; a refusal about one
photo is its fine's Failure; a photo the cars API cannot give leaves the fine to go on
with `evidence_error` (docs/evidence.md, Failures).
"""

from typing import Any, NamedTuple

import apache_beam as beam

from transforms.batching import BatchForService
from transforms.evidence_services import EvidenceServices
from transforms.evidence_steps import (
    PLATE_READ_BACKOFF_S,
    STORED_WITH_READING,
    FetchPhotoFn,
    ReadPlatesFn,
    RecordReadingFn,
    StorePhotoFn,
)
from transforms.failures import FAILURES
from transforms.fine_evidence import FineEvidence, to_fine_record

PLATE_BATCH_SIZE = 8
# How long a fine may wait for others to share a plate-reader request (Cloud Vision takes
# up to 16 images a call). Streaming bundles after keyed steps are small: without a wait,
# every request would carry one image.
PLATE_BATCH_WAIT_S = 1.0


class FinesWithEvidence(NamedTuple):
    records: beam.PCollection  # fine records with their evidence (or evidence_error)
    failures: beam.PCollection  # Failures: enrich_fine/fetch_photo, store_photo, read_plate


class EnrichFine(beam.PTransform):
    """Fined traversals -> FinesWithEvidence(records, failures).

    `batch_wait_s`: how long a fine may wait for others to share a plate-reader call;
    None over bounded input, where batches fill without waiting. `read_backoff_s`: the
    first wait before a failed reading is tried again.
    """

    def __init__(
        self,
        services: EvidenceServices,
        batch_wait_s: float | None = PLATE_BATCH_WAIT_S,
        read_backoff_s: float = PLATE_READ_BACKOFF_S,
    ) -> None:
        super().__init__()
        self.services = services
        self.batch_wait_s = batch_wait_s
        self.read_backoff_s = read_backoff_s

    def expand(self, fines: beam.PCollection) -> Any:
        services = self.services
        # Fines come in the global window (MeasureTraversals leaves the sessions), so a
        # batch can hold fines of several traversals.
        fetched = fines | "FetchPhoto" >> beam.ParDo(FetchPhotoFn(services)).with_outputs(
            FAILURES, STORED_WITH_READING, main="ok"
        )
        stored = fetched.ok | "StorePhoto" >> beam.ParDo(StorePhotoFn(services)).with_outputs(
            FAILURES, STORED_WITH_READING, main="ok"
        )
        read = (
            stored.ok
            | "BatchForPlates"
            >> BatchForService(
                lambda evidence: evidence.traversal.radar_id,
                FineEvidence,
                PLATE_BATCH_SIZE,
                self.batch_wait_s,
            )
            | "ReadPlates"
            >> beam.ParDo(ReadPlatesFn(services, backoff_s=self.read_backoff_s)).with_outputs(
                FAILURES, main="ok"
            )
        )
        recorded = read.ok | "RecordReading" >> beam.ParDo(RecordReadingFn(services))
        records = (
            recorded,
            fetched[STORED_WITH_READING],
            stored[STORED_WITH_READING],
        ) | "WithEvidence" >> beam.Flatten()
        failures = (
            fetched[FAILURES],
            stored[FAILURES],
            read[FAILURES],
        ) | "EvidenceFailures" >> beam.Flatten()
        bucket = services.evidence_store is not None
        to_record = records | "ToFineRecord" >> beam.Map(to_fine_record, bucket)
        return FinesWithEvidence(to_record, failures)
