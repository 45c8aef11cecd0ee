"""The course's command line and its consumer work with this project unchanged.

The course (EDEM 2024, "Serverless Data Processing in GCP: Dataflow") starts its pipeline
with five flags and reads the output topic with a consumer that expects its own keys;
docs/course.md sets the two side by side.
"""

import hashlib
import json
import re

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.options import OPTION_SPECS, SectionSpeedOptions, invalid_options
from section_speed.domain.course import (
    OUTPUT_KEYS,
    from_transport,
    output_keys,
    text_vehicle_id,
    timeless_event_id,
    timeless_message,
    timeless_pubsub,
)
from section_speed.domain.events import ID_PATTERN, CameraEvent, parse_camera_event
from section_speed.domain.rules import SectionRule
from section_speed.domain.schemas import FINE_COLUMNS, output_message, output_record
from section_speed.domain.traversal import Traversal, kmh_to_mph
from transforms.sinks import to_pubsub_message

COURSE_CARS_API = "https://europe-west1-long-flame-410209.cloudfunctions.net/car-license-plates-api"
# The course README's command, with a student's values (projects/.../subscriptions/...).
COURSE_COMMAND = [
    "--project_id", "woven-justice-411714",
    "--input_subscription", "projects/woven-justice-411714/subscriptions/camara-input2-sub",
    "--output_topic", "projects/woven-justice-411714/topics/camara-output2",
    "--radar_id", "Adriana",
    "--cars_api", COURSE_CARS_API,
]  # fmt: skip
COURSE_DATAFLOW_FLAGS = [
    "--runner", "DataflowRunner",
    "--job_name", "edem-dataflow-adriana",
    "--region", "europe-west1",
    "--temp_location", "gs://woven-justice-bucket/tmp",
    "--staging_location", "gs://woven-justice-bucket/stg",
    "--requirements_file", "requirements.txt",
]  # fmt: skip


def own_options(argv: list[str]) -> SectionSpeedOptions:
    return PipelineOptions(argv).view_as(SectionSpeedOptions)


# --- the command line --------------------------------------------------------------------


@pytest.mark.parametrize("extra", [[], COURSE_DATAFLOW_FLAGS], ids=["local", "dataflow"])
def test_the_courses_exact_command_line_is_valid(extra):
    options = own_options([*COURSE_COMMAND, *extra])
    assert invalid_options(options) == []
    assert options.radar_id == "Adriana"
    assert options.cars_api == COURSE_CARS_API
    assert options.bucket is None  # no copies: image_url is the cars API's photo URL
    assert options.photo_hosts == "storage.googleapis.com"  # where the course's photos are


def test_the_courses_command_line_passes_the_entry_points_validation():
    from pipeline.options import pipeline_options  # the path `python -m pipeline` takes

    options = pipeline_options(COURSE_COMMAND, save_main_session=False)
    own = options.view_as(SectionSpeedOptions)
    assert (own.project_id, own.input_subscription, own.output_topic) == (
        "woven-justice-411714",
        "projects/woven-justice-411714/subscriptions/camara-input2-sub",
        "projects/woven-justice-411714/topics/camara-output2",
    )


@pytest.mark.parametrize("name", ["Adriana", "adriana", "Adriana_2", "radar-7", "JoseMaria"])
def test_student_names_are_radar_ids(name):
    assert invalid_options(own_options(["--radar_id", name])) == []


@pytest.mark.parametrize("name", ["Adriana Pérez", "José", "../etc", ""])
def test_names_that_cannot_be_a_radar_id_are_refused_naming_the_option(name):
    (problem,) = invalid_options(own_options(["--radar_id", name]))
    assert problem.startswith(f"--radar_id={name!r} does not match")


def test_cars_api_placeholder_other_than_vehicle_id_is_refused():
    (problem,) = invalid_options(own_options(["--cars_api", "http://h/cars/{id}"]))
    assert problem == "--cars_api='http://h/cars/{id}' has a placeholder other than {vehicle_id}"


