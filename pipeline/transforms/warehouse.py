"""WriteToWarehouse: rows to BigQuery with insert ids, repeats dropped, rejections dead-lettered.

Written with google-cloud-bigquery's `insert_rows_json` rather than Beam's
WriteToBigQuery, whose endpoint is fixed to Google's: this way the code path the
tests run against the local emulator is the one Dataflow runs (README, Warehouse).
"""

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.clients.warehouse import (
    EMULATOR_ENV,
    BatchRefused,
    TransientWarehouseError,
    Warehouse,
)
from pipeline.domain.schemas import (
    TABLES,
    VEHICLE_SPEEDS,
    Table,
    dead_letter_record,
    insert_id,
    vehicle_speed_record,
)
from pipeline.transforms.lateness import DropRepeats

_log = logging.getLogger(__name__)

DEAD_LETTER = "dead_letter"
WAREHOUSE_STAGE = "bigquery"
_TABLES = {table.name: table for table in TABLES}


def _warehouse(project: str, dataset: str) -> Warehouse:
    """One client per worker process (the direct runner calls setup for every bundle)."""
    return _warehouse_at(project, dataset, os.environ.get(EMULATOR_ENV))


@functools.cache
def _warehouse_at(project: str, dataset: str, _endpoint: str | None) -> Warehouse:
    return Warehouse(project, dataset)


# (project, dataset) -> when this process first wrote there: the start of its recovery window.
_FIRST_SETUP: dict[tuple[str, str], float] = {}
_TABLES_READY_LOCK = threading.Lock()


@dataclass(frozen=True)
class WarehouseRow:
    table: str
    insert_id: str
    row: dict[str, Any]


def to_warehouse_row(row: dict[str, Any], table: Table) -> WarehouseRow:
    return WarehouseRow(table.name, insert_id(table, row), row)


class InsertRowsFn(beam.DoFn):
    """Inserts a batch per table; retries transient failures, isolates and reports bad rows."""

    BATCH_ATTEMPTS = 5  # 0.5 + 1 + 2 + 4 s of backoff before the batch is split
    ROW_ATTEMPTS = 3

    def __init__(self, project: str, dataset: str, recovery_seconds: int = 0) -> None:
        self.project = project
        self.dataset = dataset
        # After a (re)start the input may be replayed from before it (Pub/Sub seek): for
        # this long, rows the table already holds are looked up and not written again.
        self.recovery_seconds = recovery_seconds
        self.recovering_until = 0.0  # set in setup
        self.rows_inserted = Metrics.counter(self.__class__, "warehouse_rows_inserted")
        self.rows_already_written = Metrics.counter(self.__class__, "warehouse_rows_skipped")
        self.rows_rejected = Metrics.counter(self.__class__, "warehouse_rows_rejected")
        self.retries = Metrics.counter(self.__class__, "warehouse_retries")

    def setup(self) -> None:
        self.warehouse = _warehouse(self.project, self.dataset)
        # The direct runner calls setup for every bundle: create the tables once per process,
        # and count the recovery window from the process's first setup, not the bundle's.
        with _TABLES_READY_LOCK:
            if (self.project, self.dataset) not in _FIRST_SETUP:
                self.warehouse.ensure_tables()
                _FIRST_SETUP[(self.project, self.dataset)] = time.monotonic()
        self.recovering_until = _FIRST_SETUP[(self.project, self.dataset)] + self.recovery_seconds

    def process(self, batch: list[WarehouseRow]) -> Iterator[Any]:
        by_table: dict[str, list[WarehouseRow]] = {}
        for row in batch:
            by_table.setdefault(row.table, []).append(row)
        for name, rows in by_table.items():
            rows = self._not_yet_written(_TABLES[name], rows)
            for row, reason in self._insert(_TABLES[name], rows):
                self.rows_rejected.inc()
                yield beam.pvalue.TaggedOutput(
                    DEAD_LETTER,
                    dead_letter_record(
                        stage=WAREHOUSE_STAGE,
                        error=f"{name}: {reason}",
                        payload=json.dumps(row.row, sort_keys=True),
                        attributes={"table": name, "insert_id": row.insert_id},
                        timestamp_ms=int(time.time() * 1000),
                    ),
                )

    def _not_yet_written(self, table: Table, rows: list[WarehouseRow]) -> list[WarehouseRow]:
        if time.monotonic() > self.recovering_until or not table.id_column or not rows:
            return rows
        try:
            written = self.warehouse.existing_insert_ids(table, [r.row for r in rows])
        except Exception as error:  # the lookup is a guard: if it fails, insert as usual
            _log.warning("could not look up rows already in %s: %s", table.name, error)
            return rows
        self.rows_already_written.inc(sum(r.insert_id in written for r in rows))
        return [r for r in rows if r.insert_id not in written]

    def _insert(
        self, table: Table, rows: list[WarehouseRow], attempts: int = BATCH_ATTEMPTS
    ) -> list[tuple[WarehouseRow, str]]:
        """The rows that could not be written, with why; the others are in the table.

        Every first insert, even of one row, has the batch's attempts (7.5 s of backoff
        rides out a warehouse restart); rows retried alone after a split have fewer.
        """
        for attempt in range(attempts):
            try:
                rejected = self.warehouse.insert(
                    table, [r.row for r in rows], [r.insert_id for r in rows]
                )
            except TransientWarehouseError as error:
                last_error = str(error)
                if attempt + 1 < attempts:
                    self.retries.inc()
                    time.sleep(min(0.5 * 2**attempt, 8.0))  # backoff before the next attempt
                continue
            except BatchRefused as error:  # permanent for this batch: split it at once
                last_error = str(error)
                break
            self.rows_inserted.inc(len(rows) - len(rejected))
            return [(rows[r.index], r.reason) for r in rejected]
        if len(rows) > 1:  # one bad row can sink a batch: find it by inserting one by one
            return [
                failure for row in rows for failure in self._insert(table, [row], self.ROW_ATTEMPTS)
            ]
        return [(rows[0], f"failed after {attempts} attempts: {last_error}")]


