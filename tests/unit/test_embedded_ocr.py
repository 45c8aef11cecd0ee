"""The car-photo renderer and the embedded RapidOCR plate reader, against each other.

The renderer knows the true plate of every photo, so the reader's accuracy is measured,
not eyeballed: on easy photos it must read nearly all plates, and on any photo accept no
wrong one. Photos drawn like real ones (other states, dealer frames, date stamps, two cars)
check the rules that keep a wrong plate out.
"""

import io
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from generator import car_images
from generator.car_images import render_car_photo, render_scene
from section_speed.clients.embedded_ocr import EmbeddedPlateReader
from section_speed.clients.embedded_ocr_plates import plate_boxes
from section_speed.clients.embedded_ocr_recognition import decode_line
from section_speed.clients.images import check_image
from section_speed.clients.plate_readers import open_plate_reader
from section_speed.domain.defaults import PLATE_MIN_CONFIDENCE
from section_speed.domain.plate_formats import plate_for_vehicle
from section_speed.domain.plate_reading import TextLine

ACCURACY_IMAGES = 100
HARD_IMAGES = 40
MIN_EXACT = 0.97
MAX_JPEG_BYTES = 200_000


@pytest.fixture(scope="module")
def reader():
    return EmbeddedPlateReader()


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


# --- renderer ---------------------------------------------------------------------------


def test_render_is_deterministic_per_vehicle_and_difficulty():
    assert render_car_photo("car-1") == render_car_photo("car-1")
    assert render_car_photo("car-1") != render_car_photo("car-2")
    assert render_car_photo("car-1", "easy") != render_car_photo("car-1", "hard")


@pytest.mark.parametrize("difficulty", car_images.DIFFICULTIES)
def test_render_is_a_small_valid_jpeg(difficulty):
    data = render_car_photo("car-7", difficulty)
    info = check_image(data)
    assert (info.format, info.width, info.height) == ("JPEG", 640, 480)
    assert len(data) < MAX_JPEG_BYTES


def test_render_scene_varies_with_the_seed():
    first, second = render_scene("ABC1234", 1), render_scene("ABC1234", 2)
    assert first.size == second.size == (640, 480)
    assert np.asarray(first).tobytes() != np.asarray(second).tobytes()


def test_unknown_difficulty_is_refused():
    with pytest.raises(ValueError, match="difficulty"):
        render_scene("ABC1234", 1, "impossible")


def test_missing_fonts_say_which_package_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(car_images, "FONT_DIRS", (tmp_path,))
    car_images._font.cache_clear()
    try:
        with pytest.raises(RuntimeError, match="fonts-dejavu-core"):
            render_scene("ABC1234", 1)
    finally:
        car_images._font.cache_clear()


# --- reader -------------------------------------------------------------------------------


def test_reader_is_a_plate_reader(reader):
    assert isinstance(reader.name, str) and reader.name
    assert reader.min_confidence == PLATE_MIN_CONFIDENCE


def test_open_plate_reader_gives_the_embedded_reader():
    opened = open_plate_reader("embedded", min_confidence=0.9)
    assert isinstance(opened, EmbeddedPlateReader)
    assert opened.min_confidence == 0.9


def test_reads_easy_photos_accurately_and_accepts_no_wrong_plate(reader):
    vehicles = [f"car-{i}" for i in range(ACCURACY_IMAGES)]
    readings = reader.read([render_car_photo(vehicle) for vehicle in vehicles])
    truths = [plate_for_vehicle(vehicle) for vehicle in vehicles]
    exact = sum(r.license_plate == t for r, t in zip(readings, truths, strict=True))
    wrong = [
        (truth, r.license_plate, round(r.confidence, 3))
        for r, truth in zip(readings, truths, strict=True)
        if r.license_plate not in (None, truth)
    ]
    accuracy = exact / len(vehicles)
    summary = f"exact {accuracy:.0%}, wrong accepted {wrong}, passes {dict(reader.path_counts)}"
    assert accuracy >= MIN_EXACT, summary
    assert not wrong, summary
    assert all(r.error is None and r.reader == reader.name for r in readings), summary


def test_hard_photos_give_no_wrong_plate(reader):
    vehicles = [f"car-{i}" for i in range(HARD_IMAGES)]
    readings = reader.read([render_car_photo(vehicle, "hard") for vehicle in vehicles])
    truths = [plate_for_vehicle(vehicle) for vehicle in vehicles]
    wrong = [
        (truth, r.license_plate)
        for r, truth in zip(readings, truths, strict=True)
        if r.license_plate not in (None, truth)
    ]
    assert not wrong
    assert all(r.reason for r in readings if r.license_plate is None)


def test_bad_images_are_unreadable_and_the_batch_keeps_its_order(reader):
    good = render_car_photo("car-3")
    readings = reader.read([b"not an image", good, b"", b"\xff\xd8\xff\xe0" + b"\0" * 64])
    assert len(readings) == 4
    assert readings[1].license_plate == plate_for_vehicle("car-3")
    for bad in (readings[0], readings[2], readings[3]):
        assert bad.license_plate is None
        assert bad.error
        assert bad.reader == reader.name


