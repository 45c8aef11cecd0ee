"""FineEvidence: a fine on its way through the evidence steps, its coder, and its record.

The coder is registered here, beside the class, so every process that handles the value
(the plate batching keeps it in state) encodes it the same way.
"""

import dataclasses
import json
import struct
import time
from dataclasses import dataclass, replace
from typing import Any

import apache_beam as beam

from section_speed.clients.evidence_store import StoredPhoto
from section_speed.domain.evidence import evidence_fields, photo_object_name
from section_speed.domain.plate_reading import PlateReading
from section_speed.domain.schemas import output_record
from section_speed.domain.traversal import Traversal, traversal_from_json, traversal_to_json


@dataclass(frozen=True)
class FineEvidence:
    """A fine on its way through the evidence stages; `error` keeps the first failure."""

    traversal: Traversal
    photo: bytes | None = None
    photo_url: str | None = None
    content_type: str | None = None
    reading: PlateReading | None = None
    stored: StoredPhoto | None = None
    error: str | None = None

    def failed(self, stage: str, reason: str) -> "FineEvidence":
        return replace(self, error=self.error or f"{stage}: {reason}")

    @property
    def object_name(self) -> str:
        t = self.traversal
        return photo_object_name(t.radar_id, t.entry_time_ms, t.traversal_id)


_FRAME = struct.Struct("<I?")  # JSON header length, whether a photo follows


class FineEvidenceCoder(beam.coders.Coder):
    """Fines wait in batching state as JSON plus the photo's bytes: update-safe."""

    def encode(self, evidence: FineEvidence) -> bytes:
        header = {
            "traversal": traversal_to_json(evidence.traversal),
            "photo_url": evidence.photo_url,
            "content_type": evidence.content_type,
            "reading": _reading_json(evidence.reading),
            "stored": evidence.stored
            and {
                "url": evidence.stored.url,
                "sha256": evidence.stored.sha256,
                "created": evidence.stored.created,
                "reading": _reading_json(evidence.stored.reading),
            },
            "error": evidence.error,
        }
        text = json.dumps(header, separators=(",", ":")).encode()
        photo = evidence.photo
        return _FRAME.pack(len(text), photo is not None) + text + (photo or b"")

    def decode(self, encoded: bytes) -> FineEvidence:
        length, has_photo = _FRAME.unpack_from(encoded)
        start = _FRAME.size
        header = json.loads(encoded[start : start + length])
        stored = header["stored"]
        return FineEvidence(
            traversal=traversal_from_json(header["traversal"]),
            photo=encoded[start + length :] if has_photo else None,
            photo_url=header["photo_url"],
            content_type=header["content_type"],
            reading=_reading(header["reading"]),
            stored=stored
            and StoredPhoto(
                stored["url"], stored["sha256"], stored["created"], _reading(stored["reading"])
            ),
            error=header["error"],
        )

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self) -> type:
        return FineEvidence


def _reading_json(reading: PlateReading | None) -> dict[str, Any] | None:
    return None if reading is None else dataclasses.asdict(reading)


def _reading(value: dict[str, Any] | None) -> PlateReading | None:
    return None if value is None else PlateReading.from_json(value)


beam.coders.registry.register_coder(FineEvidence, FineEvidenceCoder)


def to_fine_record(evidence: FineEvidence, bucket: bool = False) -> dict[str, Any]:
    """The fine's record. With a bucket (`bucket`), a photo goes out only as the stored
    object, with its digest: never the cars API's URL (docs/evidence.md, Failures)."""
    stored = evidence.stored
    if bucket and stored is None and evidence.photo_url is not None:
        raise ValueError(f"fine {evidence.traversal.traversal_id}: a photo that was not stored")
    fields = evidence_fields(
        evidence.reading,
        stored.url if stored else evidence.photo_url,
        stored.sha256 if stored else None,
        evidence.error,
    )
    return output_record(evidence.traversal, int(time.time() * 1000), fields)
