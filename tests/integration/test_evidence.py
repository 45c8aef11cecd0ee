"""Fine evidence through the emulators: cars API -> embedded OCR -> Cloud Storage.

One pipeline run (module fixture) with generator traffic plus three vehicles whose photo
requests are made to fail on cue (the cars API's /_admin/faults). Assertions are on the
storage emulator's contents and the cars API's request log, not on what the pipeline says.
"""

import hashlib
import json
import time
from datetime import datetime

import pytest
import requests

from generator.event_files import rebase
from generator.publish import publish_events
from generator.simulate import TrafficConfig, simulate_traffic
from local_stack.processes import wait_until
from local_stack.run import LocalPipeline, LocalTopics, OutputCollector
from section_speed.clients.cars_api import PROBE_VEHICLE_ID
from section_speed.clients.evidence_store import (
    READING_SUFFIX,
    SHA256_METADATA_KEY,
    EvidenceStore,
    reading_from_text,
    reading_object_name,
)
from section_speed.domain import defaults
from section_speed.domain.evidence import photo_object_name
from section_speed.domain.geometry import interpolate
from section_speed.domain.plate_formats import plate_for_vehicle
from section_speed.domain.schemas import FINES
from tests.helpers import track

pytestmark = [pytest.mark.integration, pytest.mark.pipeline]

GAP_S = 20
BUCKET = "it-evidence"
DATASET = "it_evidence"
SECTION = TrafficConfig(
    initial=defaults.INITIAL_COORDINATES,
    final=interpolate(defaults.INITIAL_COORDINATES, defaults.FINAL_COORDINATES, 0.25),
    radar_id="radar-ev",
    vehicles=10,
    rate=8.0,
    speeding_fraction=0.5,
    points=4,
    seed=31,
)
RETRIED, DOWN, JUNK = "fault-retry", "fault-down", "fault-junk"


@pytest.fixture(scope="module")
def run(stack):
    api = stack.cars_api_url
    requests.delete(f"{api}/_admin/requests", timeout=5).raise_for_status()
    for fault in (
        {"status": 500, "times": 2, "path_prefix": f"/cars/{RETRIED}"},
        {"status": 500, "times": 1000, "path_prefix": f"/cars/{DOWN}"},
        {"status": 200, "times": 1000, "path_prefix": f"/cars/{JUNK}/", "body": "<html/>"},
    ):
        requests.post(f"{api}/_admin/faults", json=fault, timeout=5).raise_for_status()
    topics = LocalTopics(
        input_topic="ev-events", input_subscription="ev-events-sub",
        output_topic="ev-fines", output_subscription="ev-fines-reader",
        dead_letter_topic="ev-dead", dead_letter_subscription="ev-dead-reader",
    )  # fmt: skip
    topics.create(stack)
    local = LocalPipeline(
        stack, topics, GAP_S, bucket=BUCKET, extra_args=["--bq_dataset", DATASET],
        sections={SECTION.radar_id: SECTION.rule},
    )  # fmt: skip
    local.start()
    outputs = OutputCollector(stack, topics.output_subscription, producer=local.process)
    dead_letters = OutputCollector(stack, topics.dead_letter_subscription)
    now_ms = int(time.time() * 1000)
    events, truth = simulate_traffic(SECTION, start_ms=0)
    events = rebase(events, now_ms)
    for vehicle in (RETRIED, DOWN, JUNK):  # 90 km/h: each one is a fine
        events += track(vehicle, 90.0, start_ms=now_ms, radar_id="radar-ev")
    assert publish_events(events, local.input_topic_path(), progress=False) == len(events)
    expected = len(truth) + 3
    assert outputs.wait_for(lambda got: len(got) >= expected, timeout_s=180), (
        f"only {len(outputs.snapshot())} of {expected} traversals arrived; "
        f"pipeline log:\n{local.process.log_tail(30)}"
    )
    records = {r["vehicle_id"]: r for r in outputs.snapshot()}
    yield records, truth, dead_letters, api
    outputs.close()
    dead_letters.close()
    local.process.stop()
    requests.delete(f"{api}/_admin/faults", timeout=5)


def store() -> EvidenceStore:
    return EvidenceStore(BUCKET)


def test_fined_vehicles_carry_the_true_plate_and_a_stored_photo(run):
    records, truth, _, _ = run
    fined = [t.vehicle_id for t in truth if t.must_be_fined]
    assert fined, "the traffic must hold fines"
    for vehicle_id in fined:
        fine = records[vehicle_id]
        assert fine["is_ticketed"] is True
        assert fine["license_plate"] == plate_for_vehicle(vehicle_id), fine
        assert fine["plate_reader"].startswith("embedded")
        assert 0.8 <= fine["plate_confidence"] <= 1.0
        assert fine["evidence_error"] is None
        entry_ms = int(datetime.fromisoformat(fine["entry_time"]).timestamp() * 1000)
        name = photo_object_name("radar-ev", entry_ms, fine["fine_id"])
        assert fine["image_url"] == f"gs://{BUCKET}/{name}"
        photo = store().read(name)
        assert hashlib.sha256(photo).hexdigest() == fine["image_sha256"]
        blob = store()._bucket.get_blob(name)
        assert blob.content_type == "image/jpeg"
        assert blob.metadata[SHA256_METADATA_KEY] == fine["image_sha256"]
        # The reading recorded beside the photo names that photo and gives the fine's plate.
        recorded = store().read(reading_object_name(name)).decode()
        assert json.loads(recorded)["photo_sha256"] == fine["image_sha256"]
        assert (
            reading_from_text(recorded, fine["image_sha256"]).license_plate
            == (fine["license_plate"])
        )


