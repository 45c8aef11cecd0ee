"""A local Cloud Vision: a real gRPC server for `ImageAnnotator/BatchAnnotateImages`.

The reader under test talks to it through the real client library, so the request it builds
and the responses it parses are the library's own messages on a real wire. The fake answers
each image from `answers`: image bytes -> text lines, an `ImageError`, or a ready
`AnnotateImageResponse` sent as it is. Text lines are answered as the service does:
`text_annotations` (the full text, then each word) and a `full_text_annotation` with one
block per line, whose word confidences are filled only when the request asks for them, as
TEXT_DETECTION does. Unknown images have no text.

Like the API it refuses more than 16 images, or more than 10 MB as JSON (image bytes in
base64), in a request; its gRPC limit on what it receives is raised above gRPC's 4 MB
default, so an oversized request arrives and is measured before it is refused. It can be
slow (every call, or the calls that carry a given image, are held until the caller gives
up or the time passes), refuse the next calls with a status (429 is RESOURCE_EXHAUSTED),
or every call for a while, as in an outage or a quota wave, and it records every call: its
images, its size as JSON, when it started and ended, and the most calls it had under way at
once.
"""

import threading
import time
from collections.abc import Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from google.cloud.vision_v1 import types
from google.rpc import status_pb2

SERVICE = "google.cloud.vision.v1.ImageAnnotator"
MAX_IMAGES = 16
MAX_REQUEST_JSON_BYTES = 10_000_000  # "10 MB", read as the reader reads it
RECEIVE_LIMIT_BYTES = 64 * 1024 * 1024  # what the fake takes in, to measure and then refuse
BreakType = types.TextAnnotation.DetectedBreak.BreakType

Line = tuple[str, float]  # a line of text as read (words split on spaces), its words' confidence


@dataclass(frozen=True)
class ImageError:
    code: grpc.StatusCode
    message: str


@dataclass
class Call:
    """One call as the fake saw it; `ended` once it has been answered or refused."""

    images: tuple[bytes, ...]
    json_bytes: int  # the request's size as JSON, the form the API's limit is stated for
    started: float  # time.monotonic()
    ended: float | None = None


