"""Sinks: JSON records to Pub/Sub, and the dead letter."""

import json
import logging
import time
from collections.abc import Callable
from typing import Any

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage

from pipeline.domain.schemas import fine_record
from pipeline.transforms.failures import Failure

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
    """Elements, as JSON records made by `to_record`, to a Pub/Sub topic.

    `id_field` is copied to an attribute for consumers. The record is made in the same step
    as the message: one step fewer for the local runner, which runs every step on each pull.
    """

    def __init__(
        self,
        topic: str,
        to_record: Callable[[Any], dict[str, Any]] | None = None,
        id_field: str | None = None,
    ) -> None:
        super().__init__()
        self.topic = topic
        self.to_record = to_record
        self.id_field = id_field

    def expand(self, elements: beam.PCollection) -> beam.pvalue.PDone:
        to_record, id_field = self.to_record, self.id_field
        return (
            elements
            | "ToPubsubMessage"
            >> beam.Map(lambda e: to_pubsub_message(to_record(e) if to_record else e, id_field))
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
    """Failures with nowhere else to go are at least logged, never dropped silently."""

    def expand(self, failures: beam.PCollection) -> beam.PCollection:
        return failures | "LogDeadLetter" >> beam.Map(_log_dead_letter)


def _log_dead_letter(failure: Failure) -> Failure:
    _log.warning("dead letter at %s: %s", failure.stage, failure.reason)
    return failure
