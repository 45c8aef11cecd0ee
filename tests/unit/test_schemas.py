"""The output schemas and the records written to them."""

from section_speed.domain.schemas import (
    DEAD_LETTER_COLUMNS,
    FINE_COLUMNS,
    VEHICLE_SPEED_COLUMNS,
    bigquery_schema,
    dead_letter_record,
    output_record,
    vehicle_speed_record,
)
from tests.helpers import T0_MS, measured, section, track

# --- schemas ------------------------------------------------------------------------

DESIGN_FINE_FIELDS = {
    "fine_id": "STRING", "radar_id": "STRING", "vehicle_id": "STRING",
    "license_plate": "STRING", "plate_confidence": "FLOAT", "plate_reader": "STRING",
    "avg_speed_kmh": "FLOAT", "avg_speed_mph": "FLOAT", "speed_limit_mph": "FLOAT",
    "distance_m": "FLOAT", "duration_s": "FLOAT", "entry_time": "TIMESTAMP",
    "exit_time": "TIMESTAMP", "entry_location": "STRING", "exit_location": "STRING",
    "image_url": "STRING", "image_sha256": "STRING", "is_ticketed": "BOOLEAN",
    "processed_at": "TIMESTAMP",
    "speed_method": "STRING",
    # Beyond the design card: why the plate or photo is missing, for analysts; and the ids a
    # correction replaces, so each traversal is counted once (issue 13).
    "evidence_error": "STRING", "supersedes": "STRING", "revision": "INTEGER",
    # A published traversal that a late detection made unjudgeable is withdrawn, never a
    # fine: the reason, so that analysts and consumers drop it.
    "withdrawn_reason": "STRING",
    # The tolerance applied, and for spot_mean records how many spot speeds were averaged
    # (they measure no distance nor duration, so those two may be null).
    "tolerance_mph": "FLOAT", "spot_readings": "INTEGER",
    # The reader's ranked candidates and where it found the plate, for the officer.
    "plate_candidates": "STRING", "plate_candidate_confidences": "STRING", "plate_box": "STRING",
    # Which limit applied and why, and the rules' version (issue 28).
    "limit_source": "STRING", "limit_reference": "STRING", "vehicle_class": "STRING",
    "rules_version": "STRING",
}  # fmt: skip


def test_fine_schema_matches_design_field_by_field():
    fields = bigquery_schema(FINE_COLUMNS)["fields"]
    assert {f["name"]: f["type"] for f in fields} == DESIGN_FINE_FIELDS
    assert {f["name"] for f in fields if f["mode"] == "NULLABLE"} == {
        "license_plate", "plate_confidence", "plate_reader", "image_url", "image_sha256",
        "evidence_error", "withdrawn_reason", "tolerance_mph", "distance_m", "duration_s",
        "spot_readings", "plate_box", "limit_source", "limit_reference", "vehicle_class",
        "rules_version",
    }  # fmt: skip


def test_records_have_exactly_their_schema_columns():
    traversal = measured(track("v1", 70.0), section())
    fine = output_record(traversal, processed_at_ms=T0_MS)
    assert list(fine) == [c.name for c in FINE_COLUMNS]
    assert fine["is_ticketed"] is True and fine["license_plate"] is None
    assert (
        fine["entry_location"] == "40.819390,-73.940744"
        and fine["fine_id"] == traversal.traversal_id
    )
    row = vehicle_speed_record(traversal, processed_at_ms=T0_MS)
    assert list(row) == [c.name for c in VEHICLE_SPEED_COLUMNS]
    assert row["detections"] == 3
    letter = dead_letter_record(
        stage="parse", error="bad", payload=b"\xff", attributes={"a": "1"}, timestamp_ms=T0_MS
    )
    assert list(letter) == [c.name for c in DEAD_LETTER_COLUMNS]
    assert letter["payload"] == "base64:/w==" and letter["attributes"] == '{"a": "1"}'
