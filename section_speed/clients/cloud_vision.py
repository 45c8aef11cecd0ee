"""Plate reading with Google Cloud Vision's TEXT_DETECTION.

Requests: images go in `batch_annotate_images` requests within both of the API's limits, 16
images and 10 MB as JSON, where an image's bytes are base64, 4/3 of the photo (Google's
"Supported image formats and dimensions", cloud.google.com/vision/docs/supported-files,
"File size"; the 16 images are on cloud.google.com/vision/quotas). A photo too big for a
request of its own is an unreadable reading with its error; the others are read. Every
response of a request is matched to its image, in order.

Time: up to `MAX_IN_FLIGHT` requests are under way at once per reader (one reader per
worker process), so one slow request does not hold the photos of the others. Each call has
a deadline (`timeout_s`), and the client library's own `Retry` tries a call again, with
exponential back-off and jitter, on quota refusals (429, RESOURCE_EXHAUSTED), 5xx /
UNAVAILABLE and a missed deadline, for at most `RETRY_TIMEOUT_S` in all: a photo's reading
is back within about `timeout_s + RETRY_TIMEOUT_S` whatever the service does.

Failures: an image the service could not annotate, or a request it refused as such (an
invalid argument, one stuck call among calls that were answered), becomes an unreadable
reading that carries the error: that photo's, for the caller to try again and in the end
dead-letter. A service that cannot read at all for now raises `PlateReaderUnavailable`
once the retries are spent, so that no photo is blamed for it: quota refusals (429,
RESOURCE_EXHAUSTED) or 5xx from any request, missed deadlines on every request, and
permission errors (the project or the workers not granted Vision; logged once with what to
grant). The caller waits and tries again (transforms/evidence_steps.py).

Throttling: every attempt first asks Beam's `AdaptiveThrottler`
(apache_beam/io/components/adaptive_throttler.py, Google SRE's client-side throttling),
which delays attempts with a probability that grows as attempts outnumber successes
`OVERLOAD_RATIO` to one over the last minute, the span of Vision's per-minute quotas. A
quota wave, or a backlog caught up after a relaunch, then slows each worker's calls down
instead of spending the quota on refusals; the seconds waited go to Beam's
`cumulativeThrottlingSeconds` counter, which Dataflow's autoscaler reads as "throttled,
do not add workers".

Confidence: TEXT_DETECTION returns confidences only when the request sets
`TextDetectionParams.enable_text_detection_confidence_score` (otherwise only
DOCUMENT_TEXT_DETECTION has them), so the request sets it. Each character's confidence is
its symbol's in `full_text_annotation` (pages > blocks > paragraphs > words > symbols), or
its word's when the symbol has none; `text_annotations` carry no usable confidence for text
(`score` and the deprecated `confidence` are 0), so they are only a fallback when there is
no full text.

Which text is the plate is decided by `choose_plate`, the rules the embedded reader uses:
candidates are each text line, the runs of words within a line that make a plate (the plate
sharing its line: "NY ABC 1234"), and two neighbouring lines that make one together ("ABC"
over "1234"). Runs that overlap and give different plates ("ABC 1234 NY": ABC1234 or
1234NY) leave the line in doubt, and word boxes give the lines' sizes, so a smaller plate
in view is told from the nearest one.
"""

import itertools
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from apache_beam.io.components.adaptive_throttler import AdaptiveThrottler, ThrottlingSignaler
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry, if_exception_type
from google.auth import exceptions as auth_exceptions
from google.cloud import vision
from google.cloud.vision_v1.services.image_annotator.transports import (
    ImageAnnotatorGrpcTransport,
)
from google.rpc import code_pb2

from section_speed.domain.defaults import PLATE_MIN_CONFIDENCE
from section_speed.domain.plate_formats import normalise_plate
from section_speed.domain.plate_gates import choose_plate
from section_speed.domain.plate_reading import (
    CLOUD_VISION_READER,
    PlateReaderUnavailable,
    PlateReading,
    TextLine,
    unreadable,
)

_log = logging.getLogger(__name__)