def test_vehicles_not_fined_are_never_fetched_nor_stored(run):
    records, truth, _, api = run
    passed = {t.vehicle_id for t in truth if not t.must_be_fined}
    assert passed, "the traffic must hold vehicles under the limit"
    for vehicle_id in passed:
        record = records[vehicle_id]
        assert record["is_ticketed"] is False
        assert record["license_plate"] is None and record["image_url"] is None
    fetched = {
        entry["path"].split("/")[2]
        for entry in requests.get(f"{api}/_admin/requests", timeout=5).json()
    }
    assert not fetched & passed
    fined = {t.vehicle_id for t in truth if t.must_be_fined}
    # The start-up check asks once for a probe vehicle's car (never its photo).
    assert fetched == fined | {RETRIED, DOWN, JUNK, PROBE_VEHICLE_ID}
    # One photo and its reading per fine that has a photo: the failed fetches stored nothing.
    names = store().list_names("fines/")
    photos = {
        name.rsplit("/", 1)[1].removesuffix(".jpg") for name in names if name.endswith(".jpg")
    }
    readings = {
        name.rsplit("/", 1)[1].removesuffix(READING_SUFFIX)
        for name in names
        if name.endswith(READING_SUFFIX)
    }
    assert photos == readings == {records[v]["fine_id"] for v in fined | {RETRIED}}
    assert len(names) == 2 * len(photos)


def test_two_server_errors_then_success_gives_a_complete_fine(run):
    records, _, _, api = run
    fine = records[RETRIED]
    assert fine["license_plate"] == plate_for_vehicle(RETRIED)
    assert fine["image_url"].startswith(f"gs://{BUCKET}/fines/radar-ev/")
    assert fine["evidence_error"] is None
    statuses = [
        entry["status"]
        for entry in requests.get(f"{api}/_admin/requests", timeout=5).json()
        if entry["path"] == f"/cars/{RETRIED}"
    ]
    assert statuses == [500, 500, 200]


def test_a_service_always_failing_still_publishes_the_fine_and_dead_letters_it(run):
    records, _, dead_letters, _ = run
    fine = records[DOWN]
    assert fine["is_ticketed"] is True
    assert fine["license_plate"] is None and fine["image_url"] is None
    assert fine["evidence_error"].startswith("fetch_photo: EvidenceUnavailable")
    assert dead_letters.wait_for(
        lambda got: any(DOWN in (letter["attributes"] or "") for letter in got), timeout_s=30
    )
    (letter,) = [x for x in dead_letters.snapshot() if DOWN in (x["attributes"] or "")]
    assert letter["stage"] == "enrich_fine/fetch_photo"
    assert "500" in letter["error"]
    assert fine["fine_id"] in letter["payload"]
    # What failed where: the stack trace of the exception, as FailsafeElement keeps it.
    assert "Traceback (most recent call last):" in letter["stacktrace"]
    assert "in fetch" in letter["stacktrace"] and "EvidenceUnavailable" in letter["stacktrace"]


def test_a_body_that_is_not_an_image_is_rejected_with_a_reason(run):
    records, _, dead_letters, _ = run
    fine = records[JUNK]
    assert fine["license_plate"] is None and fine["image_url"] is None
    assert "not a decodable image" in fine["evidence_error"]
    assert dead_letters.wait_for(
        lambda got: any(JUNK in (letter["attributes"] or "") for letter in got), timeout_s=30
    )


def test_fines_in_the_warehouse_carry_the_evidence(run, stack):
    records, truth, _, _ = run
    from section_speed.clients.warehouse import Warehouse

    warehouse = Warehouse(stack.project_id, DATASET)
    expected = sum(t.must_be_fined for t in truth) + 3
    wait_until(
        lambda: warehouse.count(FINES) >= expected,
        timeout_s=60,
        what="the fines' rows",
        interval_s=0.5,
    )
    rows = warehouse.query(f"SELECT * FROM `{warehouse.project}.{DATASET}.fines`")
    assert {r["vehicle_id"]: r["license_plate"] for r in rows} == {
        v: records[v]["license_plate"] for v in {r["vehicle_id"] for r in rows}
    }
    assert {r["image_sha256"] for r in rows if r["image_url"]} == {
        records[r["vehicle_id"]]["image_sha256"] for r in rows if r["image_url"]
    }
