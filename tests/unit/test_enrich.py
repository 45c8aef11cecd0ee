"""EnrichFine with injected fake clients: photo, plate and stored evidence, failures routed."""

import functools
import io
from dataclasses import replace
from typing import ClassVar

import apache_beam as beam
import grpc
import pytest
import requests
from apache_beam.io.components.adaptive_throttler import AdaptiveThrottler
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from google.api_core import exceptions as api_exceptions
from PIL import Image

from section_speed.clients.cars_api import EvidenceUnavailable, Photo
from section_speed.clients.cloud_vision import (
    OVERLOAD_RATIO,
    TRANSIENT_RETRY,
    CloudVisionPlateReader,
)
from section_speed.clients.evidence_store import (
    EvidenceStoreUnavailable,
    StoredPhoto,
    reading_from_text,
    reading_object_name,
    reading_to_text,
)
from section_speed.domain.evidence import gs_url, photo_object_name, sha256_hex
from section_speed.domain.judging import judge_traversal
from section_speed.domain.plate_reading import PlateReaderUnavailable, PlateReading, unreadable
from tests.fake_vision import FakeVision
from tests.helpers import T0_MS, section, track
from transforms.enrich import EnrichFine
from transforms.evidence_services import EvidenceServices
from transforms.evidence_steps import FetchPhotoFn, ReadPlatesFn, RecordReadingFn, StorePhotoFn
from transforms.failures import STORE_PHOTO_STAGE, FailureCoder, to_dead_letter_record
from transforms.fine_evidence import FineEvidence, to_fine_record
from transforms.worker_clients import ClientHandler