MAX_BATCH_SIZE = 16  # images per BatchAnnotateImages request, fixed by the API
# A request's size as JSON, the form the API's 10 MB limit is stated for (module docstring);
# read as 10**6 bytes, the stricter reading. Counted as base64 images plus what surrounds them.
MAX_REQUEST_BYTES = 10_000_000
IMAGE_ENVELOPE_BYTES = 512  # one image's features and context as JSON: under 200 bytes
REQUEST_ENVELOPE_BYTES = 512  # {"requests": [...]} and room to spare
# Requests under way at once per reader. A few overlap the service's latency; more would
# only spend the project's requests-per-minute quota faster on every worker at once.
MAX_IN_FLIGHT = 4
CALL_TIMEOUT_S = 20.0  # one call's deadline; a stuck call fails then and is tried again
RETRY_TIMEOUT_S = 40.0  # no new attempt after this long: the photos go on unread
TRANSIENT_ERRORS = (
    api_exceptions.ServiceUnavailable,  # UNAVAILABLE, 503
    api_exceptions.DeadlineExceeded,  # 504, or this call's own deadline
    api_exceptions.InternalServerError,  # INTERNAL, 500
    api_exceptions.TooManyRequests,  # 429 and RESOURCE_EXHAUSTED: quota, try again later
    api_exceptions.Aborted,
    api_exceptions.Unknown,
    auth_exceptions.TransportError,  # the token refresh could not reach the auth server
)


# The service refuses every request alike: a wave of these is an outage, not the photos'.
OUTAGE_ERRORS = tuple(
    error for error in TRANSIENT_ERRORS if error is not api_exceptions.DeadlineExceeded
)
NOT_GRANTED_ERRORS = (
    api_exceptions.PermissionDenied,  # 403: the API not enabled, or the account not granted
    api_exceptions.Unauthenticated,  # 401
    auth_exceptions.DefaultCredentialsError,
)
GRANT = (
    "enable the Cloud Vision API (vision.googleapis.com) in the project and grant the "
    "workers' service account roles/serviceusage.serviceUsageConsumer"
)
# Client-side throttling (module docstring): attempts over the last minute, in 1 s buckets;
# a throttled attempt waits THROTTLE_DELAY_S and asks again.
THROTTLE_WINDOW_MS = 60_000
THROTTLE_BUCKET_MS = 1_000
OVERLOAD_RATIO = 2.0  # Beam's RemoteModelHandler default, the SRE book's K
THROTTLE_DELAY_S = 1.0


def default_throttler() -> AdaptiveThrottler:
    return AdaptiveThrottler(THROTTLE_WINDOW_MS, THROTTLE_BUCKET_MS, OVERLOAD_RATIO)


def _log_retry(error: Exception) -> None:
    _log.info("Cloud Vision call failed (%s: %s); retrying", type(error).__name__, error)


# The client library's retry: sleeps drawn up to 1 s, 2 s, 4 s ... 16 s (full jitter), so
# workers refused together do not come back together; no attempt starts after 40 s.
TRANSIENT_RETRY = Retry(
    predicate=if_exception_type(*TRANSIENT_ERRORS),
    initial=1.0,
    maximum=16.0,
    multiplier=2.0,
    timeout=RETRY_TIMEOUT_S,
    on_error=_log_retry,
)
_LINE_ENDS = {
    vision.TextAnnotation.DetectedBreak.BreakType.EOL_SURE_SPACE,
    vision.TextAnnotation.DetectedBreak.BreakType.HYPHEN,
    vision.TextAnnotation.DetectedBreak.BreakType.LINE_BREAK,
}


@dataclass(frozen=True, slots=True)
class _Word:
    text: str
    confidences: tuple[float, ...]  # one per character
    ends_line: bool
    box: "_Box | None" = None  # when the response gives the word's box


@dataclass(frozen=True, slots=True)
class _Box:
    left: float
    top: float
    right: float
    bottom: float


