"""Verification rules without a web server or database: notices, plates, ids, the docs' tables.

The workflow on the store: tests/unit/test_desk_workflow.py."""

import json

import pytest

from section_speed.domain.verification import (
    NOTICE_COLUMNS,
    canonical_json,
    notice_id,
    notice_record,
    review_id,
    validate_typed_plate,
    verify_notice,
)
from tests.unit.desk_fakes import fine_row


def review(fine, **values):
    return {
        "review_id": "r" * 32,
        "fine_id": fine["fine_id"],
        "revision": fine["revision"],
        "decision": "confirmed",
        "license_plate": "ABC1234",
        "reviewer": "alice",
        "decided_at": "2026-11-18T09:00:01.000Z",
        **values,
    }


def test_a_notice_is_the_evidence_record_with_a_verifiable_digest():
    fine = fine_row(plate="ABC1234", confidence=0.91, image_url="gs://b/fines/x.jpg")
    record = notice_record(fine, review(fine, decision="corrected", license_plate="ABC1284"))
    assert list(record) == [c.name for c in NOTICE_COLUMNS]
    assert record["notice_id"] == notice_id(fine["fine_id"], 0)
    assert record["license_plate"] == "ABC1284" and record["reader_plate"] == "ABC1234"
    assert record["entry_time"] == fine["entry_time"] and record["distance_m"] > 0
    assert verify_notice(record)
    assert verify_notice(json.loads(json.dumps(record)))  # as a consumer reads the topic
    body = {k: v for k, v in record.items() if k != "record_sha256"}
    assert canonical_json(body) == json.dumps(
        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")
    for field, value in (("license_plate", "XYZ9999"), ("avg_speed_mph", 30.0), ("reviewer", "x")):
        assert not verify_notice({**record, field: value}), field
    assert not verify_notice({k: v for k, v in record.items() if k != "record_sha256"})


def test_no_notice_for_a_rejection_or_another_revision():
    fine = fine_row()
    with pytest.raises(ValueError, match="issues no notice"):
        notice_record(fine, review(fine, decision="rejected", license_plate=None))
    with pytest.raises(ValueError, match="not of this fine revision"):
        notice_record(fine, review(fine, revision=1))
    assert notice_id("a" * 32, 0) != notice_id("a" * 32, 1)
    assert len(notice_id("a" * 32, 0)) == 32


@pytest.mark.parametrize(
    ("typed", "plate"),
    [
        ("ABC1234", "ABC1234"),
        (" abc-1234 ", "ABC1234"),
        ("7abc 123", "7ABC123"),
        ("ab1c2d", "AB1C2D"),
    ],
)
def test_a_typed_plate_is_normalised_as_the_readers_plates_are(typed, plate):
    assert validate_typed_plate(typed) == plate


@pytest.mark.parametrize(
    "typed",
    ["", "   ", "ABCDEFG", "1234567", "AB1", "ABC12345678", "ABC<b>1", "Ä BC1234", "A" * 30],
)
def test_text_that_is_no_plate_is_refused(typed):
    with pytest.raises(ValueError):
        validate_typed_plate(typed)


@pytest.mark.parametrize(
    ("typed", "folds_to"),
    [
        ("\u0131bc1234", "IBC1234"),
        ("\u017fbc1234", "SBC1234"),
        ("aßc123", "ASSC123"),
        ("\uff21BC1234", "\uff21BC1234"),  # fullwidth A,
    ],
)
def test_a_letter_that_only_folds_to_ascii_is_refused_before_folding(typed, folds_to):
    assert typed.upper() == folds_to  # what folding first would have let through
    with pytest.raises(ValueError, match=r"^not a plate: '.'; type letters A-Z"):
        validate_typed_plate(typed)


def test_a_typed_plate_too_long_says_how_long_and_what_a_plate_is():
    with pytest.raises(ValueError) as refused:
        validate_typed_plate("ABC 1234 " + "X" * 14)
    assert str(refused.value) == (
        "too long: 23 characters; a plate has at most 8 letters and digits"
    )


def test_every_foreign_character_is_named_once():
    with pytest.raises(ValueError) as refused:
        validate_typed_plate("Äbc<1234<")
    assert str(refused.value) == (
        "not a plate: '<', 'Ä'; type letters A-Z, digits 0-9, spaces, dashes"
    )


def test_a_review_id_names_the_decision_not_only_the_claim():
    confirm = review_id("c" * 32, "f" * 32, 0, "confirmed", "ABC1234")
    assert confirm == review_id("c" * 32, "f" * 32, 0, "confirmed", "ABC1234")  # a retry
    assert confirm != review_id("c" * 32, "f" * 32, 0, "rejected", "plate_unreadable")
    assert confirm != review_id("c" * 32, "f" * 32, 0, "corrected", "ABC1284")
    assert confirm != review_id("c" * 32, "f" * 32, 1, "confirmed", "ABC1234")


def test_docs_desk_md_shows_the_tables_as_defined():
    from pathlib import Path

    from section_speed.domain.schemas import markdown_table
    from section_speed.domain.verification import VERIFICATION_TABLES

    text = (Path(__file__).resolve().parents[2] / "docs" / "desk.md").read_text()
    for table in VERIFICATION_TABLES:
        assert f"### `{table.name}`\n\n{markdown_table(table.columns)}\n" in text, table.name
