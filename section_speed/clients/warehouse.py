"""The data warehouse: BigQuery tables created from the schema definition, rows streamed in.

Rows are sent with `insert_rows_json` and an insertId per row. Every failure is
classified here, once: a row BigQuery refuses is *rejected* (permanent, with the
warehouse's reason); a refusal of the workers themselves (401, 403, 404: not granted, over
a quota, the dataset or table missing) is *not granted* (an outage: raised, logged once
per process with what to grant, no row blamed); anything else is *transient* (retry
later).
"""

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import requests
from google.api_core import exceptions as api_exceptions
from google.api_core.retry import Retry
from google.cloud import bigquery

from section_speed.domain.events import format_rfc3339_ms
from section_speed.domain.schemas import TABLES, VIEWS, Table, View, insert_id

_log = logging.getLogger(__name__)

EMULATOR_ENV = "BIGQUERY_EMULATOR_HOST"  # read by google-cloud-bigquery itself
TRANSIENT_ERRORS = (
    api_exceptions.ServerError,  # 5xx (the emulator answers 500 to a bad row, too)
    api_exceptions.TooManyRequests,
    requests.ConnectionError,  # refused or reset (the emulator resets after a 500)
    requests.Timeout,
)


# BigQuery refuses the workers themselves, every row alike, until someone grants or creates
# what is missing (a 403 is also BigQuery's answer to a rate or quota exceeded).
NOT_GRANTED_ERRORS = (
    api_exceptions.Unauthorized,  # 401
    api_exceptions.Forbidden,  # 403
    api_exceptions.NotFound,  # 404: the dataset or table
)
GRANT = "roles/bigquery.dataEditor"

_HEX_ID = re.compile(r"[0-9a-f]{32}")


def as_record(table: Table, row: dict[str, Any]) -> dict[str, Any]:
    """A queried row back in the JSON form the pipeline wrote (timestamps as RFC 3339)."""
    return {
        column.name: (
            format_rfc3339_ms(round(value.timestamp() * 1000))
            if isinstance(value, datetime)
            else value
        )
        for column in table.columns
        if (value := row.get(column.name)) is not None or column.name in row
    }


# google-cloud-bigquery's own retry (10 minutes), polling at most every 4 s instead of
# backing off to 60 s: the warehouse sink checks its tables in setup, which the
# BundleBasedDirectRunner calls for every bundle, blocking its one worker thread, so
# after an outage the default backoff kept the whole pipeline stalled up to a minute.
SETUP_RETRY = bigquery.DEFAULT_RETRY.with_delay(initial=0.5, maximum=4.0)


class TransientWarehouseError(RuntimeError):
    """The warehouse did not take the rows this time; the same rows may succeed later."""


class WarehouseNotGranted(RuntimeError):
    """BigQuery refused the workers (401, 403, 404), not a row: retrying the same rows
    later, once it is granted or provisioned, writes them."""