class WriteToWarehouse(beam.PTransform):
    """WarehouseRows -> BigQuery; returns dead-letter records of rows that were refused.

    Rows repeated within `dedupe_seconds` (redeliveries, identical late re-fires) are
    dropped before insertion: BigQuery's own insertId deduplication is best effort, and
    the local emulator has none.
    """

    def __init__(self, project: str, dataset: str, dedupe_seconds: int) -> None:
        super().__init__()
        self.project = project
        self.dataset = dataset
        self.dedupe_seconds = dedupe_seconds

    def expand(self, rows: beam.PCollection) -> beam.PCollection:
        return (
            rows
            | "DropRepeatedRows" >> DropRepeats(lambda row: row.insert_id, self.dedupe_seconds)
            | "BatchRows" >> beam.BatchElements(min_batch_size=1, max_batch_size=500)
            | "InsertRows"
            >> beam.ParDo(
                InsertRowsFn(self.project, self.dataset, recovery_seconds=self.dedupe_seconds)
            ).with_outputs(DEAD_LETTER, main="inserted")
        )[DEAD_LETTER]


class ToWarehouseRows(beam.PTransform):
    """Records (dicts of `table`'s columns) -> WarehouseRows for `table`."""

    def __init__(self, table: Table) -> None:
        super().__init__()
        self.table = table

    def expand(self, records: beam.PCollection) -> beam.PCollection:
        return records | "ToWarehouseRow" >> beam.Map(to_warehouse_row, self.table)


class SpeedRows(beam.PTransform):
    """Traversals -> `vehicle_speeds` rows (every traversal, no plate, no image)."""

    def expand(self, traversals: beam.PCollection) -> beam.PCollection:
        return traversals | "ToSpeedRow" >> beam.Map(
            lambda t: to_warehouse_row(
                vehicle_speed_record(t, processed_at_ms=int(time.time() * 1000)), VEHICLE_SPEEDS
            )
        )


@dataclass(frozen=True)
class WarehouseSinks:
    """Where the pipeline's tables live; `write()` is one WriteToWarehouse step."""

    project: str
    dataset: str
    dedupe_seconds: int

    def write(self) -> WriteToWarehouse:
        return WriteToWarehouse(self.project, self.dataset, self.dedupe_seconds)