def test_cars_api_template_and_bare_origin_are_valid_without_a_bucket():
    for url in ("http://127.0.0.1:8085/cars/{vehicle_id}", "http://127.0.0.1:8085"):
        assert invalid_options(own_options(["--cars_api", url])) == []


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("storage.googleapis.com", True),
        ("storage.googleapis.com,photos.example.org", True),
        ("", True),  # only the cars API's own host
        ("https://storage.googleapis.com", False),
        ("storage.googleapis.com photos.example.org", False),
        ("storage.googleapis.com,", False),
    ],
)
def test_photo_hosts_values(value, valid):
    spec = next(spec for spec in OPTION_SPECS if spec.name == "photo_hosts")
    assert bool(re.fullmatch(spec.regex, value)) is valid
    assert (invalid_options(own_options([f"--photo_hosts={value}"])) == []) is valid


# --- the output topic, read by a consumer written for the course -------------------------


def course_consumer(data: bytes) -> dict[str, object]:
    """Reads a message as a consumer of the course's pipeline does (its keys, its names)."""
    msg = json.loads(data.decode("utf-8"))
    return {
        "radar": msg["radar_id"],
        "vehicle": msg["vehicle_id"],
        "speed_kmh": msg["avg_speed"],
        "lat": msg["coordinates"][0],
        "lon": msg["coordinates"][1],
        "ticketed": msg["is_Ticketed"],
        "plate": msg["license_plate"],
        "image": msg.get("image_url"),
    }


def traversal(vehicle_id: str, kmh: float, speeding: bool, method: str) -> Traversal:
    return Traversal(
        traversal_id="0123456789abcdef0123456789abcdef",
        radar_id="Adriana",
        vehicle_id=vehicle_id,
        distance_m=1215.0,
        duration_s=1215.0 / (kmh / 3.6),
        avg_speed_kmh=kmh,
        avg_speed_mph=kmh / 1.609344,
        speed_limit_mph=25.0,
        entry_time_ms=1_700_000_000_000,
        exit_time_ms=1_700_000_060_000,
        entry_location=(40.81939, -73.940744),
        exit_location=(40.811, -73.95),
        detections=10,
        is_speeding=speeding,
        speed_method=method,
    )


PHOTO = "https://storage.googleapis.com/edem-cars/car-17.jpg"


def published(record: dict) -> bytes:
    return to_pubsub_message(output_message(record), "fine_id").data


def test_a_course_consumer_reads_a_fine():
    fine = output_record(
        traversal("Xy7Pq2", 52.4, True, "spot_mean"),
        1_700_000_070_000,
        {"license_plate": "ABC1234", "plate_confidence": 0.93, "image_url": PHOTO},
    )
    assert course_consumer(published(fine)) == {
        "radar": "Adriana",
        "vehicle": "Xy7Pq2",
        "speed_kmh": 52.4,
        "lat": 40.811,
        "lon": -73.95,
        "ticketed": True,
        "plate": "ABC1234",
        "image": PHOTO,
    }


def test_a_course_consumer_reads_a_pass():
    passed = output_record(traversal("aZ3k9Q", 33.71, False, "section_average"), 1_700_000_070_000)
    assert course_consumer(published(passed)) == {
        "radar": "Adriana",
        "vehicle": "aZ3k9Q",
        "speed_kmh": 33.71,
        "lat": 40.811,
        "lon": -73.95,
        "ticketed": False,
        "plate": None,
        "image": None,
    }


def test_the_message_is_a_superset_and_the_table_row_is_unchanged():
    row = output_record(traversal("aZ3k9Q", 45.0, True, "section_average"), 1_700_000_070_000)
    message = json.loads(published(row))
    assert list(row) == [column.name for column in FINE_COLUMNS]  # BigQuery: columns only
    assert {key: message[key] for key in row} == row
    assert set(message) - set(row) == {"avg_speed", "coordinates", "is_Ticketed"}
    assert set(output_keys(row)) == {name for name, _ in OUTPUT_KEYS} - set(row)
    assert {name for name, _ in OUTPUT_KEYS} <= set(message)
    assert message["avg_speed"] == row["avg_speed_kmh"]
    assert message["is_Ticketed"] is row["is_ticketed"] is True
    assert message["speed_method"] == "section_average"  # which method measured it


