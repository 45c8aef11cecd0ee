"""Plates: what counts as one, which OCR text is chosen, and when none is; evidence names, images.

Every test here fails if a reading that could be a wrong plate were accepted.
"""

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from section_speed.clients.images import InvalidImage, check_image
from section_speed.domain.evidence import evidence_fields, photo_object_name
from section_speed.domain.plate_formats import (
    NEW_YORK_PLATE,
    display_plate,
    normalise_plate,
    plate_for_vehicle,
    plate_format,
)
from section_speed.domain.plate_gates import (
    choose_plate,
    merge_views,
    plate_shaped,
    second_opinion_doubt,
)
from section_speed.domain.plate_reading import PlateReading, TextLine
from tests.unit.test_plate_candidates import REFUSED_WITH_CANDIDATES

T_MS = 1_795_000_000_000  # 2026-11-18 UTC
FINE_ID = "0123456789abcdef0123456789abcdef"
GATE = 0.8


def line(text, confidence=0.999, height=None, width=None, doubt=""):
    """A text line read at one confidence; `height` (pixels) gives it a box."""
    if height is not None and width is None:
        width = 2.5 * height  # a plate's line of characters
    return TextLine(text, (confidence,) * len(text), width, height, doubt)


def choose(*lines, image_height=None):
    return choose_plate(lines, "r", GATE, image_height)


def test_plate_for_vehicle_is_deterministic_new_york_and_never_ambiguous():
    plates = {plate_for_vehicle(f"veh-{i}") for i in range(500)}
    assert plate_for_vehicle("veh-1") == plate_for_vehicle("veh-1")
    assert all(NEW_YORK_PLATE.match(p) for p in plates)
    assert not any(set(p[:3]) & set("IOQ") for p in plates)  # letters a camera reads as 1, 0
    assert len(plates) == 500  # 23^3 * 10^4 plates: no collision among a few hundred
    assert display_plate("ABC1234") == "ABC-1234"


@pytest.mark.parametrize(
    ("raw", "plate"),
    [
        ("ABC-1234", "ABC1234"),
        ("R10 7555", "R107555"),  # read right: never made into RIO7555 (issue 12)
        ("0BC-1234", "0BC1234"),  # a zero where New York has a letter stays a zero
        ("AB1-1234", "AB11234"),
        ("ABC-O2I4", "ABCO2I4"),  # O and I where New York has digits stay letters
        ("5DJ0529", "5DJ0529"),  # California
        ("AG0 R6T", "AG0R6T"),  # Missouri
        ("HB6=L0Z", "HB6L0Z"),  # an emblem between the groups, read as '='
        ("CWM+2998", "CWM2998"),
        ("10·DTM", "10DTM"),
        ("AB-123-CD", "AB123CD"),  # two separators: still a plate
        ("ABC 12S4", "ABC12S4"),  # S is a letter: a plate as read, never "fixed" to 5
        ("abc 1234", None),  # lower case: not a plate's characters
        ("TEXAS", None),
        ("California", None),
        ("NEW YORK", None),
        ("EMPIRE STATE", None),
        ("2014-05-13", None),  # a date
        ("07:08:50", None),  # a time
        ("626-257-2571", None),  # a phone number
        ("1049338", None),  # digits only: a phone number, a fleet number, ...
        ("www.stor-it.com", None),
        ("AB-12-CD-34", None),  # too many separators
        ("ABC-123456", None),  # 9 characters
        ("A", None),
        ("G1", None),  # car badges: as plate-like as a vanity plate, and far more common
        ("A4", None),
        ("RS6", None),
        ("C300", None),
        ("AB123", "AB123"),  # five characters: the shortest plate accepted
        ("DH5mX9P", None),  # an emblem read as a lower-case letter
        ("山1", None),
        ("", None),
    ],
)
def test_normalise_plate_drops_separators_and_changes_nothing_else(raw, plate):
    assert normalise_plate(raw) == plate


@given(st.text(alphabet="ABCOQDIL0128 -.:=+ao山|/", max_size=12))
def test_normalise_plate_never_substitutes_a_character(raw):
    plate = normalise_plate(raw)
    if plate is not None:
        assert plate == "".join(char for char in raw if char.isascii() and char.isalnum())


def test_known_formats_are_reported_never_required():
    assert plate_format("ABC1234") == "LLLDDDD"
    assert plate_format("5DJ7529") is None  # not California's DLLLDDD, and still a plate
    assert choose(line("5DJ7529")).license_plate == "5DJ7529"
    # ...unless one look-alike's twin would make it fit one: then it is refused.
    assert choose(line("5DJ0529")).license_plate is None


