"""A local Cloud Vision: a real gRPC server for `ImageAnnotator/BatchAnnotateImages`.

The reader under test talks to it through the real client library, so the request it builds
and the responses it parses are the library's own messages on a real wire. The fake answers
each image from `answers`: image bytes -> text lines, an `ImageError`, or a ready
`AnnotateImageResponse` sent as it is. Text lines are answered as the service does:
`text_annotations` (the full text, then each word) and a `full_text_annotation` with one
block per line, whose word confidences are filled only when the request asks for them, as
TEXT_DETECTION does. Unknown images have no text. It can fail whole calls, refuses more
than 16 images per request like the API, and records every call.
"""

import threading
from collections.abc import Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from google.cloud.vision_v1 import types
from google.rpc import status_pb2

SERVICE = "google.cloud.vision.v1.ImageAnnotator"
MAX_IMAGES = 16
BreakType = types.TextAnnotation.DetectedBreak.BreakType

Line = tuple[str, float]  # a line of text as read (words split on spaces), its words' confidence


@dataclass(frozen=True)
class ImageError:
    code: grpc.StatusCode
    message: str


@dataclass
class FakeVision:
    answers: Mapping[bytes, Sequence[Line] | ImageError | types.AnnotateImageResponse] = field(
        default_factory=dict
    )
    calls: list[int] = field(default_factory=list)  # images per call, failed calls included
    requests: list[types.BatchAnnotateImagesRequest] = field(default_factory=list)
    endpoint: str = ""
    _failures: list[grpc.StatusCode] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: grpc.Server | None = None

    def fail(self, times: int, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        """The next `times` calls fail as a whole with `code`."""
        with self._lock:
            self._failures.extend([code] * times)

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
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
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
        with self._lock:
            self.calls.append(len(request.requests))
            self.requests.append(request)
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            context.abort(failure, f"fake {failure.name.lower()}")
        if len(request.requests) > MAX_IMAGES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_IMAGES} images")
        return types.BatchAnnotateImagesResponse(
            responses=[self._annotate(one) for one in request.requests]
        )

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
