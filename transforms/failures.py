"""One failure type for every stage, on one tag, turned into dead-letter records at the edge.

Every step that can fail has a main output and the `FAILURES` output (the DataflowTemplates
"failsafe" pattern). A `Failure` keeps the input as it arrived: the message bytes and
attributes for a detection, the detections (JSON lines) for a traversal, the record for a
fine or a row. `to_dead_letter_record` is the one function that formats them, for the
dead-letter topic, table and files alike; each sink calls it as it writes.
"""

import base64
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam

from section_speed.domain.events import CameraEvent
from section_speed.domain.schemas import dead_letter_record

FAILURES = "failures"


@dataclass(frozen=True, slots=True)
class Failure:
    """What failed where, why, and the input to replay it."""

    stage: str
    reason: str
    payload: bytes
    attributes: Mapping[str, str] = field(default_factory=dict)
    timestamp_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    @classmethod
    def of_detections(
        cls, stage: str, reason: str, detections: Iterable[CameraEvent], **attributes: str
    ) -> "Failure":
        """A traversal-level failure: every detection, one camera-event JSON per line."""
        lines = [json.dumps(event.to_json(), separators=(",", ":")) for event in detections]
        return cls(stage, reason, "\n".join(lines).encode(), attributes)

    @classmethod
    def of_record(
        cls, stage: str, reason: str, record: Mapping[str, Any], **attributes: str
    ) -> "Failure":
        """A failure downstream of the measurement: the output record, as JSON."""
        payload = json.dumps(record, separators=(",", ":"), sort_keys=True, default=str)
        return cls(stage, reason, payload.encode(), attributes)


class FailureCoder(beam.coders.Coder):
    """Failures cross the dead letters' reshuffle as JSON (payload in base64): update-safe."""

    def encode(self, failure: Failure) -> bytes:
        value = [
            failure.stage,
            failure.reason,
            base64.b64encode(failure.payload).decode("ascii"),
            dict(failure.attributes),
            failure.timestamp_ms,
        ]
        return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()

    def decode(self, encoded: bytes) -> Failure:
        stage, reason, payload, attributes, timestamp_ms = json.loads(encoded)
        return Failure(stage, reason, base64.b64decode(payload), attributes, timestamp_ms)

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self) -> type:
        return Failure


beam.coders.registry.register_coder(Failure, FailureCoder)


def failed(failure: Failure) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(FAILURES, failure)


def to_dead_letter_record(failure: Failure) -> dict[str, Any]:
    return dead_letter_record(
        stage=failure.stage,
        error=failure.reason,
        payload=failure.payload,
        attributes=failure.attributes,
        timestamp_ms=failure.timestamp_ms,
    )


class ToDeadLetterRecords(beam.PTransform):
    """Failures of every stage -> dead-letter records (docs/reference.md, dead-letter stages)."""

    def expand(self, failures: beam.PCollection) -> beam.PCollection:
        return failures | "ToDeadLetterRecord" >> beam.Map(to_dead_letter_record)
