"""WriteToWarehouse: rows to BigQuery with insert ids; refused rows become Failures.

Written with google-cloud-bigquery's `insert_rows_json` rather than Beam's
WriteToBigQuery, whose endpoint is fixed to Google's: this way the code path the
tests run against the local emulator is the one Dataflow runs (docs/warehouse.md).
Tables are created at deploy time (`python -m pipeline.provision`); workers only check
that they exist, which needs no project-level permission.

An outage of the warehouse is not waited out inside `process` beyond a short, bounded wait:
the bundle fails and the runner retries it (docs/warehouse.md, An outage). A warehouse that
refuses the workers themselves (401, 403, 404) is an outage too, raised at once.
"""

import functools
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from section_speed.clients.warehouse import (
    BatchRefused,
    TransientWarehouseError,
    Warehouse,
    WarehouseNotGranted,
)
from section_speed.domain.schemas import (
    TABLES,
    VEHICLE_SPEEDS,
    Table,
    insert_id,
    vehicle_speed_record,
)
from transforms.batching import BatchForService
from transforms.failures import FAILURES, WAREHOUSE_STAGE, Failure, SinkResult, failed
from transforms.worker_clients import ClientHandler

_log = logging.getLogger(__name__)

ROWS_PER_INSERT = 500
# How long a row may wait for others to share an insert request: after the keyed steps,
# streaming bundles are small, and one insertAll per row would cost quota and latency.
INSERT_WAIT_S = 1.0
_TABLES = {table.name: table for table in TABLES}


@dataclass(frozen=True)
class WarehouseRow:
    table: str
    insert_id: str
    row: dict[str, Any]


class WarehouseRowCoder(beam.coders.Coder):
    """Rows wait in batching state as JSON: update-safe, unlike pickled classes."""

    def encode(self, row: WarehouseRow) -> bytes:
        return json.dumps([row.table, row.insert_id, row.row], separators=(",", ":")).encode()

    def decode(self, encoded: bytes) -> WarehouseRow:
        return WarehouseRow(*json.loads(encoded))

    def is_deterministic(self) -> bool:
        return True

    def to_type_hint(self) -> type:
        return WarehouseRow


beam.coders.registry.register_coder(WarehouseRow, WarehouseRowCoder)


def to_warehouse_row(row: dict[str, Any], table: Table) -> WarehouseRow:
    return WarehouseRow(table.name, insert_id(table, row), row)


def warehouse_factory(project: str, dataset: str) -> Callable[[], Warehouse]:
    """The real client for one dataset, as a picklable factory for a `ClientHandler`."""
    return functools.partial(_checked_warehouse, project, dataset)


def _checked_warehouse(project: str, dataset: str) -> Warehouse:
    warehouse = Warehouse(project, dataset)
    warehouse.check_tables()
    return warehouse


class WarehouseUnavailable(RuntimeError):
    """BigQuery did not answer within the sink's bounded wait; nothing is dead-lettered.

    Raised out of `process`, so the bundle fails and the runner retries it: Dataflow
    retries a failed bundle of a streaming job until it succeeds, with its own backoff and
    no harness thread held in the meantime; the rows stay where they were (batched state
    and the input), and their insert ids make a retried insert a repeat BigQuery drops.
    """


