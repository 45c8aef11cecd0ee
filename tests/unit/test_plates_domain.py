"""Plate normalisation, the choice among OCR lines, evidence object names, image checks."""

import io

import pytest
from PIL import Image

from pipeline.clients.images import InvalidImage, check_image
from pipeline.domain.evidence import evidence_fields, photo_object_name
from pipeline.domain.plates import (
    PLATE_PATTERN,
    PlateReading,
    best_plate,
    display_plate,
    normalise_plate,
    plate_for_vehicle,
)

T_MS = 1_795_000_000_000  # 2026-11-18 UTC
FINE_ID = "0123456789abcdef0123456789abcdef"


def test_plate_for_vehicle_is_deterministic_and_well_formed():
    plates = {plate_for_vehicle(f"veh-{i}") for i in range(500)}
    assert plate_for_vehicle("veh-1") == plate_for_vehicle("veh-1")
    assert all(PLATE_PATTERN.match(p) for p in plates)
    assert len(plates) == 500  # 26^3 * 10^4 plates: no collision among a few hundred
    assert display_plate("ABC1234") == "ABC-1234"


@pytest.mark.parametrize(
    ("raw", "plate"),
    [
        ("ABC-1234", "ABC1234"),
        ("abc 1234", "ABC1234"),
        ("0BC-1234", "OBC1234"),  # a zero where a letter must be: O
        ("AB1-1234", "ABI1234"),  # a one where a letter must be: I
        ("ABC-O2I4", "ABC0214"),  # O and I where digits must be
        ("ABC-12345", None),  # too long: not guessed
        ("AB-1234", None),
        ("NEW YORK", None),
        ("ABC-12S4", None),  # S/5 is not a fixed confusion: unreadable, never guessed
        ("", None),
    ],
)
def test_normalise_plate_fixes_only_positional_o0_i1(raw, plate):
    assert normalise_plate(raw) == plate


def test_best_plate_takes_the_most_confident_plate_line():
    lines = [("NEW YORK", 0.99), ("ABC-1234", 0.91), ("XYZ 9876", 0.85), ("EMPIRE STATE", 0.97)]
    reading = best_plate(lines, "r", 0.8)
    assert reading == PlateReading(
        "ABC1234", 0.91, "NEW YORK | ABC-1234 | XYZ 9876 | EMPIRE STATE", "r"
    )


def test_best_plate_under_the_gate_is_unreadable_but_keeps_its_confidence():
    reading = best_plate([("ABC-1234", 0.6)], "r", 0.8)
    assert (reading.license_plate, reading.confidence, reading.raw_text) == (None, 0.6, "ABC-1234")


def test_best_plate_without_a_plate_line_is_unreadable():
    assert best_plate([("NEW YORK", 0.99)], "r", 0.8).license_plate is None
    assert best_plate([], "r", 0.8) == PlateReading(None, 0.0, "", "r")


def test_photo_object_name_layout():
    assert photo_object_name("radar-1", T_MS, FINE_ID) == f"fines/radar-1/2026-11-18/{FINE_ID}.jpg"


@pytest.mark.parametrize("radar_id", ["../etc", "a/b", "..", ".", "", "x" * 200, "r\n1", "/abs"])
def test_photo_object_name_refuses_path_tricks_in_radar_id(radar_id):
    with pytest.raises(ValueError, match="radar_id"):
        photo_object_name(radar_id, T_MS, FINE_ID)


@pytest.mark.parametrize("fine_id", ["../x", FINE_ID.upper(), FINE_ID[:-1], FINE_ID + "/a"])
def test_photo_object_name_refuses_anything_but_a_hex_fine_id(fine_id):
    with pytest.raises(ValueError, match="fine_id"):
        photo_object_name("radar-1", T_MS, fine_id)


def test_evidence_fields_of_an_unread_fine_are_null_with_the_error():
    assert evidence_fields(None, None, None, "fetch_photo: down") == {
        "license_plate": None,
        "plate_confidence": None,
        "plate_reader": None,
        "image_url": None,
        "image_sha256": None,
        "evidence_error": "fetch_photo: down",
    }


def image_bytes(size: tuple[int, int], fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 200, 200)).save(out, fmt)
    return out.getvalue()


def test_check_image_accepts_jpeg_and_png_and_reports_their_type():
    assert check_image(image_bytes((64, 32), "JPEG")).content_type == "image/jpeg"
    assert check_image(image_bytes((64, 32), "PNG")).content_type == "image/png"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"<html>not a photo</html>", "not a decodable image"),
        (image_bytes((64, 32), "JPEG")[:200], "not a decodable image"),  # truncated
        (image_bytes((64, 32), "GIF"), "not JPEG/PNG"),
        (b"\xff" * 2000, "over the 1000-byte limit"),
    ],
)
def test_check_image_rejects_with_a_reason(data, reason):
    with pytest.raises(InvalidImage, match=reason):
        check_image(data, max_bytes=1000)


def test_check_image_refuses_a_decompression_bomb_before_decoding_pixels():
    # A tiny PNG that declares 10000 x 10000 pixels: refused from its header alone.
    bomb = image_bytes((10_000, 10_000), "PNG")
    assert len(bomb) < 1_000_000
    with pytest.raises(InvalidImage, match="pixel"):
        check_image(bomb)
