"""Output schemas (docs/reference.md, Outputs): the one definition behind BigQuery, JSON and docs.

Each table is a tuple of `Column`s. `bigquery_schema` turns it into a BigQuery
table schema, `markdown_table` into docs/reference.md's tables, and the record builders
below produce JSON rows whose keys are exactly the columns, in order.
"""

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from section_speed.domain.course import output_keys
from section_speed.domain.events import format_rfc3339_ms
from section_speed.domain.geometry import format_location
from section_speed.domain.traversal import Traversal

ColumnType = Literal["STRING", "FLOAT", "INTEGER", "BOOLEAN", "TIMESTAMP"]
Mode = Literal["REQUIRED", "NULLABLE", "REPEATED"]


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    type: ColumnType
    mode: Mode
    description: str


def _required(name: str, type_: ColumnType, description: str) -> Column:
    return Column(name, type_, "REQUIRED", description)


def _nullable(name: str, type_: ColumnType, description: str) -> Column:
    return Column(name, type_, "NULLABLE", description)


def _repeated(name: str, type_: ColumnType, description: str) -> Column:
    return Column(name, type_, "REPEATED", description)


_TRAVERSAL_HEAD = (
    _required("radar_id", "STRING", "section (camera installation) that measured the vehicle"),
    _required("vehicle_id", "STRING", "vehicle identity from the camera's tracker"),
)
_TRAVERSAL_MEASURE = (
    _required("avg_speed_kmh", "FLOAT", "average speed over the section, km/h"),
    _required("avg_speed_mph", "FLOAT", "average speed over the section, mph"),
    _required("speed_limit_mph", "FLOAT", "speed limit applied, mph"),
    _nullable(
        "tolerance_mph",
        "FLOAT",
        "tolerance applied above the limit, mph (fined when speed > limit + tolerance)",
    ),
    _nullable(
        "limit_source",
        "STRING",
        "where speed_limit_mph came from: default, window (weekly, e.g. school hours),"
        " temporary (dated order), signal, or class (the vehicle class's own limit);"
        " the highest limit in force during the traversal (docs/enforcement.md)",
    ),
    _nullable(
        "limit_reference",
        "STRING",
        "which one: the window's name, the temporary order's reference (e.g. roadworks"
        " order), the signal's id or the vehicle class; null for default",
    ),
    _nullable(
        "vehicle_class",
        "STRING",
        "the vehicle class the detections gave (e.g. hgv, bus); null: unknown, judged by the"
        " general limit",
    ),
    _nullable(
        "rules_version",
        "STRING",
        "version of the rules judged under: 16 hex digits of sha256 over the sections file's"
        " canonical JSON and the default limits",
    ),
    _nullable(
        "distance_m",
        "FLOAT",
        "distance measured, metres (section_average); null for spot_mean, which measures none",
    ),
    _nullable(
        "duration_s",
        "FLOAT",
        "time between first and last detection, seconds (section_average); null for spot_mean",
    ),
    _required("entry_time", "TIMESTAMP", "first detection's event time"),
    _required("exit_time", "TIMESTAMP", "last detection's event time"),
    _required("entry_location", "STRING", 'first detection, "lat,lon"'),
    _required("exit_location", "STRING", 'last detection, "lat,lon"'),
    _required(
        "speed_method",
        "STRING",
        "section_average (distance / time) or spot_mean (mean of spot speeds, timeless input)",
    ),
    _nullable(
        "spot_readings",
        "INTEGER",
        "spot_mean: how many spot speeds were averaged; null for section_average",
    ),
    _repeated("supersedes", "STRING", "ids of earlier traversals this one corrects (merge)"),
    _required(
        "revision",
        "INTEGER",
        "0 when first published, +1 per correction of the same id; keep the highest",
    ),
    _nullable(
        "withdrawn_reason",
        "STRING",
        "set when a late detection made the published traversal no measurement, implausible"
        " or partial: withdrawn, never a fine (kind: reason); null otherwise",
    ),
)

FINE_COLUMNS: tuple[Column, ...] = (
    _required("fine_id", "STRING", "deterministic id of (radar_id, vehicle_id, entry_time)"),
    *_TRAVERSAL_HEAD,
    _nullable("license_plate", "STRING", "normalised plate (A-Z, 0-9); null when unreadable"),
    _nullable("plate_confidence", "FLOAT", "plate reader's confidence, 0..1"),
    _nullable("plate_reader", "STRING", "cloud-vision or the embedded engine's name"),
    _repeated(
        "plate_candidates",
        "STRING",
        "up to 3 plates for the verifier to pick, best first (the accepted plate first)",
    ),
    _repeated(
        "plate_candidate_confidences",
        "STRING",
        'per plate_candidates entry, its characters\' confidences: "0.99,0.87,..."',
    ),
    _nullable("plate_box", "STRING", 'where the reader found the plate: "x0,y0,x1,y1" pixels'),
    *_TRAVERSAL_MEASURE,
    _nullable(
        "image_url",
        "STRING",
        "gs://BUCKET/fines/RADAR/DATE/FINE_ID.jpg; without --bucket the cars API's photo URL",
    ),
    _nullable("image_sha256", "STRING", "hex sha256 of the stored image bytes (evidence)"),
    _nullable(
        "evidence_error",
        "STRING",
        "why the plate or photo is missing (stage: reason), null when evidence is complete",
    ),
    _required(
        "is_ticketed",
        "BOOLEAN",
        "true for a fine; false for a traversal under the limit, or a withdrawn one",
    ),
    _required("processed_at", "TIMESTAMP", "when the pipeline produced this record"),
)

