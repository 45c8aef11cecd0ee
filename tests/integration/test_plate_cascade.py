"""The cascade with its real readers: RapidOCR in the process, Cloud Vision on loopback.

The embedded reader is the pipeline's (its models loaded once for the module); Cloud Vision
is the real client library talking gRPC to the local fake (tests/fake_vision.py), which
records every photo it is asked about. Rendered car photos are read by the embedded reader
and cost no Vision call; photos it finds no plate in go to Cloud Vision, whose answers pass
the same gates. The plate CLI runs the same cascade from the command line.
"""

import io
import json
from collections.abc import Iterator

import pytest
from google.api_core.exceptions import ServiceUnavailable
from google.api_core.retry import Retry, if_exception_type
from PIL import Image

from generator.car_images import render_car_photo
from pipeline import plates
from section_speed.clients.plate_readers import open_plate_reader
from section_speed.domain.plate_formats import plate_for_vehicle
from section_speed.domain.plate_reading import (
    CASCADE_READER,
    CLOUD_VISION_READER,
    PlateReaderUnavailable,
)
from tests.fake_vision import FakeVision

pytestmark = pytest.mark.integration

GATE = 0.8
VEHICLES = ("veh-cascade-1", "veh-cascade-2")


def blank(color: tuple[int, int, int]) -> bytes:
    """A photo with no text at all: the embedded reader finds no plate in it."""
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), color).save(buffer, "JPEG")
    return buffer.getvalue()


SURE, UNSURE = blank((120, 130, 140)), blank((60, 70, 80))


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeVision]:
    # What Cloud Vision "reads" in each blank photo: one plate surely, one under the gate.
    with FakeVision(answers={SURE: [("GHJ 4321", 0.99)], UNSURE: [("GHJ 4321", 0.6)]}) as server:
        yield server


@pytest.fixture(scope="module")
def cascade(fake):
    reader = open_plate_reader(CASCADE_READER, GATE, endpoint=fake.endpoint)
    yield reader
    reader.close()


def test_the_embedded_reader_reads_first_and_vision_only_what_it_cannot_accept(fake, cascade):
    photos = [render_car_photo(vehicle) for vehicle in VEHICLES] + [SURE, UNSURE]
    before = fake.images_annotated()
    readings = cascade.read(photos)
    assert [(r.license_plate, r.reader) for r in readings] == [
        (plate_for_vehicle(VEHICLES[0]), "embedded-rapidocr"),
        (plate_for_vehicle(VEHICLES[1]), "embedded-rapidocr"),
        ("GHJ4321", CLOUD_VISION_READER),
        (None, CLOUD_VISION_READER),
    ]
    # The two photos the embedded reader refused went to Vision, in one request.
    assert fake.images_annotated() - before == 2
    assert fake.log[-1].images == (SURE, UNSURE)
    unsure = readings[3]
    assert unsure.error is None
    assert unsure.reason.startswith("embedded-rapidocr: no plate among")
    assert unsure.reason.endswith("; cloud-vision: GHJ4321: 'G' read at 0.60, under the gate 0.800")
    assert [c.plate for c in unsure.candidates] == ["GHJ4321"]  # Vision's, for the desk


def test_a_vision_outage_is_an_outage_of_the_cascade_not_a_failed_photo():
    """Cloud Vision down: the cascade raises PlateReaderUnavailable, which the read-plate
    step waits out (tests/unit/test_enrich.py); no photo is failed for it, and the
    embedded refusal is not taken instead."""
    quick = Retry(predicate=if_exception_type(ServiceUnavailable), initial=0.1, timeout=1.0)
    with FakeVision(answers={SURE: [("GHJ 4321", 0.99)]}) as down:
        down.fail(1000)  # every call fails: UNAVAILABLE
        reader = open_plate_reader(CASCADE_READER, GATE, endpoint=down.endpoint, retry=quick)
        try:
            # UNAVAILABLE after its retries, or 429 from the client-side throttler: an outage.
            with pytest.raises(PlateReaderUnavailable):
                reader.read([render_car_photo(VEHICLES[0]), SURE])
            # Asked at least once; how often depends on the load (the retry's one second)
            # and on the throttler, which may hold a retry back at random: both are outages.
            asked = len(down.calls)
            assert asked >= 1
            (car,) = reader.read([render_car_photo(VEHICLES[0])])  # Vision not needed
        finally:
            reader.close()
        assert len(down.calls) == asked
    assert car.license_plate == plate_for_vehicle(VEHICLES[0]) and car.error is None


def test_plates_cli_reads_with_the_cascade(fake, tmp_path, capsys):
    car = tmp_path / "car.jpg"
    car.write_bytes(render_car_photo(VEHICLES[0]))
    sure = tmp_path / "sure.jpg"
    sure.write_bytes(SURE)
    argv = ["--plate_reader", "cascade", "--vision_endpoint", fake.endpoint, str(car), str(sure)]
    assert plates.main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["license_plate"], line["plate_reader"]) for line in lines] == [
        (plate_for_vehicle(VEHICLES[0]), "embedded-rapidocr"),
        ("GHJ4321", CLOUD_VISION_READER),
    ]
