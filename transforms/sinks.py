"""Sinks: each returns a SinkResult, whose `failures` are what it could not write.

The traversal sinks take `TraversalOutputs`, every output of the enforcement and the
evidence, and write what they need of it; the dead-letter sinks take Failures. Records are
made as they are written (docs/architecture.md, Runners).
"""

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage

from section_speed.clients.warehouse import SETUP_RETRY, Warehouse
from section_speed.domain.schemas import (
    DAY_MS,
    FINES,
    VEHICLE_IDENTITIES,
    VEHICLE_SPEEDS,
    output_message,
    output_record,
    vehicle_identity_record,
)
from section_speed.domain.traversal import Traversal
from transforms.failures import Failure, SinkResult
from transforms.warehouse import SpeedRows, ToWarehouseRows, WarehouseRow, to_warehouse_row

_log = logging.getLogger(__name__)


class TraversalOutputs(NamedTuple):
    """What the traversal sinks write; each takes the fields it needs."""

    records: beam.PCollection  # every traversal's output record: fines (with evidence), passes
    fine_records: beam.PCollection  # the fines' output records alone
    fined: beam.PCollection  # Traversals over the limit
    not_fined: beam.PCollection  # Traversals within the limit, and withdrawals
    withdrawn_fines: beam.PCollection  # withdrawals of published fines (also in not_fined)


class FormatTraversals(beam.PTransform):
    """Traversal -> the output-topic JSON record of docs/reference.md, Outputs (fine or pass)."""

    def expand(self, traversals: beam.PCollection) -> beam.PCollection:
        # Passes too, whatever the label says: a Dataflow update matches steps by label.
        return traversals | "ToFineRecord" >> beam.Map(
            lambda traversal: output_record(traversal, processed_at_ms=int(time.time() * 1000))
        )


def to_pubsub_message(record: dict[str, Any], id_field: str | None = None) -> PubsubMessage:
    data = json.dumps(record, separators=(",", ":"), allow_nan=False).encode()
    attributes = {id_field: str(record[id_field])} if id_field else {}
    return PubsubMessage(data, attributes)


def _publish_json(
    elements: beam.PCollection,
    topic: str,
    to_record: Callable[[Any], dict[str, Any]] | None,
    id_field: str | None,
) -> SinkResult:
    _ = (
        elements
        | "ToPubsubMessage"
        >> beam.Map(lambda e: to_pubsub_message(to_record(e) if to_record else e, id_field))
        | "WriteToPubSub" >> beam.io.WriteToPubSub(topic, with_attributes=True)
    )
    return SinkResult(failures=None)


def _write_json_lines(
    elements: beam.PCollection, prefix: str, to_record: Callable[[Any], dict[str, Any]] | None
) -> SinkResult:
    _ = (
        elements
        | "ToJson"
        >> beam.Map(
            lambda e: json.dumps(
                to_record(e) if to_record else e, separators=(",", ":"), allow_nan=False
            )
        )
        | "WriteText" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl")
    )
    return SinkResult(failures=None)


class PublishJson(beam.PTransform):
    """Elements, as JSON records made by `to_record`, to a Pub/Sub topic; `id_field` is
    copied to an attribute for consumers. SinkResult(failures=None)."""

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

    def expand(self, elements: beam.PCollection) -> Any:
        return _publish_json(elements, self.topic, self.to_record, self.id_field)


class WriteJsonLines(beam.PTransform):
    """Elements, as JSON records made by `to_record`, to `PREFIX-SSSSS-of-NNNNN.jsonl`.
    SinkResult(failures=None)."""

    def __init__(
        self, prefix: str, to_record: Callable[[Any], dict[str, Any]] | None = None
    ) -> None:
        super().__init__()
        self.prefix = prefix
        self.to_record = to_record

    def expand(self, elements: beam.PCollection) -> Any:
        return _write_json_lines(elements, self.prefix, self.to_record)


class PublishTraversals(beam.PTransform):
    """TraversalOutputs -> every traversal's record to the output topic: the record plus
    `output_keys` (`output_message`, docs/course.md), `fine_id` as an attribute.
    SinkResult(failures=None)."""

    def __init__(self, topic: str) -> None:
        super().__init__()
        self.topic = topic

    def expand(self, outputs: Any) -> Any:
        return _publish_json(outputs.records, self.topic, output_message, "fine_id")


class WriteTraversalFiles(beam.PTransform):
    """TraversalOutputs -> every traversal's record, as PublishTraversals sends it, to
    `PREFIX-*.jsonl`. SinkResult(failures=None)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def expand(self, outputs: Any) -> Any:
        return _write_json_lines(outputs.records, self.prefix, output_message)


class LogDeadLetters(beam.PTransform):
    """Failures with nowhere else to go are at least logged, never dropped silently.
    SinkResult(failures=None)."""

    def expand(self, failures: beam.PCollection) -> Any:
        _ = failures | "LogDeadLetter" >> beam.Map(_log_dead_letter)
        return SinkResult(failures=None)


def _log_dead_letter(failure: Failure) -> None:
    _log.warning("dead letter at %s: %s", failure.stage.name, failure.reason)


class TraversalRows(beam.PTransform):
    """TraversalOutputs -> WarehouseRows: `fines` (withdrawals included), `vehicle_speeds`,
    and with `retention_days` > 0 `vehicle_identities`."""

    def __init__(self, retention_days: int) -> None:
        super().__init__()
        self.retention_days = retention_days

    def expand(self, outputs: Any) -> beam.PCollection:
        measured = (outputs.fined, outputs.not_fined) | "Measured" >> beam.Flatten()
        return (
            outputs.fine_records | "FineRows" >> ToWarehouseRows(FINES),
            # A withdrawn fine's row says so (not ticketed, why), no evidence fetched.
            outputs.withdrawn_fines
            | "FormatWithdrawnFines" >> FormatTraversals()
            | "WithdrawnFineRows" >> ToWarehouseRows(FINES),
            # Every traversal's speeds; vehicle_id only for a fine.
            measured | "SpeedRows" >> SpeedRows(),
            # Who a non-offender was, apart, in partitions that expire (none with 0 days).
            *([measured | "IdentityRows" >> IdentityRows()] if self.retention_days > 0 else []),
        ) | "WarehouseRows" >> beam.Flatten()


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

    `vehicle_speeds.vehicle_id` must take null (a REQUIRED column refuses the rows of
    vehicles not fined), and with a retention, `vehicle_identities`' day partitions must
    expire after exactly that many days. Reads only (`tables.get`).
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
