"""The desk's data: the fines queue, one fine's revisions, reviews, claims and notices.

`DeskStore` is the interface the desk's routes and workflow use; `BigQueryDeskStore` is the
product's implementation over the pipeline's dataset (the `fines` table the pipeline
writes, and the verification tables of `section_speed/domain/verification.py`, created by
`python -m pipeline.provision`). Rows come and go as plain dicts with timestamps as RFC 3339
text (`2026-11-18T08:00:00.000Z`), the form the pipeline writes and the notice digest
covers, so every implementation hands the workflow the same values.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Protocol

from google.cloud import bigquery

from section_speed.clients.warehouse import Warehouse
from section_speed.domain.events import format_rfc3339_ms
from section_speed.domain.schemas import FINES, Table
from section_speed.domain.verification import FINE_CLAIMS, FINE_REVIEWS, ISSUING_DECISIONS, NOTICES

Row = dict[str, Any]

# Where a fine in the queue stands (QueueEntry.state).
NEW = "new"  # never decided
CHANGED = "changed"  # decided on an older revision: revised since
WITHDRAWN = "withdrawn"  # decided, then withdrawn or no longer over the limit: close only


@dataclass(frozen=True, slots=True)
class QueueFilter:
    """What an officer chose to work on; None is "any"."""

    radar_id: str | None = None
    day: date | None = None  # the exit time's UTC day
    min_confidence: float | None = None  # the reader's confidence, 0..1
    max_confidence: float | None = None  # an unread plate (no confidence) counts as 0


@dataclass(frozen=True, slots=True)
class QueueEntry:
    fine: Row  # the fine's latest revision
    state: str  # NEW, CHANGED or WITHDRAWN
    last_review: Row | None  # the latest decision on an earlier revision, if any


def is_live_fine(fine: Mapping[str, Any]) -> bool:
    """A fine to decide on: ticketed and not withdrawn."""
    return bool(fine.get("is_ticketed")) and not fine.get("withdrawn_reason")


def queue_state(latest: Mapping[str, Any], last_review: Mapping[str, Any] | None) -> str | None:
    """Whether a fine (its latest revision) awaits the desk, and how; None if it does not.

    The one rule behind both the queue query and the single-fine check of a decision.
    """
    if last_review is None:
        return NEW if is_live_fine(latest) else None
    if int(last_review["revision"]) >= int(latest["revision"]):
        return None
    return CHANGED if is_live_fine(latest) else WITHDRAWN


def latest_revision(revisions: Sequence[Mapping[str, Any]]) -> Row | None:
    """The fines rule: the highest revision, then the latest processed_at."""
    if not revisions:
        return None
    return dict(max(revisions, key=lambda r: (int(r["revision"]), r.get("processed_at") or "")))


class DeskStore(Protocol):
    """What the desk reads and appends. Nothing is ever updated or deleted."""

    def queue(self, filters: QueueFilter, limit: int) -> list[QueueEntry]:
        """Fines awaiting a decision, oldest exit time first (then fine_id)."""
        ...

    def fine_revisions(self, fine_id: str) -> list[Row]:
        """Every fines row of one fine, oldest revision first (the revision history)."""
        ...

    def reviews(self, fine_id: str) -> list[Row]:
        """Every decision on one fine, oldest first."""
        ...

    def review(self, review_id: str) -> Row | None: ...

    def add_review(self, review: Row) -> None:
        """Append one fine_reviews row (insert id: review_id)."""
        ...

    def claims(self, fine_ids: Sequence[str], now: str) -> list[Row]:
        """The unexpired claims (expires_at > now) on these fines."""
        ...

    def add_claim(self, claim: Row) -> None:
        """Append one fine_claims row (insert id: claim_id)."""
        ...

    def notice(self, notice_id: str) -> Row | None: ...

    def add_notice(self, notice: Row) -> None:
        """Append one notices row (insert id: notice_id)."""
        ...

    def reviews_without_notice(self) -> list[Row]:
        """Confirmed or corrected decisions whose fine revision has no notices row."""
        ...


class StoreError(RuntimeError):
    """The warehouse refused a row the desk appends (its reason says why)."""


def plain(row: Mapping[str, Any]) -> Row:
    """A queried row with timestamps as the pipeline's RFC 3339 text."""
    return {
        key: format_rfc3339_ms(round(value.timestamp() * 1000))
        if isinstance(value, datetime)
        else value
        for key, value in row.items()
    }