def test_the_plate_is_chosen_among_state_names_slogans_and_dealer_frames():
    reading = choose(
        line("California"),
        line("SMITH FORD 555-1234"),
        line("4PCI264"),
        line("dmv.ca.gov"),
        line("2014-05-13 08:42:14"),
    )
    assert (reading.license_plate, reading.reason) == ("4PCI264", None)
    assert reading.raw_text == (
        "California | SMITH FORD 555-1234 | 4PCI264 | dmv.ca.gov | 2014-05-13 08:42:14"
    )


def test_a_character_under_the_gate_gives_no_plate_but_keeps_its_confidence():
    unsure = TextLine("ABC-1234", (0.99, 0.99, 0.99, 1.0, 0.99, 0.62, 0.99, 0.99))
    reading = choose(unsure)
    assert (reading.license_plate, reading.confidence) == (None, 0.62)
    assert reading.reason == "ABC1234: '2' read at 0.62, under the gate 0.800"


@pytest.mark.parametrize(
    ("text", "confidence", "plate"),
    [
        ("AG0R6T", 0.97, None),  # 0 or O: twenty times as sure as another character
        ("AGOR6T", 0.97, None),
        ("UH1F0F", 0.95, None),  # 1 or I
        ("AG0R6T", 0.995, "AG0R6T"),
        ("XYZ9876", 0.85, "XYZ9876"),  # no look-alike: the gate alone
    ],
)
def test_look_alike_characters_need_far_more_confidence(text, confidence, plate):
    assert choose(line(text, confidence)).license_plate == plate


def test_two_plates_in_view_give_none_unless_one_is_clearly_the_nearest():
    same_size = choose(line("ABC1234", height=40), line("XYZ9876", height=36))
    assert same_size.license_plate is None
    assert same_size.reason == "several plates in view: ABC1234, XYZ9876"
    nearest = choose(line("ABC1234", height=40), line("XYZ9876", height=30))
    assert nearest.license_plate == "ABC1234"
    no_boxes = choose(line("ABC1234"), line("XYZ9876"))
    assert no_boxes.license_plate is None


def test_a_nearer_plate_that_cannot_be_read_keeps_a_smaller_one_out():
    nearer_unsure = line("DEF5678", confidence=0.5, height=50)
    assert choose(nearer_unsure, line("ABC1234", height=30)).license_plate is None


def test_a_sticker_beside_the_plate_is_a_rival_only_at_plate_size():
    assert choose(line("ABC1234", height=40), line("PK2024", height=20)).license_plate == "ABC1234"
    assert choose(line("ABC1234", height=40), line("PK2024", height=38)).license_plate is None


def test_a_badge_is_no_plate_but_a_rival_at_plate_size():
    badge = line("G1", height=88)  # openalpr's br photo PJY8509: a badge taller than the plate
    assert choose(badge).license_plate is None
    # Taller text that this reader does not accept could be a nearer car's plate (a
    # vanity plate): the plate read could be a neighbour's. No plate, not a guess.
    assert choose(line("ABC1234", height=40), line("AB12", height=44)).license_plate is None
    assert choose(line("ABC1234", height=40), line("XYZ9876", height=28), line("AB12", height=44)
                  ).reason == "several plates in view: AB12, ABC1234, XYZ9876"  # fmt: skip
    # Shorter text beside the plate (a badge, a dealer's sticker, a road marking) is no
    # rival; a plate this reader accepts still is, up to the nearest-plate ratio.
    assert choose(line("ABC1234", height=40), line("F150", height=38)).license_plate == "ABC1234"
    assert choose(line("ABC1234", height=40), line("XYZ9876", height=38)).license_plate is None


def test_text_not_shaped_like_a_plate_line_is_ignored():
    long_line = line("ABC1234", height=20, width=200)  # 10:1, a sign's text
    tiny = line("XYZ9876", height=5)
    assert choose(long_line, tiny, image_height=720).license_plate is None
    assert plate_shaped(100, 40, 720) and not plate_shaped(100, 40, 6000)


def test_no_plate_text_is_unreadable_with_a_reason():
    assert choose(line("NEW YORK")).reason == "no plate among 1 text lines"
    assert choose() == PlateReading(None, 0.0, "", "r", reason="no plate among 0 text lines")


def test_views_that_agree_give_their_least_confidence():
    merged = merge_views([line("ABC-1234", 0.992), line("ABC 1234", 0.999)], GATE)
    assert (merged.text, merged.doubt) == ("ABC1234", "")
    assert min(merged.confidences) == 0.992


def test_views_that_read_two_plates_surely_are_in_doubt():
    merged = merge_views([line("BDJ0529"), line("5DJ0529"), line("BDJ0529")], GATE)
    assert merged.doubt == "crops read 5DJ0529, BDJ0529"
    assert choose(merged).license_plate is None