VEHICLE_SPEED_COLUMNS: tuple[Column, ...] = (
    _required("traversal_id", "STRING", "same deterministic id as fine_id"),
    _TRAVERSAL_HEAD[0],
    _nullable(
        "vehicle_id",
        "STRING",
        "vehicle identity from the camera's tracker, kept only for a fine (is_ticketed);"
        " null otherwise: who a non-offender was is in vehicle_identities, for its retention",
    ),
    *_TRAVERSAL_MEASURE,
    _required("detections", "INTEGER", "distinct detections in the session"),
    _required("is_ticketed", "BOOLEAN", "whether the traversal was fined"),
    _required("processed_at", "TIMESTAMP", "when the pipeline produced this record"),
)

VEHICLE_IDENTITY_COLUMNS: tuple[Column, ...] = (
    _required("traversal_id", "STRING", "the vehicle_speeds row's traversal_id"),
    _TRAVERSAL_HEAD[0],
    _required("vehicle_id", "STRING", "vehicle identity from the camera's tracker"),
    _required("entry_time", "TIMESTAMP", "first detection's event time (the day partition)"),
    _required("processed_at", "TIMESTAMP", "when the pipeline produced this record"),
)

DEAD_LETTER_COLUMNS: tuple[Column, ...] = (
    _required("timestamp", "TIMESTAMP", "when the failure happened"),
    _required("stage", "STRING", "pipeline stage that rejected the element"),
    _required("error", "STRING", "why it was rejected"),
    _nullable("payload", "STRING", "original payload: UTF-8 text, or base64: + base64 of bytes"),
    _nullable("attributes", "STRING", "Pub/Sub attributes as a JSON object"),
)


def bigquery_schema(columns: tuple[Column, ...]) -> dict[str, list[dict[str, str]]]:
    """The table schema in BigQuery's JSON form (`{"fields": [...]}`)."""
    return {
        "fields": [
            {"name": c.name, "type": c.type, "mode": c.mode, "description": c.description}
            for c in columns
        ]
    }


def markdown_table(columns: tuple[Column, ...]) -> str:
    rows = [f"| {c.name} | {c.type} | {c.mode.lower()} | {c.description} |" for c in columns]
    return "\n".join(["| field | type | mode | meaning |", "| --- | --- | --- | --- |", *rows])


def _measure(traversal: Traversal) -> dict[str, Any]:
    return {
        "avg_speed_kmh": traversal.avg_speed_kmh,
        "avg_speed_mph": traversal.avg_speed_mph,
        "speed_limit_mph": traversal.speed_limit_mph,
        "tolerance_mph": traversal.tolerance_mph,
        "limit_source": traversal.limit_source,
        "limit_reference": traversal.limit_reference,
        "vehicle_class": traversal.vehicle_class,
        "rules_version": traversal.rules_version,
        "distance_m": traversal.distance_m,
        "duration_s": traversal.duration_s,
        "entry_time": format_rfc3339_ms(traversal.entry_time_ms),
        "exit_time": format_rfc3339_ms(traversal.exit_time_ms),
        "entry_location": format_location(traversal.entry_location),
        "exit_location": format_location(traversal.exit_location),
        "speed_method": traversal.speed_method,
        "spot_readings": traversal.spot_readings,
        "supersedes": list(traversal.supersedes),
        "revision": traversal.revision,
        "withdrawn_reason": traversal.withdrawn_reason,
    }


