"""Fine evidence: where a fine's photo is stored and what the fine records about it.

Object names are built only from validated ids (radar_id from the event contract's id
pattern, fine_id a hex digest) and a date, so no message field can steer a write
elsewhere in the bucket.
"""

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

from section_speed.domain.events import is_valid_id
from section_speed.domain.plate_reading import PlateReading
from section_speed.domain.verification import HEX32

_FINE_ID = re.compile(rf"^{HEX32}$")
IMAGE_PREFIX = "fines"


def photo_object_name(radar_id: str, entry_time_ms: int, fine_id: str) -> str:
    """`fines/RADAR/YYYY-MM-DD/FINE_ID.jpg`, the date being the entry time's UTC day."""
    if not is_valid_id(radar_id) or radar_id in (".", ".."):
        raise ValueError(f"radar_id {radar_id[:64]!r} is not a safe object-name part")
    if not _FINE_ID.match(fine_id):
        raise ValueError(f"fine_id {fine_id[:64]!r} is not a 32-hex-digit id")
    day = datetime.fromtimestamp(entry_time_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
    return f"{IMAGE_PREFIX}/{radar_id}/{day}/{fine_id}.jpg"


def gs_url(bucket: str, object_name: str) -> str:
    return f"gs://{bucket}/{object_name}"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def evidence_fields(
    reading: PlateReading | None,
    image_url: str | None,
    image_sha256: str | None,
    error: str | None,
) -> dict[str, Any]:
    """The fine's evidence columns (docs/reference.md, Outputs; docs/evidence.md)."""
    return {
        "license_plate": reading.license_plate if reading else None,
        "plate_confidence": round(reading.confidence, 4) if reading else None,
        "plate_reader": reading.reader if reading else None,
        "plate_candidates": [c.plate for c in reading.candidates] if reading else [],
        "plate_candidate_confidences": (
            [c.confidences_text() for c in reading.candidates] if reading else []
        ),
        "plate_box": reading.plate_box_text() if reading else None,
        "image_url": image_url,
        "image_sha256": image_sha256,
        "evidence_error": error,
    }
