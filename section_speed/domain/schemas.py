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
    _nullable(
        "stacktrace",
        "STRING",
        "the stack trace of the exception that caused it, if one did (as DataflowTemplates' "
        "FailsafeElement keeps it)",
    ),
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
    stacktrace: str | None = None,
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
        "stacktrace": stacktrace,
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


# -- views: each reading rule written once ---------------------------------------------
# Every reader of the warehouse (the analyst report, the verification queries, an analyst
# in the console) reads these views, never the tables' rows: the rules "the latest
# revision of a traversal", "counted: not withdrawn, not merged away" and "the desk's
# queue state" live here alone (docs/warehouse.md, Views). Each view gives every row the
# span of processing time it holds, [valid_from, valid_until) (valid_until NULL: still
# holds), so one rule answers both "now" (`valid_until IS NULL`) and "as of a moment"
# (`valid_from <= @as_of AND (valid_until IS NULL OR @as_of < valid_until)`). A row written
# twice by a retried insert ties with its copy: one of the two holds for an empty span,
# so a copy is never counted (insertId deduplication is best effort).
@dataclass(frozen=True, slots=True)
class View:
    """A BigQuery view `python -m pipeline.provision` creates beside the tables."""

    name: str
    reads: tuple[str, ...]  # the tables and views it selects from, created before it
    description: str
    query: str  # BigQuery SQL with `{project}` and `{dataset}` filled in when created

    def sql(self, project: str, dataset: str) -> str:
        return self.query.format(project=project, dataset=dataset)


# The end of an open span where LEAST needs a value (NULL would make the LEAST NULL).
_OPEN = "TIMESTAMP '9999-12-31 00:00:00+00'"


def _columns(columns: tuple[Column, ...], alias: str = "") -> str:
    prefix = f"{alias}." if alias else ""
    return ",\n  ".join(f"{prefix}{c.name}" for c in columns)


def _revisions_view(name: str, table: Table) -> View:
    """Every row of `table`, with the span in which it is its id's latest revision."""
    return View(
        name,
        (table.name,),
        f"every {table.name} row with [valid_from, valid_until): the span of processing "
        f"time in which it is the latest revision of its {table.id_column} (highest "
        "revision, then latest processed_at); a retried row's copy holds for no time",
        f"""SELECT
  {_columns(table.columns)},
  processed_at AS valid_from,
  MIN(processed_at) OVER (
    PARTITION BY {table.id_column} ORDER BY revision, processed_at
    ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING
  ) AS valid_until
FROM `{{project}}.{{dataset}}.{table.name}`""",
    )


def _counted_view(name: str, revisions: View, table: Table) -> View:
    """The latest revisions that count: not withdrawn, not merged into another traversal."""
    return View(
        name,
        (table.name, revisions.name),
        f"the {table.name} rows that count, each over the span it counts: its id's latest "
        "revision, not withdrawn (withdrawn_reason), and only until a session merge first "
        "names its id in another row's supersedes (a merge is for good)",
        f"""WITH merges AS (
  SELECT superseded_id, MIN(processed_at) AS merged_at
  FROM `{{project}}.{{dataset}}.{table.name}`, UNNEST(supersedes) AS superseded_id
  GROUP BY superseded_id
),
spans AS (
  SELECT
    {_columns(table.columns, "revisions")},
    revisions.valid_from,
    NULLIF(
      LEAST(
        COALESCE(revisions.valid_until, {_OPEN}), COALESCE(merges.merged_at, {_OPEN})
      ),
      {_OPEN}
    ) AS valid_until
  FROM `{{project}}.{{dataset}}.{revisions.name}` AS revisions
  LEFT JOIN merges ON merges.superseded_id = revisions.{table.id_column}
  WHERE revisions.withdrawn_reason IS NULL
)
SELECT *
FROM spans
WHERE valid_until IS NULL OR valid_from < valid_until""",
    )


TRAVERSAL_REVISIONS = _revisions_view("traversal_revisions", VEHICLE_SPEEDS)
FINE_REVISIONS = _revisions_view("fine_revisions", FINES)
COUNTED_TRAVERSALS = _counted_view("counted_traversals", TRAVERSAL_REVISIONS, VEHICLE_SPEEDS)
COUNTED_FINES = _counted_view("counted_fines", FINE_REVISIONS, FINES)

