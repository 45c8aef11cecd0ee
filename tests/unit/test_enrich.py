"""EnrichFine with injected fake clients: photo, plate and stored evidence, failures routed."""

import io

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from PIL import Image

from pipeline.clients.cars_api import EvidenceUnavailable, Photo
from pipeline.clients.evidence_store import StoredPhoto
from pipeline.domain.evidence import gs_url, photo_object_name, sha256_hex
from pipeline.domain.plates import PlateReading
from pipeline.domain.speed import SectionRule, judge_traversal
from pipeline.transforms.enrich import EnrichFine, EvidenceServices
from tests.helpers import T0_MS, track


def jpeg(size=(64, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (90, 120, 150)).save(buffer, "JPEG")
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


def fines(*vehicle_ids):
    return [judge_traversal(track(v, 70.0, start_ms=T0_MS), SectionRule()) for v in vehicle_ids]


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

    def store(self, name, data, content_type, reading):
        return StoredPhoto(gs_url(self.bucket, name), sha256_hex(data), True, reading)


def summary(record):
    return (
        record["vehicle_id"],
        record["license_plate"],
        record["plate_reader"],
        (record["image_url"] or "").split("/")[0],
        record["evidence_error"],
    )


def test_fines_get_photo_plate_and_stored_image_and_failures_are_routed():
    services = EvidenceServices(
        cars_api=FakeCarsApi, plate_reader=FakeReader, evidence_store=FakeStore
    )
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
            failures | beam.Map(lambda f: (f.stage, f.attributes["vehicle_id"])),
            equal_to([("enrich_fine/fetch_photo", "offline")]),
            label="Failures",
        )


def test_without_a_bucket_the_fine_keeps_the_cars_api_photo_url():
    services = EvidenceServices(cars_api=FakeCarsApi, plate_reader=FakeReader)
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


def test_every_failed_stage_is_a_failure_and_the_first_is_the_fine_s_error():
    class BrokenReader(FakeReader):
        def read(self, images):
            raise RuntimeError("model crashed")

    class FullStore(FakeStore):
        def store(self, name, data, content_type, reading):
            raise OSError("bucket full")

    services = EvidenceServices(
        cars_api=FakeCarsApi, plate_reader=BrokenReader, evidence_store=FullStore
    )
    (fine,) = fines("car-3")
    with TestPipeline(runner="DirectRunner") as p:
        records, failures = p | beam.Create([fine]) | EnrichFine(services, batch_wait_s=None)
        assert_that(
            records | beam.Map(lambda r: (r["license_plate"], r["image_url"], r["evidence_error"])),
            # The photo is still known by its cars API URL; the first failure is the error.
            equal_to([(None, "https://cars.example/car-3.jpg",
                       "read_plate: RuntimeError: model crashed")]),
            label="Records",
        )  # fmt: skip
        assert_that(
            failures | beam.Map(lambda f: (f.stage, f.reason, f.attributes["fine_id"])),
            equal_to([
                ("enrich_fine/read_plate", "RuntimeError: model crashed", fine.traversal_id),
                ("enrich_fine/store_photo", "OSError: bucket full", fine.traversal_id),
            ]),
            label="Failures",
        )  # fmt: skip