def test_a_photo_without_a_plate_reads_as_no_plate(reader):
    blank = Image.new("RGB", (640, 480), (128, 132, 140))
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), "RGB")
    for reading in reader.read([jpeg(blank), jpeg(noise)]):
        assert reading.license_plate is None
        assert reading.error is None
        assert reading.reason


def test_decoding_keeps_each_characters_own_probability():
    characters = ["blank", "A", "B", "O", "0", "-"]
    frames = np.array(
        [
            [0.0, 0.9, 0.1, 0.0, 0.0, 0.0],  # A
            [0.0, 0.95, 0.05, 0.0, 0.0, 0.0],  # A again: one CTC run, its peak counts
            [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # blank
            [0.0, 0.0, 0.0, 0.35, 0.65, 0.0],  # 0, and O's probability is no help to it
            [0.0, 0.0, 0.0, 0.0, 0.0, 1.0],  # hyphen
            [0.0, 0.3, 0.7, 0.0, 0.0, 0.0],  # B
        ]
    )
    text, confidences = decode_line(frames, characters)
    assert text == "A0-B"
    assert confidences == pytest.approx((0.95, 0.65, 1.0, 0.7))


# --- real-photo-like scenes -------------------------------------------------------------------
# A wide street photo (1280x720), a car body, one or two plates of other states' looks, a
# dealer frame with a phone number, and a camera's date stamp: the text a real photo holds
# around its plate, drawn with Pillow so the truth is known.

PLATE_LOOKS = {
    "california": ((240, 240, 236), (20, 30, 90), "California", (170, 30, 40), "dmv.ca.gov"),
    "texas": ((236, 236, 230), (25, 25, 25), "TEXAS", (25, 25, 25), "THE LONE STAR STATE"),
    "new-york": ((240, 226, 168), (22, 38, 105), "NEW YORK", (22, 38, 105), "EMPIRE STATE"),
}


@dataclass(frozen=True)
class Plate:
    text: str  # as printed, separators included
    look: str
    centre: tuple[int, int]
    width: int  # pixels in the photo
    frame: str | None = None  # a dealer frame's text under the plate


def font(names, size):
    for name in names:
        for folder in car_images.FONT_DIRS:
            if (folder / name).is_file():
                return ImageFont.truetype(str(folder / name), size)
    raise RuntimeError(car_images.FONT_HINT)


def plate_image(plate: Plate) -> Image.Image:
    field, ink, state, state_ink, slogan = PLATE_LOOKS[plate.look]
    width, height = 480, 240
    image = Image.new("RGB", (width, height), field)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width - 1, height - 1), outline=(60, 60, 60), width=4)
    draw.text(
        (width / 2, 36), state, font=font(car_images.LABEL_FONTS, 38), fill=state_ink, anchor="mm"
    )
    draw.text(
        (width / 2, 212), slogan, font=font(car_images.LABEL_FONTS, 22), fill=ink, anchor="mm"
    )
    size = 118
    while draw.textlength(plate.text, font=font(car_images.PLATE_FONTS, size)) > width - 70:
        size -= 4
    draw.text(
        (width / 2, 125), plate.text, font=font(car_images.PLATE_FONTS, size), fill=ink, anchor="mm"
    )
    if plate.frame is None:
        return image
    framed = Image.new("RGB", (width + 40, height + 80), (15, 15, 15))
    framed.paste(image, (20, 30))
    ImageDraw.Draw(framed).text(
        ((width + 40) / 2, height + 56),
        plate.frame,
        font=font(car_images.LABEL_FONTS, 26),
        fill=(235, 235, 235),
        anchor="mm",
    )
    return framed


