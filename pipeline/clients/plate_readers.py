"""Plate readers behind one small interface, chosen by `--plate_reader`.

`embedded` runs RapidOCR in the worker (clients/embedded_ocr.py); `cloud-vision` calls
Google Cloud Vision's text detection (clients/cloud_vision.py). Both take a batch of
photo bytes and return one `PlateReading` per photo, in order; a photo that cannot be
read becomes an unreadable reading with its error, never an exception for the batch.
"""

import threading
from collections.abc import Sequence
from typing import Any, Protocol

from pipeline.domain.plates import PlateReading

EMBEDDED_READER = "embedded"
CLOUD_VISION_READER = "cloud-vision"
PLATE_READERS = (EMBEDDED_READER, CLOUD_VISION_READER)
DEFAULT_MIN_CONFIDENCE = 0.8


class PlateReader(Protocol):
    name: str

    def read(self, images: Sequence[bytes]) -> list[PlateReading]:
        """One reading per image, in the same order."""
        ...


def open_plate_reader(
    kind: str, min_confidence: float = DEFAULT_MIN_CONFIDENCE, **client_kwargs: Any
) -> PlateReader:
    """Load the reader once (a worker calls this in DoFn.setup, never per element)."""
    if kind == EMBEDDED_READER:
        from pipeline.clients.embedded_ocr import EmbeddedPlateReader

        return EmbeddedPlateReader(min_confidence)
    if kind == CLOUD_VISION_READER:
        from pipeline.clients.cloud_vision import CloudVisionPlateReader

        return CloudVisionPlateReader(min_confidence, **client_kwargs)
    raise ValueError(f"unknown plate reader {kind!r}; choose one of {', '.join(PLATE_READERS)}")


class _SerialisedReader:
    """One reader shared by the threads of a worker process, one batch at a time.

    RapidOCR keeps call-time settings on the engine, so two concurrent calls could mix
    them; the model is the expensive part, and Beam's Shared loads it once per process.
    """

    def __init__(self, reader: PlateReader) -> None:
        self.name = reader.name
        self._reader = reader
        self._lock = threading.Lock()

    def read(self, images: Sequence[bytes]) -> list[PlateReading]:
        with self._lock:
            return self._reader.read(images)


def serialised_plate_reader(
    kind: str, min_confidence: float = DEFAULT_MIN_CONFIDENCE, **client_kwargs: Any
) -> PlateReader:
    """The reader a pipeline's workers share (EvidenceServices' factory, through Shared)."""
    return _SerialisedReader(open_plate_reader(kind, min_confidence, **client_kwargs))