class CloudVisionPlateReader:
    """A `PlateReader` backed by Cloud Vision; one per worker process (shared by its threads,
    which may call `read` at once: the bound on requests in flight is the reader's)."""

    name: str = CLOUD_VISION_READER

    def __init__(
        self,
        min_confidence: float = PLATE_MIN_CONFIDENCE,
        client: vision.ImageAnnotatorClient | None = None,
        endpoint: str | None = None,
        timeout_s: float = CALL_TIMEOUT_S,
        batch_size: int = MAX_BATCH_SIZE,
        *,
        retry: Retry = TRANSIENT_RETRY,
        throttler: AdaptiveThrottler | None = None,
        throttle_delay_s: float = THROTTLE_DELAY_S,
    ) -> None:
        """`endpoint` ("host:port") is a plaintext local server for tests; None means Google
        with Application Default Credentials. `timeout_s` is each call's deadline; `retry`
        says which failures are tried again, how long to wait and for how long in all;
        `throttler` (default_throttler()) delays attempts while too few succeed."""
        if not 1 <= batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be 1..{MAX_BATCH_SIZE}, got {batch_size}")
        self.min_confidence = min_confidence
        self.timeout_s = timeout_s
        self.batch_size = batch_size
        self._retry = retry
        self._throttler = throttler or default_throttler()
        self.throttle_delay_s = throttle_delay_s
        self._throttle_lock = threading.Lock()  # the throttler's sums are not thread-safe
        self._throttled_s = 0.0  # waited by the request threads, not yet counted
        self.throttle_waits = 0  # attempts held back by the throttler, in all
        self._throttling = ThrottlingSignaler(namespace=__name__)
        self._told_what_to_grant = False
        self._owns_client = client is None
        self._client = client or _new_client(endpoint)
        self._calls = ThreadPoolExecutor(MAX_IN_FLIGHT, thread_name_prefix="cloud-vision")

    def read(self, images: Sequence[bytes]) -> list[PlateReading]:
        """One reading per image, in order; errors about images become unreadable readings.

        Raises PlateReaderUnavailable when the service refused for reasons of its own
        (module docstring).
        """
        readings: dict[int, PlateReading] = {}
        requests: list[list[int]] = []  # indexes of the images each request carries
        size = 0
        for index, image in enumerate(images):
            cost = _json_bytes(image)
            if REQUEST_ENVELOPE_BYTES + cost > MAX_REQUEST_BYTES:
                readings[index] = unreadable(self.name, _too_big(image, cost))
                continue
            if (
                not requests
                or len(requests[-1]) == self.batch_size
                or size + cost > MAX_REQUEST_BYTES
            ):
                requests.append([])
                size = REQUEST_ENVELOPE_BYTES
            requests[-1].append(index)
            size += cost
        calls = [
            self._calls.submit(self._read_batch, [images[index] for index in request])
            for request in requests
        ]
        answers = [call.result() for call in calls]
        self._count_throttled_seconds()  # here, on the caller's thread: its metrics
        failures = [answer for answer in answers if isinstance(answer, Exception)]
        if any(_is_outage(error) for error in failures) or (
            failures and len(failures) == len(answers)
        ):
            raise PlateReaderUnavailable(f"Cloud Vision: {self._outage_text(failures)}")
        for request, answer in zip(requests, answers, strict=True):
            if isinstance(answer, Exception):
                answer = [unreadable(self.name, _error_text(answer)) for _ in request]
            for index, reading in zip(request, answer, strict=True):
                readings[index] = reading
        return [readings[index] for index in range(len(images))]

    def close(self) -> None:
        """Stop the request threads and close the gRPC channel this reader opened
        (DoFn.teardown); a given client is left open."""
        self._calls.shutdown(wait=False, cancel_futures=True)
        if self._owns_client:
            self._client.transport.close()

    def _read_batch(self, images: Sequence[bytes]) -> list[PlateReading] | Exception:
        """The readings of one request, or the error its attempts ended with."""
        request = vision.BatchAnnotateImagesRequest(requests=[_request(image) for image in images])
        try:
            # `retry` calls each attempt again on transient errors, each with its own
            # deadline, `timeout_s`, and starts none after its timeout.
            response = self._retry(self._attempt)(request)
        except (api_exceptions.GoogleAPIError, auth_exceptions.GoogleAuthError) as exc:
            _log.warning("Cloud Vision failed for %d images: %s", len(images), _error_text(exc))
            return exc
        if len(response.responses) != len(images):
            error = f"asked about {len(images)} images, got {len(response.responses)} answers"
            return [unreadable(self.name, error) for _ in images]
        return [self._reading(answer) for answer in response.responses]

    def _attempt(
        self, request: vision.BatchAnnotateImagesRequest
    ) -> vision.BatchAnnotateImagesResponse:
        """One call, once the throttler lets it go; a success is reported to it.

        Held back for at most `timeout_s`, as long as a call may take: then the attempt
        fails as a refusal would (429, which `retry` backs off from), so that the retry's
        time limit bounds a read however long the throttler would hold it.
        """
        waited = 0.0
        while True:
            with self._throttle_lock:
                throttled = self._throttler.throttle_request(time.time() * 1000)
            if not throttled or waited >= self.timeout_s:
                break
            time.sleep(self.throttle_delay_s)
            waited += self.throttle_delay_s
        if waited:
            with self._throttle_lock:
                self._throttled_s += waited
                self.throttle_waits += round(waited / self.throttle_delay_s)
        if throttled:
            raise api_exceptions.TooManyRequests(
                f"held back {waited:.0f} s by the client-side throttler"
            )
        started_ms = time.time() * 1000
        response = self._client.batch_annotate_images(
            request=request, retry=None, timeout=self.timeout_s
        )
        with self._throttle_lock:
            self._throttler.successful_request(started_ms)
        return response

    def _count_throttled_seconds(self) -> None:
        with self._throttle_lock:
            whole = int(self._throttled_s)
            self._throttled_s -= whole
        if whole:
            self._throttling.signal_throttled(whole)

    def _outage_text(self, failures: list[Exception]) -> str:
        """The first failure's text; for a refusal of the account, what to grant (logged
        once per reader)."""
        refusal = next((e for e in failures if isinstance(e, NOT_GRANTED_ERRORS)), None)
        if refusal is None:
            return _error_text(failures[0])
        text = f"{_error_text(refusal)}: {GRANT}"
        if not self._told_what_to_grant:
            self._told_what_to_grant = True
            _log.error("Cloud Vision refuses this project or account: %s", text)
        return text

    def _reading(self, answer: vision.AnnotateImageResponse) -> PlateReading:
        if answer.error.code != code_pb2.OK:
            return unreadable(self.name, _status_text(answer.error.code, answer.error.message))
        pages = answer.full_text_annotation.pages
        image_height = float(pages[0].height) if pages and pages[0].height else None
        lines, candidates = _candidates(answer)
        raw_text = " | ".join(lines)
        return choose_plate(candidates, self.name, self.min_confidence, image_height, raw_text)


