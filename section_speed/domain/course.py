"""The course's forms, kept here so that the rest of the product need not know them.

The product grew from the EDEM 2024 Dataflow course (jabrio/Serverless_EDEM_2024) and
still reads, answers and fetches as the course's code did (docs/course.md):

- its generator's message, `{"vehicle_id", "speed", "location"}`, with no id and no time:
  a *timeless* detection. `from_transport` gives it the contract's id, time and section
  from how it was delivered, `text_vehicle_id` the contract's text id, and
  `timeless_message` / `timeless_pubsub` publish it again as the course's generator does;
- its consumers' output keys: `OUTPUT_KEYS`, added to every output-topic message by
  `output_keys`;
- its cars API: `GET URL` answers `{"image_url"}`, the photo on `PHOTO_HOST`;
  `CARS_API_FORM_HINT` says so when a fixed URL answers otherwise.

Generic hooks call these (events.py, schemas.py, cars_api.py, startup_checks.py); none of
them names the course.
"""

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from section_speed.domain.geometry import LatLon

# --- input: the course generator's message -------------------------------------------------


def from_transport(
    data: bytes, *, message_id: str | None, publish_time_ms: int, default_radar_id: str
) -> tuple[str, str, int]:
    """(event_id, radar_id, event_time_ms) of a timeless message, from its delivery.

    The id is Pub/Sub's message id or, when the read gives none (Dataflow can leave it
    empty, apache/beam#9232), `timeless_event_id`; the section is the pipeline's
    `--radar_id`; the time is the publish time, which groups a vehicle's detections into
    a session and is never used for a speed.
    """
    event_id = message_id or timeless_event_id(data, publish_time_ms)
    return event_id, default_radar_id, publish_time_ms


def timeless_event_id(data: bytes, publish_time_ms: int) -> str:
    """The id of a timeless message read without a Pub/Sub message id.

    A digest of the publish time and the payload: a redelivery has both unchanged, so it
    gets the same id and counts once. The time comes first, ended by a newline that no
    decimal number contains, so no two (time, payload) pairs hash the same text.
    """
    digest = hashlib.sha256(str(publish_time_ms).encode() + b"\n" + data).hexdigest()
    return "m-" + digest[:32]


def text_vehicle_id(value: object) -> object:
    """The course's numeric vehicle ids as text; any other value as it is, for validation."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def timeless_message(
    vehicle_id: str, speed_kmh: float | None, location: LatLon
) -> dict[str, object]:
    """A timeless detection's body, in the course generator's key order."""
    body: dict[str, object] = {"vehicle_id": vehicle_id}
    if speed_kmh is not None:
        body["speed"] = speed_kmh
    body["location"] = [location[0], location[1]]
    return body


def timeless_pubsub(body: Mapping[str, object]) -> tuple[bytes, dict[str, str]]:
    """The bytes and attributes the course's generator publishes: `json.dumps`, none.

    Its default separators matter: a message's id, when Pub/Sub's is missing, is a digest
    of these bytes (`timeless_event_id`).
    """
    return json.dumps(body).encode(), {}


# --- output: the course consumers' keys ----------------------------------------------------

# (key, value) of every output-topic message (docs/reference.md, Outputs). radar_id,
# vehicle_id, license_plate and image_url are the record's columns already; the others are
# copies under the course's names and units.
OUTPUT_KEYS: tuple[tuple[str, str], ...] = (
    ("radar_id", "radar_id"),
    ("vehicle_id", "vehicle_id"),
    ("avg_speed", "avg_speed_kmh: average speed, km/h"),
    ("coordinates", "exit_location as [lat, lon]: the last detection"),
    ("is_Ticketed", "is_ticketed"),
    ("license_plate", "license_plate (null when unread or not fined)"),
    ("image_url", "image_url (null when not fined)"),
)


def output_keys(record: Mapping[str, Any]) -> dict[str, Any]:
    """The course's keys that an output record lacks, from its columns."""
    latitude, longitude = (float(part) for part in record["exit_location"].split(","))
    return {
        "avg_speed": record["avg_speed_kmh"],
        "coordinates": [latitude, longitude],
        "is_Ticketed": record["is_ticketed"],
    }


# --- the cars API ----------------------------------------------------------------------------

# Where the course's cars API keeps its photos: Cloud Storage's public endpoint, a host
# other than the API's own.
PHOTO_HOST = "storage.googleapis.com"

# What a fixed `--cars_api` URL was expected to answer, for the start-up check's message.
CARS_API_FORM_HINT = (
    'the course\'s form, a URL whose GET answers {"image_url": ...}; for this '
    "project's API give a template such as http://HOST:PORT/cars/{vehicle_id}"
)
