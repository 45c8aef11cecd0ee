"""PlateReaderPool: a batch's photos on several readers at once, in order; one reader whole."""

import threading
from collections.abc import Sequence

import pytest

from section_speed.clients.plate_readers import PlateReaderPool, plate_reader_pool
from section_speed.domain.plate_reading import PlateReading

WAIT_S = 10.0


class RecordingReader:
    """Reads `b"PLATE"` as PLATE; notes every call's batch and the readers busy at once."""

    name = "recording"

    def __init__(self, busy: "Busy", rendezvous: threading.Barrier | None = None) -> None:
        self.busy = busy
        self.rendezvous = rendezvous
        self.batches: list[list[bytes]] = []

    def read(self, images: Sequence[bytes]) -> list[PlateReading]:
        self.batches.append(list(images))
        with self.busy:
            if self.rendezvous is not None:
                self.rendezvous.wait(WAIT_S)  # BrokenBarrierError unless both read at once
            return [PlateReading(text, 0.99, text, self.name) for text in map(bytes.decode, images)]


class Busy:
    """How many readers are inside `read` at once, at most."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = self.most = 0

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self.now -= 1


def test_with_several_readers_a_batch_is_read_at_once_and_in_order():
    busy = Busy()
    rendezvous = threading.Barrier(2)
    readers = [RecordingReader(busy, rendezvous), RecordingReader(busy, rendezvous)]
    pool = PlateReaderPool(readers)
    images = [f"AB{i}CDE".encode() for i in range(6)]
    readings = pool.read(images)
    assert [reading.license_plate for reading in readings] == [f"AB{i}CDE" for i in range(6)]
    assert busy.most == 2
    # Each photo went to one reader on its own, and both readers took part.
    assert sorted(len(batch) for reader in readers for batch in reader.batches) == [1] * 6
    assert all(reader.batches for reader in readers)


def test_one_reader_gets_the_batch_whole():
    reader = RecordingReader(Busy())
    readings = PlateReaderPool([reader]).read([b"ABC1234", b"XYZ9876"])
    assert reader.batches == [[b"ABC1234", b"XYZ9876"]]
    assert [reading.license_plate for reading in readings] == ["ABC1234", "XYZ9876"]


def test_a_reader_is_used_by_one_thread_at_a_time():
    busy = Busy()
    pool = PlateReaderPool([RecordingReader(busy)])
    threads = [threading.Thread(target=pool.read, args=([b"ABC1234"] * 3,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    assert busy.most == 1


def test_a_reader_that_raises_fails_the_call_and_is_free_again():
    class Failing(RecordingReader):
        def read(self, images: Sequence[bytes]) -> list[PlateReading]:
            if images == [b"BAD"]:
                raise RuntimeError("model crashed")
            return super().read(images)

    busy = Busy()
    pool = PlateReaderPool([Failing(busy), Failing(busy)])
    with pytest.raises(RuntimeError, match="model crashed"):
        pool.read([b"ABC1234", b"BAD"])
    assert [r.license_plate for r in pool.read([b"ABC1234", b"XYZ9876"])] == [
        "ABC1234",
        "XYZ9876",
    ]


def test_cloud_vision_is_one_client_shared_unqueued_whatever_the_threads(monkeypatch):
    opened = []

    def fake_open(kind: str, min_confidence: float, **kwargs: object) -> RecordingReader:
        opened.append(kind)
        return RecordingReader(Busy())

    monkeypatch.setattr("section_speed.clients.plate_readers.open_plate_reader", fake_open)
    vision = plate_reader_pool("cloud-vision", 0.8, threads=4)
    embedded = plate_reader_pool("embedded", 0.8, threads=3)
    assert opened == ["cloud-vision"] + ["embedded"] * 3
    # Cloud Vision's client bounds its own requests in flight: a pool would queue its
    # callers one at a time.
    assert isinstance(vision, RecordingReader) and isinstance(embedded, PlateReaderPool)


def test_a_pool_needs_a_reader():
    with pytest.raises(ValueError, match="at least one reader"):
        PlateReaderPool([])