def jpeg(size=(64, 48), color=(90, 120, 150)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG")
    return buffer.getvalue()


PHOTO = jpeg()  # a real JPEG: the image checks run on it; the fake reader "reads" it
STORED_PLATE = PlateReading("STO1234", 0.99, "STO 1234", "fake-ocr")


class FakeCarsApi:
    max_image_bytes = 10_000

    def fetch(self, vehicle_id: str) -> Photo:
        if vehicle_id == "offline":
            raise EvidenceUnavailable("cars API unreachable: connection refused")
        return Photo(f"https://cars.example/{vehicle_id}.jpg", PHOTO)


class FakeReader:
    name = "fake-ocr"

    def read(self, images):
        return [PlateReading("ABC1234", 0.97, "ABC 1234", self.name) for _ in images]


def fake_services(cars_api, plate_reader, evidence_store=None) -> EvidenceServices:
    """Handlers that load the given fakes."""
    return EvidenceServices(
        ClientHandler(cars_api),
        ClientHandler(plate_reader),
        evidence_store and ClientHandler(evidence_store),
    )


def fines(*vehicle_ids):
    return [judge_traversal(track(v, 70.0, start_ms=T0_MS), section()) for v in vehicle_ids]


# A fine whose evidence an earlier firing stored: a correction of it is not fetched again.
(ALREADY_STORED,) = fines("stored")
STORED_NAME = photo_object_name(
    ALREADY_STORED.radar_id, ALREADY_STORED.entry_time_ms, ALREADY_STORED.traversal_id
)


class FakeStore:
    bucket = "evidence"

    def find(self, name):
        if name == STORED_NAME:
            return StoredPhoto(gs_url(self.bucket, name), "f" * 64, False, STORED_PLATE)
        return None

    def store(self, name, data, content_type):
        return StoredPhoto(gs_url(self.bucket, name), sha256_hex(data), True)

    def record_reading(self, name, reading, photo_sha256):
        return reading


class BucketStore:
    """Cloud Storage's semantics in memory: objects created if absent, never changed.

    Class-level objects, so every DoFn's client (one per factory call) sees one bucket.
    """

    bucket = "evidence"
    objects: ClassVar[dict[str, bytes]] = {}

    def _photo(self, name):
        digest = sha256_hex(self.objects[name])
        reading = self.objects.get(reading_object_name(name))
        return StoredPhoto(
            gs_url(self.bucket, name),
            digest,
            False,
            reading and reading_from_text(reading.decode(), digest),
        )

    def find(self, name):
        return self._photo(name) if name in self.objects else None

    def store(self, name, data, content_type):
        if name in self.objects:  # the precondition if_generation_match=0 fails
            return self._photo(name)
        self.objects[name] = data
        return StoredPhoto(gs_url(self.bucket, name), sha256_hex(data), True)

    def read(self, name):
        return self.objects[name]

    def record_reading(self, name, reading, photo_sha256):
        assert reading.error is None, "a failed reading must never be recorded"
        recorded = reading_object_name(name)
        if recorded in self.objects:
            return reading_from_text(self.objects[recorded].decode(), photo_sha256)
        self.objects[recorded] = reading_to_text(reading, photo_sha256).encode()
        return reading


def car_photo(index: int) -> bytes:
    """A different real JPEG per call, as the course's cars API answers a random car."""
    return jpeg(color=(index * 40 % 256, 80, 200 - index * 30 % 200))


PLATE_OF_PHOTO: dict[str, str] = {}  # sha256 of a photo -> the plate it shows


class RandomCarsApi:
    max_image_bytes = 10_000
    calls = 0

    def fetch(self, vehicle_id):
        RandomCarsApi.calls += 1
        photo = car_photo(RandomCarsApi.calls)
        PLATE_OF_PHOTO[sha256_hex(photo)] = f"CAR{RandomCarsApi.calls:04d}"
        return Photo(f"https://cars.example/random/{RandomCarsApi.calls}.jpg", photo)


class PhotoReader:
    """Reads the plate the photo shows, so a plate can be traced to its photo."""

    name = "photo-ocr"

    def read(self, images):
        return [
            PlateReading(PLATE_OF_PHOTO[sha256_hex(image)], 0.99, "", self.name) for image in images
        ]


def summary(record):
    return (
        record["vehicle_id"],
        record["license_plate"],
        record["plate_reader"],
        (record["image_url"] or "").split("/")[0],
        record["evidence_error"],
    )


def test_fines_get_photo_plate_and_stored_image_and_failures_are_routed():
    services = fake_services(FakeCarsApi, FakeReader, FakeStore)
    traversals = [*fines("car-1", "offline"), ALREADY_STORED]
    with TestPipeline(runner="DirectRunner") as p:
        records, failures = p | beam.Create(traversals) | EnrichFine(services, batch_wait_s=None)
        assert_that(
            records | beam.Map(summary),
            equal_to([
                ("car-1", "ABC1234", "fake-ocr", "gs:", None),
                ("offline", None, None, "", "fetch_photo: EvidenceUnavailable: cars API "
                 "unreachable: connection refused"),
                # Its evidence was stored with an earlier firing: reused, not fetched again.
                ("stored", "STO1234", "fake-ocr", "gs:", None),
            ]),
            label="Records",
        )  # fmt: skip
        assert_that(
            failures | beam.Map(lambda f: (f.stage.name, f.attributes["vehicle_id"])),
            equal_to([("enrich_fine/fetch_photo", "offline")]),
            label="Failures",
        )


def test_without_a_bucket_the_fine_keeps_the_cars_api_photo_url():
    services = fake_services(FakeCarsApi, FakeReader)
    with TestPipeline(runner="DirectRunner") as p:
        records, failures = (
            p | beam.Create(fines("car-2")) | EnrichFine(services, batch_wait_s=None)
        )
        assert_that(
            records | beam.Map(lambda r: (r["license_plate"], r["image_url"], r["image_sha256"])),
            equal_to([("ABC1234", "https://cars.example/car-2.jpg", None)]),
            label="Records",
        )
        assert_that(failures, equal_to([]), label="NoFailures")


def test_a_photo_the_reader_refuses_every_time_is_dead_lettered_unpublished():
    class RefusingReader(FakeReader):
        def read(self, images):
            return [unreadable(self.name, "INVALID_ARGUMENT: bad image data") for _ in images]

    services = fake_services(FakeCarsApi, RefusingReader, FakeStore)
    (fine,) = fines("car-3")
    with TestPipeline(runner="DirectRunner") as p:
        records, failures = (
            p | beam.Create([fine]) | EnrichFine(services, batch_wait_s=None, read_backoff_s=0.0)
        )
        # No reading after every attempt: no fine goes out with a missing or guessed plate.
        assert_that(records, equal_to([]), label="Records")
        assert_that(
            failures | beam.Map(lambda f: (f.stage.name, f.reason, f.attributes["fine_id"])),
            equal_to([
                ("enrich_fine/read_plate", "no plate reading after 3 attempts: "
                 "INVALID_ARGUMENT: bad image data", fine.traversal_id),
            ]),
            label="Failures",
        )  # fmt: skip


def run_fn(fn, element):
    fn.setup()
    return [getattr(out, "value", out) for out in fn.process(element)]


def test_racing_revisions_end_with_the_stored_photo_and_the_plate_read_from_it():
    BucketStore.objects = {}
    services = fake_services(RandomCarsApi, PhotoReader, BucketStore)
    (first,) = fines("racer")
    second = replace(first, revision=1, avg_speed_kmh=first.avg_speed_kmh + 1)
    # Both revisions fetch before either stores: two different cars.
    (a,) = run_fn(FetchPhotoFn(services), first)
    (b,) = run_fn(FetchPhotoFn(services), second)
    assert sha256_hex(a.photo) != sha256_hex(b.photo)
    (stored_b,) = run_fn(StorePhotoFn(services), b)  # b stores first: its photo is evidence
    (stored_a,) = run_fn(StorePhotoFn(services), a)  # a finds b's photo and takes its bytes
    assert stored_b.stored.created and not stored_a.stored.created
    assert stored_a.photo == stored_b.photo == b.photo
    reader = ReadPlatesFn(services)
    reader.setup()
    read = [out.value for out in reader.process([stored_a, stored_b])]
    records = [to_fine_record(run_fn(RecordReadingFn(services), e)[0]) for e in read]
    plate_of_b = PLATE_OF_PHOTO[sha256_hex(b.photo)]
    assert {(r["license_plate"], r["image_sha256"], r["image_url"]) for r in records} == {
        (plate_of_b, sha256_hex(b.photo), gs_url("evidence", STORE_NAME_OF(first)))
    }
    # A third attempt whose photo differs again takes the stored photo's recorded reading.
    (c,) = run_fn(FetchPhotoFn(services), replace(first, revision=2))
    assert c.photo is None and c.reading.license_plate == plate_of_b
    assert c.stored.sha256 == sha256_hex(b.photo)


def STORE_NAME_OF(traversal):
    return photo_object_name(traversal.radar_id, traversal.entry_time_ms, traversal.traversal_id)


def test_a_failed_reading_is_never_recorded_and_is_read_again_from_the_stored_photo():
    BucketStore.objects = {}

    class FailingReader(PhotoReader):
        def read(self, images):
            return [PlateReading(None, 0.0, "", self.name, error="503 unavailable")] * len(images)

    failing = fake_services(RandomCarsApi, FailingReader, BucketStore)
    (fine,) = fines("unlucky")
    waits = []
    (fetched,) = run_fn(FetchPhotoFn(failing), fine)
    (stored,) = run_fn(StorePhotoFn(failing), fetched)
    reader = ReadPlatesFn(failing, sleep=waits.append)
    reader.setup()
    (dead,) = reader.process([stored])
    assert (dead.tag, dead.value.stage.name) == ("failures", "enrich_fine/read_plate")
    assert dead.value.reason == "no plate reading after 3 attempts: 503 unavailable"
    assert waits == [1.0, 2.0]  # tried three times, backing off
    name = STORE_NAME_OF(fine)
    assert reading_object_name(name) not in BucketStore.objects  # a failure is no evidence
    # The next revision reads the stored photo again (not a new one) and records it.
    working = fake_services(RandomCarsApi, PhotoReader, BucketStore)
    calls_before = RandomCarsApi.calls
    (again,) = run_fn(FetchPhotoFn(working), replace(fine, revision=1))
    assert RandomCarsApi.calls == calls_before and again.photo == fetched.photo
    reader = ReadPlatesFn(working)
    reader.setup()
    (read,) = [out.value for out in reader.process([again])]
    (recorded,) = run_fn(RecordReadingFn(working), read)
    record = to_fine_record(recorded)
    assert record["license_plate"] == PLATE_OF_PHOTO[sha256_hex(fetched.photo)]
    assert record["image_sha256"] == sha256_hex(fetched.photo)
    recorded = BucketStore.objects[reading_object_name(name)].decode()
    assert (
        reading_from_text(recorded, record["image_sha256"]).license_plate
        == (record["license_plate"])
    )


def test_a_reader_that_cannot_read_for_a_moment_is_waited_for_and_the_fine_published():
    class FlakyReader(PhotoReader):
        calls = 0

        def read(self, images):
            FlakyReader.calls += 1
            if FlakyReader.calls == 1:
                raise PlateReaderUnavailable("Cloud Vision: 503 unavailable")
            return super().read(images)

    BucketStore.objects = {}
    services = fake_services(RandomCarsApi, FlakyReader, BucketStore)
    with TestPipeline(runner="DirectRunner") as p:
        records, failures = (
            p
            | beam.Create(fines("flaky"))
            | EnrichFine(services, batch_wait_s=None, read_backoff_s=0.0)
        )
        assert_that(
            records | beam.Map(lambda r: (r["license_plate"] or "")[:3]),
            equal_to(["CAR"]),
            label="Records",
        )
        assert_that(failures, equal_to([]), label="NoFailures")


def test_teardown_closes_the_clients_setup_loaded_once_no_instance_uses_them():
    class ClosingCarsApi(FakeCarsApi):
        def close(self):
            self.closed = True

    class ClosingStore(FakeStore):
        def close(self):
            self.closed = True

    services = EvidenceServices(
        ClientHandler(ClosingCarsApi, keep_idle_s=0),
        ClientHandler(FakeReader, keep_idle_s=0),
        ClientHandler(ClosingStore, keep_idle_s=0),
    )
    fetch, store = FetchPhotoFn(services), StorePhotoFn(services)
    fetch.setup()
    store.setup()
    cars_api, evidence_store = fetch.cars_api, fetch.store
    assert store.store is evidence_store  # one store client for the process's steps
    (fetched,) = fetch.process(fines("car-4")[0])
    assert fetched.photo_url == "https://cars.example/car-4.jpg"
    fetch.teardown()
    assert (fetch.cars_api, fetch.store) == (None, None)
    assert getattr(cars_api, "closed", False) is True
    assert getattr(evidence_store, "closed", False) is False  # StorePhoto still uses it
    store.teardown()
    assert getattr(evidence_store, "closed", False) is True


# --- Stored evidence or nothing (docs/evidence.md, Failures) ----------------------------


class CountingReader(FakeReader):
    """Counts the photos it was asked to read."""

    photos: ClassVar[list[bytes]] = []

    def read(self, images):
        CountingReader.photos.extend(images)
        return super().read(images)


def bundle_retrying_pipeline() -> TestPipeline:
    """A runner that retries a failed bundle, as Dataflow does (the local runner 4 times)."""
    return TestPipeline(runner="BundleBasedDirectRunner")


def test_with_a_bucket_a_photo_that_could_not_be_stored_is_neither_read_nor_published():
    class RefusingStore(FakeStore):
        def store(self, name, data, content_type):
            raise api_exceptions.BadRequest("object refused")

    CountingReader.photos = []
    services = fake_services(FakeCarsApi, CountingReader, RefusingStore)
    (fine,) = fines("refused")
    with TestPipeline(runner="DirectRunner") as p:
        records, failures = p | beam.Create([fine]) | EnrichFine(services, batch_wait_s=None)
        # Never the cars API's URL without a digest: no fine goes out on unstored evidence.
        assert_that(records, equal_to([]), label="Records")
        assert_that(
            failures | beam.Map(lambda f: (f.stage, f.reason, f.attributes["fine_id"])),
            equal_to([(STORE_PHOTO_STAGE, "BadRequest: 400 object refused", fine.traversal_id)]),
            label="Failures",
        )
    assert CountingReader.photos == []


class FlakyBucketStore(BucketStore):
    """Cloud Storage down for its first `down_for` writes (after the library's retries)."""

    down_for = 2
    refused = 0

    def store(self, name, data, content_type):
        if FlakyBucketStore.refused < self.down_for:
            FlakyBucketStore.refused += 1
            raise api_exceptions.ServiceUnavailable("storage down")
        return super().store(name, data, content_type)


def test_storage_down_while_storing_fails_the_bundle_and_the_runner_s_retry_publishes_it():
    BucketStore.objects, FlakyBucketStore.refused = {}, 0
    services = fake_services(FakeCarsApi, FakeReader, FlakyBucketStore)
    (fine,) = fines("patient")
    with bundle_retrying_pipeline() as p:
        records, failures = p | beam.Create([fine]) | EnrichFine(services, batch_wait_s=None)
        assert_that(
            records | beam.Map(lambda r: (r["license_plate"], r["image_url"], r["image_sha256"])),
            equal_to([
                ("ABC1234", gs_url("evidence", STORE_NAME_OF(fine)), sha256_hex(PHOTO)),
            ]),
            label="Records",
        )  # fmt: skip
        assert_that(failures, equal_to([]), label="NoFailures")
    assert FlakyBucketStore.refused == 2


def test_storage_down_raises_out_of_the_step_and_nothing_goes_on():
    class DownStore(FakeStore):
        def store(self, name, data, content_type):
            raise requests.ConnectionError("connection refused")

    services = fake_services(FakeCarsApi, FakeReader, DownStore)
    (fetched,) = run_fn(FetchPhotoFn(services), fines("waiting")[0])
    step = StorePhotoFn(services)
    step.setup()
    with pytest.raises(EvidenceStoreUnavailable, match="connection refused"):
        list(step.process(fetched))


# --- Catch what is meant (docs/architecture.md, One failure type) -----------------------


def test_a_programming_error_in_an_evidence_step_raises_it_is_no_outage():
    class BuggyStore(FakeStore):
        def find(self, name):
            raise TypeError("find() got an unexpected keyword argument")

        def store(self, name, data, content_type):
            raise AttributeError("'NoneType' object has no attribute 'upload'")

    services = fake_services(FakeCarsApi, FakeReader, BuggyStore)
    (fine,) = fines("buggy")
    with pytest.raises(TypeError):
        run_fn(FetchPhotoFn(services), fine)
    fetched = replace(FineEvidence(fine), photo=PHOTO, photo_url="https://cars.example/b.jpg")
    with pytest.raises(AttributeError):
        run_fn(StorePhotoFn(services), fetched)


def test_a_dead_letter_keeps_its_stage_as_the_registry_s_and_the_stack_trace():
    class RefusingStore(FakeStore):
        def store(self, name, data, content_type):
            raise api_exceptions.BadRequest("object refused")

    services = fake_services(FakeCarsApi, FakeReader, RefusingStore)
    (fetched,) = run_fn(FetchPhotoFn(services), fines("traced")[0])
    (failure,) = run_fn(StorePhotoFn(services), fetched)
    assert failure.stage is STORE_PHOTO_STAGE
    assert failure.stacktrace.startswith("Traceback (most recent call last):")
    assert "in store" in failure.stacktrace and "BadRequest: 400 object refused" in (
        failure.stacktrace
    )
    letter = to_dead_letter_record(failure)
    assert (letter["stage"], letter["stacktrace"]) == (STORE_PHOTO_STAGE.name, failure.stacktrace)
    assert FailureCoder().decode(FailureCoder().encode(failure)) == failure


# --- A plate reader's outage is waited out (docs/evidence.md, Failures) -----------------


def test_a_cloud_vision_outage_and_quota_wave_are_waited_out_every_fine_published():
    """The real Cloud Vision reader on the loopback fake, refusing every call with 429 and
    503 for longer than the reader's retries and the step's attempts last, then back."""
    with FakeVision() as vision_server:
        vision_server.answers = {PHOTO: [("ABC-1234", 0.995)]}
        reader = functools.partial(
            CloudVisionPlateReader,
            0.9,
            endpoint=vision_server.endpoint,
            retry=TRANSIENT_RETRY.with_delay(initial=0.05, maximum=0.2).with_timeout(1.0),
            throttler=AdaptiveThrottler(200, 20, OVERLOAD_RATIO),
            throttle_delay_s=0.02,
        )
        services = fake_services(FakeCarsApi, reader, FakeStore)
        vision_server.refuse_for(
            5.0, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE
        )
        with TestPipeline(runner="DirectRunner") as p:
            records, failures = (
                p
                | beam.Create(fines("q-1", "q-2", "q-3"))
                | EnrichFine(services, batch_wait_s=None, read_backoff_s=0.0)
            )
            assert_that(
                records | beam.Map(lambda r: (r["vehicle_id"], r["license_plate"])),
                equal_to([("q-1", "ABC1234"), ("q-2", "ABC1234"), ("q-3", "ABC1234")]),
                label="EveryFinePublished",
            )
            assert_that(failures, equal_to([]), label="NoneDeadLettered")
        calls = vision_server.log
        assert calls[-1].started - calls[0].started >= 5.0, "the outage was not waited out"


def test_a_reader_down_past_the_wait_fails_the_bundle_and_dead_letters_nothing():
    class DownReader(FakeReader):
        def read(self, images):
            raise PlateReaderUnavailable("Cloud Vision: 503 unavailable")

    clock = [0.0]

    def sleep(seconds):
        clock[0] += seconds

    services = fake_services(FakeCarsApi, DownReader)
    (fetched,) = run_fn(FetchPhotoFn(services), fines("down")[0])
    step = ReadPlatesFn(services, sleep=sleep, outage_wait_s=60.0, monotonic=lambda: clock[0])
    step.setup()
    out = []
    with pytest.raises(PlateReaderUnavailable):
        out.extend(step.process([fetched]))
    assert out == []  # nothing dead-lettered, nothing published: the runner retries
    assert clock[0] == 60.0  # waited, backing off, for as long as the step may


def test_with_a_bucket_no_record_is_made_of_a_photo_known_only_by_its_cars_api_url():
    (fine,) = fines("unstored")
    fetched = FineEvidence(fine, photo=PHOTO, photo_url="https://cars.example/u.jpg")
    with pytest.raises(ValueError, match="a photo that was not stored"):
        to_fine_record(fetched, bucket=True)
    assert to_fine_record(fetched)["image_url"] == "https://cars.example/u.jpg"  # no bucket
