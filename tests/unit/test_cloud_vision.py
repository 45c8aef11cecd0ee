"""The Cloud Vision plate reader against a local gRPC ImageAnnotator (tests/fake_vision.py).

Everything goes through the real client library and a real channel: batching, the use of
every response in a batch, per-image errors, the plate choice (the embedded reader's rules:
`choose_plate`), the confidence gate and retries of failed calls.
"""

import grpc
import pytest
from google.cloud import vision
from google.cloud.vision_v1.services.image_annotator.transports import (
    ImageAnnotatorGrpcTransport,
)

from pipeline.clients.cloud_vision import CloudVisionPlateReader
from pipeline.clients.plate_readers import CLOUD_VISION_READER, open_plate_reader
from pipeline.domain.plates import display_plate, plate_for_vehicle
from tests.fake_vision import FakeVision, ImageError


@pytest.fixture
def fake():
    with FakeVision() as server:
        yield server


@pytest.fixture
def reader(fake):
    """Readers on the fake, closed before it stops; no backoff unless a test asks."""
    readers = []

    def make(**kwargs):
        kwargs.setdefault("backoff_s", 0.0)
        readers.append(CloudVisionPlateReader(endpoint=fake.endpoint, **kwargs))
        return readers[-1]

    yield make
    for reader in readers:
        reader.close()


def photo(n):
    return f"photo-{n}".encode()


SURE = 0.995  # above the gate for every character, look-alikes (0, 1, O, I, D, Q) included


def test_every_response_of_a_batch_is_used_in_order(fake, reader):
    fake.answers = {
        photo(0): [("NEW YORK", 0.99), ("ABC-1234", SURE), ("EMPIRE STATE", 0.95)],
        photo(1): [("XYZ 9876", 0.91)],  # no look-alike: the gate alone
        photo(2): [("K0L-12O4", 0.999)],  # kept as read: no O/0 swapped by position
        photo(3): [("DEF", 0.996), ("5678", 0.992)],  # the plate read as two lines
        photo(4): [("NY GHJ 4321", SURE)],  # the plate sharing its line
        photo(5): [("California", 0.99), ("5DJ0529", SURE), ("SMITH FORD 555-1234", 0.99)],
    }
    readings = reader().read([photo(n) for n in range(6)])

    assert [r.license_plate for r in readings] == [
        "ABC1234",
        "XYZ9876",
        "K0L12O4",
        "DEF5678",
        "GHJ4321",
        "5DJ0529",
    ]
    assert [r.confidence for r in readings] == pytest.approx([SURE, 0.91, 0.999, 0.992, SURE, SURE])
    assert {r.reader for r in readings} == {CLOUD_VISION_READER}
    assert all(r.error is None and r.reason is None for r in readings)
    assert readings[0].raw_text == "NEW YORK | ABC-1234 | EMPIRE STATE"
    assert readings[3].raw_text == "DEF | 5678"
    assert fake.calls == [6]


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        ([("AG0 R6T", 0.97)], "AG0R6T: '0' read at 0.97, under the gate 0.989"),
        ([("ABC 1234 NY", SURE)], "ABC1234: words could make 1234NY, ABC1234"),
        ([("ABC-1234", SURE), ("XYZ-9876", SURE)], "several plates in view: ABC1234, XYZ9876"),
        ([("TEXAS", 0.99), ("2014-05-13", 0.99)], "no plate among 2 text lines"),
    ],
)
def test_the_plate_choice_rules_are_the_embedded_readers(fake, reader, lines, reason):
    fake.answers = {photo(0): lines}

    (reading,) = reader().read([photo(0)])

    assert (reading.license_plate, reading.reason, reading.error) == (None, reason, None)


def boxed_response(*lines):
    """A response whose words have boxes: (text, confidence, (left, top, right, bottom))."""
    blocks = []
    for text, confidence, (left, top, right, bottom) in lines:
        corners = [(left, top), (right, top), (right, bottom), (left, bottom)]
        poly = vision.BoundingPoly(vertices=[vision.Vertex(x=x, y=y) for x, y in corners])
        symbols = [vision.Symbol(text=char, confidence=confidence) for char in text]
        word = vision.Word(symbols=symbols, confidence=confidence, bounding_box=poly)
        blocks.append(vision.Block(paragraphs=[vision.Paragraph(words=[word])]))
    page = vision.Page(blocks=blocks, width=1280, height=720)
    full_text = "\n".join(text for text, _, _ in lines)
    return vision.AnnotateImageResponse(
        text_annotations=[vision.EntityAnnotation(description=full_text)],
        full_text_annotation=vision.TextAnnotation(pages=[page], text=full_text),
    )


