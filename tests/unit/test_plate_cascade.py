"""The plate cascade with injected readers: Cloud Vision only for what the first cannot accept.

The first reader is a fake that answers each photo a given reading; the fallback is a fake
that records the photos it is asked about, or the real Cloud Vision reader on the local
gRPC fake (tests/fake_vision.py), whose answers go through the same gates as the embedded
reader's.
"""

from collections.abc import Sequence

import pytest

from section_speed.clients.cloud_vision import CloudVisionPlateReader
from section_speed.clients.plate_cascade import CascadePlateReader
from section_speed.clients.plate_readers import plate_reader_pool
from section_speed.domain.judging import judge_traversal
from section_speed.domain.plate_reading import (
    CASCADE_READER,
    CLOUD_VISION_READER,
    PlateCandidate,
    PlateReaderUnavailable,
    PlateReading,
    unreadable,
)
from tests.fake_vision import FakeVision
from tests.helpers import T0_MS, section, track
from transforms.evidence_services import EvidenceServices
from transforms.evidence_steps import ReadPlatesFn
from transforms.fine_evidence import FineEvidence
from transforms.worker_clients import ClientHandler

EMBEDDED = "embedded-fake"
GATE = 0.8


def refused(reason: str, *candidates: str, box=(10, 20, 110, 50)) -> PlateReading:
    offered = tuple(PlateCandidate(plate, (0.7,) * len(plate), 0.5) for plate in candidates)
    return PlateReading(None, 0.7, " | ".join(candidates), EMBEDDED, None, reason, offered, box)


def accepted(plate: str, reader: str = EMBEDDED) -> PlateReading:
    candidate = PlateCandidate(plate, (0.99,) * len(plate), 0.99)
    return PlateReading(plate, 0.99, plate, reader, candidates=(candidate,))


class ScriptedReader:
    """Answers each photo the reading scripted for its bytes; records every call's photos."""

    def __init__(self, name: str, answers: dict[bytes, PlateReading]) -> None:
        self.name = name
        self.answers = answers
        self.calls: list[list[bytes]] = []
        self.closed = False

    def read(self, images: Sequence[bytes]) -> list[PlateReading]:
        self.calls.append(list(images))
        return [self.answers[image] for image in images]

    def close(self) -> None:
        self.closed = True


class Opener:
    """The fallback's factory: counts how often the cascade opens it."""

    def __init__(self, reader) -> None:
        self.reader = reader
        self.opened = 0

    def __call__(self):
        self.opened += 1
        return self.reader


def cascade(first_answers, vision_answers=None):
    first = ScriptedReader(EMBEDDED, first_answers)
    vision = ScriptedReader(CLOUD_VISION_READER, vision_answers or {})
    opener = Opener(vision)
    return CascadePlateReader(first, opener), first, vision, opener


def test_a_plate_the_embedded_reader_accepts_costs_no_vision_call():
    reader, first, _, opener = cascade({b"a": accepted("ABC1234"), b"b": accepted("XYZ9876")})
    readings = reader.read([b"a", b"b"])
    assert [(r.license_plate, r.reader) for r in readings] == [
        ("ABC1234", EMBEDDED),
        ("XYZ9876", EMBEDDED),
    ]
    assert first.calls == [[b"a", b"b"]]
    assert opener.opened == 0  # the Cloud Vision client is not even opened
    assert (reader.first_accepted, reader.fallback_asked) == (2, 0)


def test_only_the_refused_photos_go_to_vision_in_one_call_and_keep_their_order():
    reader, _, vision, opener = cascade(
        {
            b"a": accepted("ABC1234"),
            b"b": refused("'B' read at 0.60, under the gate 0.800", "XYZ9876"),
            b"c": accepted("DEF5678"),
            b"d": refused("no plate among 0 text lines"),
        },
        {b"b": accepted("XYZ9876", CLOUD_VISION_READER), b"d": accepted("GHJ4321", "cloud-vision")},
    )
    readings = reader.read([b"a", b"b", b"c", b"d"])
    assert vision.calls == [[b"b", b"d"]]
    assert [(r.license_plate, r.reader) for r in readings] == [
        ("ABC1234", EMBEDDED),
        ("XYZ9876", CLOUD_VISION_READER),
        ("DEF5678", EMBEDDED),
        ("GHJ4321", CLOUD_VISION_READER),
    ]
    assert opener.opened == 1
    reader.read([b"d"])
    assert opener.opened == 1  # opened once, then reused
    assert (reader.first_accepted, reader.fallback_asked) == (2, 3)


