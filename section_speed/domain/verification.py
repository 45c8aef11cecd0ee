"""Verification: an officer's decision on a fine, the claims on it, and the notice it issues.

Plain Python, no Beam and no client: the verification desk (`desk/`), the provisioning
step and anyone checking a notice use these, so the tables, the ids and the notice's
digest are defined once (docs/desk.md).

- The BigQuery tables here are the analysts' copy: the desk's PostgreSQL store exports its
  decisions (`fine_reviews`) and notices to them; `fine_claims` is no longer written.
- A notice's id is derived from the fine and the revision decided on, so a retried decision
  finds the notice it already issued; its `record_sha256` covers the record's canonical JSON
  and `verify_notice` recomputes it. A review's id names claim, fine, revision and
  outcome; a recall's, the notice it recalls.
"""

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from section_speed.domain.plate_formats import MAX_PLATE_CHARACTERS, SEPARATORS, normalise_plate
from section_speed.domain.schemas import Column, Table

CONFIRMED, CORRECTED, REJECTED = "confirmed", "corrected", "rejected"
# A fine withdrawn (or no longer over the limit) after a decision comes back to the desk
# only to be closed: the officer acknowledges it, and no notice can follow.
ACKNOWLEDGED = "acknowledged"
DECISIONS = (CONFIRMED, CORRECTED, REJECTED, ACKNOWLEDGED)
ISSUING_DECISIONS = (CONFIRMED, CORRECTED)
REJECT_REASONS: dict[str, str] = {
    "plate_unreadable": "plate unreadable",
    "wrong_vehicle": "wrong vehicle in the photo",
    "implausible_measurement": "implausible measurement",
    "other": "other (with a note)",
}
MAX_NOTE_CHARACTERS = 500
# Typed plates arrive with spaces and dashes; anything much longer is not a plate attempt.
MAX_TYPED_PLATE_CHARACTERS = 20


def _column(name: str, type_: str, mode: str, description: str) -> Column:
    return Column(name, type_, mode, description)  # type: ignore[arg-type]


FINE_REVIEW_COLUMNS: tuple[Column, ...] = (
    _column(
        "review_id", "STRING", "REQUIRED", "id of the decision (claim, fine, revision, outcome)"
    ),
    _column("fine_id", "STRING", "REQUIRED", "the fine decided on"),
    _column("revision", "INTEGER", "REQUIRED", "the fine's revision the officer saw"),
    _column(
        "decision",
        "STRING",
        "REQUIRED",
        "confirmed, corrected, rejected; acknowledged for a fine withdrawn after a decision",
    ),
    _column(
        "license_plate",
        "STRING",
        "NULLABLE",
        "the verified plate (confirmed or corrected); null otherwise",
    ),
    _column("reader_plate", "STRING", "NULLABLE", "the plate reader's plate, null when unread"),
    _column(
        "reason",
        "STRING",
        "NULLABLE",
        "plate_unreadable, wrong_vehicle, implausible_measurement or other; null unless rejected",
    ),
    _column("note", "STRING", "NULLABLE", "the officer's note (required for reason other)"),
    _column("reviewer", "STRING", "REQUIRED", "who decided (login name or IAP email)"),
    _column("opened_at", "TIMESTAMP", "REQUIRED", "when the officer's claim on the fine began"),
    _column("decided_at", "TIMESTAMP", "REQUIRED", "when the decision was recorded"),
)

FINE_CLAIM_COLUMNS: tuple[Column, ...] = (
    _column("claim_id", "STRING", "REQUIRED", "random id of the claim"),
    _column("fine_id", "STRING", "REQUIRED", "the fine claimed"),
    _column("revision", "INTEGER", "REQUIRED", "the fine's revision when claimed"),
    _column("reviewer", "STRING", "REQUIRED", "who claimed it"),
    _column("claimed_at", "TIMESTAMP", "REQUIRED", "when; the earliest unexpired claim wins"),
    _column("expires_at", "TIMESTAMP", "REQUIRED", "after this the claim no longer counts"),
)