def test_word_boxes_tell_the_nearest_plate_from_a_badge_or_a_smaller_plate(fake, reader):
    fake.answers = {
        photo(0): boxed_response(
            ("ABC1234", SURE, (500, 400, 600, 440)), ("F150", SURE, (700, 300, 740, 315))
        ),
        photo(1): boxed_response(
            ("ABC1234", SURE, (500, 400, 600, 440)), ("XYZ9876", SURE, (900, 300, 995, 338))
        ),
        photo(2): boxed_response(("ABC1234", SURE, (100, 400, 900, 440))),  # 20:1, a sign
    }

    nearest, two, sign = reader().read([photo(0), photo(1), photo(2)])

    assert nearest.license_plate == "ABC1234"
    assert (two.license_plate, two.reason) == (None, "several plates in view: ABC1234, XYZ9876")
    assert (sign.license_plate, sign.reason) == (None, "ABC1234: not plate-shaped text")


def test_request_asks_for_text_detection_with_confidence(fake, reader):
    reader().read([photo(0)])

    (request,) = fake.requests[0].requests
    assert [f.type_ for f in request.features] == [vision.Feature.Type.TEXT_DETECTION]
    assert request.image_context.text_detection_params.enable_text_detection_confidence_score
    assert request.image.content == photo(0)


def test_twenty_images_go_in_two_requests_of_at_most_sixteen(fake, reader):
    plates = [plate_for_vehicle(f"v{n}") for n in range(20)]
    fake.answers = {photo(n): [(display_plate(p), SURE)] for n, p in enumerate(plates)}

    readings = reader().read([photo(n) for n in range(20)])

    assert [r.license_plate for r in readings] == plates
    assert fake.calls == [16, 4]


def test_smaller_batch_size_means_more_requests(fake, reader):
    reader(batch_size=3).read([photo(n) for n in range(7)])

    assert fake.calls == [3, 3, 1]


def test_error_for_one_image_leaves_the_others_readable(fake, reader):
    fake.answers = {
        photo(0): [("ABC-1234", SURE)],
        photo(1): ImageError(grpc.StatusCode.INVALID_ARGUMENT, "Bad image data."),
        photo(2): [("XYZ-9876", SURE)],
    }
    first, broken, last = reader().read([photo(0), photo(1), photo(2)])

    assert (first.license_plate, last.license_plate) == ("ABC1234", "XYZ9876")
    assert broken.license_plate is None
    assert broken.error == "INVALID_ARGUMENT: Bad image data."


def test_low_confidence_plate_is_unreadable_but_keeps_its_confidence(fake, reader):
    fake.answers = {photo(0): [("ABC-1234", 0.6)]}

    (reading,) = reader(min_confidence=0.8).read([photo(0)])

    assert reading.license_plate is None
    assert reading.confidence == pytest.approx(0.6)
    assert reading.error is None
    assert reading.raw_text == "ABC-1234"


def test_least_confident_word_is_the_plate_confidence(fake, reader):
    fake.answers = {photo(0): [("ABC", 0.99), ("1234", 0.7)]}

    (reading,) = reader(min_confidence=0.8).read([photo(0)])

    assert reading.license_plate is None
    assert reading.confidence == pytest.approx(0.7)


def test_text_that_is_no_plate_is_unreadable(fake, reader):
    fake.answers = {photo(0): [("NEW YORK", 0.99), ("AB-1234567", 0.99)]}

    (reading, blank) = reader().read([photo(0), photo(1)])

    assert reading.license_plate is None and reading.confidence == 0.0
    assert reading.raw_text == "NEW YORK | AB-1234567"
    assert (blank.license_plate, blank.raw_text, blank.error) == (None, "", None)


