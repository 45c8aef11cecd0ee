"""Fine photos in Cloud Storage (google-cloud-storage; locally gcp-storage-emulator).

The client finds the emulator through STORAGE_EMULATOR_HOST and then uses anonymous
credentials by itself. Objects are written with `if_generation_match=0`, so a second write
of the same fine (a redelivery, a late re-fire, a racing revision) never replaces the
evidence: one object per fine, and the library may retry the upload safely because it is
conditional. The photo and its plate reading are one piece of evidence
(docs/evidence.md): the reading is recorded beside the photo, as FINE_ID.plate.json
naming the photo's sha256, only after it was read from the photo's own bytes, only when
it succeeded, and only once (created the same conditional way), so whoever comes second
takes the stored reading with the stored photo. Both are created, never changed: workers
need only to create and read objects.

Failures are told apart here, for the evidence steps to catch what they mean
(docs/evidence.md, Failures): OUTAGE_ERRORS (down, overloaded, not granted, the bucket
missing) are waited out by the runner's retries; REFUSED_ERRORS are about one object.
"""

import dataclasses
import json
import logging
from dataclasses import dataclass

import requests
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from section_speed.domain.evidence import gs_url, sha256_hex
from section_speed.domain.plate_reading import PlateReading

_log = logging.getLogger(__name__)
SHA256_METADATA_KEY = "sha256"
READING_SUFFIX = ".plate.json"  # beside PHOTO.jpg: the reading of that photo's bytes
RAW_TEXT_KEPT = 512
UPLOAD_TIMEOUT_S = 30.0
# The lookup before a photo is fetched is an optimisation: while storage is down it gives
# up within seconds and the photo is fetched anyway (the library's default retries would
# hold the fine for two minutes). The write keeps the library's full retries.
FIND_RETRY = DEFAULT_RETRY.with_deadline(5.0).with_delay(initial=0.2, maximum=1.0)
FIND_TIMEOUT_S = 3.0

# Worth retrying later: the store is down or overloaded (the library already retried).
# requests' ConnectionError and Timeout are no builtin ConnectionError or TimeoutError.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    api_exceptions.ServerError,
    api_exceptions.TooManyRequests,
    api_exceptions.RetryError,
    requests.ConnectionError,
    requests.Timeout,
    auth_exceptions.TransportError,
    ConnectionError,
    TimeoutError,
)
# Every photo fails alike until someone grants the workers the bucket: an outage too.
NOT_GRANTED_ERRORS: tuple[type[Exception], ...] = (
    api_exceptions.Unauthorized,
    api_exceptions.Forbidden,
)
GRANT = "roles/storage.objectCreator and roles/storage.objectViewer"


class EvidenceStoreUnavailable(RuntimeError):
    """Cloud Storage did not take or give the evidence this time (down, overloaded, not
    granted, the bucket missing); the same call may succeed later. Never one photo's
    fault: the caller raises it, so the runner retries (docs/evidence.md, Failures)."""


# What the steps wait out, raising; checked before REFUSED_ERRORS, which holds some of them.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    EvidenceStoreUnavailable,
    *TRANSIENT_ERRORS,
    *NOT_GRANTED_ERRORS,
)
# Refused for this one object (400, 404 of an object, 412, ...): the photo's dead letter.
REFUSED_ERRORS: tuple[type[Exception], ...] = (api_exceptions.ClientError,)


def unavailable(error: Exception, bucket: str) -> EvidenceStoreUnavailable:
    """The outage `error` (one of OUTAGE_ERRORS) as EvidenceStoreUnavailable, saying what
    to grant when it is a refusal of the workers' account."""
    if isinstance(error, EvidenceStoreUnavailable):
        return error
    message = f"Cloud Storage unavailable: {type(error).__name__}: {error}"
    if isinstance(error, NOT_GRANTED_ERRORS):
        message += f"; grant the workers' service account {GRANT} on gs://{bucket} (docs/deploy.md)"
    return EvidenceStoreUnavailable(message[:1000])


@dataclass(frozen=True, slots=True)
class StoredPhoto:
    url: str
    sha256: str
    created: bool  # False when the object was already there (written by an earlier attempt)
    reading: PlateReading | None = None  # read from this very object's bytes, if recorded


def reading_object_name(photo_object_name: str) -> str:
    return photo_object_name.removesuffix(".jpg") + READING_SUFFIX


def reading_to_text(reading: PlateReading, photo_sha256: str) -> str:
    value = dataclasses.asdict(reading)
    value["raw_text"] = value["raw_text"][:RAW_TEXT_KEPT]
    return json.dumps({"photo_sha256": photo_sha256, "reading": value}, sort_keys=True)


