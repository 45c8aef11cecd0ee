"""Fine photos in Cloud Storage (google-cloud-storage; locally gcp-storage-emulator).

The client finds the emulator through STORAGE_EMULATOR_HOST and then uses anonymous
credentials by itself. Objects are written with `if_generation_match=0`, so a second write
of the same fine (a redelivery, a late re-fire) never replaces the evidence: one object per
fine, and the library may retry the upload safely because it is conditional. The plate
reading travels in the object's metadata, so a correction of the fine finds the whole
evidence with one lookup (`find`) and nothing is fetched or read twice.
"""

import logging
from dataclasses import dataclass

from google.api_core import exceptions as api_exceptions
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

from pipeline.domain.evidence import gs_url, sha256_hex
from pipeline.domain.plates import PlateReading

_log = logging.getLogger(__name__)
SHA256_METADATA_KEY = "sha256"
UPLOAD_TIMEOUT_S = 30.0
# The lookup before a photo is fetched is an optimisation: while storage is down it gives
# up within seconds and the photo is fetched anyway (the library's default retries would
# hold the fine for two minutes). The write keeps the library's full retries.
FIND_RETRY = DEFAULT_RETRY.with_deadline(5.0).with_delay(initial=0.2, maximum=1.0)
FIND_TIMEOUT_S = 3.0

# Worth retrying later: the store is down or overloaded (the library already retried).
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    api_exceptions.ServerError,
    api_exceptions.TooManyRequests,
    api_exceptions.RetryError,
    ConnectionError,
    TimeoutError,
)


@dataclass(frozen=True, slots=True)
class StoredPhoto:
    url: str
    sha256: str
    created: bool  # False when the object was already there (written by an earlier attempt)
    reading: PlateReading | None = None  # as read when the photo was stored


def reading_metadata(reading: PlateReading | None) -> dict[str, str]:
    if reading is None:
        return {}
    return {
        "license_plate": reading.license_plate or "",
        "plate_confidence": repr(reading.confidence),
        "plate_reader": reading.reader,
        "plate_raw_text": reading.raw_text[:512],
    }


def reading_from_metadata(metadata: dict[str, str]) -> PlateReading | None:
    if "plate_reader" not in metadata:
        return None
    return PlateReading(
        license_plate=metadata.get("license_plate") or None,
        confidence=float(metadata.get("plate_confidence", "0")),
        raw_text=metadata.get("plate_raw_text", ""),
        reader=metadata["plate_reader"],
    )


class EvidenceStore:
    def __init__(self, bucket: str, project: str | None = None) -> None:
        self.bucket_name = bucket
        self._client = storage.Client(project=project)
        self._bucket = self._client.bucket(bucket)

    def find(self, object_name: str) -> StoredPhoto | None:
        """The evidence already stored under this name, with its reading; None if absent."""
        blob = self._bucket.get_blob(object_name, timeout=FIND_TIMEOUT_S, retry=FIND_RETRY)
        if blob is None:
            return None
        metadata = dict(blob.metadata or {})
        return StoredPhoto(
            gs_url(self.bucket_name, object_name),
            metadata.get(SHA256_METADATA_KEY, ""),
            created=False,
            reading=reading_from_metadata(metadata),
        )

    def store(
        self,
        object_name: str,
        data: bytes,
        content_type: str,
        reading: PlateReading | None = None,
    ) -> StoredPhoto:
        digest = sha256_hex(data)
        # Looked up first as well: gcp-storage-emulator ignores ifGenerationMatch.
        if self._bucket.get_blob(object_name, timeout=UPLOAD_TIMEOUT_S) is not None:
            return self._existing(object_name, digest)
        blob = self._bucket.blob(object_name)
        blob.metadata = {SHA256_METADATA_KEY: digest, **reading_metadata(reading)}
        try:
            blob.upload_from_string(
                data, content_type=content_type, if_generation_match=0, timeout=UPLOAD_TIMEOUT_S
            )
        except api_exceptions.PreconditionFailed:
            return self._existing(object_name, digest)
        return StoredPhoto(gs_url(self.bucket_name, object_name), digest, True, reading)

    def _existing(self, object_name: str, digest: str) -> StoredPhoto:
        """The object a previous attempt stored; its recorded digest is the evidence."""
        blob = self._bucket.get_blob(object_name, timeout=UPLOAD_TIMEOUT_S)
        stored = (blob.metadata or {}).get(SHA256_METADATA_KEY) if blob else None
        if stored and stored != digest:
            _log.warning(
                "%s already holds a different photo (sha256 %s); the first one stays evidence",
                object_name,
                stored,
            )
        return StoredPhoto(gs_url(self.bucket_name, object_name), stored or digest, created=False)

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