def output_record(
    traversal: Traversal, processed_at_ms: int, evidence: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The output record of one traversal, fine or pass: the topic message and the `fines` row.

    Non-fined traversals carry `is_ticketed: false` and no plate nor image; `evidence`
    holds the plate and image fields that the enrichment step adds to fines.
    """
    values = {
        "fine_id": traversal.traversal_id,
        "radar_id": traversal.radar_id,
        "vehicle_id": traversal.vehicle_id,
        "is_ticketed": traversal.is_speeding,
        "processed_at": format_rfc3339_ms(processed_at_ms),
        **_measure(traversal),
        **(evidence or {}),
    }
    # A repeated column is a list, never null (BigQuery's insertAll refuses null there).
    return {
        column.name: values.get(column.name, [] if column.mode == "REPEATED" else None)
        for column in FINE_COLUMNS
    }


def output_message(record: Mapping[str, Any]) -> dict[str, Any]:
    """The output-topic message for an `output_record`: its columns plus `output_keys`.

    A superset, so that consumers of either format read it unchanged; the BigQuery row
    stays `record` (docs/course.md: the keys and what they copy).
    """
    return {**record, **output_keys(record)}


def vehicle_speed_record(traversal: Traversal, processed_at_ms: int) -> dict[str, Any]:
    """A `vehicle_speeds` row: every traversal's speeds, but who it was only for a fine.

    Average-speed enforcement may keep the identity of a vehicle that did not exceed the
    limit no longer than needed; `vehicle_identity_record` keeps it apart, for a retention.
    """
    values = {
        "traversal_id": traversal.traversal_id,
        "radar_id": traversal.radar_id,
        "vehicle_id": traversal.vehicle_id if traversal.is_speeding else None,
        "detections": traversal.detections,
        "is_ticketed": traversal.is_speeding,
        "processed_at": format_rfc3339_ms(processed_at_ms),
        **_measure(traversal),
    }
    return {column.name: values[column.name] for column in VEHICLE_SPEED_COLUMNS}


def vehicle_identity_record(traversal: Traversal, processed_at_ms: int) -> dict[str, Any] | None:
    """A `vehicle_identities` row: who the non-offender of a `vehicle_speeds` row was.

    None for a fine, whose row keeps its vehicle_id. The table's day partitions expire
    after --non_offender_retention_days (docs/warehouse.md, Retention).
    """
    if traversal.is_speeding:
        return None
    values = {
        "traversal_id": traversal.traversal_id,
        "radar_id": traversal.radar_id,
        "vehicle_id": traversal.vehicle_id,
        "entry_time": format_rfc3339_ms(traversal.entry_time_ms),
        "processed_at": format_rfc3339_ms(processed_at_ms),
    }
    return {column.name: values[column.name] for column in VEHICLE_IDENTITY_COLUMNS}


def payload_text(payload: bytes) -> str:
    """Payload as text when it is UTF-8, otherwise marked base64 so nothing is lost."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(payload).decode("ascii")


def dead_letter_record(
    *,
    stage: str,
    error: str,
    payload: bytes | str | None,
    attributes: Mapping[str, str] | None,
    timestamp_ms: int,
) -> dict[str, Any]:
    """A `dead_letter` row: where it failed, why, and the original input to replay it."""
    if isinstance(payload, bytes):
        payload = payload_text(payload)
    values = {
        "timestamp": format_rfc3339_ms(timestamp_ms),
        "stage": stage,
        "error": error,
        "payload": payload,
        "attributes": json.dumps(dict(attributes), sort_keys=True) if attributes else None,
    }
    return {column.name: values[column.name] for column in DEAD_LETTER_COLUMNS}


@dataclass(frozen=True, slots=True)
class Table:
    """A BigQuery table: its columns, day partitioning on event time, and clustering."""

    name: str
    columns: tuple[Column, ...]
    id_column: str  # the deterministic id used as insertId and for deduplication
    partition_column: str
    cluster_columns: tuple[str, ...]
    volatile_column: str  # differs between two deliveries of the same row: not part of its id


FINES = Table("fines", FINE_COLUMNS, "fine_id", "entry_time", ("radar_id",), "processed_at")
VEHICLE_SPEEDS = Table(
    "vehicle_speeds",
    VEHICLE_SPEED_COLUMNS,
    "traversal_id",
    "entry_time",
    ("radar_id",),
    "processed_at",
)
DEAD_LETTER = Table("dead_letter", DEAD_LETTER_COLUMNS, "", "timestamp", ("stage",), "timestamp")
DAY_MS = 86_400_000  # a partition expiry of N days is N * DAY_MS milliseconds
# Written only with --non_offender_retention_days > 0; provisioned always, so that turning
# it on needs no new table, only the partition expiry that provision sets.
VEHICLE_IDENTITIES = Table(
    "vehicle_identities",
    VEHICLE_IDENTITY_COLUMNS,
    "traversal_id",
    "entry_time",
    ("radar_id",),
    "processed_at",
)
TABLES: tuple[Table, ...] = (FINES, VEHICLE_SPEEDS, DEAD_LETTER, VEHICLE_IDENTITIES)


def insert_id(table: Table, row: Mapping[str, Any]) -> str:
    """The row's id plus a digest of its content: a redelivery repeats it, a correction not.

    A late pane that changes a traversal's measurement is a new row with the same
    fine_id and a later processed_at; an identical re-fire or replay is the same row.
    """
    content = {k: v for k, v in row.items() if k != table.volatile_column}
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]
    return f"{row[table.id_column]}-{digest}" if table.id_column else digest
