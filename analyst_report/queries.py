"""The report's queries and how they read the warehouse as of one moment.

The SQL files under analyst_report/sql/ are filled with `{project}.{dataset}` (names, checked)
and run with `@as_of` and INT64 values as query parameters. The page's queries are read again
while rows processed before as_of still arrive, so every section describes the same rows
(docs/report.md, "One consistent snapshot"); the desk's queries are read the same way.
"""

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from google.api_core.exceptions import NotFound
from google.cloud import bigquery

from section_speed.clients.warehouse import Warehouse

_log = logging.getLogger(__name__)

Row = dict[str, Any]

# Reading the sections again when rows processed before as_of arrived meanwhile: a row
# is in flight for one insert batch, so a second reading nearly always agrees.
SNAPSHOT_READINGS = 4
SQL_PACKAGE, SQL_DIR = "analyst_report", "sql"
# The desk's queries: their own folder and shared CTEs, over the desk's tables.
VERIFICATION_SQL_DIR = "sql/verification"
# Identifiers only are put into the SQL text (str.format); values go in as query parameters.
_PROJECT_RE = re.compile(r"^[a-z][a-z0-9.:-]{0,127}[a-z0-9]$")  # also example.com:project
_DATASET_RE = re.compile(r"^[A-Za-z0-9_]{1,1024}$")


def sql_names() -> list[str]:
    """Names (without .sql) of the queries shipped in the package."""
    folder = resources.files(SQL_PACKAGE).joinpath(SQL_DIR)
    return sorted(f.name.removesuffix(".sql") for f in folder.iterdir() if f.name.endswith(".sql"))


def _with_names(sql: str, project: str, dataset: str) -> str:
    """`sql` with its `{project}.{dataset}` filled in, once both are checked to be names."""
    if not _PROJECT_RE.match(project):
        raise ValueError(f"not a Google Cloud project id: {project!r}")
    if not _DATASET_RE.match(dataset):
        raise ValueError(f"not a BigQuery dataset name (letters, digits, _): {dataset!r}")
    return sql.format(project=project, dataset=dataset)


def load_sql(name: str, project: str, dataset: str, folder: str = SQL_DIR) -> str:
    """The query `name` with its `{project}.{dataset}` filled in (identifiers, checked)."""
    text = resources.files(SQL_PACKAGE).joinpath(*folder.split("/"), f"{name}.sql").read_text()
    return _with_names(text, project, dataset)


def verification_sql_names() -> list[str]:
    """Names (without .sql) of the desk's queries (analyst_report/sql/verification/)."""
    folder = resources.files(SQL_PACKAGE).joinpath(*VERIFICATION_SQL_DIR.split("/"))
    return sorted(f.name.removesuffix(".sql") for f in folder.iterdir() if f.name.endswith(".sql"))


def _query(warehouse: Warehouse, sql: str, as_of: datetime, **parameters: int) -> list[Row]:
    config = bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ScalarQueryParameter("as_of", "TIMESTAMP", as_of),
            *(
                bigquery.ScalarQueryParameter(key, "INT64", value)
                for key, value in parameters.items()
            ),
        ]
    )  # Warehouse.query takes no parameters: its client runs the job.
    return [dict(row.items()) for row in warehouse.client.query(sql, job_config=config).result()]


def run_query(
    warehouse: Warehouse, name: str, as_of: datetime, folder: str = SQL_DIR, **parameters: int
) -> list[Row]:
    """Rows of analyst_report/FOLDER/NAME.sql as of `as_of` (@as_of); `parameters` are INT64."""
    sql = load_sql(name, warehouse.project, warehouse.dataset, folder)
    return _query(warehouse, sql, as_of, **parameters)


@dataclass(frozen=True)
class Totals:
    """summary.sql's row: the page's first line, the plates chart and the table's count."""

    traversals: int
    fines: int
    fines_without_evidence: int  # fined traversals whose fines row (plate, photo) is not in yet
    plates_read: int
    plate_read_share: float | None  # None without fines

    @classmethod
    def from_row(cls, row: Row) -> "Totals":
        return cls(**{field.name: row[field.name] for field in fields(cls)})


def warehouse_totals(warehouse: Warehouse, as_of: datetime | None = None) -> Totals:
    """Traversals and fines, each once, as of `as_of` (default now): what the report shows."""
    (row,) = run_query(warehouse, "summary", as_of or datetime.now(UTC))
    return Totals.from_row(row)


# Rows per table processed up to as_of, every row counted: the tables only grow (streaming
# inserts), so the same counts before and after the sections' queries mean they all read
# the same rows. Not an analyst's query, so not in sql/.
_ROWS_AS_OF = """SELECT
  (SELECT COUNT(*) FROM `{project}.{dataset}.fines` WHERE processed_at <= @as_of) AS fine_rows,
  (SELECT COUNT(*) FROM `{project}.{dataset}.vehicle_speeds` WHERE processed_at <= @as_of)
    AS speed_rows"""


def rows_as_of(warehouse: Warehouse, as_of: datetime) -> tuple[int, int]:
    """(fines rows, vehicle_speeds rows) processed up to `as_of`, corrections included."""
    sql = _with_names(_ROWS_AS_OF, warehouse.project, warehouse.dataset)
    (row,) = _query(warehouse, sql, as_of)
    return int(row["fine_rows"]), int(row["speed_rows"])


class SnapshotMoved(RuntimeError):
    """Rows processed before as_of kept arriving while the sections were read."""