NOTICE_COLUMNS: tuple[Column, ...] = (
    _column("notice_id", "STRING", "REQUIRED", 'first 32 hex of sha256 of "fine_id:revision"'),
    _column("fine_id", "STRING", "REQUIRED", "the fine"),
    _column("revision", "INTEGER", "REQUIRED", "the fine's revision verified"),
    _column("review_id", "STRING", "REQUIRED", "the decision that issued it (fine_reviews)"),
    _column("license_plate", "STRING", "REQUIRED", "the verified plate"),
    _column("vehicle_id", "STRING", "REQUIRED", "vehicle identity from the camera's tracker"),
    _column("radar_id", "STRING", "REQUIRED", "the section that measured the vehicle"),
    _column("entry_time", "TIMESTAMP", "REQUIRED", "first detection's event time"),
    _column("entry_location", "STRING", "REQUIRED", 'first detection, "lat,lon"'),
    _column("exit_time", "TIMESTAMP", "REQUIRED", "last detection's event time"),
    _column("exit_location", "STRING", "REQUIRED", 'last detection, "lat,lon"'),
    _column("distance_m", "FLOAT", "NULLABLE", "distance measured, metres (null for spot_mean)"),
    _column("duration_s", "FLOAT", "NULLABLE", "time taken, seconds (null for spot_mean)"),
    _column("spot_readings", "INTEGER", "NULLABLE", "spot speeds averaged (spot_mean)"),
    _column("avg_speed_kmh", "FLOAT", "REQUIRED", "average speed, km/h"),
    _column("avg_speed_mph", "FLOAT", "REQUIRED", "average speed, mph"),
    _column("speed_method", "STRING", "REQUIRED", "section_average or spot_mean"),
    _column("speed_limit_mph", "FLOAT", "REQUIRED", "speed limit applied, mph"),
    _column("tolerance_mph", "FLOAT", "NULLABLE", "tolerance above the limit, mph"),
    _column("limit_source", "STRING", "NULLABLE", "where the limit applied comes from"),
    _column("limit_reference", "STRING", "NULLABLE", "the window, order, signal or class"),
    _column("vehicle_class", "STRING", "NULLABLE", "the vehicle's class, if it had one"),
    _column("rules_version", "STRING", "NULLABLE", "the sections file's version judged under"),
    _column("image_url", "STRING", "NULLABLE", "the stored photo, gs://BUCKET/fines/..."),
    _column("image_sha256", "STRING", "NULLABLE", "hex sha256 of the stored photo"),
    _column("reader_plate", "STRING", "NULLABLE", "the plate reader's plate, null when unread"),
    _column("plate_confidence", "FLOAT", "NULLABLE", "the plate reader's confidence, 0..1"),
    _column("plate_reader", "STRING", "NULLABLE", "which plate reader read it"),
    _column("reviewer", "STRING", "REQUIRED", "the officer who verified it"),
    _column("decided_at", "TIMESTAMP", "REQUIRED", "when the officer decided"),
    _column(
        "record_sha256",
        "STRING",
        "REQUIRED",
        "hex sha256 of the record's canonical JSON without this field (verify_notice)",
    ),
)

FINE_REVIEWS = Table(
    "fine_reviews", FINE_REVIEW_COLUMNS, "review_id", "decided_at", ("fine_id",), "decided_at"
)
FINE_CLAIMS = Table(
    "fine_claims", FINE_CLAIM_COLUMNS, "claim_id", "claimed_at", ("fine_id",), "claimed_at"
)
NOTICES = Table("notices", NOTICE_COLUMNS, "notice_id", "decided_at", ("radar_id",), "decided_at")
VERIFICATION_TABLES: tuple[Table, ...] = (FINE_REVIEWS, FINE_CLAIMS, NOTICES)


# Fine ids (deterministic, section_speed/domain/identity.py) and the desk's claim ids are
# 32 lower-case hex digits: the one pattern routes, forms, the photo names and the
# database's CHECK use.
HEX32 = "[0-9a-f]{32}"
_HEX32 = re.compile(HEX32)


def is_hex32(value: object) -> bool:
    return isinstance(value, str) and _HEX32.fullmatch(value) is not None


