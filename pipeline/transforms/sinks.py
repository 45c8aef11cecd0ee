"""Sinks: JSON records to Pub/Sub, and the dead letter."""

import json
import logging
import time
from typing import Any

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage

from pipeline.domain.schemas import fine_record

_log = logging.getLogger(__name__)


class FormatTraversals(beam.PTransform):
    """Traversal -> the output-topic JSON record of DESIGN.md §4 (fine or pass)."""

    def expand(self, traversals: beam.PCollection) -> beam.PCollection:
        return traversals | "ToFineRecord" >> beam.Map(
            lambda traversal: fine_record(traversal, processed_at_ms=int(time.time() * 1000))
        )


def to_pubsub_message(record: dict[str, Any], id_field: str | None = None) -> PubsubMessage:
    data = json.dumps(record, separators=(",", ":"), allow_nan=False).encode()
    attributes = {id_field: str(record[id_field])} if id_field else {}
    return PubsubMessage(data, attributes)


class PublishJson(beam.PTransform):
    """JSON records to a Pub/Sub topic; `id_field` is copied to an attribute for consumers."""

    def __init__(self, topic: str, id_field: str | None = None) -> None:
        super().__init__()
        self.topic = topic
        self.id_field = id_field

    def expand(self, records: beam.PCollection) -> beam.pvalue.PDone:
        id_field = self.id_field
        return (
            records
            | "ToPubsubMessage" >> beam.Map(to_pubsub_message, id_field=id_field)
            | "WriteToPubSub" >> beam.io.WriteToPubSub(self.topic, with_attributes=True)
        )


class WriteJsonLines(beam.PTransform):
    """JSON records to text files `PREFIX-SSSSS-of-NNNNN.jsonl` (bounded runs)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def expand(self, records: beam.PCollection) -> beam.pvalue.PDone:
        return (
            records
            | "ToJson" >> beam.Map(json.dumps, separators=(",", ":"), allow_nan=False)
            | "WriteText" >> beam.io.WriteToText(self.prefix, file_name_suffix=".jsonl")
        )


class LogDeadLetters(beam.PTransform):
    """Where no dead-letter topic is configured, failures are at least logged, never dropped."""

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return records | "LogDeadLetter" >> beam.Map(_log_dead_letter)


def _log_dead_letter(record: dict[str, Any]) -> dict[str, Any]:
    _log.warning("dead letter at %s: %s", record["stage"], record["error"])
    return record