@dataclass
class FakeVision:
    answers: Mapping[bytes, Sequence[Line] | ImageError | types.AnnotateImageResponse] = field(
        default_factory=dict
    )
    calls: list[int] = field(default_factory=list)  # images per call, failed calls included
    requests: list[types.BatchAnnotateImagesRequest] = field(default_factory=list)
    log: list[Call] = field(default_factory=list)
    delay_s: float = 0.0  # every call is held this long
    max_in_flight: int = 0
    endpoint: str = ""
    _in_flight: int = 0
    _failures: list[tuple[grpc.StatusCode, bytes | None]] = field(default_factory=list)
    _slow: dict[bytes, float] = field(default_factory=dict)
    _refusing: tuple[float, tuple[grpc.StatusCode, ...]] | None = None  # seconds, codes in turn
    _refusing_until: float | None = None  # set by the first call the refusal meets
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: grpc.Server | None = None

    @classmethod
    def answering_plates(
        cls, plates: Mapping[bytes, str], confidence: float = 0.99
    ) -> "FakeVision":
        """A fake that reads each photo's given plate as one line of text at `confidence`
        (every character): a perfect-oracle Cloud Vision, for measuring what a cascade
        sends it. 0.99 passes the look-alike gate (0.989 at `--plate_min_confidence` 0.8)."""
        return cls(answers={photo: [(plate, confidence)] for photo, plate in plates.items()})

    def images_annotated(self) -> int:
        """Photos sent to the fake so far, in every call (a paid image each on Google)."""
        with self._lock:
            return sum(self.calls)

    def fail(
        self,
        times: int,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        image: bytes | None = None,
    ) -> None:
        """The next `times` calls (that carry `image`, when given) fail as a whole with `code`."""
        with self._lock:
            self._failures.extend([(code, image)] * times)

    def refuse_for(self, seconds: float, *codes: grpc.StatusCode) -> None:
        """Every call for `seconds` from the next one fails as a whole, `codes` in turn."""
        with self._lock:
            self._refusing = (seconds, codes or (grpc.StatusCode.UNAVAILABLE,))
            self._refusing_until = None

    def slow(self, image: bytes, seconds: float) -> None:
        """Calls that carry `image` are held `seconds`, or until their caller gives up."""
        with self._lock:
            self._slow[image] = seconds

    def start(self) -> "FakeVision":
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "BatchAnnotateImages": grpc.unary_unary_rpc_method_handler(
                    self._batch_annotate,
                    request_deserializer=types.BatchAnnotateImagesRequest.deserialize,
                    response_serializer=types.BatchAnnotateImagesResponse.serialize,
                )
            },
        )
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16),  # more than any reader has in flight
            options=[("grpc.max_receive_message_length", RECEIVE_LIMIT_BYTES)],
        )
        self._server.add_generic_rpc_handlers((handler,))
        port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.endpoint = f"127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None

    def __enter__(self) -> "FakeVision":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def _batch_annotate(self, request, context):
        images = tuple(one.image.content for one in request.requests)
        size = len(types.BatchAnnotateImagesRequest.to_json(request, indent=None))
        call = Call(images, size, time.monotonic())
        with self._lock:
            self.calls.append(len(request.requests))
            self.requests.append(request)
            self.log.append(call)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            failure = self._next_failure(images)
            hold = max([self.delay_s, *(self._slow.get(image, 0.0) for image in images)])
        try:
            if hold:
                gone = threading.Event()  # the call ended: its deadline, a cancel, stop()
                context.add_callback(gone.set)
                gone.wait(hold)
            if failure is not None:
                context.abort(failure, f"fake {failure.name.lower()}")
            if len(request.requests) > MAX_IMAGES:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_IMAGES} images")
            if size > MAX_REQUEST_JSON_BYTES:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Request payload size exceeds the limit: {MAX_REQUEST_JSON_BYTES} bytes.",
                )
            return types.BatchAnnotateImagesResponse(
                responses=[self._annotate(one) for one in request.requests]
            )
        finally:
            with self._lock:
                self._in_flight -= 1
                call.ended = time.monotonic()

    def _next_failure(self, images: tuple[bytes, ...]) -> grpc.StatusCode | None:
        """The first queued failure meant for a call with these images, taken off the queue;
        during a refusal, the next of its codes."""
        if self._refusing is not None:
            seconds, codes = self._refusing
            if self._refusing_until is None:
                self._refusing_until = time.monotonic() + seconds
            if time.monotonic() < self._refusing_until:
                return codes[(len(self.calls) - 1) % len(codes)]
        for index, (code, image) in enumerate(self._failures):
            if image is None or image in images:
                del self._failures[index]
                return code
        return None

    def _annotate(self, request):
        if types.Feature.Type.TEXT_DETECTION not in [f.type_ for f in request.features]:
            return _error(grpc.StatusCode.INVALID_ARGUMENT, "no TEXT_DETECTION feature")
        answer = self.answers.get(request.image.content, ())
        if isinstance(answer, ImageError):
            return _error(answer.code, answer.message)
        if isinstance(answer, types.AnnotateImageResponse):
            return answer
        scored = request.image_context.text_detection_params.enable_text_detection_confidence_score
        return _text(answer, scored)


def _error(code, message):
    status = status_pb2.Status(code=code.value[0], message=message)
    return types.AnnotateImageResponse(error=status)


def _text(lines, scored):
    """The response for `lines`: confidences only when asked for (`scored`)."""
    if not lines:
        return types.AnnotateImageResponse()
    blocks, words = [], []
    for text, confidence in lines:
        confidence = confidence if scored else 0.0
        line_words = [
            _word(word, confidence, last=i == len(text.split()) - 1)
            for i, word in enumerate(text.split())
        ]
        words += text.split()
        paragraph = types.Paragraph(words=line_words, confidence=confidence)
        blocks.append(types.Block(paragraphs=[paragraph], confidence=confidence))
    full_text = "\n".join(text for text, _ in lines) + "\n"
    return types.AnnotateImageResponse(
        text_annotations=[
            types.EntityAnnotation(description=full_text, locale="en"),
            *(types.EntityAnnotation(description=word) for word in words),
        ],
        full_text_annotation=types.TextAnnotation(
            pages=[types.Page(blocks=blocks, confidence=0.0)], text=full_text
        ),
    )


def _word(text, confidence, last):
    symbols = [types.Symbol(text=char, confidence=confidence) for char in text]
    kind = BreakType.LINE_BREAK if last else BreakType.SPACE
    symbols[-1].property = types.TextAnnotation.TextProperty(
        detected_break=types.TextAnnotation.DetectedBreak(type_=kind)
    )
    return types.Word(symbols=symbols, confidence=confidence)