def _hex32(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def notice_id(fine_id: str, revision: int, attempt: int = 0) -> str:
    """One notice per fine revision: a retried decision finds the notice it issued. A
    decision made again after an undo (the desk's undo window: its notice never went out)
    is attempt 1, 2, ...: its notice gets an id of its own, so that only one is ever sent."""
    if attempt:
        return _hex32(f"{fine_id}:{revision}:{attempt}")
    return _hex32(f"{fine_id}:{revision}")


def review_id(claim_id: str, fine_id: str, revision: int, decision: str, detail: str = "") -> str:
    """A decision's id: a retried POST (same claim, revision and decision) names the same
    row, while a different decision on the same claim (a confirm racing a reject, another
    plate) gets another id, so the database keeps the first and refuses the second."""
    return _hex32(f"{claim_id}:{fine_id}:{revision}:{decision}:{detail}")


def recall_id(notice_id_: str) -> str:
    """A recall's id: one recall per notice, whatever later revision caused it."""
    return _hex32(f"recall:{notice_id_}")


def canonical_json(record: Mapping[str, Any]) -> bytes:
    return json.dumps(
        dict(record), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


def record_sha256(record: Mapping[str, Any]) -> str:
    """Hex sha256 of the record's canonical JSON, `record_sha256` itself left out."""
    return hashlib.sha256(
        canonical_json({k: v for k, v in record.items() if k != "record_sha256"})
    ).hexdigest()


def verify_notice(record: Mapping[str, Any]) -> bool:
    """Whether a notice record is as issued: its digest matches its content.

    Works on the topic's message (JSON) and on a `notices` row read back with timestamps
    in the same RFC 3339 form (`section_speed.clients.warehouse.as_record(NOTICES, row)`).
    """
    stated = record.get("record_sha256")
    return isinstance(stated, str) and stated == record_sha256(record)


def notice_record(fine: Mapping[str, Any], review: Mapping[str, Any]) -> dict[str, Any]:
    """The evidence record of a confirmed or corrected fine, with its digest.

    `fine` is the fines row at the revision decided on (timestamps as RFC 3339 text),
    `review` the decision's `fine_reviews` row; columns a fines table does not have yet
    (an older dataset) are null.
    """
    if review["decision"] not in ISSUING_DECISIONS:
        raise ValueError(f"a {review['decision']} fine issues no notice")
    if review["fine_id"] != fine["fine_id"] or review["revision"] != fine["revision"]:
        raise ValueError("the review is not of this fine revision")
    values = {
        "notice_id": notice_id(fine["fine_id"], int(fine["revision"])),
        "review_id": review["review_id"],
        "license_plate": review["license_plate"],
        "reader_plate": fine.get("license_plate"),
        "reviewer": review["reviewer"],
        "decided_at": review["decided_at"],
    }
    record = {
        c.name: values[c.name] if c.name in values else fine.get(c.name)
        for c in NOTICE_COLUMNS
        if c.name != "record_sha256"
    }
    record["record_sha256"] = record_sha256(record)
    return record


def validate_typed_plate(text: str) -> str:
    """An officer's typed plate, normalised as the readers' plates are; ValueError if none.

    What was typed is checked first, then folded: only ASCII letters, digits and the
    plates' separators are accepted, because `str.upper()` would turn the dotless i
    (U+0131), the long s (U+017F) and "ß" into the ASCII letters I, S and SS, and let them
    pass as a plate. Then upper-cased (a person types "abc 1234"; an OCR reading is never
    case-folded) and the readers' rule applies: 5-8 letters and digits, at least one of
    each, separators dropped. Each refusal says what was wrong.
    """
    typed = text.strip()
    if not typed:
        raise ValueError("type the plate, or reject the fine")
    if len(typed) > MAX_TYPED_PLATE_CHARACTERS:
        raise ValueError(
            f"too long: {len(typed)} characters; a plate has at most "
            f"{MAX_PLATE_CHARACTERS} letters and digits"
        )
    foreign = sorted({char for char in typed if not _typeable(char)})
    if foreign:
        shown = ", ".join(repr(char) for char in foreign)
        raise ValueError(f"not a plate: {shown}; type letters A-Z, digits 0-9, spaces, dashes")
    plate = normalise_plate(typed.upper())
    if plate is None:
        raise ValueError(
            "not a plate: 5 to 8 letters A-Z and digits 0-9, at least one of each "
            "(spaces and dashes are dropped)"
        )
    return plate


def _typeable(char: str) -> bool:
    """An ASCII letter of either case, an ASCII digit, or a plate's separator."""
    return (char.isascii() and char.isalnum()) or char in SEPARATORS