def test_a_photo_vision_refuses_too_stays_without_plate_with_both_reasons_and_candidates():
    vision_refusal = PlateReading(
        None,
        0.6,
        "XYZ9B76",
        CLOUD_VISION_READER,
        reason="'B' read at 0.60, under the gate 0.800",
        candidates=(PlateCandidate("XYZ9B76", (0.6,) * 7, 0.6),),
    )
    reader, _, _, _ = cascade(
        {b"b": refused("crops read XYZ9876, XYZ9B76", "XYZ9876", "XYZ9B76")},
        {b"b": vision_refusal},
    )
    (reading,) = reader.read([b"b"])
    assert reading.license_plate is None and reading.error is None
    assert reading.reader == CLOUD_VISION_READER
    assert reading.reason == (
        f"{EMBEDDED}: crops read XYZ9876, XYZ9B76; "
        f"{CLOUD_VISION_READER}: 'B' read at 0.60, under the gate 0.800"
    )
    # The desk is offered both readers' candidates (Cloud Vision's first), once each, and
    # the embedded reader's plate box.
    assert [c.plate for c in reading.candidates] == ["XYZ9B76", "XYZ9876"]
    assert reading.plate_box == (10, 20, 110, 50)


def test_a_vision_plate_keeps_the_embedded_box_only_when_it_is_the_same_plate():
    reader, _, _, _ = cascade(
        {b"same": refused("too few crops sure", "ABC1234"), b"other": refused("x", "ABC1284")},
        {
            b"same": accepted("ABC1234", CLOUD_VISION_READER),
            b"other": accepted("ABC1234", CLOUD_VISION_READER),
        },
    )
    same, other = reader.read([b"same", b"other"])
    assert same.plate_box == (10, 20, 110, 50)
    assert other.plate_box is None  # the embedded reader's box may be another text's
    assert [c.plate for c in other.candidates] == ["ABC1234", "ABC1284"]


def test_a_vision_failure_is_a_failed_reading_not_the_embedded_refusal():
    outage = unreadable(CLOUD_VISION_READER, "ServiceUnavailable: 503 unavailable")
    reader, _, _, _ = cascade(
        {b"a": refused("no plate among 2 text lines"), b"b": unreadable(EMBEDDED, "OCR failed")},
        {b"a": outage, b"b": outage},
    )
    a, b = reader.read([b"a", b"b"])
    assert a.license_plate is None and a.error == "ServiceUnavailable: 503 unavailable"
    assert b.error == (
        f"{EMBEDDED}: OCR failed; {CLOUD_VISION_READER}: ServiceUnavailable: 503 unavailable"
    )


def test_an_embedded_failure_is_read_by_vision():
    reader, _, vision, _ = cascade(
        {b"a": unreadable(EMBEDDED, "OCR failed: RuntimeError: onnx")},
        {b"a": accepted("ABC1234", CLOUD_VISION_READER)},
    )
    (reading,) = reader.read([b"a"])
    assert (reading.license_plate, reading.reader, reading.error) == (
        "ABC1234",
        CLOUD_VISION_READER,
        None,
    )
    assert vision.calls == [[b"a"]]


def test_a_reader_that_raises_or_miscounts_is_not_hidden():
    class Raising(ScriptedReader):
        def read(self, images):
            raise ConnectionError("boom")

    reader = CascadePlateReader(
        ScriptedReader(EMBEDDED, {b"a": refused("x")}), Opener(Raising("cloud-vision", {}))
    )
    with pytest.raises(ConnectionError, match="boom"):
        reader.read([b"a"])

    class Short(ScriptedReader):
        def read(self, images):
            return []

    reader = CascadePlateReader(Short(EMBEDDED, {}), Opener(ScriptedReader("v", {})))
    with pytest.raises(RuntimeError, match="0 readings for 1 photos"):
        reader.read([b"a"])
    assert reader.read([]) == []


def test_a_fallback_that_cannot_be_opened_makes_the_batch_wait_and_is_tried_again():
    attempts = []

    def no_credentials():
        attempts.append(1)
        raise RuntimeError("DefaultCredentialsError: no credentials")

    first = ScriptedReader(EMBEDDED, {b"a": accepted("ABC1234"), b"b": refused("x")})
    reader = CascadePlateReader(first, no_credentials)
    with pytest.raises(PlateReaderUnavailable) as raised:
        reader.read([b"a", b"b"])
    assert str(raised.value) == (
        "could not open cloud-vision: RuntimeError: DefaultCredentialsError: no credentials"
    )
    assert reader.read([b"a"])[0].license_plate == "ABC1234"  # Vision not needed: read
    with pytest.raises(PlateReaderUnavailable):
        reader.read([b"b"])
    assert len(attempts) == 2  # not cached: credentials may come