# The verification desk's tables (section_speed/domain/verification.py) by name: the
# desk's decisions, one row per decision, append-only.
_FINE_REVIEWS = "fine_reviews"
FINE_DECISIONS = View(
    "fine_decisions",
    (_FINE_REVIEWS,),
    "every decision once (one row per review_id, however often it was written), with "
    "[stands_from, stands_until): the span in which it is the decision that stands on its "
    "fine (highest revision, then latest decided_at, then review_id)",
    f"""WITH decisions AS (
  SELECT *
  FROM `{{project}}.{{dataset}}.{_FINE_REVIEWS}`
  WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (PARTITION BY review_id ORDER BY decided_at) = 1
)
SELECT
  *,
  decided_at AS stands_from,
  MIN(decided_at) OVER (
    PARTITION BY fine_id ORDER BY revision, decided_at, review_id
    ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING
  ) AS stands_until
FROM decisions""",
)
FINE_QUEUE = View(
    "fine_queue",
    (COUNTED_FINES.name, FINE_DECISIONS.name),
    "the desk's queue state of every counted fine (ticketed), each over the span "
    "[valid_from, valid_until) it holds: decision is that standing on the fine's current "
    "revision, NULL while pending (never decided, or decided on an earlier revision: "
    "decided_before)",
    f"""WITH fines AS (
  SELECT fine_id, revision, valid_from, valid_until
  FROM `{{project}}.{{dataset}}.{COUNTED_FINES.name}`
  WHERE is_ticketed
),
decisions AS (
  SELECT fine_id, revision, decision, stands_from, stands_until
  FROM `{{project}}.{{dataset}}.{FINE_DECISIONS.name}`
  WHERE stands_until IS NULL OR stands_from < stands_until
),
first_decisions AS (
  SELECT fine_id, MIN(stands_from) AS first_decided_at
  FROM decisions
  GROUP BY fine_id
),
-- While a decision stands: the fine's state is that decision if it is on this revision.
decided AS (
  SELECT
    fines.fine_id,
    fines.revision,
    IF(decisions.revision = fines.revision, decisions.decision, NULL) AS decision,
    TRUE AS decided_before,
    GREATEST(fines.valid_from, decisions.stands_from) AS valid_from,
    NULLIF(
      LEAST(
        COALESCE(fines.valid_until, {_OPEN}), COALESCE(decisions.stands_until, {_OPEN})
      ),
      {_OPEN}
    ) AS valid_until
  FROM fines
  JOIN decisions ON decisions.fine_id = fines.fine_id
  WHERE decisions.stands_from < COALESCE(fines.valid_until, {_OPEN})
  AND fines.valid_from < COALESCE(decisions.stands_until, {_OPEN})
),
-- Before the fine's first decision: pending.
undecided AS (
  SELECT
    fines.fine_id,
    fines.revision,
    CAST(NULL AS STRING) AS decision,
    FALSE AS decided_before,
    fines.valid_from,
    NULLIF(
      LEAST(
        COALESCE(fines.valid_until, {_OPEN}),
        COALESCE(first_decisions.first_decided_at, {_OPEN})
      ),
      {_OPEN}
    ) AS valid_until
  FROM fines
  LEFT JOIN first_decisions ON first_decisions.fine_id = fines.fine_id
  WHERE first_decisions.first_decided_at IS NULL
  OR fines.valid_from < first_decisions.first_decided_at
)
SELECT * FROM decided
UNION ALL
SELECT * FROM undecided""",
)
# In creation order: a view after what it reads.
VIEWS: tuple[View, ...] = (
    TRAVERSAL_REVISIONS,
    FINE_REVISIONS,
    COUNTED_TRAVERSALS,
    COUNTED_FINES,
    FINE_DECISIONS,
    FINE_QUEUE,
)


# -- replays: what `python -m pipeline.replay` sent again ------------------------------
REPLAY_COLUMNS: tuple[Column, ...] = (
    _required(
        "dead_letter_id",
        "STRING",
        "hex sha256 of the dead_letter row (timestamp, stage, error, payload, attributes): "
        "a copy of the row has the same id, so it is replayed once",
    ),
    _required("replay_id", "STRING", "the run of the command that wrote this row"),
    _required(
        "state",
        "STRING",
        "sending (written before publishing) or sent (after Pub/Sub accepted every message)",
    ),
    _required("stage", "STRING", "the dead letter's stage"),
    _required("dead_letter_time", "TIMESTAMP", "the dead letter's timestamp"),
    _required("topic", "STRING", "where it was sent: projects/P/topics/T"),
    _required("messages", "INTEGER", "messages published for it (one per detection)"),
    _repeated("message_ids", "STRING", "Pub/Sub's ids of those messages (state sent)"),
    _required("operator", "STRING", "who ran the command (--operator, else the login name)"),
    _required("replayed_at", "TIMESTAMP", "when this row was written"),
)
# Provisioned with the tables (pipeline/provision.py); written only by the command, never
# by the workers, so not in TABLES.
REPLAYS = Table(
    "replays", REPLAY_COLUMNS, "dead_letter_id", "replayed_at", ("stage",), "replayed_at"
)
