"""The Cloud Vision plate reader against a local gRPC ImageAnnotator (tests/fake_vision.py).

Everything goes through the real client library and a real channel: batching by count and
by bytes, requests in flight at once, deadlines, retries of failed calls with the library's
`Retry`, the use of every response in a batch, per-image errors, the plate choice (the
embedded reader's rules: `choose_plate`) and the confidence gate.
"""

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from apache_beam.io.components.adaptive_throttler import AdaptiveThrottler
from google.api_core import exceptions as api_exceptions
from google.cloud import vision
from google.cloud.vision_v1.services.image_annotator.transports import (
    ImageAnnotatorGrpcTransport,
)

from section_speed.clients.cloud_vision import (
    MAX_IN_FLIGHT,
    MAX_REQUEST_BYTES,
    OVERLOAD_RATIO,
    RETRY_TIMEOUT_S,
    THROTTLE_WINDOW_MS,
    TRANSIENT_RETRY,
    CloudVisionPlateReader,
    default_throttler,
)
from section_speed.clients.plate_readers import open_plate_reader
from section_speed.domain.plate_formats import display_plate, plate_for_vehicle
from section_speed.domain.plate_reading import CLOUD_VISION_READER, PlateReaderUnavailable
from tests.fake_vision import FakeVision, ImageError

# The reader's own retry policy, with waits of hundredths of a second and 1 s in all.
FAST_RETRY = TRANSIENT_RETRY.with_delay(initial=0.01, maximum=0.05).with_timeout(1.0)