def _json_bytes(image: bytes) -> int:
    """What one image adds to a request as JSON: its bytes in base64, and its envelope."""
    return 4 * math.ceil(len(image) / 3) + IMAGE_ENVELOPE_BYTES


def _too_big(image: bytes, cost: int) -> str:
    return (
        f"photo of {len(image)} bytes is {cost} bytes in a request, over Cloud Vision's "
        f"{MAX_REQUEST_BYTES}-byte request limit"
    )


def _is_outage(exc: Exception) -> bool:
    """Whether the service refused for reasons of its own (after retries: their cause)."""
    if isinstance(exc, api_exceptions.RetryError) and exc.cause is not None:
        exc = exc.cause
    return isinstance(exc, (*OUTAGE_ERRORS, *NOT_GRANTED_ERRORS))


def _error_text(exc: Exception) -> str:
    """The error; after retries ran out of time, the last attempt's error and that."""
    if isinstance(exc, api_exceptions.RetryError) and exc.cause is not None:
        return f"{type(exc.cause).__name__}: {exc.cause}; retries stopped: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def _new_client(endpoint: str | None) -> vision.ImageAnnotatorClient:
    if endpoint is None:
        return vision.ImageAnnotatorClient()
    # client_options(api_endpoint=...) alone would still speak TLS to the local server.
    channel = grpc.insecure_channel(endpoint)
    return vision.ImageAnnotatorClient(transport=ImageAnnotatorGrpcTransport(channel=channel))


def _request(image: bytes) -> vision.AnnotateImageRequest:
    return vision.AnnotateImageRequest(
        image=vision.Image(content=image),
        features=[vision.Feature(type_=vision.Feature.Type.TEXT_DETECTION)],
        image_context=vision.ImageContext(
            text_detection_params=vision.TextDetectionParams(
                enable_text_detection_confidence_score=True
            )
        ),
    )