def street_photo(*plates: Plate, stamp: str | None = None, blur: float = 0.7) -> bytes:
    photo = Image.new("RGB", (1280, 720), (96, 98, 102))
    draw = ImageDraw.Draw(photo)
    for plate in plates:
        (x, y), width = plate.centre, plate.width
        body = (x - 2.2 * width, y - 1.6 * width, x + 2.2 * width, y + 0.9 * width)
        draw.rounded_rectangle(body, 40, fill=(150, 30, 35))
        image = plate_image(plate)
        image = image.resize((width, round(width * image.height / image.width)), Image.LANCZOS)
        photo.paste(image, (x - image.width // 2, y - image.height // 2))
    if stamp:
        draw.text((12, 8), stamp, font=font(car_images.LABEL_FONTS, 22), fill=(255, 255, 255))
    pixels = np.asarray(photo.filter(ImageFilter.GaussianBlur(blur)), np.float32)
    pixels += np.random.default_rng(0).normal(0, 4, pixels.shape)
    return jpeg(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))


STAMP = "2014-05-13 08:42:14"


def test_an_out_of_state_plate_is_read_as_it_is_among_frame_and_stamp_text(reader):
    photo = street_photo(
        Plate("5DJC529", "california", (640, 420), 150, frame="SMITH FORD 555-1234"), stamp=STAMP
    )
    (reading,) = reader.read([photo])
    assert (reading.license_plate, reading.reason) == ("5DJC529", None)


@pytest.mark.parametrize(("width", "blur"), [(140, 0.7), (110, 1.0)])
def test_a_plate_read_right_is_never_fitted_to_new_york(reader, width, blur):
    (reading,) = reader.read(
        [street_photo(Plate("R10-7555", "new-york", (600, 400), width), blur=blur)]
    )
    assert reading.license_plate == "R107555"  # the RIO7555 was a fine to a stranger


def test_a_zero_the_engine_is_unsure_of_gives_no_plate(reader):
    (reading,) = reader.read(
        [street_photo(Plate("AG0-R6T", "texas", (700, 380), 150, frame="AUTO BANK"))]
    )
    assert reading.license_plate is None
    assert reading.reason.startswith("AG0R6T: ")


def test_two_plates_of_one_size_in_view_give_no_plate(reader):
    (reading,) = reader.read(
        [
            street_photo(
                Plate("ABC-1234", "texas", (350, 400), 140),
                Plate("XYZ-9876", "texas", (930, 400), 140),
            )
        ]
    )
    assert (reading.license_plate, reading.reason) == (
        None,
        "several plates in view: ABC1234, XYZ9876",
    )


def test_a_plate_too_far_to_read_gives_no_plate(reader):
    (reading,) = reader.read([street_photo(Plate("KXD-2741", "texas", (640, 400), 36))])
    assert reading.license_plate is None and reading.error is None


# --- second opinion ---------------------------------------------------------------------------


def test_the_second_recogniser_confirms_a_doubtful_character_only_where_it_is(reader):
    """PP-OCRv5's recogniser, from its own wheel, reads the plate's crops for a second opinion.

    The plate's line is given as read by the first recogniser, one character doubtful: the
    second confirms it when the photo shows it, and refuses a plate the photo does not show.
    """
    plate = plate_image(Plate("XYZ-9876", "texas", (0, 0), 480))
    bgr = np.ascontiguousarray(np.asarray(plate)[:, :, ::-1])
    box = np.array([(30, 70), (450, 70), (450, 180), (30, 180)], dtype=np.float64)
    doubtful = (0.9, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99)
    right = TextLine("XYZ9876", doubtful, 420, 110)
    assert reader._confirmed(bgr, box, right) == right
    wrong = TextLine("KYZ9876", doubtful, 420, 110)
    assert "not confirmed by the second recogniser (0 of 3 crops)" in (
        reader._confirmed(bgr, box, wrong).doubt
    )
    nearly_sure = TextLine("KYZ9876", (0.99,) * 7, 420, 110)
    assert reader._confirmed(bgr, box, nearly_sure) == nearly_sure  # not asked at all


# --- candidates ---------------------------------------------------------------------------


@pytest.mark.parametrize("plate", ["OCT1890", "HOO2426", "SII1898", "DQO1010"])
def test_a_clean_plate_of_look_alikes_is_the_first_candidate_even_when_refused(reader, plate):
    rgb = np.asarray(render_scene(plate, 11, "easy").convert("RGB"))
    reading = reader.read_array(rgb)
    assert reading.license_plate in (None, plate)  # refused, perhaps, never another plate
    assert reading.candidates[0].plate == plate
    assert len(reading.candidates[0].char_confidences) == len(plate)
    assert reading.state == "NEW YORK"  # read on the plate, above its characters
    x0, y0, x1, y1 = reading.plate_box
    assert 0 <= x0 < x1 <= rgb.shape[1] and 0 <= y0 < y1 <= rgb.shape[0]


def test_a_photo_without_a_plate_has_no_candidates(reader):
    (reading,) = reader.read([jpeg(Image.new("RGB", (640, 480), (90, 110, 90)))])
    assert (reading.license_plate, reading.candidates, reading.plate_box) == (None, (), None)


def test_a_plate_detectors_output_becomes_boxes_in_the_photos_pixels_best_first():
    # A 1280x720 photo letterboxed into 640x640: scale 0.5, 140 pixels of padding on top.
    anchors = np.zeros((37, 4), np.float32)  # YOLOv8-seg: box, score, 32 mask coefficients
    anchors[:5, 0] = (320, 320, 100, 40, 0.9)  # a plate in the photo's middle
    anchors[:5, 1] = (322, 321, 100, 40, 0.6)  # the same plate found again: suppressed
    anchors[:5, 2] = (50, 200, 40, 20, 0.3)  # a far plate, less sure
    anchors[:5, 3] = (500, 500, 40, 20, 0.1)  # under the score threshold
    boxes = plate_boxes(anchors, 0.5, (0, 140), (1280, 720))
    assert [round(score, 2) for _, score in boxes] == [0.9, 0.3]
    np.testing.assert_allclose(boxes[0][0], [(540, 320), (740, 320), (740, 400), (540, 400)])
    np.testing.assert_allclose(boxes[1][0], [(60, 100), (140, 100), (140, 140), (60, 140)])