def fast_throttler(window_ms: int = 200) -> AdaptiveThrottler:
    """The reader's throttling over a fraction of a second instead of a minute, so that
    tests of other things recover at once."""
    return AdaptiveThrottler(window_ms, window_ms // 10, overload_ratio=OVERLOAD_RATIO)


class NoThrottling(AdaptiveThrottler):
    """Never holds a call back: for tests of the retry alone, which the throttler's random
    draws (with every call refused, whatever its ratio) would otherwise make flaky."""

    def throttle_request(self, now: float) -> bool:
        return False


def no_throttling() -> AdaptiveThrottler:
    return NoThrottling(60_000, 1_000, overload_ratio=OVERLOAD_RATIO)


MiB = 1024 * 1024


@pytest.fixture
def fake():
    with FakeVision() as server:
        yield server


@pytest.fixture
def reader(fake):
    """Readers on the fake, closed before it stops; quick retries unless a test asks."""
    readers = []

    def make(**kwargs):
        kwargs.setdefault("retry", FAST_RETRY)
        kwargs.setdefault("throttler", fast_throttler())
        kwargs.setdefault("throttle_delay_s", 0.02)
        readers.append(CloudVisionPlateReader(endpoint=fake.endpoint, **kwargs))
        return readers[-1]

    yield make
    for reader in readers:
        reader.close()


def photo(n):
    return f"photo-{n}".encode()


def big_photo(n, size):
    """`size` bytes, different for each `n` (the fake answers by content)."""
    return n.to_bytes(4, "big") * (size // 4)


def answered(fake, photos):
    """The fake reads plate ABC123n on photos[n]; the plates, in order."""
    plates = [f"ABC{1230 + n}" for n in range(len(photos))]
    fake.answers = {p: [(f"ABC-{1230 + n}", SURE)] for n, p in enumerate(photos)}
    return plates


SURE = 0.995  # above the gate for every character, look-alikes (0, 1, O, I, D, Q) included


def test_every_response_of_a_batch_is_used_in_order(fake, reader):
    fake.answers = {
        photo(0): [("NEW YORK", 0.99), ("ABC-1234", SURE), ("EMPIRE STATE", 0.95)],
        photo(1): [("XYZ 9876", 0.91)],  # no look-alike: the gate alone
        photo(2): [("K0L-12O4", 0.999)],  # kept as read: no O/0 swapped by position
        photo(3): [("DEF", 0.996), ("5678", 0.992)],  # the plate read as two lines
        photo(4): [("NY GHJ 4321", SURE)],  # the plate sharing its line
        photo(5): [("California", 0.99), ("5DJC529", SURE), ("SMITH FORD 555-1234", 0.99)],
    }
    readings = reader().read([photo(n) for n in range(6)])

    assert [r.license_plate for r in readings] == [
        "ABC1234",
        "XYZ9876",
        "K0L12O4",
        "DEF5678",
        "GHJ4321",
        "5DJC529",
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
    assert sorted(fake.calls) == [4, 16]


def test_smaller_batch_size_means_more_requests(fake, reader):
    reader(batch_size=3).read([photo(n) for n in range(7)])

    assert sorted(fake.calls) == [1, 3, 3]


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


def test_transient_failures_are_retried(fake, reader):
    fake.answers = {photo(0): [("ABC-1234", SURE)]}
    fake.fail(2, grpc.StatusCode.UNAVAILABLE)

    (reading,) = reader().read([photo(0)])

    assert reading.license_plate == "ABC1234"
    assert fake.calls == [1, 1, 1]


def test_quota_refusals_are_retried_until_the_service_takes_the_call(fake, reader):
    """429 / RESOURCE_EXHAUSTED lasts until the quota's minute turns: retried by time, not
    by a count of attempts (six refusals here, more than a fixed four attempts)."""
    fake.answers = {photo(0): [("ABC-1234", SURE)]}
    fake.fail(6, grpc.StatusCode.RESOURCE_EXHAUSTED)

    # The retry's time limit is not what is tested here: generous, for a loaded machine.
    patient = FAST_RETRY.with_timeout(30.0)
    (reading,) = reader(retry=patient, throttler=no_throttling()).read([photo(0)])

    assert (reading.license_plate, reading.error) == ("ABC1234", None)
    assert fake.calls == [1] * 7


def test_the_retry_backs_off_exponentially_on_quota_and_5xx_only():
    retried = TRANSIENT_RETRY._predicate
    for error in (
        api_exceptions.TooManyRequests("429"),
        api_exceptions.ResourceExhausted("quota"),
        api_exceptions.ServiceUnavailable("503"),
        api_exceptions.InternalServerError("500"),
        api_exceptions.DeadlineExceeded("504"),
    ):
        assert retried(error), error
    for error in (
        api_exceptions.PermissionDenied("403"),
        api_exceptions.InvalidArgument("400"),
        api_exceptions.NotFound("404"),
    ):
        assert not retried(error), error
    schedule = (TRANSIENT_RETRY._initial, TRANSIENT_RETRY._multiplier, TRANSIENT_RETRY._maximum)
    assert schedule == (1.0, 2.0, 16.0)
    assert TRANSIENT_RETRY._timeout == RETRY_TIMEOUT_S


def test_an_outage_past_the_retry_time_raises_it_blames_no_photo(fake, reader):
    fake.fail(10_000, grpc.StatusCode.UNAVAILABLE)

    started = time.monotonic()
    with pytest.raises(PlateReaderUnavailable) as raised:
        reader().read([photo(0), photo(1)])
    elapsed = time.monotonic() - started

    assert str(raised.value) == (
        "Cloud Vision: ServiceUnavailable: 503 fake unavailable; retries stopped: "
        "Timeout of 1.0s exceeded"
    )
    assert len(fake.calls) >= 2 and set(fake.calls) == {2}
    assert elapsed < 1.0 + 2.0  # the 1 s of retries, and room for a loaded machine


def test_a_quota_refusal_of_one_request_among_several_is_an_outage_too(fake, reader):
    fake.answers = {photo(n): [(f"ABC-123{n}", SURE)] for n in range(2)}
    fake.fail(10_000, grpc.StatusCode.RESOURCE_EXHAUSTED, image=photo(1))

    with pytest.raises(PlateReaderUnavailable, match="ResourceExhausted: 429"):
        reader(batch_size=1).read([photo(0), photo(1)])


def test_attempts_are_throttled_while_too_few_succeed_and_not_once_they_do(fake, reader):
    """Beam's AdaptiveThrottler: after a wave of refusals, attempts wait their turn."""
    fake.answers = {photo(0): [("ABC-1234", SURE)]}
    fake.fail(4, grpc.StatusCode.RESOURCE_EXHAUSTED)
    throttler = fast_throttler(window_ms=500)
    throttler._random.seed(7)  # the throttler's draws, fixed
    throttled = reader(throttler=throttler, retry=FAST_RETRY.with_timeout(30.0))

    (reading,) = throttled.read([photo(0)])

    assert reading.license_plate == "ABC1234"
    assert len(fake.calls) == 5  # every attempt reached the service, in its turn
    assert throttled.throttle_waits > 0
    # Where attempts succeed, none is held back.
    fake.answers = {photo(n): [(f"ABC-123{n}", SURE)] for n in range(8)}
    calm = reader(throttler=fast_throttler(window_ms=2_000))
    for n in range(8):
        assert calm.read([photo(n)])[0].license_plate == f"ABC123{n}"
    assert calm.throttle_waits == 0
    default = default_throttler()
    assert (default._overload_ratio, THROTTLE_WINDOW_MS) == (OVERLOAD_RATIO, 60_000)


def test_quota_and_deadline_errors_are_transient_too(fake, reader):
    fake.answers = {photo(0): [("ABC-1234", SURE)]}
    fake.fail(1, grpc.StatusCode.RESOURCE_EXHAUSTED)
    fake.fail(1, grpc.StatusCode.DEADLINE_EXCEEDED)

    (reading,) = reader().read([photo(0)])

    assert reading.license_plate == "ABC1234"
    assert fake.calls == [1, 1, 1]


def test_a_refused_account_is_an_outage_logged_once_with_what_to_grant(fake, reader, caplog):
    fake.fail(2, grpc.StatusCode.PERMISSION_DENIED)
    refused = reader()

    for _ in range(2):
        with pytest.raises(PlateReaderUnavailable, match="PermissionDenied: 403") as raised:
            refused.read([photo(0), photo(1)])

    assert "roles/serviceusage.serviceUsageConsumer" in str(raised.value)
    assert fake.calls == [2, 2]  # not retried: it would not help
    told = [r for r in caplog.records if "refuses this project" in r.getMessage()]
    assert len(told) == 1


def test_failed_batch_does_not_spoil_the_next(fake, reader):
    fake.answers = {photo(n): [(f"ABC-123{n}", SURE)] for n in range(4)}
    fake.fail(1, grpc.StatusCode.INVALID_ARGUMENT, image=photo(0))

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
    try:
        (reading,) = given.read([photo(0)])
        given.close()
        still_open = client.batch_annotate_images(requests=[])
    finally:
        channel.close()

    assert reading.license_plate == "ABC1234"
    assert list(still_open.responses) == []


@pytest.mark.parametrize("batch_size", [0, 17])
def test_batch_size_is_within_the_api_limit(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        CloudVisionPlateReader(client=object(), batch_size=batch_size)


# --- time and size: requests in flight at once, deadlines, bytes per request ---------------


def test_requests_overlap_up_to_the_bound(fake, reader):
    photos = [photo(n) for n in range(3 * MAX_IN_FLIGHT)]
    plates = answered(fake, photos)
    fake.delay_s = 0.2  # each call takes a moment, as the service's do

    readings = reader(batch_size=1).read(photos)

    assert [r.license_plate for r in readings] == plates
    assert 1 < fake.max_in_flight <= MAX_IN_FLIGHT


def test_the_bound_holds_for_threads_sharing_the_reader(fake, reader):
    """A worker process's threads share one reader: their requests share its bound."""
    photos = [photo(n) for n in range(4 * MAX_IN_FLIGHT)]
    plates = answered(fake, photos)
    fake.delay_s = 0.1
    shared = reader(batch_size=1)
    parts = [photos[start : start + 2] for start in range(0, len(photos), 2)]

    with ThreadPoolExecutor(len(parts)) as threads:  # more callers than the bound
        readings = [r for part in threads.map(shared.read, parts) for r in part]

    assert [r.license_plate for r in readings] == plates
    assert 1 < fake.max_in_flight <= MAX_IN_FLIGHT


def test_a_stuck_call_fails_within_its_deadline_and_the_others_are_read_meanwhile(fake, reader):
    photos = [photo(n) for n in range(4)]
    plates = answered(fake, photos)
    fake.slow(photo(0), 60.0)  # held until the reader gives up on it

    started = time.monotonic()
    readings = reader(batch_size=1, timeout_s=0.5).read(photos)
    elapsed = time.monotonic() - started

    stuck = [call for call in fake.log if photo(0) in call.images]
    others = [call for call in fake.log if photo(0) not in call.images]
    assert max(call.ended for call in others) < stuck[0].ended  # not behind the stuck call
    assert elapsed < 0.5 + 1.0 + 1.5  # a deadline, the 1 s of retries, room for a loaded machine
    assert len(stuck) >= 2  # tried again within the retry time
    assert [r.license_plate for r in readings] == [None, *plates[1:]]
    assert readings[0].error == (
        "DeadlineExceeded: 504 Deadline Exceeded; retries stopped: Timeout of 1.0s exceeded"
    )


@pytest.mark.parametrize(("size", "images_per_call"), [(5 * MiB, [1] * 8), (3 * MiB, [2] * 4)])
def test_requests_stay_under_the_size_limit_as_json(fake, reader, size, images_per_call):
    """8 photos of 5 MiB are 56 MB as JSON (base64 is 4/3): one request each; of 3 MiB
    (4.2 MB as base64), two a request."""
    photos = [big_photo(n, size) for n in range(8)]
    plates = answered(fake, photos)

    readings = reader().read(photos)

    assert [r.license_plate for r in readings] == plates
    assert max(call.json_bytes for call in fake.log) <= MAX_REQUEST_BYTES
    assert sorted(fake.calls) == images_per_call


def test_a_photo_too_big_for_any_request_is_an_error_for_that_photo_only(fake, reader):
    huge = big_photo(9, 8_000_000)  # 10 666 668 bytes as base64: no request can carry it
    plates = answered(fake, [photo(0), huge, photo(2)])

    first, too_big, last = reader().read([photo(0), huge, photo(2)])

    assert (first.license_plate, last.license_plate) == (plates[0], plates[2])
    assert too_big.license_plate is None
    assert too_big.error == (
        "photo of 8000000 bytes is 10667180 bytes in a request, over Cloud Vision's "
        "10000000-byte request limit"
    )
    assert all(huge not in call.images for call in fake.log)
    assert fake.calls == [2]