def _status_text(code: int, message: str) -> str:
    try:
        name = code_pb2.Code.Name(code)
    except ValueError:
        name = f"code {code}"
    return f"{name}: {message}"


def _candidates(answer: vision.AnnotateImageResponse) -> tuple[list[str], list[TextLine]]:
    """The text lines as read, and the candidates: the lines, plate runs within a line, and
    pairs of neighbouring lines that make a plate together."""
    words = list(_words(answer.full_text_annotation))
    if not words:  # no full text: lines of the overall annotation, without confidence
        if not answer.text_annotations:
            return [], []
        overall = answer.text_annotations[0]
        confidence = overall.score or overall.confidence
        texts = [line for line in overall.description.splitlines() if line.strip()]
        return texts, [TextLine.uniform(text, confidence) for text in texts]
    lines = [_joined(line) for line in _lines(words)]
    candidates = list(lines)
    for words_of_line, line in zip(_lines(words), lines, strict=True):
        if normalise_plate(line.text) is None:
            candidates.extend(_runs_in_line(words_of_line))
    for first, second in itertools.pairwise(_lines(words)):
        if not any(normalise_plate(_joined(line).text) for line in (first, second)):
            pair = _joined([*first, *second], same_line=False)
            if normalise_plate(pair.text):
                candidates.append(pair)
    return [line.text for line in lines], candidates


def _words(text: vision.TextAnnotation) -> Iterator[_Word]:
    """Every word in reading order; a paragraph's last word always ends its line."""
    for page in text.pages:
        for block in page.blocks:
            for paragraph in block.paragraphs:
                for index, word in enumerate(paragraph.words):
                    symbols = word.symbols
                    ends_line = index == len(paragraph.words) - 1 or (
                        bool(symbols) and symbols[-1].property.detected_break.type_ in _LINE_ENDS
                    )
                    text_ = "".join(symbol.text for symbol in symbols)
                    confidences = tuple(
                        symbol.confidence or word.confidence
                        for symbol in symbols
                        for _ in symbol.text
                    )
                    yield _Word(text_, confidences, ends_line, _box(word.bounding_box))


def _box(poly: vision.BoundingPoly) -> _Box | None:
    """A word's bounds in pixels, or None when the response gives no box."""
    if not poly.vertices:
        return None
    xs = [vertex.x for vertex in poly.vertices]
    ys = [vertex.y for vertex in poly.vertices]
    return _Box(min(xs), min(ys), max(xs), max(ys))


def _lines(words: Sequence[_Word]) -> list[list[_Word]]:
    lines: list[list[_Word]] = []
    current: list[_Word] = []
    for word in words:
        current.append(word)
        if word.ends_line:
            lines.append(current)
            current = []
    if current:
        lines.append(current)
    return lines


def _runs_in_line(line: Sequence[_Word]) -> list[TextLine]:
    """The runs of consecutive words that make a plate; overlapping rival runs: in doubt."""
    runs = [
        (start, end, run)
        for start in range(len(line))
        for end in range(start + 1, len(line) + 1)
        if normalise_plate((run := _joined(line[start:end])).text)
    ]
    found: list[TextLine] = []
    for start, end, run in runs:
        plate = normalise_plate(run.text)
        overlapping = {
            other_plate
            for other_start, other_end, other in runs
            if other_start < end
            and start < other_end
            and (other_plate := normalise_plate(other.text)) != plate
        }
        if overlapping:
            doubt = f"words could make {', '.join(sorted({plate, *overlapping}))}"
            run = TextLine(run.text, run.confidences, run.width, run.height, doubt)
        found.append(run)
    return found


def _joined(words: Sequence[_Word], same_line: bool = True) -> TextLine:
    """Words as one text, spaces between them; its box when the words have boxes."""
    text = " ".join(word.text for word in words)
    confidences: list[float] = []
    for index, word in enumerate(words):
        confidences.extend([1.0] * (index > 0))  # the space between two words
        confidences.extend(word.confidences)
    boxes = [word.box for word in words if word.box is not None]
    width = height = None
    if boxes and len(boxes) == len(words):
        height = max(box.bottom - box.top for box in boxes)
        if same_line:
            width = max(box.right for box in boxes) - min(box.left for box in boxes)
    return TextLine(text, tuple(confidences), width, height)