def test_the_courses_40_kmh_threshold_as_docs_course_md_gives_it():
    course = SectionRule(speed_limit_mph=24.854847689493358, tolerance_mph=0.0)
    assert not course.is_speeding(kmh_to_mph(40.0))  # the course: avg_speed > 40
    assert course.is_speeding(kmh_to_mph(40.000001))
    # This project's default, 25 mph = 40.2336 km/h: 40.1 km/h is fined by the course only.
    assert not SectionRule(speed_limit_mph=25.0, tolerance_mph=0.0).is_speeding(kmh_to_mph(40.1))
    assert SectionRule(speed_limit_mph=25.0, tolerance_mph=0.0).is_speeding(kmh_to_mph(40.24))


# --- the input: the course generator's messages ------------------------------------------

# What the course's generator publishes: json.dumps with its default separators, no attributes.
COURSE_MESSAGE = b'{"vehicle_id": "aZ3k9Q", "speed": 41.5, "location": [40.81939, -73.940744]}'
PUBLISHED_MS = 1_700_000_000_123


def parse_course_message(
    data: bytes = COURSE_MESSAGE, message_id: str | None = "9876"
) -> CameraEvent:
    return parse_camera_event(
        data, {}, message_id=message_id, publish_time_ms=PUBLISHED_MS, default_radar_id="Adriana"
    )


def test_a_course_message_takes_pubsubs_id_and_time_and_the_pipelines_section():
    assert from_transport(
        COURSE_MESSAGE, message_id="9876", publish_time_ms=PUBLISHED_MS, default_radar_id="Adriana"
    ) == ("9876", "Adriana", PUBLISHED_MS)


def test_a_course_message_with_a_numeric_vehicle_id_is_a_timeless_event():
    event = parse_course_message(b'{"vehicle_id": 17, "speed": 31.5, "location": [40.81, -73.95]}')
    assert event == CameraEvent(
        "9876", "Adriana", "17", (40.81, -73.95), PUBLISHED_MS, 31.5, timed=False
    )


@pytest.mark.parametrize("message_id", [None, ""])
def test_a_course_message_read_without_a_message_id_is_named_by_its_bytes_and_time(message_id):
    event = parse_course_message(message_id=message_id)
    assert event.event_id == "m-1e9a3ba02cb66aa1807a7b086774f509"
    digest = hashlib.sha256(f"{PUBLISHED_MS}\n".encode() + COURSE_MESSAGE).hexdigest()
    assert event.event_id == "m-" + digest[:32] == timeless_event_id(COURSE_MESSAGE, PUBLISHED_MS)
    assert ID_PATTERN.fullmatch(event.event_id)
    assert event.vehicle_id == "aZ3k9Q" and not event.timed
    # A redelivery (same bytes, same publish time) repeats it; another publish does not.
    assert parse_course_message(message_id=None).event_id == event.event_id
    assert event.event_id != timeless_event_id(COURSE_MESSAGE, PUBLISHED_MS + 1)
    assert event.event_id != timeless_event_id(
        COURSE_MESSAGE.replace(b"41.5", b"41.6"), PUBLISHED_MS
    )


@pytest.mark.parametrize(
    ("value", "contract"), [(17, "17"), (0, "0"), ("aZ3k9Q", "aZ3k9Q"), (True, True), (1.5, 1.5)]
)
def test_only_the_courses_integer_vehicle_ids_become_text(value, contract):
    assert text_vehicle_id(value) == contract
    assert type(text_vehicle_id(value)) is type(contract)  # True stays a bool, refused later


def test_a_course_message_is_published_again_byte_for_byte():
    event = parse_course_message()
    assert (event.event_id, event.radar_id, event.event_time_ms, event.timed) == (
        "9876", "Adriana", PUBLISHED_MS, False,
    )  # fmt: skip
    body = timeless_message(event.vehicle_id, event.speed_kmh, event.location)
    assert list(body) == ["vehicle_id", "speed", "location"]  # the course's key order
    assert timeless_pubsub(body) == (COURSE_MESSAGE, {}) == event.to_pubsub()
    assert event.to_json() == json.loads(COURSE_MESSAGE)


def test_a_timeless_detection_without_a_speed_has_no_speed_key():
    body = timeless_message("aZ3k9Q", None, (40.81939, -73.940744))
    assert body == {"vehicle_id": "aZ3k9Q", "location": [40.81939, -73.940744]}