def test_close_closes_both_readers_and_a_never_opened_fallback_is_not_opened():
    reader, first, vision, opener = cascade({b"a": accepted("ABC1234")})
    reader.read([b"a"])
    reader.close()
    assert first.closed and not vision.closed and opener.opened == 0
    reader, first, vision, _ = cascade({b"a": refused("x")}, {b"a": refused("y")})
    reader.read([b"a"])
    reader.close()
    assert first.closed and vision.closed


# --- the fallback is the real Cloud Vision reader, on the local gRPC fake ------------------


@pytest.fixture
def fake_vision():
    with FakeVision() as server:
        yield server


def vision_cascade(fake: FakeVision, first_answers) -> CascadePlateReader:
    first = ScriptedReader(EMBEDDED, first_answers)
    return CascadePlateReader(first, lambda: CloudVisionPlateReader(GATE, endpoint=fake.endpoint))


@pytest.mark.parametrize(
    ("lines", "plate", "reason"),
    [
        ([("ABC 2345", 0.97)], "ABC2345", None),
        ([("ABC 2345", 0.70)], None, "under the gate"),  # a character under the gate
        ([("ABC 1234", 0.97)], None, "under the gate"),  # a look-alike (1) needs 0.989
        ([("ABC 1234", 0.99), ("XYZ 9876", 0.99)], None, "several plates in view"),
        ([("NEW YORK", 0.99)], None, "no plate among"),
    ],
)
def test_vision_answers_pass_the_same_gates_in_the_cascade(fake_vision, lines, plate, reason):
    fake_vision.answers = {b"photo": lines}
    reader = vision_cascade(fake_vision, {b"photo": refused("too few crops sure")})
    try:
        (reading,) = reader.read([b"photo"])
    finally:
        reader.close()
    assert reading.license_plate == plate
    assert reading.reader == CLOUD_VISION_READER and reading.error is None
    if reason:
        assert reading.reason.startswith(f"{EMBEDDED}: too few crops sure; {CLOUD_VISION_READER}:")
        assert reason in reading.reason
    assert fake_vision.images_annotated() == 1


def test_plate_reader_pool_builds_the_cascade_around_an_embedded_pool(monkeypatch):
    from section_speed.clients import plate_readers

    opened = []
    monkeypatch.setattr(
        plate_readers,
        "open_plate_reader",
        lambda kind, min_confidence, **kwargs: (
            opened.append((kind, min_confidence, kwargs)) or ScriptedReader(kind, {})
        ),
    )
    reader = plate_reader_pool(CASCADE_READER, 0.85, threads=2, endpoint="127.0.0.1:1")
    assert isinstance(reader, CascadePlateReader) and reader.name == CASCADE_READER
    assert opened == [("embedded", 0.85, {}), ("embedded", 0.85, {})]  # Vision: not yet
    reader._fallback_reader()  # what a photo the embedded reader refused does
    assert opened[-1] == ("cloud-vision", 0.85, {"endpoint": "127.0.0.1:1"})


# --- in the read-plate step: a Vision failure is retried, then dead-lettered ---------------


def test_in_the_read_plate_step_a_photo_vision_cannot_read_is_retried_then_dead_lettered():
    # An error about one photo; an outage raises PlateReaderUnavailable and is waited for.
    reader, first, vision, _ = cascade(
        {b"ok": accepted("ABC1234"), b"hard": refused("too few crops sure")},
        {b"hard": unreadable(CLOUD_VISION_READER, "InvalidArgument: 400 bad image data")},
    )
    services = EvidenceServices(ClientHandler(lambda: None), ClientHandler(lambda: reader))
    step = ReadPlatesFn(services, sleep=lambda _: None)
    step.setup()
    fine_ok, fine_hard = (
        judge_traversal(track(vehicle, 70.0, start_ms=T0_MS), section())
        for vehicle in ("v-ok", "v-hard")
    )
    outputs = list(
        step.process([FineEvidence(fine_ok, photo=b"ok"), FineEvidence(fine_hard, photo=b"hard")])
    )
    step.teardown()
    read = [out.value for out in outputs if not hasattr(out, "tag")]
    dead = [out.value for out in outputs if getattr(out, "tag", None) == "failures"]
    assert [(e.traversal.vehicle_id, e.reading.license_plate) for e in read] == [
        ("v-ok", "ABC1234")
    ]
    assert [(f.stage.name, f.reason) for f in dead] == [
        (
            "enrich_fine/read_plate",
            "no plate reading after 3 attempts: InvalidArgument: 400 bad image data",
        )
    ]
    # Each try runs the cascade again on the photos still unread: the accepted one once.
    assert first.calls == [[b"ok", b"hard"], [b"hard"], [b"hard"]]
    assert vision.calls == [[b"hard"]] * 3