class InsertRowsFn(beam.DoFn):
    """Inserts a batch per table; retries transient failures briefly, isolates and reports
    bad rows, and leaves an outage to the runner (WarehouseUnavailable)."""

    BATCH_ATTEMPTS = 5  # 0.5 + 1 + 2 + 4 s of backoff before the batch is split
    ROW_ATTEMPTS = 3
    # The longest one call of `process` waits for a warehouse that does not answer: a blip
    # is waited out here; a longer outage fails the bundle, for the runner to retry.
    OUTAGE_WAIT_S = 30.0
    OUTAGE_POLL_S = 2.0
    sleep = staticmethod(time.sleep)  # tests replace both
    monotonic = staticmethod(time.monotonic)

    def __init__(self, warehouse: ClientHandler[Warehouse]) -> None:
        self.warehouse_handler = warehouse
        self.warehouse: Warehouse | None = None
        self.rows_inserted = Metrics.counter(self.__class__, "warehouse_rows_inserted")
        self.rows_rejected = Metrics.counter(self.__class__, "warehouse_rows_rejected")
        self.retries = Metrics.counter(self.__class__, "warehouse_retries")
        self.outages = Metrics.counter(self.__class__, "warehouse_outages_waited")
        self.not_granted = Metrics.counter(self.__class__, "warehouse_not_granted")
        self._outage_until: float | None = None
        self.batch_sizes = Metrics.distribution(self.__class__, "warehouse_batch_size")

    def setup(self) -> None:
        self.warehouse = self.warehouse_handler.acquire()

    def teardown(self) -> None:
        if self.warehouse is not None:
            self.warehouse_handler.release(self.warehouse)
            self.warehouse = None

    def process(self, items: Iterable[WarehouseRow]) -> Iterator[Any]:
        batch = list(items)  # GroupIntoBatches gives an iterable, BatchElements a list
        self.batch_sizes.update(len(batch))
        self._outage_until = None  # one bounded outage wait per call, however many tables
        by_table: dict[str, list[WarehouseRow]] = {}
        for row in batch:
            by_table.setdefault(row.table, []).append(row)
        for name, rows in by_table.items():
            for row, reason in self._insert(_TABLES[name], rows):
                self.rows_rejected.inc()
                yield failed(
                    Failure.of_record(
                        WAREHOUSE_STAGE,
                        f"{name}: {reason}",
                        row.row,
                        table=name,
                        insert_id=row.insert_id,
                    )
                )

    def _insert(
        self, table: Table, rows: list[WarehouseRow], attempts: int = BATCH_ATTEMPTS
    ) -> list[tuple[WarehouseRow, str]]:
        """The rows that could not be written, with why; the others are in the table.

        Every first insert, even of one row, has the batch's attempts; rows retried alone
        after a split have fewer. When the attempts fail because the warehouse does not
        answer at all, nothing is dead-lettered: an outage is not a bad row. The call waits
        for it at most OUTAGE_WAIT_S, then raises WarehouseUnavailable.
        """
        while True:
            refused, last_error = False, ""
            for attempt in range(attempts):
                try:
                    rejected = self.warehouse.insert(
                        table, [r.row for r in rows], [r.insert_id for r in rows]
                    )
                except TransientWarehouseError as error:
                    last_error = str(error)
                    if attempt + 1 < attempts:
                        self.retries.inc()
                        self.sleep(min(0.5 * 2**attempt, 8.0))  # backoff before the next
                    continue
                except BatchRefused as error:  # permanent for this batch: split it at once
                    refused, last_error = True, str(error)
                    break
                except WarehouseNotGranted as error:
                    # No row is at fault and no retry here can help: the bundle fails, the
                    # runner retries it with every row until someone grants the access.
                    self.not_granted.inc()
                    raise WarehouseNotGranted(
                        f"{error}; its {len(rows)} rows are kept, none is dead-lettered"
                    ) from error
                self.rows_inserted.inc(len(rows) - len(rejected))
                return [(rows[r.index], r.reason) for r in rejected]
            if refused or not self._answers_again(len(rows), last_error):
                break  # it answers, and refuses this batch
        if len(rows) > 1:  # one bad row can sink a batch: find it by inserting one by one
            return [
                failure for row in rows for failure in self._insert(table, [row], self.ROW_ATTEMPTS)
            ]
        return [(rows[0], f"failed after {attempts} attempts: {last_error}")]

    def _answers_again(self, rows: int, last_error: str) -> bool:
        """False if the warehouse answers (the failures were its refusals); True once a
        warehouse that did not answer answers again; WarehouseUnavailable when it is still
        silent at the end of this call's wait."""
        if self.warehouse.answers():
            return False
        if self._outage_until is None:
            self._outage_until = self.monotonic() + self.OUTAGE_WAIT_S
            self.outages.inc()
            _log.warning("the warehouse does not answer: rows wait for it, briefly")
        while self.monotonic() < self._outage_until:
            self.sleep(self.OUTAGE_POLL_S)
            if self.warehouse.answers():
                return True
        raise WarehouseUnavailable(
            f"BigQuery has not answered for {self.OUTAGE_WAIT_S:.0f} s ({last_error}): this "
            f"bundle fails and the runner retries it; its {rows} rows are kept, none is "
            "dead-lettered (docs/warehouse.md, Failures)"
        )


class WriteToWarehouse(beam.PTransform):
    """WarehouseRows (or what `rows` makes them from) -> BigQuery: SinkResult(failures),
    the rows that were refused.

    Identical rows (a redelivery, a replay) share an insert id, which BigQuery uses to drop
    repeats; the traversal identity step already keeps repeats from reaching here.
    """

    def __init__(
        self,
        warehouse: ClientHandler[Warehouse],
        batch_wait_s: float | None = INSERT_WAIT_S,
        rows: beam.PTransform | None = None,
    ) -> None:
        super().__init__()
        self.warehouse = warehouse
        self.batch_wait_s = batch_wait_s  # None over bounded input: no wait needed
        self.rows = rows

    def expand(self, elements: Any) -> Any:
        rows = elements | "Rows" >> self.rows if self.rows else elements
        inserted = (
            rows
            | "BatchRows"
            >> BatchForService(
                lambda row: row.table, WarehouseRow, ROWS_PER_INSERT, self.batch_wait_s
            )
            | "InsertRows"
            >> beam.ParDo(InsertRowsFn(self.warehouse)).with_outputs(FAILURES, main="inserted")
        )
        return SinkResult(inserted[FAILURES])


class ToWarehouseRows(beam.PTransform):
    """Records (dicts of `table`'s columns, or elements `to_record` makes them from) ->
    WarehouseRows for `table`."""

    def __init__(
        self, table: Table, to_record: Callable[[Any], dict[str, Any]] | None = None
    ) -> None:
        super().__init__()
        self.table = table
        self.to_record = to_record

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        table, to_record = self.table, self.to_record
        return records | "ToWarehouseRow" >> beam.Map(
            lambda e: to_warehouse_row(to_record(e) if to_record else e, table)
        )


class SpeedRows(beam.PTransform):
    """Traversals -> `vehicle_speeds` rows (every traversal, no plate, no image)."""

    def expand(self, traversals: beam.PCollection) -> beam.PCollection:
        return traversals | "ToSpeedRow" >> beam.Map(
            lambda t: to_warehouse_row(
                vehicle_speed_record(t, processed_at_ms=int(time.time() * 1000)), VEHICLE_SPEEDS
            )
        )