@dataclass(frozen=True)
class SectionRows:
    """What every query returned, read as of one moment."""

    totals: Totals
    per_hour: list[Row]
    per_radar: list[Row]
    speeds: list[Row]
    latest: list[Row]
    per_limit_source: list[Row] = field(default_factory=list)


def read_sections(warehouse: Warehouse, as_of: datetime, latest: int) -> SectionRows:
    """Every query of the page, each filtered to the rows processed up to `as_of`."""
    (summary,) = run_query(warehouse, "summary", as_of)
    return SectionRows(
        totals=Totals.from_row(summary),
        per_hour=run_query(warehouse, "fines_per_hour", as_of),
        per_radar=run_query(warehouse, "fines_per_radar", as_of),
        speeds=run_query(warehouse, "speed_distribution", as_of),
        latest=run_query(warehouse, "latest_fines", as_of, latest=latest),
        per_limit_source=run_query(warehouse, "fines_per_limit_source", as_of),
    )


def read_snapshot(warehouse: Warehouse, as_of: datetime, latest: int) -> SectionRows:
    """The sections, all of the same rows: read again while rows up to as_of still arrive.

    A row is stamped with processed_at before it is inserted, so one processed just
    before `as_of` can land between two of the queries; the row counts up to `as_of`,
    unchanged from before the first query to after the last, prove it did not.
    """
    before = rows_as_of(warehouse, as_of)
    for _ in range(SNAPSHOT_READINGS):
        rows = read_sections(warehouse, as_of, latest)
        after = rows_as_of(warehouse, as_of)
        if after == before:
            return rows
        _log.info("rows up to %s arrived while reading (%s -> %s): reading again",
                  as_of, before, after)  # fmt: skip
        before = after
    raise SnapshotMoved(
        f"rows processed before {as_of.isoformat()} kept arriving over {SNAPSHOT_READINGS} "
        "readings; give an earlier --as_of"
    )


# -- verification (the desk's decisions) -------------------------------------------------
@dataclass(frozen=True)
class ReaderAccuracy:
    """reader_accuracy.sql's row: one plate reader's reads as officers judged them."""

    plate_reader: str
    reads_confirmed: int
    reads_corrected: int  # the reader read a plate; the officer typed another
    unread_typed: int  # the reader read none; the officer typed it
    rejected_unreadable: int
    rejected_wrong_vehicle: int  # the photo shows another vehicle: the measurement's fault
    rejected_other: int  # an implausible measurement, or another reason
    read_accuracy: float | None  # confirmed / (confirmed + corrected); None without either

    @classmethod
    def from_row(cls, row: Row) -> "ReaderAccuracy":
        return cls(**{field.name: row[field.name] for field in fields(cls)})


@dataclass(frozen=True)
class Verification:
    """The desk's totals (verification/summary.sql) and the readers' accuracy."""

    fines_pending: int  # awaiting a decision on their current revision
    fines_changed: int  # of those, decided on an earlier revision
    fines_issued: int  # confirmed or corrected: a notice
    fines_rejected: int
    notices: int  # rows of the notices table, one per fine revision issued
    decisions: int  # decisions on a plate (confirm, correct, reject)
    decision_ms_median: int | None  # from opening a fine (its claim) to the decision
    decision_ms_p90: int | None
    readers: tuple[ReaderAccuracy, ...] = ()

    @classmethod
    def from_rows(cls, summary: Row, readers: Sequence[Row]) -> "Verification":
        values = {f.name: summary[f.name] for f in fields(cls) if f.name != "readers"}
        return cls(**values, readers=tuple(ReaderAccuracy.from_row(row) for row in readers))


# The desk's rows up to as_of, every row counted: as _ROWS_AS_OF, unchanged before and
# after the queries means they read the same rows.
_DECISIONS_AS_OF = """SELECT
  (SELECT COUNT(*) FROM `{project}.{dataset}.fine_reviews` WHERE decided_at <= @as_of)
    AS review_rows,
  (SELECT COUNT(*) FROM `{project}.{dataset}.notices` WHERE decided_at <= @as_of)
    AS notice_rows"""
DESK_TABLES = ("fine_reviews", "notices")


def has_desk_tables(warehouse: Warehouse) -> bool:
    """Whether the dataset holds the desk's tables (python -m pipeline.provision makes them)."""
    try:
        for name in DESK_TABLES:
            warehouse.client.get_table(f"{warehouse.project}.{warehouse.dataset}.{name}")
    except NotFound:
        return False
    return True


def read_verification(warehouse: Warehouse, as_of: datetime) -> Verification:
    """The desk's queries, all of the same decisions: read again while rows up to as_of
    still arrive (a decision is stamped before its row is inserted)."""
    counts = _with_names(_DECISIONS_AS_OF, warehouse.project, warehouse.dataset)
    before = _query(warehouse, counts, as_of)
    for _ in range(SNAPSHOT_READINGS):
        (summary,) = run_query(warehouse, "summary", as_of, VERIFICATION_SQL_DIR)
        readers = run_query(warehouse, "reader_accuracy", as_of, VERIFICATION_SQL_DIR)
        after = _query(warehouse, counts, as_of)
        if after == before:
            return Verification.from_rows(summary, readers)
        before = after
    raise SnapshotMoved(
        f"decisions before {as_of.isoformat()} kept arriving over {SNAPSHOT_READINGS} "
        "readings; give an earlier --as_of"
    )
