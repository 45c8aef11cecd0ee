"""One failure type for every stage, on one tag, turned into dead-letter records at the edge.

Every step that can fail has a main output and the `FAILURES` output (the DataflowTemplates
"failsafe" pattern), and every composite returns a NamedTuple whose `failures` field holds
them, in the style of Beam's BigQuery `WriteResult` (docs/architecture.md, One failure
type). A `Failure` keeps the input as it arrived: the message bytes and attributes for a
detection, the detections (JSON lines) for a traversal, the record for a fine or a row.
The `expand` of such a composite, and of one that takes a NamedTuple (`TraversalOutputs`),
is annotated `Any` and its docstring names the NamedTuple: Beam reads an `expand`'s
annotations as type hints and logs a warning at every start for any but a PCollection.
`DEAD_LETTER_STAGES` names every stage a failure can come from, and a `Failure`'s stage is
one of them, never a bare string; docs/reference.md's table of them is generated from it.
A failure caused by an exception keeps its stack trace, as DataflowTemplates'
`FailsafeElement` does. `to_dead_letter_record` is the one function that formats
failures, for the dead-letter topic, table and files alike; each sink calls it as it writes.
"""

import base64
import json
import time
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import apache_beam as beam

from section_speed.domain.events import CameraEvent
from section_speed.domain.schemas import dead_letter_record
from section_speed.domain.traversal import IMPLAUSIBLE, PARTIAL, UNMEASURABLE

FAILURES = "failures"


@dataclass(frozen=True)
class DeadLetterStage:
    """A dead letter's `stage`: the step that emits it, what failed, and how to replay it."""

    name: str  # the dead letter's `stage` field
    step: str  # the Beam step that emits it (a Dataflow console label)
    what_failed: str
    payload: str
    attributes: str
    replayable: bool  # its payload can be published to the input topic again

    @property
    def local_name(self) -> str:
        """The name inside its composite (`fetch_photo` of `enrich_fine/fetch_photo`)."""
        return self.name.rpartition("/")[2]


_AS_ARRIVED = "the message bytes as they arrived"
_DETECTIONS = "every detection, one camera-event JSON per line"
_JUDGE = "SectionSpeedEnforcement/MeasureTraversals/JudgeTraversal"

PARSE_STAGE = DeadLetterStage(
    "parse",
    "SectionSpeedEnforcement/ParseEvents",
    "not a camera event (bytes, JSON, fields, ranges, `ts` disagreeing), or a parser bug",
    _AS_ARRIVED,
    "the message's",
    replayable=True,
)
TOO_LATE_STAGE = DeadLetterStage(
    "too_late",
    "SectionSpeedEnforcement/ParseEvents",
    "a detection its traversal can no longer take ([architecture.md](architecture.md#time))",
    _AS_ARRIVED,
    "the message's",
    replayable=True,
)
UNMEASURABLE_STAGE = DeadLetterStage(
    UNMEASURABLE,
    _JUDGE,
    "one detection, zero duration, one place, spot speeds missing",
    _DETECTIONS,
    "`radar_id`, `vehicle_id`",
    replayable=True,
)
IMPLAUSIBLE_STAGE = DeadLetterStage(
    IMPLAUSIBLE,
    _JUDGE,
    "detections contradicting each other or physics",
    _DETECTIONS,
    "`radar_id`, `vehicle_id`",
    replayable=True,
)
PARTIAL_STAGE = DeadLetterStage(
    PARTIAL,
    _JUDGE,
    "a traversal not seen near both ends of its section, or over the limit on a section "
    "whose ends are unknown, or a timeless session with fewer spot readings than "
    "`--min_spot_readings` (one the runner split)",
    _DETECTIONS,
    "`radar_id`, `vehicle_id`",
    replayable=True,
)
FETCH_PHOTO_STAGE = DeadLetterStage(
    "enrich_fine/fetch_photo",
    "EnrichFines/FetchPhoto",
    "the photo, after the cars API client's retries (the fine is still published, with "
    "`evidence_error`), or its stored copy refused by Cloud Storage (the fine is not "
    "published)",
    "the fine record",
    "`fine_id`, `vehicle_id`",
    replayable=False,
)
STORE_PHOTO_STAGE = DeadLetterStage(
    "enrich_fine/store_photo",
    "EnrichFines/StorePhoto",
    "the evidence copy, refused by Cloud Storage for this object; the fine is **not** "
    "published (storage down or not granted: the bundle fails and is retried instead)",
    "the fine record",
    "`fine_id`, `vehicle_id`",
    replayable=False,
)
READ_PLATE_STAGE = DeadLetterStage(
    "enrich_fine/read_plate",
    "EnrichFines/ReadPlates",
    "no plate reading of this photo after every attempt (the reader refused the image); the "
    "fine is **not** published (a reader that is down or over quota is waited for instead)",
    "the fine record",
    "`fine_id`, `vehicle_id`",
    replayable=False,
)
LIMIT_SIGNAL_STAGE = DeadLetterStage(
    "limit_signal",
    "SectionSpeedEnforcement/ParseLimitSignals",
    "not a limit signal ([enforcement.md](enforcement.md#signalled-limits)): bytes, JSON, "
    "fields, ranges",
    _AS_ARRIVED,
    "the message's",
    replayable=False,  # to the signals subscription's topic, not the input topic
)
WAREHOUSE_STAGE = DeadLetterStage(
    "bigquery",
    "WriteToBigQuery/InsertRows",
    "a row the warehouse refused, or a write that failed after its retries (a dead-letter "
    "row refused by `WriteDeadLettersToBigQuery` is logged instead)",
    "the row",
    "`table`, `insert_id`",
    replayable=False,
)
DEAD_LETTER_STAGES: tuple[DeadLetterStage, ...] = (
    PARSE_STAGE,
    TOO_LATE_STAGE,
    UNMEASURABLE_STAGE,
    IMPLAUSIBLE_STAGE,
    PARTIAL_STAGE,
    FETCH_PHOTO_STAGE,
    STORE_PHOTO_STAGE,
    READ_PLATE_STAGE,
    WAREHOUSE_STAGE,
    LIMIT_SIGNAL_STAGE,
)
STAGES_BY_NAME = {stage.name: stage for stage in DEAD_LETTER_STAGES}