class TablesMissing(RuntimeError):
    """The dataset lacks a table (or a column) this pipeline writes: provision it first."""


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
    """One dataset of this project's tables; one per worker process, shared by its DoFns."""

    def __init__(self, project: str, dataset: str, client: bigquery.Client | None = None) -> None:
        self.project = project
        self.dataset = dataset
        self._owns_client = client is None
        self.client = client or self._new_client(project)
        self._told_what_to_grant = False

    def close(self) -> None:
        """Close the connections of the client this warehouse made; a given one is left open."""
        if self._owns_client:
            self.client.close()

    @staticmethod
    def _new_client(project: str) -> bigquery.Client:
        if os.environ.get(EMULATOR_ENV):
            from google.auth.credentials import AnonymousCredentials

            return bigquery.Client(project=project, credentials=AnonymousCredentials())
        return bigquery.Client(project=project)

    def table_id(self, table: Table) -> str:
        return f"{self.project}.{self.dataset}.{table.name}"

    def check_tables(
        self,
        tables: Sequence[Table] = TABLES,
        retry: Retry | None = SETUP_RETRY,
        timeout: float | None = None,
    ) -> None:
        """Raise TablesMissing unless every table exists with every column of its schema.

        Reads only (`get_table`: bigquery.tables.get, which the workers' role grants on
        each table); the tables are created at deploy time by `python -m pipeline.provision`,
        so a worker needs no project-level permission. By default an unreachable warehouse
        is polled every few seconds (SETUP_RETRY) until it is back; the start-up checks
        pass no retry and a short timeout instead.
        """
        bounded = {"timeout": timeout} if timeout is not None else {}  # else the client's
        problems = []
        for table in tables:
            try:
                found = self.client.get_table(self.table_id(table), retry=retry, **bounded)
            except api_exceptions.NotFound:
                problems.append(f"table {self.table_id(table)} does not exist")
                continue
            present = {field.name for field in found.schema}
            missing = [c.name for c in table.columns if c.name not in present]
            if missing:
                problems.append(f"table {self.table_id(table)} lacks columns {missing}")
        if problems:
            raise TablesMissing(
                "; ".join(problems) + ". Create the tables at deploy time with "
                f"`python -m pipeline.provision --project {self.project} "
                f"--bq_dataset {self.dataset}` (docs/deploy.md)."
            )

    def answers(self, table: Table = TABLES[0]) -> bool:
        """Whether the warehouse answers at all (one metadata read, no retry).

        Tells an outage (keep the rows and wait) from a batch it refuses while up (split
        it): the local emulator answers 500, and resets the connection, for both.
        """
        for _ in range(2):  # the emulator resets the connection once after a 500: ask again
            try:
                self.client.get_table(self.table_id(table), retry=None, timeout=5)
            except (*TRANSIENT_ERRORS, api_exceptions.RetryError):
                continue
            except api_exceptions.GoogleAPICallError:
                return True  # an answer, if not a happy one
            return True
        return False

    def ensure_tables(self, tables: Sequence[Table] = TABLES, location: str | None = None) -> None:
        """Create the dataset (in `location`, else BigQuery's default) and tables if missing.

        A table that exists but lacks nullable columns of the schema (a dataset provisioned
        by an earlier version) gets them added: an additive change that keeps every row.
        A missing required column cannot be added to rows that exist: TablesMissing.
        Tables are day-partitioned and clustered. Deploy-time only (pipeline/provision.py,
        the local stack): creating a dataset needs the project-level
        bigquery.datasets.create, which workers are not granted. An unreachable warehouse
        is polled every few seconds (SETUP_RETRY) until it is back. Then the views over
        the tables that exist (`ensure_views`).
        """
        dataset = bigquery.Dataset(f"{self.project}.{self.dataset}")
        if location:  # None would be sent as null, which the local emulator refuses
            dataset.location = location
        self.client.create_dataset(dataset, exists_ok=True, retry=SETUP_RETRY)
        for table in tables:
            definition = bigquery.Table(self.table_id(table), schema=bigquery_schema_fields(table))
            definition.time_partitioning = bigquery.TimePartitioning(
                type_=bigquery.TimePartitioningType.DAY, field=table.partition_column
            )
            definition.clustering_fields = list(table.cluster_columns)
            found = self.client.create_table(definition, exists_ok=True, retry=SETUP_RETRY)
            self._add_missing_columns(table, found)
        self.ensure_views()  # every reader reads the views: they come with the tables

    def ensure_views(self, views: Sequence[View] = VIEWS) -> list[str]:
        """Create or redefine the views (docs/warehouse.md, Views) whose tables exist.

        A view is defined again when its query differs, so a release that changes a rule
        changes it for every reader at once (deleted and created: for that moment a
        reader finds no view, and fails rather than count by another rule). A view whose
        tables the dataset lacks (the desk's, before the desk is provisioned) is left
        out. Returns the views defined. Deploy time only, as ensure_tables.
        """
        present: dict[str, bool] = {}

        def exists(name: str) -> bool:
            if name not in present:
                try:
                    self.client.get_table(f"{self.project}.{self.dataset}.{name}")
                    present[name] = True
                except api_exceptions.NotFound:
                    present[name] = False
            return present[name]

        defined = []
        for view in views:
            if not all(exists(name) for name in view.reads):
                continue
            view_id = f"{self.project}.{self.dataset}.{view.name}"
            definition = bigquery.Table(view_id)
            definition.view_query = view.sql(self.project, self.dataset)
            definition.description = view.description
            try:
                found = self.client.get_table(view_id, retry=SETUP_RETRY)
            except api_exceptions.NotFound:
                found = None
            if found is None or found.view_query != definition.view_query:
                if found is not None:  # a rule changed (the emulator never says: None)
                    # Delete, then create: the local emulator ignores a patched query and
                    # refuses CREATE OR REPLACE VIEW on a view made through the API.
                    self.client.delete_table(view_id, not_found_ok=True, retry=SETUP_RETRY)
                self.client.create_table(definition, exists_ok=True, retry=SETUP_RETRY)
            present[view.name] = True
            defined.append(view.name)
        return defined

    def _add_missing_columns(self, table: Table, found: bigquery.Table) -> None:
        present = {field.name for field in found.schema}
        wanted = {f.name: f for f in bigquery_schema_fields(table)}
        missing = [f for f in wanted.values() if f.name not in present]
        # A column the table requires and the schema lets be null (e.g. distance_m of
        # spot_mean records): relaxing REQUIRED to NULLABLE is the other additive change
        # BigQuery accepts.
        relaxed = [
            field.name
            for field in found.schema
            if field.mode == "REQUIRED"
            and field.name in wanted
            and wanted[field.name].mode == "NULLABLE"
        ]
        if relaxed:
            found.schema = [
                wanted[field.name] if field.name in relaxed else field for field in found.schema
            ]
            found = self.client.update_table(found, ["schema"], retry=SETUP_RETRY)
            _log.info("relaxed columns %s of %s to NULLABLE", relaxed, self.table_id(table))
        if not missing:
            return
        required = [f.name for f in missing if f.mode == "REQUIRED"]
        if required:
            raise TablesMissing(
                f"table {self.table_id(table)} lacks required columns {required}, which "
                "cannot be added to the rows it holds: create the dataset afresh, or copy "
                "the table into one with the schema of docs/reference.md"
            )
        found.schema = [*found.schema, *missing]
        self.client.update_table(found, ["schema"], retry=SETUP_RETRY)
        _log.info("added columns %s to %s", [f.name for f in missing], self.table_id(table))

    def insert(
        self, table: Table, rows: Sequence[dict[str, Any]], row_ids: Sequence[str]
    ) -> list[RejectedRow]:
        """Insert rows; return those refused with their reasons. Raise on transient failure.

        BigQuery answers per row; with skip_invalid_rows=False, valid rows of a batch that
        holds an invalid one are "stopped", not written: they are re-sent here alone. A
        batch refused as a whole (the emulator answers 500) is the caller's to split.
        """
        try:
            # A request of up to 500 rows answers within a second or two; a hanging one
            # times out soon, so that a batch's attempts stay within tens of seconds.
            errors = self.client.insert_rows_json(
                self.table_id(table), list(rows), row_ids=list(row_ids), retry=None, timeout=10
            )
        except TRANSIENT_ERRORS as error:
            raise TransientWarehouseError(f"{table.name}: {error}") from error
        except NOT_GRANTED_ERRORS as error:  # before ClientError, which holds them
            raise self._not_granted(table, error) from error
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

    def _not_granted(self, table: Table, error: api_exceptions.ClientError) -> WarehouseNotGranted:
        """The refusal, saying what to grant or create; logged once per process."""
        advice = (
            f"grant the workers' service account {GRANT} on dataset "
            f"{self.project}.{self.dataset}, or create its tables with `python -m "
            f"pipeline.provision --project {self.project} --bq_dataset {self.dataset}` "
            "(docs/warehouse.md, An outage)"
        )
        if not self._told_what_to_grant:
            self._told_what_to_grant = True
            _log.error("BigQuery refuses this pipeline's writes to %s: %s; %s",
                       self.table_id(table), error, advice)  # fmt: skip
        return WarehouseNotGranted(f"{table.name}: {error.code} {error.message}; {advice}")

    def existing_insert_ids(self, table: Table, rows: Sequence[dict[str, Any]]) -> set[str]:
        """Insert ids of those `rows` the table already holds (same id, same content).

        Used after a (re)start, when a replay may re-send rows written before it; ids are
        validated hex digests, so they are safe to inline in the query.
        """
        ids = sorted({str(row[table.id_column]) for row in rows})
        if not table.id_column or not ids or not all(_HEX_ID.fullmatch(i) for i in ids):
            return set()
        listed = ", ".join(f"'{i}'" for i in ids)
        stored = self.query(
            f"SELECT * FROM `{self.table_id(table)}` WHERE {table.id_column} IN ({listed})"
        )
        return {insert_id(table, as_record(table, row)) for row in stored}

    def count(self, table: Table) -> int:
        """Rows in one of this dataset's tables (every row, corrections included)."""
        sql = f"SELECT COUNT(*) AS n FROM `{self.table_id(table)}`"
        return int(self.query(sql)[0]["n"])

    def query(self, sql: str) -> list[dict[str, Any]]:
        """Rows of a query as dicts (for the report and tests)."""
        return [dict(row.items()) for row in self.client.query(sql).result()]
