"""Plate readers behind one small interface, chosen by `--plate_reader`.

`embedded` runs RapidOCR in the worker (clients/embedded_ocr.py); `cloud-vision` calls
Google Cloud Vision's text detection (clients/cloud_vision.py); `cascade` is the embedded
reader first and Cloud Vision only for the photos it cannot accept (clients/plate_cascade.py).
Each takes a batch of photo bytes and returns one `PlateReading` per photo, in order; a
photo that cannot be read becomes an unreadable reading with its error, never an exception
for the batch. A reader that cannot read at all for now (a service down, over quota, not
granted) raises `PlateReaderUnavailable`: no photo is to blame, so none is dead-lettered
for it.
"""

import functools
import queue
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from section_speed.clients.plate_cascade import CascadePlateReader
from section_speed.domain.defaults import PLATE_MIN_CONFIDENCE
from section_speed.domain.plate_reading import (
    CASCADE_READER,
    CLOUD_VISION_READER,
    EMBEDDED_READER,
    PLATE_READERS,
    PlateReading,
)


class PlateReader(Protocol):
    name: str

    def read(self, images: Sequence[bytes]) -> list[PlateReading]:
        """One reading per image, in the same order."""
        ...


def open_plate_reader(
    kind: str, min_confidence: float = PLATE_MIN_CONFIDENCE, **client_kwargs: Any
) -> PlateReader:
    """Load one reader (a worker does this in DoFn.setup, never per element).

    An embedded reader computes on one core: onnxruntime's default pool, one thread per
    core, spends more CPU than it saves on these small models, and on Dataflow every
    core already runs its own SDK process. `plate_reader_pool` reads on several.
    `client_kwargs` go to Cloud Vision's reader (`endpoint`: a local server), also the
    cascade's, which is opened only when a photo first needs it.
    """
    if kind == CASCADE_READER:
        first = open_plate_reader(EMBEDDED_READER, min_confidence)
        return CascadePlateReader(first, _vision_opener(min_confidence, client_kwargs))
    if kind == EMBEDDED_READER:
        from section_speed.clients.embedded_ocr import EmbeddedPlateReader

        return EmbeddedPlateReader(min_confidence, threads=1)
    if kind == CLOUD_VISION_READER:
        from section_speed.clients.cloud_vision import CloudVisionPlateReader

        return CloudVisionPlateReader(min_confidence, **client_kwargs)
    raise ValueError(f"unknown plate reader {kind!r}; choose one of {', '.join(PLATE_READERS)}")


class PlateReaderPool:
    """The readers of one worker process, shared by its threads.

    A reader reads one batch at a time (RapidOCR keeps call settings on its engine). With
    one reader a batch goes to it whole: Cloud Vision sends it as one request. With several,
    each photo of a batch goes to the next free reader, so a batch is read on as many cores.
    """

    def __init__(self, readers: Sequence[PlateReader]) -> None:
        if not readers:
            raise ValueError("a plate reader pool needs at least one reader")
        self.name = readers[0].name
        self._free: queue.SimpleQueue[PlateReader] = queue.SimpleQueue()
        for reader in readers:
            self._free.put(reader)
        self._threads = (
            ThreadPoolExecutor(len(readers), thread_name_prefix="plate-reader")
            if len(readers) > 1
            else None
        )

    def read(self, images: Sequence[bytes]) -> list[PlateReading]:
        if self._threads is None or len(images) < 2:
            return self._read_on_a_free_reader(images)
        readings = self._threads.map(lambda image: self._read_on_a_free_reader([image]), images)
        return [reading for one in readings for reading in one]

    def close(self) -> None:
        """Stop the threads and close each reader that has a `close`."""
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)
        while not self._free.empty():
            close = getattr(self._free.get(), "close", None)
            if callable(close):
                close()

    def _read_on_a_free_reader(self, images: Sequence[bytes]) -> list[PlateReading]:
        reader = self._free.get()
        try:
            return list(reader.read(images))
        finally:
            self._free.put(reader)


def plate_reader_pool(
    kind: str,
    min_confidence: float = PLATE_MIN_CONFIDENCE,
    threads: int = 1,
    **client_kwargs: Any,
) -> PlateReader:
    """The readers a worker process's threads share (EvidenceServices' factory, through
    Shared): `threads` embedded engines, each on one core. Cloud Vision's one client is
    thread-safe and bounds its own requests in flight: shared as it is, never queued. The
    cascade's first reader is such a pool, its fallback that one client."""
    if kind == CASCADE_READER:
        first = plate_reader_pool(EMBEDDED_READER, min_confidence, threads)
        return CascadePlateReader(first, _vision_opener(min_confidence, client_kwargs))
    if kind != EMBEDDED_READER:
        return open_plate_reader(kind, min_confidence, **client_kwargs)
    return PlateReaderPool(
        [open_plate_reader(kind, min_confidence) for _ in range(max(1, threads))]
    )


def _vision_opener(
    min_confidence: float, client_kwargs: dict[str, Any]
) -> "functools.partial[PlateReader]":
    """Cloud Vision's reader, as the cascade opens it when a photo first needs it."""
    return functools.partial(
        open_plate_reader, CLOUD_VISION_READER, min_confidence, **client_kwargs
    )