def now_text(moment: datetime | None = None) -> str:
    moment = moment or datetime.now(UTC)
    return format_rfc3339_ms(round(moment.timestamp() * 1000))


def _param(name: str, type_: str, value: Any) -> bigquery.ScalarQueryParameter:
    return bigquery.ScalarQueryParameter(name, type_, value)


class BigQueryDeskStore:
    """`DeskStore` over a BigQuery dataset, through the pipeline's warehouse client.

    Reads are queries with parameters (never text from a request inlined); writes are
    `Warehouse.insert` (streaming inserts with insert ids). On the local stack the client
    finds the emulator through BIGQUERY_EMULATOR_HOST, as the pipeline's does.
    """

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        self._fines = warehouse.table_id(FINES)
        self._reviews = warehouse.table_id(FINE_REVIEWS)
        self._claims = warehouse.table_id(FINE_CLAIMS)
        self._notices = warehouse.table_id(NOTICES)

    @classmethod
    def connect(cls, project: str, dataset: str) -> "BigQueryDeskStore":
        warehouse = Warehouse(project, dataset)
        warehouse.check_tables((FINES, FINE_REVIEWS, FINE_CLAIMS, NOTICES))
        return cls(warehouse)

    def _query(self, sql: str, *params: bigquery.ScalarQueryParameter) -> list[Row]:
        config = bigquery.QueryJobConfig(query_parameters=list(params))
        # jobs.query: one request for a small result (query() adds a job insert and a
        # results call); the client falls back to a job when BigQuery needs one.
        rows = self.warehouse.client.query_and_wait(sql, job_config=config, wait_timeout=60)
        return [plain(dict(row.items())) for row in rows]

    def _append(self, table: Table, row: Row) -> None:
        rejected = self.warehouse.insert(table, [row], [str(row[table.id_column])])
        if rejected:
            raise StoreError(f"{table.name} refused the row: {rejected[0].reason}")

    def queue(self, filters: QueueFilter, limit: int) -> list[QueueEntry]:
        conditions, params = [], [_param("row_limit", "INT64", limit)]
        if filters.radar_id is not None:
            conditions.append("l.radar_id = @radar_id")
            params.append(_param("radar_id", "STRING", filters.radar_id))
        if filters.day is not None:
            conditions.append("DATE(l.exit_time) = @day")
            params.append(_param("day", "DATE", filters.day))
        if filters.min_confidence is not None:
            conditions.append("COALESCE(l.plate_confidence, 0) >= @min_confidence")
            params.append(_param("min_confidence", "FLOAT64", filters.min_confidence))
        if filters.max_confidence is not None:
            conditions.append("COALESCE(l.plate_confidence, 0) <= @max_confidence")
            params.append(_param("max_confidence", "FLOAT64", filters.max_confidence))
        where = "".join(f" AND {c}" for c in conditions)
        # The queue_state rule in SQL: new live fines, and fines decided on an older revision.
        sql = f"""
            WITH latest AS (
              SELECT * FROM `{self._fines}`
              QUALIFY ROW_NUMBER() OVER (
                PARTITION BY fine_id ORDER BY revision DESC, processed_at DESC) = 1
            ),
            superseded AS (SELECT DISTINCT s AS fine_id FROM latest, UNNEST(supersedes) AS s),
            last_review AS (
              SELECT fine_id, revision AS _review_revision, decision AS _review_decision,
                     reviewer AS _review_reviewer, decided_at AS _review_decided_at
              FROM `{self._reviews}`
              QUALIFY ROW_NUMBER() OVER (
                PARTITION BY fine_id ORDER BY revision DESC, decided_at DESC) = 1
            )
            SELECT l.*, r._review_revision, r._review_decision, r._review_reviewer,
                   r._review_decided_at
            FROM latest AS l LEFT JOIN last_review AS r ON r.fine_id = l.fine_id
            WHERE l.fine_id NOT IN (SELECT fine_id FROM superseded)
              AND ((r.fine_id IS NULL AND l.is_ticketed AND l.withdrawn_reason IS NULL)
                   OR r._review_revision < l.revision){where}
            ORDER BY l.exit_time, l.fine_id
            LIMIT @row_limit
        """
        entries = []
        for row in self._query(sql, *params):
            review = None
            if row.get("_review_revision") is not None:
                review = {
                    "fine_id": row["fine_id"],
                    "revision": row["_review_revision"],
                    "decision": row["_review_decision"],
                    "reviewer": row["_review_reviewer"],
                    "decided_at": row["_review_decided_at"],
                }
            fine = {k: v for k, v in row.items() if not k.startswith("_")}
            state = queue_state(fine, review)
            if state is not None:
                entries.append(QueueEntry(fine, state, review))
        return entries

    def fine_revisions(self, fine_id: str) -> list[Row]:
        sql = (
            f"SELECT * FROM `{self._fines}` WHERE fine_id = @fine_id "
            "ORDER BY revision, processed_at"
        )
        return self._query(sql, _param("fine_id", "STRING", fine_id))

    def reviews(self, fine_id: str) -> list[Row]:
        sql = (
            f"SELECT * FROM `{self._reviews}` WHERE fine_id = @fine_id "
            "ORDER BY decided_at, review_id"
        )
        return self._query(sql, _param("fine_id", "STRING", fine_id))

    def review(self, review_id: str) -> Row | None:
        sql = f"SELECT * FROM `{self._reviews}` WHERE review_id = @review_id LIMIT 1"
        rows = self._query(sql, _param("review_id", "STRING", review_id))
        return rows[0] if rows else None

    def add_review(self, review: Row) -> None:
        self._append(FINE_REVIEWS, review)

    def claims(self, fine_ids: Sequence[str], now: str) -> list[Row]:
        if not fine_ids:
            return []
        sql = (
            f"SELECT * FROM `{self._claims}` WHERE fine_id IN UNNEST(@fine_ids) "
            "AND expires_at > @now"
        )
        params = [
            bigquery.ArrayQueryParameter("fine_ids", "STRING", list(fine_ids)),
            _param("now", "TIMESTAMP", datetime.fromisoformat(now.replace("Z", "+00:00"))),
        ]
        return self._query(sql, *params)

    def add_claim(self, claim: Row) -> None:
        self._append(FINE_CLAIMS, claim)

    def notice(self, notice_id: str) -> Row | None:
        sql = f"SELECT * FROM `{self._notices}` WHERE notice_id = @notice_id LIMIT 1"
        rows = self._query(sql, _param("notice_id", "STRING", notice_id))
        return rows[0] if rows else None

    def add_notice(self, notice: Row) -> None:
        self._append(NOTICES, notice)

    def reviews_without_notice(self) -> list[Row]:
        decisions = ", ".join(f"'{d}'" for d in ISSUING_DECISIONS)  # constants, not input
        sql = f"""
            SELECT r.* FROM `{self._reviews}` AS r
            LEFT JOIN `{self._notices}` AS n
              ON n.fine_id = r.fine_id AND n.revision = r.revision
            WHERE r.decision IN ({decisions}) AND n.notice_id IS NULL
            ORDER BY r.decided_at, r.review_id
        """
        return self._query(sql)
