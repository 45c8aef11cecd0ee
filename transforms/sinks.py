"""Sinks: JSON records to Pub/Sub, the dead letter, and who non-offenders were."""

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage

from section_speed.clients.warehouse import SETUP_RETRY, Warehouse
from section_speed.domain.schemas import (
    DAY_MS,
    VEHICLE_IDENTITIES,
    VEHICLE_SPEEDS,
    output_record,
    vehicle_identity_record,
)
from section_speed.domain.traversal import Traversal
from transforms.failures import Failure
from transforms.warehouse import WarehouseRow, to_warehouse_row

_log = logging.getLogger(__name__)


class FormatTraversals(beam.PTransform):
    """Traversal -> the output-topic JSON record of docs/reference.md, Outputs (fine or pass)."""

    def expand(self, traversals: beam.PCollection) -> beam.PCollection:
        return traversals | "ToFineRecord" >> beam.Map(
            lambda traversal: output_record(traversal, processed_at_ms=int(time.time() * 1000))
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


class IdentityRows(beam.PTransform):
    """Traversals -> `vehicle_identities` rows of those not fined (a fine keeps its id).

    Applied only with --non_offender_retention_days > 0: the table's partitions expire
    after that many days, so who a non-offender was is kept for the retention, not after.
    """

    def expand(self, traversals: beam.PCollection) -> beam.PCollection:
        return traversals | "ToIdentityRow" >> beam.FlatMap(_identity_rows).with_output_types(
            WarehouseRow
        )


def _identity_rows(traversal: Traversal) -> Iterator[WarehouseRow]:
    record = vehicle_identity_record(traversal, processed_at_ms=int(time.time() * 1000))
    if record is not None:
        yield to_warehouse_row(record, VEHICLE_IDENTITIES)


class RetentionMismatch(RuntimeError):
    """The tables would keep non-offenders' ids longer than the options say: provision."""


def retention_checked(
    factory: Callable[[], Warehouse], retention_days: int
) -> Callable[[], Warehouse]:
    """`factory`, whose client is handed out only once `retention_problems` finds none.

    Picklable, and called once per worker process (through the sink's ClientHandler): a
    worker refuses to write before the dataset is provisioned for the retention.
    """
    return functools.partial(_retention_checked_warehouse, factory, retention_days)


def _retention_checked_warehouse(
    factory: Callable[[], Warehouse], retention_days: int
) -> Warehouse:
    warehouse = factory()
    problems = retention_problems(warehouse, retention_days)
    if problems:
        raise RetentionMismatch(
            "; ".join(problems) + ". Provision the dataset for this retention: "
            f"`python -m pipeline.provision --project {warehouse.project} --bq_dataset "
            f"{warehouse.dataset} --non_offender_retention_days {retention_days}` "
            "(docs/warehouse.md, Retention)."
        )
    return warehouse


def retention_problems(warehouse: Warehouse, retention_days: int) -> list[str]:
    """Why the dataset would keep who a non-offender was beyond `retention_days`, if it would.

    `vehicle_speeds.vehicle_id` must take null (a table provisioned by an earlier version
    refuses the rows of vehicles not fined), and with a retention, `vehicle_identities`'
    day partitions must expire after exactly that many days. Reads only (`tables.get`).
    """
    problems = []
    speeds = warehouse.client.get_table(warehouse.table_id(VEHICLE_SPEEDS), retry=SETUP_RETRY)
    if any(f.name == "vehicle_id" and f.mode == "REQUIRED" for f in speeds.schema):
        problems.append(
            f"{warehouse.table_id(VEHICLE_SPEEDS)}.vehicle_id is REQUIRED, so the rows of "
            "vehicles not fined, which carry none, would be refused"
        )
    if retention_days > 0:
        identities = warehouse.client.get_table(
            warehouse.table_id(VEHICLE_IDENTITIES), retry=SETUP_RETRY
        )
        partitioning = identities.time_partitioning
        expiration_ms = partitioning.expiration_ms if partitioning else None
        if expiration_ms != retention_days * DAY_MS:
            kept = "never" if not expiration_ms else f"after {expiration_ms / DAY_MS:g} days"
            problems.append(
                f"{warehouse.table_id(VEHICLE_IDENTITIES)}'s partitions expire {kept}, "
                f"not after --non_offender_retention_days={retention_days}"
            )
    return problems