def stages_table() -> str:
    """docs/reference.md's table of dead-letter stages (`make docs`)."""
    rows = [
        f"| `{s.name}` | `{s.step}` | {s.what_failed} | {s.payload} | {s.attributes} "
        f"| {'yes' if s.replayable else 'no'} |"
        for s in DEAD_LETTER_STAGES
    ]
    header = "| stage | step | what failed | payload | attributes | replayable |"
    return "\n".join([header, "| --- | --- | --- | --- | --- | --- |", *rows])


class SinkResult(NamedTuple):
    """What a sink returns, in the style of Beam's WriteResult: the elements it could not
    write, as Failures; None for a sink that refuses none (Pub/Sub, files, the log), as
    WriteResult's fields are for a write method that has none. A sink's `expand` is
    annotated `Any` (module docstring)."""

    failures: beam.PCollection | None


@dataclass(frozen=True, slots=True)
class Failure:
    """What failed where, why, and the input to replay it; the stack trace of the exception
    that caused it, if one did."""

    stage: DeadLetterStage
    reason: str
    payload: bytes
    attributes: Mapping[str, str] = field(default_factory=dict)
    timestamp_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    stacktrace: str | None = None

    @classmethod
    def of_detections(
        cls,
        stage: DeadLetterStage,
        reason: str,
        detections: Iterable[CameraEvent],
        **attributes: str,
    ) -> "Failure":
        """A traversal-level failure: every detection, one camera-event JSON per line."""
        lines = [json.dumps(event.to_json(), separators=(",", ":")) for event in detections]
        return cls(stage, reason, "\n".join(lines).encode(), attributes)

    @classmethod
    def of_record(
        cls,
        stage: DeadLetterStage,
        reason: str,
        record: Mapping[str, Any],
        error: BaseException | None = None,
        **attributes: str,
    ) -> "Failure":
        """A failure downstream of the measurement: the output record, as JSON; with the
        stack trace of `error` when an exception caused it."""
        payload = json.dumps(record, separators=(",", ":"), sort_keys=True, default=str)
        return cls(
            stage, reason, payload.encode(), attributes, stacktrace=error and stack_trace(error)
        )


def stack_trace(error: BaseException) -> str:
    """The exception's traceback as Python prints it."""
    return "".join(traceback.format_exception(error))


class FailureCoder(beam.coders.Coder):
    """Failures cross the dead letters' reshuffle as JSON (payload in base64): update-safe."""

    def encode(self, failure: Failure) -> bytes:
        value = [
            failure.stage.name,
            failure.reason,
            base64.b64encode(failure.payload).decode("ascii"),
            dict(failure.attributes),
            failure.timestamp_ms,
            failure.stacktrace,
        ]
        return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()

    def decode(self, encoded: bytes) -> Failure:
        # Five fields: encoded before failures kept their stack trace (an update's backlog).
        stage, reason, payload, attributes, timestamp_ms, *stacktrace = json.loads(encoded)
        return Failure(
            STAGES_BY_NAME[stage],
            reason,
            base64.b64decode(payload),
            attributes,
            timestamp_ms,
            stacktrace[0] if stacktrace else None,
        )

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self) -> type:
        return Failure


beam.coders.registry.register_coder(Failure, FailureCoder)


def failed(failure: Failure) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(FAILURES, failure)


def to_dead_letter_record(failure: Failure) -> dict[str, Any]:
    return dead_letter_record(
        stage=failure.stage.name,
        error=failure.reason,
        payload=failure.payload,
        attributes=failure.attributes,
        timestamp_ms=failure.timestamp_ms,
        stacktrace=failure.stacktrace,
    )
