"""The data warehouse: BigQuery tables created from the schema definition, rows streamed in.

Rows are sent with `insert_rows_json` and an insertId per row. Every failure is
classified here, once: a row BigQuery refuses is *rejected* (permanent, with the
warehouse's reason) and anything else is *transient* (retry later).
"""

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests
from google.api_core import exceptions as api_exceptions
from google.cloud import bigquery

from domain.schemas import TABLES, Table

_log = logging.getLogger(__name__)

EMULATOR_ENV = "BIGQUERY_EMULATOR_HOST"  # read by google-cloud-bigquery itself
TRANSIENT_ERRORS = (
    api_exceptions.ServerError,  # 5xx (the emulator answers 500 to a bad row, too)
    api_exceptions.TooManyRequests,
    requests.ConnectionError,  # refused or reset (the emulator resets after a 500)
    requests.Timeout,
)


class TransientWarehouseError(RuntimeError):
    """The warehouse did not take the rows this time; the same rows may succeed later."""


class BatchRefused(RuntimeError):
    """The request as a whole was refused (4xx): retrying it cannot help, splitting can."""


@dataclass(frozen=True)
class RejectedRow:
    index: int
    reason: str


def bigquery_schema_fields(table: Table) -> list[bigquery.SchemaField]:
    return [
        bigquery.SchemaField(c.name, c.type, mode=c.mode, description=c.description)
        for c in table.columns
    ]


class Warehouse:
    """One dataset of this project's tables. Thread-compatible; one per DoFn instance."""

    def __init__(self, project: str, dataset: str, client: bigquery.Client | None = None) -> None:
        self.project = project
        self.dataset = dataset
        self.client = client or self._new_client(project)

    @staticmethod
    def _new_client(project: str) -> bigquery.Client:
        if os.environ.get(EMULATOR_ENV):
            from google.auth.credentials import AnonymousCredentials

            return bigquery.Client(project=project, credentials=AnonymousCredentials())
        return bigquery.Client(project=project)

    def table_id(self, table: Table) -> str:
        return f"{self.project}.{self.dataset}.{table.name}"

    def ensure_tables(self, tables: Sequence[Table] = TABLES) -> None:
        """Create the dataset and tables if missing: day-partitioned, clustered."""
        self.client.create_dataset(f"{self.project}.{self.dataset}", exists_ok=True)
        for table in tables:
            definition = bigquery.Table(self.table_id(table), schema=bigquery_schema_fields(table))
            definition.time_partitioning = bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.DAY, field=table.partition_column
            )
            definition.clustering_fields = list(table.cluster_columns)
            self.client.create_table(definition, exists_ok=True)

    def insert(
        self, table: Table, rows: Sequence[dict[str, Any]], row_ids: Sequence[str]
    ) -> list[RejectedRow]:
        """Insert rows; return those refused with their reasons. Raise on transient failure.

        BigQuery answers per row; with skip_invalid_rows=False, valid rows of a batch that
        holds an invalid one are "stopped", not written: they are re-sent here alone. A
        batch refused as a whole (the emulator answers 500) is the caller's to split.
        """
        try:
            errors = self.client.insert_rows_json(
                self.table_id(table), list(rows), row_ids=list(row_ids), retry=None, timeout=30
            )
        except TRANSIENT_ERRORS as error:
            raise TransientWarehouseError(f"{table.name}: {error}") from error
        except api_exceptions.ClientError as error:  # 4xx for the whole request
            if len(rows) == 1:
                return [RejectedRow(0, f"{error.code} {error.message}")]
            raise BatchRefused(f"{table.name}: batch refused: {error}") from error
        rejected, stopped = [], []
        for entry in errors:
            reasons = [e.get("reason", "") for e in entry.get("errors", [])]
            if reasons and all(reason == "stopped" for reason in reasons):
                stopped.append(entry["index"])
            else:
                message = "; ".join(
                    f"{e.get('reason')}: {e.get('message')} ({e.get('location', '')})"
                    for e in entry.get("errors", [])
                )
                rejected.append(RejectedRow(entry["index"], message or "rejected"))
        for index in stopped:  # healthy rows held back by a bad neighbour
            for again in self.insert(table, [rows[index]], [row_ids[index]]):
                rejected.append(RejectedRow(index, again.reason))
        return rejected

    def count(self, table: Table) -> int:
        """Rows in one of this dataset's tables (every row, corrections included)."""
        sql = f"SELECT COUNT(*) AS n FROM `{self.table_id(table)}`"
        return int(self.query(sql)[0]["n"])

    def query(self, sql: str) -> list[dict[str, Any]]:
        """Rows of a query as dicts (for the report and tests)."""
        return [dict(row.items()) for row in self.client.query(sql).result()]