@pytest.mark.parametrize(("min_confidence", "plate"), [(0.8, None), (0.0, "ABC1234")])
def test_without_full_text_the_lines_have_no_confidence(fake, reader, min_confidence, plate):
    overall = vision.EntityAnnotation(description="NEW YORK\nABC-1234\n")
    fake.answers = {photo(0): vision.AnnotateImageResponse(text_annotations=[overall])}

    (reading,) = reader(min_confidence=min_confidence).read([photo(0)])

    assert (reading.license_plate, reading.confidence) == (plate, 0.0)
    assert reading.raw_text == "NEW YORK | ABC-1234"


def test_transient_failures_are_retried_with_backoff(fake, reader):
    fake.answers = {photo(0): [("ABC-1234", SURE)]}
    fake.fail(2, grpc.StatusCode.UNAVAILABLE)
    waits = []

    (reading,) = reader(max_attempts=3, backoff_s=1.0, sleep=waits.append).read([photo(0)])

    assert reading.license_plate == "ABC1234"
    assert fake.calls == [1, 1, 1]
    assert len(waits) == 2
    assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0


def test_outage_makes_every_image_unreadable_without_raising(fake, reader):
    fake.fail(10, grpc.StatusCode.UNAVAILABLE)
    waits = []

    readings = reader(max_attempts=3, sleep=waits.append).read([photo(0), photo(1)])

    assert [r.license_plate for r in readings] == [None, None]
    assert all(r.error == "ServiceUnavailable: 503 fake unavailable" for r in readings)
    assert fake.calls == [2, 2, 2]
    assert len(waits) == 2  # no wait after the last attempt


def test_quota_and_deadline_errors_are_transient_too(fake, reader):
    fake.answers = {photo(0): [("ABC-1234", SURE)]}
    fake.fail(1, grpc.StatusCode.RESOURCE_EXHAUSTED)
    fake.fail(1, grpc.StatusCode.DEADLINE_EXCEEDED)

    (reading,) = reader(max_attempts=3).read([photo(0)])

    assert reading.license_plate == "ABC1234"
    assert fake.calls == [1, 1, 1]


def test_permanent_failure_is_not_retried(fake, reader):
    fake.fail(1, grpc.StatusCode.PERMISSION_DENIED)

    readings = reader().read([photo(0), photo(1)])

    assert [r.error for r in readings] == ["PermissionDenied: 403 fake permission_denied"] * 2
    assert fake.calls == [2]


def test_failed_batch_does_not_spoil_the_next(fake, reader):
    fake.answers = {photo(n): [(f"ABC-123{n}", SURE)] for n in range(4)}
    fake.fail(1, grpc.StatusCode.INVALID_ARGUMENT)

    readings = reader(batch_size=2).read([photo(n) for n in range(4)])

    assert [r.license_plate for r in readings] == [None, None, "ABC1232", "ABC1233"]
    assert fake.calls == [2, 2]


def test_no_images_no_request(fake, reader):
    assert reader().read([]) == []
    assert fake.calls == []


def test_open_plate_reader_builds_it_with_endpoint(fake):
    fake.answers = {photo(0): [("ABC-1234", 0.85)]}

    opened = open_plate_reader(CLOUD_VISION_READER, 0.9, endpoint=fake.endpoint)
    try:
        (reading,) = opened.read([photo(0)])
    finally:
        opened.close()

    assert isinstance(opened, CloudVisionPlateReader) and opened.name == "cloud-vision"
    assert (reading.license_plate, reading.confidence) == (None, pytest.approx(0.85))


def test_a_given_client_is_used_and_left_open(fake):
    fake.answers = {photo(0): [("ABC-1234", SURE)]}
    channel = grpc.insecure_channel(fake.endpoint)
    client = vision.ImageAnnotatorClient(transport=ImageAnnotatorGrpcTransport(channel=channel))

    given = CloudVisionPlateReader(client=client)
    given.close()
    try:
        (reading,) = given.read([photo(0)])
    finally:
        channel.close()

    assert reading.license_plate == "ABC1234"


@pytest.mark.parametrize("batch_size", [0, 17])
def test_batch_size_is_within_the_api_limit(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        CloudVisionPlateReader(client=object(), batch_size=batch_size)