def reading_from_text(text: str, photo_sha256: str) -> PlateReading | None:
    """The recorded reading if it is of the photo with this digest, else None."""
    recorded = json.loads(text)
    if recorded.get("photo_sha256") != photo_sha256:
        _log.warning("a recorded reading names another photo (%s)", recorded.get("photo_sha256"))
        return None
    return PlateReading.from_json(recorded["reading"])


class EvidenceStore:
    def __init__(self, bucket: str, project: str | None = None) -> None:
        self.bucket_name = bucket
        self._client = storage.Client(project=project)
        self._bucket = self._client.bucket(bucket)

    def close(self) -> None:
        self._client.close()

    def find(self, object_name: str) -> StoredPhoto | None:
        """The evidence already stored under this name, with its reading; None if absent."""
        blob = self._bucket.get_blob(object_name, timeout=FIND_TIMEOUT_S, retry=FIND_RETRY)
        return None if blob is None else self._stored(object_name, blob)

    def store(self, object_name: str, data: bytes, content_type: str) -> StoredPhoto:
        """Store the photo unless the object exists; either way, what the object holds.

        `created` False: another attempt stored its photo first. That photo, not `data`,
        is the evidence: the caller reads the plate from its bytes (`read`), or takes its
        recorded reading.
        """
        digest = sha256_hex(data)
        # Looked up first as well: gcp-storage-emulator ignores ifGenerationMatch.
        found = self._bucket.get_blob(object_name, timeout=UPLOAD_TIMEOUT_S)
        if found is not None:
            return self._stored(object_name, found)
        blob = self._bucket.blob(object_name)
        blob.metadata = {SHA256_METADATA_KEY: digest}
        try:
            blob.upload_from_string(
                data, content_type=content_type, if_generation_match=0, timeout=UPLOAD_TIMEOUT_S
            )
        except api_exceptions.NotFound as error:  # an upload's 404 is the bucket's
            raise EvidenceStoreUnavailable(f"bucket gs://{self.bucket_name}: {error}") from error
        except api_exceptions.PreconditionFailed:
            found = self._bucket.get_blob(object_name, timeout=UPLOAD_TIMEOUT_S)
            if found is None:  # deleted in between: nothing stored is evidence
                raise
            return self._stored(object_name, found)
        return StoredPhoto(gs_url(self.bucket_name, object_name), digest, created=True)

    def record_reading(
        self, object_name: str, reading: PlateReading, photo_sha256: str
    ) -> PlateReading:
        """Record a successful reading of the photo's bytes, once; the first recorded wins.

        Returns the reading that travels with the photo: this one, or the one another
        attempt recorded first (its reading of the same bytes).
        """
        if reading.error is not None:
            raise ValueError("a failed reading is not evidence and is never recorded")
        name = reading_object_name(object_name)
        # Looked up first as well: gcp-storage-emulator ignores ifGenerationMatch.
        recorded = self._recorded_reading(object_name, photo_sha256)
        if recorded is not None:
            return recorded
        try:
            self._bucket.blob(name).upload_from_string(
                reading_to_text(reading, photo_sha256),
                content_type="application/json",
                if_generation_match=0,
                timeout=UPLOAD_TIMEOUT_S,
            )
        except api_exceptions.PreconditionFailed:
            recorded = self._recorded_reading(object_name, photo_sha256)
            if recorded is None:
                raise
            return recorded
        return reading

    def _recorded_reading(self, object_name: str, photo_sha256: str) -> PlateReading | None:
        blob = self._bucket.blob(reading_object_name(object_name))
        try:  # one request: the download answers 404 when nothing was recorded
            text = blob.download_as_text(timeout=FIND_TIMEOUT_S, retry=FIND_RETRY)
        except api_exceptions.NotFound:
            return None
        return reading_from_text(text, photo_sha256)

    def _stored(self, object_name: str, blob: storage.Blob) -> StoredPhoto:
        metadata = dict(blob.metadata or {})
        digest = metadata.get(SHA256_METADATA_KEY, "")
        reading = self._recorded_reading(object_name, digest)
        return StoredPhoto(
            gs_url(self.bucket_name, object_name), digest, created=False, reading=reading
        )

    def read(self, object_name: str) -> bytes:
        return self._bucket.blob(object_name).download_as_bytes(timeout=UPLOAD_TIMEOUT_S)

    def list_names(self, prefix: str = "") -> list[str]:
        return sorted(
            blob.name for blob in self._client.list_blobs(self.bucket_name, prefix=prefix)
        )

    def ensure_bucket(self) -> None:
        """Create the bucket if missing (the local stack; on Google Cloud it is provisioned)."""
        try:
            self._client.create_bucket(self.bucket_name)
        except api_exceptions.Conflict:
            pass
