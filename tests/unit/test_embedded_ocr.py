"""The car-photo renderer and the embedded RapidOCR plate reader, against each other.

The renderer knows the true plate of every photo, so the reader's accuracy is measured,
not eyeballed: on easy photos it must read nearly all plates and accept no wrong one.
"""

import io

import numpy as np
import pytest
from PIL import Image

from generator import car_images
from generator.car_images import render_car_photo, render_scene
from pipeline.clients.embedded_ocr import EmbeddedPlateReader, character_groups, decode_line
from pipeline.clients.images import check_image
from pipeline.clients.plate_readers import DEFAULT_MIN_CONFIDENCE, open_plate_reader
from pipeline.domain.plates import plate_for_vehicle

ACCURACY_IMAGES = 100
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
    assert reader.min_confidence == DEFAULT_MIN_CONFIDENCE


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
    summary = f"exact {accuracy:.0%}, wrong accepted {wrong}, paths {dict(reader.path_counts)}"
    assert accuracy >= MIN_EXACT, summary
    assert not wrong, summary
    assert all(r.error is None and r.reader == reader.name for r in readings), summary


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


def test_forced_full_frame_reads_the_plate_too(reader):
    rgb = np.asarray(Image.open(io.BytesIO(render_car_photo("car-5"))).convert("RGB"))
    assert reader.read_array(rgb, locate=False).license_plate == plate_for_vehicle("car-5")
    assert reader.last_path == "full"


def test_decoding_pools_what_normalises_alike_and_multiplies_characters():
    characters = ["blank", "A", "B", "O", "0", "o", "-"]
    groups = character_groups(characters)
    frames = np.array(
        [
            [0.0, 0.9, 0.1, 0.0, 0.0, 0.0, 0.0],  # A
            [0.0, 0.9, 0.1, 0.0, 0.0, 0.0, 0.0],  # A again: one CTC run
            [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # blank
            [0.0, 0.0, 0.0, 0.3, 0.5, 0.2, 0.0],  # 0, but O/0/o are one plate character
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],  # hyphen: not counted
            [0.0, 0.3, 0.7, 0.0, 0.0, 0.0, 0.0],  # B
        ]
    )
    text, confidence = decode_line(frames, characters, groups)
    assert text == "A0-B"
    assert confidence == pytest.approx(0.9 * 1.0 * 0.7)