def test_views_of_different_lengths_are_in_doubt_even_when_unsure():
    # A crop that cut a character off, or read the frame's edge as one.
    cut = merge_views([line("SG8L7E", 0.99), line("SG8L7", 0.99), line("SG8L7E", 0.3)], GATE)
    assert cut.doubt == "crops read SG8L7, SG8L7E"


def test_an_unsure_view_neither_agrees_nor_vetoes_but_most_views_must_be_sure():
    tolerated = merge_views([line("GHP995", 0.5), line("6HP995"), line("6HP995")], GATE)
    assert (tolerated.text, tolerated.doubt) == ("6HP995", "")
    minority = merge_views([line("4ASC7399", 0.5), line("4ASC7399", 0.6), line("4ASC7399")], GATE)
    assert minority.doubt == "1 of 3 readings sure of 4ASC7399"
    alone = merge_views([line("ABC1234"), line("NEW YORK")], GATE)
    assert alone.doubt == "1 of 1 readings sure of ABC1234"


def test_views_that_are_no_plate_change_nothing():
    noise = merge_views([line("ABC1234"), line("山"), line("ABC1234")], GATE)
    assert (noise.text, noise.doubt) == ("ABC1234", "")
    nothing = merge_views([line("TEXAS")], GATE)
    assert nothing.text == "TEXAS"


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
        "plate_candidates": [],
        "plate_candidate_confidences": [],
        "plate_box": None,
        "image_url": None,
        "image_sha256": None,
        "evidence_error": "fetch_photo: down",
    }


def test_evidence_fields_carry_the_candidates_and_the_plate_box():
    reading = REFUSED_WITH_CANDIDATES
    fields = evidence_fields(reading, "gs://b/x.jpg", "ab" * 32, None)
    assert fields["license_plate"] is None
    assert fields["plate_candidates"] == ["OCT1890", "0CT1890"]
    assert fields["plate_candidate_confidences"] == [
        "0.38,0.99,0.99,1.00,1.00,1.00,1.00",
        "0.60,0.99,0.99,1.00,1.00,1.00,1.00",
    ]
    assert fields["plate_box"] == "10,20,110,60"


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


# --- second opinion ------------------------------------------------------------------------


def plate_line(text, confidences):
    return TextLine(text, tuple(confidences))


FOUR_AS_L = plate_line("LGLS168", (0.892, 0.969, 0.995, 0.988, 0.999, 0.999, 0.987))


def test_a_doubtful_character_the_second_recogniser_is_unsure_of_refuses_the_plate():
    # openalpr us #76: California's open 4 read as L by both recognisers, the second unsure.
    second = [
        plate_line("LGLS168", (0.75, 0.70, 0.95, 0.99, 1.0, 1.0, 0.99)),
        plate_line("LGLS168", (0.74, 0.89, 0.95, 0.95, 0.99, 0.99, 0.99)),
        plate_line("LGLS168", (0.88, 0.61, 0.54, 0.91, 0.99, 0.99, 0.99)),
    ]
    doubt = second_opinion_doubt(FOUR_AS_L, second, GATE)
    assert doubt == "'L' at 0.89 not confirmed by the second recogniser (1 of 3 crops)"
    merged = TextLine(FOUR_AS_L.text, FOUR_AS_L.confidences, 110, 46, doubt)
    reading = choose_plate([merged], "r", GATE, 720)
    assert (reading.license_plate, reading.reason) == (None, f"LGLS168: {doubt}")


def test_a_doubtful_character_confirmed_by_most_second_crops_keeps_the_plate():
    second = [
        plate_line("LGLS168", (0.85,) * 7),
        plate_line("LGLS-168", (0.9, 0.9, 0.9, 0.9, 1.0, 0.9, 0.9, 0.9)),  # separators count not
        plate_line("LGLS168", (0.3,) * 7),
    ]
    assert second_opinion_doubt(FOUR_AS_L, second, GATE) == ""


def test_the_second_recogniser_reading_another_plate_confirms_nothing():
    second = [plate_line("4GLS168", (0.99,) * 7)] * 2 + [plate_line("LGLS168", (0.99,) * 7)]
    assert second_opinion_doubt(FOUR_AS_L, second, GATE) == (
        "'L' at 0.89 not confirmed by the second recogniser (1 of 3 crops)"
    )
    assert second_opinion_doubt(FOUR_AS_L, [], GATE).startswith("'L' at 0.89 not confirmed")


def test_a_plate_read_nearly_surely_needs_no_second_opinion():
    nearly_sure = plate_line("BDJ0529", (0.995, 0.999, 0.999, 0.997, 1.0, 1.0, 0.999))
    assert second_opinion_doubt(nearly_sure, [], GATE) == ""
    assert second_opinion_doubt(plate_line("TEXAS", (0.5,) * 5), [], GATE) == ""  # no plate
