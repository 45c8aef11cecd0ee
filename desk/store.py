"""The desk's data in PostgreSQL: fines by revision, the queue, claims, decisions, notices,
recalls and the outbox (schema: desk/migrations/versions/; docs/desk.md, Store).

`DeskStore` holds the SQL; `desk/workflow.py` holds the rules. Every read of "a fine's
latest revision" or "where a fine stands" goes through the `latest_fines` and `queue`
views, whose `state` is the one queue rule (fine_heads.state). What must happen together
happens in one transaction: a decision with its notice and outbox rows (`deciding`), a
new revision with its recalls (`ingest`).

Rows are typed (`Fine`, `Review`, `Claim`); timestamps are RFC 3339 text with
milliseconds (`2026-11-18T08:00:00.000Z`), the form the pipeline writes and the notice
digest covers.
"""

import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from section_speed.domain.events import format_rfc3339_ms
from section_speed.domain.verification import recall_id

# Where a fine in the queue stands (fine_heads.state in the schema: the rule is there).
NEW = "new"  # never decided
CHANGED = "changed"  # decided on an older revision: revised since
WITHDRAWN = "withdrawn"  # decided, then withdrawn or no longer over the limit: close only

# Outbox kinds: a notice or a recall goes to the notices topic (and a notice to BigQuery's
# notices table), a review to BigQuery's fine_reviews table.
NOTICE, RECALL, REVIEW = "notice", "recall", "review"
CLAIM_ATTEMPTS = 3  # "next" statements per request before answering that none is free


def text_time(value: datetime) -> str:
    return format_rfc3339_ms(round(value.timestamp() * 1000))


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def now_text(moment: datetime | None = None) -> str:
    return text_time(moment or datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class Fine:
    """One revision of a fine: the pipeline's record (docs/reference.md, Outputs)."""

    fine_id: str
    revision: int
    radar_id: str
    vehicle_id: str
    license_plate: str | None
    plate_confidence: float | None
    plate_reader: str | None
    plate_candidates: tuple[str, ...]
    plate_candidate_confidences: tuple[str, ...]
    plate_box: str | None
    avg_speed_kmh: float
    avg_speed_mph: float
    speed_limit_mph: float
    tolerance_mph: float | None
    distance_m: float | None
    duration_s: float | None
    entry_time: str
    exit_time: str
    entry_location: str
    exit_location: str
    speed_method: str
    spot_readings: int | None
    supersedes: tuple[str, ...]
    withdrawn_reason: str | None
    image_url: str | None
    image_sha256: str | None
    evidence_error: str | None
    is_ticketed: bool
    processed_at: str
    # The limit in force (docs/enforcement.md): null on records judged before it existed.
    limit_source: str | None = None
    limit_reference: str | None = None
    vehicle_class: str | None = None
    rules_version: str | None = None

    @property
    def live(self) -> bool:
        """A fine to decide on: ticketed and not withdrawn."""
        return self.is_ticketed and not self.withdrawn_reason

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "Fine":
        """From the pipeline's record or topic message (extra keys are ignored); KeyError,
        TypeError or ValueError when a field the desk needs is missing or malformed."""
        values: dict[str, Any] = {}
        for field in fields(cls):
            value = record.get(field.name)
            if field.name in ("plate_candidates", "plate_candidate_confidences", "supersedes"):
                value = tuple(str(v) for v in (value or ()))
            elif field.name in ("revision", "spot_readings") and value is not None:
                value = int(value)
            elif field.name.endswith(("_kmh", "_mph", "_m", "_s", "_confidence")) and (
                value is not None
            ):
                value = float(value)
            elif field.name.endswith("_time") or field.name == "processed_at":
                value = text_time(parse_time(str(record[field.name])))
            elif field.name == "is_ticketed":
                value = bool(value)
            values[field.name] = value
        for required in ("fine_id", "radar_id", "vehicle_id", "speed_method"):
            if not isinstance(values[required], str) or not values[required]:
                raise ValueError(f"{required} missing")
        return cls(**values)

    def record(self) -> dict[str, Any]:
        """As the pipeline's record: lists for repeated fields, timestamps as text."""
        values = asdict(self)
        for name in ("plate_candidates", "plate_candidate_confidences", "supersedes"):
            values[name] = list(values[name])
        return values


FINE_FIELDS = tuple(f.name for f in fields(Fine))
_TIME_FIELDS = ("entry_time", "exit_time", "processed_at")


def _fine(row: Mapping[str, Any]) -> Fine:
    values = {name: row[name] for name in FINE_FIELDS}
    for name in _TIME_FIELDS:
        values[name] = text_time(values[name])
    for name in ("plate_candidates", "plate_candidate_confidences", "supersedes"):
        values[name] = tuple(values[name] or ())
    return Fine(**values)


def _fine_params(fine: Fine) -> dict[str, Any]:
    values = fine.record()
    for name in _TIME_FIELDS:
        values[name] = parse_time(values[name])
    return values


@dataclass(frozen=True, slots=True)
class Review:
    """One decision (the `decisions` table; BigQuery's fine_reviews row)."""

    review_id: str
    fine_id: str
    revision: int
    decision: str
    license_plate: str | None
    reader_plate: str | None
    reason: str | None
    note: str | None
    reviewer: str
    opened_at: str
    decided_at: str

    def record(self) -> dict[str, Any]:
        return asdict(self)


REVIEW_FIELDS = tuple(f.name for f in fields(Review))


def _review(row: Mapping[str, Any]) -> Review:
    values = {name: row[name] for name in REVIEW_FIELDS}
    values["opened_at"] = text_time(values["opened_at"])
    values["decided_at"] = text_time(values["decided_at"])
    return Review(**values)


@dataclass(frozen=True, slots=True)
class Claim:
    """Who holds a fine until when (a lease, renewed by the holder)."""

    claim_id: str
    fine_id: str
    revision: int
    reviewer: str
    claimed_at: str
    expires_at: str
    served_at: str | None = None  # when the fine's page was last served to the holder


def _claim(row: Mapping[str, Any]) -> Claim:
    served = row.get("served_at")
    return Claim(
        row["claim_id"],
        row["fine_id"],
        row["revision"],
        row["reviewer"],
        text_time(row["claimed_at"]),
        text_time(row["expires_at"]),
        text_time(served) if served is not None else None,
    )


@dataclass(frozen=True, slots=True)
class QueueFilter:
    """What an officer chose to work on; None is "any"."""

    radar_id: str | None = None
    day: date | None = None  # the exit time's UTC day
    min_confidence: float | None = None  # the reader's confidence, 0..1
    max_confidence: float | None = None  # an unread plate (no confidence) counts as 0

    def sql(self, alias: str) -> tuple[str, dict[str, Any]]:
        """ " AND ..." conditions on a fine_heads or queue row, and their parameters."""
        conditions, params = [], {}
        if self.radar_id is not None:
            conditions.append(f"{alias}.radar_id = :radar_id")
            params["radar_id"] = self.radar_id
        if self.day is not None:
            conditions.append(f"({alias}.exit_time AT TIME ZONE 'UTC')::date = :day")
            params["day"] = self.day
        if self.min_confidence is not None:
            conditions.append(f"COALESCE({alias}.plate_confidence, 0) >= :min_confidence")
            params["min_confidence"] = self.min_confidence
        if self.max_confidence is not None:
            conditions.append(f"COALESCE({alias}.plate_confidence, 0) <= :max_confidence")
            params["max_confidence"] = self.max_confidence
        return "".join(f" AND {c}" for c in conditions), params


@dataclass(frozen=True, slots=True)
class QueueEntry:
    fine: Fine  # the fine's latest revision
    state: str  # NEW, CHANGED or WITHDRAWN
    last_review: Review | None  # the latest decision on an earlier revision, if any
    holder: Claim | None  # who holds it now, if anyone


@dataclass(frozen=True, slots=True)
class FineRecord:
    """Everything the desk knows about one fine, read at one moment."""

    fine: Fine  # latest revision
    revisions: list[Fine]  # oldest first
    reviews: list[Review]  # oldest first
    state: str | None  # queue state; None when nothing is left to decide
    holder: Claim | None  # the unexpired claim, if any
    undone: tuple[Review, ...] = ()  # decisions undone inside their window, oldest first

    def attempt(self, revision: int) -> int:
        """How many decisions on `revision` were undone: the next one's attempt number."""
        return sum(1 for r in self.undone if r.revision == revision)


class UndoRefused(RuntimeError):
    """An undo that cannot be: not the officer's decision, undone already, too late."""


@dataclass(frozen=True, slots=True)
class LastDecision:
    """An officer's latest decision, as the banner shows it."""

    review: Review
    undone: bool
    undoable: bool  # its outbox rows are still held: an undo would issue nothing
    undo_until: str | None  # when its window closes


@dataclass(frozen=True, slots=True)
class OutboxItem:
    id: int
    kind: str  # NOTICE, RECALL or REVIEW
    key: str  # notice_id, recall_id or review_id
    payload: dict[str, Any]
    attributes: dict[str, str]
    attempts: int


@dataclass(frozen=True, slots=True)
class Ingested:
    inserted: bool  # False: this (fine_id, revision) was already there
    recalls: list[str]  # ids of the notices recalled by this revision


_COLUMNS = ", ".join(FINE_FIELDS)
_VALUES = ", ".join(f":{name}" for name in FINE_FIELDS)
_HEAD_UPSERT = sa.text("""
    INSERT INTO fine_heads AS h
        (fine_id, revision, exit_time, radar_id, plate_confidence, live, superseded_by)
    VALUES (:fine_id, :revision, :exit_time, :radar_id, :plate_confidence, :live,
            (SELECT f.fine_id FROM fines f
             WHERE f.supersedes @> ARRAY[CAST(:fine_id AS text)] AND f.fine_id <> :fine_id
             LIMIT 1))
    ON CONFLICT (fine_id) DO UPDATE SET
        revision = excluded.revision, exit_time = excluded.exit_time,
        radar_id = excluded.radar_id, plate_confidence = excluded.plate_confidence,
        live = excluded.live
    WHERE h.revision < excluded.revision
""")
# Notices of these fines issued on an older revision than the latest (or of a fine merged
# into another) and not recalled yet. The revision with its reason is the latest's.
_TO_RECALL = sa.text("""
    SELECT n.notice_id, n.fine_id, n.revision, h.revision AS new_revision, h.superseded_by,
           f.is_ticketed, f.withdrawn_reason
    FROM notices n
    JOIN fine_heads h ON h.fine_id = n.fine_id
    JOIN fines f ON f.fine_id = h.fine_id AND f.revision = h.revision
    LEFT JOIN recalls r ON r.notice_id = n.notice_id
    WHERE n.fine_id = ANY(:fine_ids) AND r.notice_id IS NULL
      AND NOT EXISTS (SELECT 1 FROM undos u WHERE u.review_id = n.review_id)
      AND (n.revision < h.revision OR h.superseded_by IS NOT NULL)
    ORDER BY n.fine_id, n.revision
""")
_INSERT_OUTBOX = sa.text("""
    INSERT INTO outbox (kind, key, payload, attributes, publish_after)
    VALUES (:kind, :key, :payload, :attributes, COALESCE(:publish_after, now()))
    ON CONFLICT (kind, key) DO NOTHING
""")
# A recall goes out no sooner than the notice it recalls (held for its undo window).
_NOTICE_DUE = sa.text("""
    SELECT GREATEST(now(), max(publish_after)) AS due FROM outbox
    WHERE kind = 'notice' AND key = :notice_id
""")


def _recall_reason(row: Mapping[str, Any]) -> str:
    if row["superseded_by"] and row["new_revision"] == row["revision"]:
        return f"merged into fine {row['superseded_by']}"
    if row["withdrawn_reason"]:
        return f"withdrawn: {row['withdrawn_reason']}"
    if not row["is_ticketed"]:
        return "no longer over the limit"
    return "revised"


def _add_outbox(
    connection: sa.Connection,
    kind: str,
    key: str,
    payload: Mapping[str, Any],
    attributes: Mapping[str, str],
    publish_after: datetime | None = None,
) -> None:
    connection.execute(
        _INSERT_OUTBOX,
        {
            "kind": kind,
            "key": key,
            "payload": json.dumps(dict(payload), sort_keys=True, ensure_ascii=False),
            "attributes": json.dumps(dict(attributes), sort_keys=True),
            "publish_after": publish_after,
        },
    )


class DeskStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # -- ingest ------------------------------------------------------------------------
    def ingest(self, fine: Fine) -> Ingested:
        """Store one revision (idempotent on (fine_id, revision), in any order) and, in the
        same transaction, recall the notices it makes wrong (exactly once per notice:
        recalls_one_per_notice)."""
        params = _fine_params(fine)
        with self.engine.begin() as connection:
            inserted = connection.execute(
                sa.text(
                    f"INSERT INTO fines ({_COLUMNS}) VALUES ({_VALUES}) "
                    "ON CONFLICT (fine_id, revision) DO NOTHING RETURNING fine_id"
                ),
                params,
            ).first()
            if inserted is None:
                return Ingested(False, [])
            connection.execute(_HEAD_UPSERT, {**params, "live": fine.live})
            if fine.supersedes:
                connection.execute(
                    sa.text(
                        "UPDATE fine_heads SET superseded_by = :fine_id "
                        "WHERE fine_id = ANY(:ids) AND superseded_by IS NULL"
                    ),
                    {"fine_id": fine.fine_id, "ids": list(fine.supersedes)},
                )
            recalled = self._recall(connection, [fine.fine_id, *fine.supersedes])
        return Ingested(True, recalled)

    def _recall(self, connection: sa.Connection, fine_ids: Sequence[str]) -> list[str]:
        recalled = []
        for row in connection.execute(_TO_RECALL, {"fine_ids": list(fine_ids)}).mappings():
            rid = recall_id(row["notice_id"])
            record = {
                "kind": RECALL,
                "recall_id": rid,
                "notice_id": row["notice_id"],
                "fine_id": row["fine_id"],
                "revision": row["revision"],
                "new_revision": row["new_revision"],
                "reason": _recall_reason(row),
            }
            added = connection.execute(
                sa.text(
                    "INSERT INTO recalls (recall_id, notice_id, fine_id, new_revision, "
                    "reason, record) VALUES (:rid, :nid, :fid, :rev, :reason, :record) "
                    "ON CONFLICT (notice_id) DO NOTHING RETURNING recall_id"
                ),
                {
                    "rid": rid,
                    "nid": row["notice_id"],
                    "fid": row["fine_id"],
                    "rev": row["new_revision"],
                    "reason": record["reason"],
                    "record": json.dumps(record, sort_keys=True),
                },
            ).first()
            if added is not None:
                attributes = {"kind": RECALL, "recall_id": rid, "notice_id": row["notice_id"]}
                due = connection.execute(_NOTICE_DUE, {"notice_id": row["notice_id"]}).scalar()
                _add_outbox(connection, RECALL, rid, record, attributes, due)
                recalled.append(row["notice_id"])
        return recalled

    # -- reads -------------------------------------------------------------------------
    def queue(self, filters: QueueFilter, limit: int, now: str) -> list[QueueEntry]:
        """Fines awaiting a decision, oldest exit time first (then fine_id)."""
        where, params = filters.sql("q")
        rows = self._all(
            f"""
            SELECT q.*, c.claim_id AS c_claim_id, c.revision AS c_revision,
                   c.reviewer AS c_reviewer, c.claimed_at AS c_claimed_at,
                   c.expires_at AS c_expires_at,
                   {", ".join(f"d.{n} AS d_{n}" for n in REVIEW_FIELDS)}
            FROM queue q
            LEFT JOIN claims c ON c.fine_id = q.fine_id AND c.expires_at > :now
            LEFT JOIN decisions d ON d.review_id = q.last_review_id
            WHERE TRUE{where}
            ORDER BY q.exit_time, q.fine_id
            LIMIT :row_limit
            """,
            {**params, "row_limit": limit, "now": parse_time(now)},
        )
        entries = []
        for row in rows:
            holder = None
            if row["c_claim_id"] is not None:
                holder = Claim(
                    row["c_claim_id"],
                    row["fine_id"],
                    row["c_revision"],
                    row["c_reviewer"],
                    text_time(row["c_claimed_at"]),
                    text_time(row["c_expires_at"]),
                )
            review = None
            if row["d_review_id"] is not None:
                review = _review({n: row[f"d_{n}"] for n in REVIEW_FIELDS})
            entries.append(QueueEntry(_fine(row), row["state"], review, holder))
        return entries

    def fine(self, fine_id: str, now: str) -> FineRecord | None:
        with self.engine.connect() as connection:
            return self._record(connection, fine_id, now)

    def _record(self, connection: sa.Connection, fine_id: str, now: str) -> FineRecord | None:
        head = connection.execute(
            sa.text("SELECT revision, state FROM fine_heads WHERE fine_id = :id"),
            {"id": fine_id},
        ).first()
        if head is None:
            return None
        revisions = [
            _fine(row)
            for row in connection.execute(
                sa.text("SELECT * FROM fines WHERE fine_id = :id ORDER BY revision"),
                {"id": fine_id},
            ).mappings()
        ]
        reviews, undone = [], []
        for row in connection.execute(
            sa.text(
                "SELECT d.*, u.review_id IS NOT NULL AS undone FROM decisions d "
                "LEFT JOIN undos u ON u.review_id = d.review_id "
                "WHERE d.fine_id = :id ORDER BY d.decided_at, d.review_id"
            ),
            {"id": fine_id},
        ).mappings():
            (undone if row["undone"] else reviews).append(_review(row))
        holder = (
            connection.execute(
                sa.text("SELECT * FROM claims WHERE fine_id = :id AND expires_at > :now"),
                {"id": fine_id, "now": parse_time(now)},
            )
            .mappings()
            .first()
        )
        latest = next(f for f in revisions if f.revision == head.revision)
        return FineRecord(
            latest, revisions, reviews, head.state, _claim(holder) if holder else None,
            tuple(undone),
        )  # fmt: skip

    def review(self, review_id: str) -> Review | None:
        rows = self._all("SELECT * FROM decisions WHERE review_id = :id", {"id": review_id})
        return _review(rows[0]) if rows else None

    def notice(self, notice_id: str) -> dict[str, Any] | None:
        rows = self._all("SELECT record FROM notices WHERE notice_id = :id", {"id": notice_id})
        return _json(rows[0]["record"]) if rows else None

    def _all(self, sql: str, params: Mapping[str, Any]) -> list[Mapping[str, Any]]:
        with self.engine.connect() as connection:
            return list(connection.execute(sa.text(sql), dict(params)).mappings())

    # -- sessions and logins (docs/desk.md, Sessions) ---------------------------------
    def start_session(self, session_sha256: str, reviewer: str, csrf: str, now: str) -> None:
        moment = parse_time(now)
        with self.engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO sessions (session_sha256, reviewer, csrf, created_at, "
                    "last_seen) VALUES (:sid, :reviewer, :csrf, :now, :now)"
                ),
                {"sid": session_sha256, "reviewer": reviewer, "csrf": csrf, "now": moment},
            )

    def live_session(
        self, session_sha256: str, now: str, max_age_s: float
    ) -> tuple[str, str] | None:
        """(reviewer, csrf) of a session neither revoked nor older than `max_age_s`; its
        last_seen is kept to the minute (one write a minute, not one a request)."""
        moment = parse_time(now)
        with self.engine.begin() as connection:
            row = connection.execute(
                sa.text(
                    "SELECT reviewer, csrf, last_seen FROM sessions WHERE session_sha256 = :sid "
                    "AND revoked_at IS NULL AND created_at > :oldest AND created_at <= :now"
                ),
                {"sid": session_sha256, "now": moment,
                 "oldest": moment - timedelta(seconds=max_age_s)},
            ).first()  # fmt: skip
            if row is None:
                return None
            if moment - row.last_seen > timedelta(minutes=1):
                connection.execute(
                    sa.text("UPDATE sessions SET last_seen = :now WHERE session_sha256 = :sid"),
                    {"sid": session_sha256, "now": moment},
                )
        return row.reviewer, row.csrf

    def revoke_session(self, session_sha256: str, now: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                sa.text(
                    "UPDATE sessions SET revoked_at = :now "
                    "WHERE session_sha256 = :sid AND revoked_at IS NULL"
                ),
                {"sid": session_sha256, "now": parse_time(now)},
            )

    def add_login_token(self, token_sha256: str, now: str, lifetime_s: float) -> None:
        moment = parse_time(now)
        with self.engine.begin() as connection:
            connection.execute(
                sa.text(
                    "INSERT INTO login_tokens (token_sha256, created_at, expires_at) "
                    "VALUES (:t, :now, :expires) ON CONFLICT DO NOTHING"
                ),
                {"t": token_sha256, "now": moment,
                 "expires": moment + timedelta(seconds=lifetime_s)},
            )  # fmt: skip

    def login_token_known(self, token_sha256: str, now: str) -> bool:
        rows = self._all(
            "SELECT 1 AS one FROM login_tokens WHERE token_sha256 = :t AND expires_at > :now",
            {"t": token_sha256, "now": parse_time(now)},
        )
        return bool(rows)

    def use_login_token(self, token_sha256: str, reviewer: str, now: str) -> bool:
        """Record the token's one exchange; False when it was exchanged before (by any
        desk sharing this database: login_token_uses' primary key decides)."""
        with self.engine.begin() as connection:
            row = connection.execute(
                sa.text(
                    "INSERT INTO login_token_uses (token_sha256, reviewer, used_at) "
                    "VALUES (:t, :reviewer, :now) ON CONFLICT DO NOTHING RETURNING 1"
                ),
                {"t": token_sha256, "reviewer": reviewer, "now": parse_time(now)},
            ).first()
        return row is not None

    def login_failures(self, client: str, now: str, window_s: float) -> tuple[int, int]:
        """Failed logins in the last `window_s`: (from this client, from everyone)."""
        rows = self._all(
            "SELECT count(*) FILTER (WHERE client = :client) AS mine, count(*) AS everyone "
            "FROM login_failures WHERE failed_at > :since",
            {"client": client, "since": parse_time(now) - timedelta(seconds=window_s)},
        )
        return int(rows[0]["mine"]), int(rows[0]["everyone"])

    def add_login_failure(self, client: str, now: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                sa.text("INSERT INTO login_failures (client, failed_at) VALUES (:c, :now)"),
                {"c": client[:64], "now": parse_time(now)},
            )

    # -- claims ------------------------------------------------------------------------
    def next_claim(
        self, reviewer: str, filters: QueueFilter, now: str, lease_s: float
    ) -> Claim | None:
        """Claim the oldest awaiting fine that nobody else holds, in one statement: the
        queue row is locked with SKIP LOCKED (two officers never get the same one), the
        lease taken or, for the reviewer's own, renewed. None when none is free."""
        where, params = filters.sql("h")
        sql = f"""
            WITH candidate AS (
                SELECT h.fine_id, h.revision FROM fine_heads h
                LEFT JOIN claims c ON c.fine_id = h.fine_id
                WHERE h.state IS NOT NULL
                  AND (c.fine_id IS NULL OR c.expires_at <= :now OR c.reviewer = :reviewer)
                  {where}
                ORDER BY h.exit_time, h.fine_id
                LIMIT 1
                FOR UPDATE OF h SKIP LOCKED
            )
            {_CLAIM_UPSERT.format(source="SELECT fine_id, revision FROM candidate")}
        """
        # A lease committed by another officer between this statement's snapshot and its
        # lock makes the upsert's WHERE fail: a new statement sees it and skips that fine.
        for _ in range(CLAIM_ATTEMPTS):
            taken = self._take(sql, reviewer, now, lease_s, params)
            if taken is not None:
                return taken
        return None

    def likely_next(self, reviewer: str, filters: QueueFilter, now: str, after: str) -> Fine | None:
        """The fine "next" would most likely give this officer after `after` (read only:
        nothing claimed), for warming its photo while the officer looks at `after`."""
        where, params = filters.sql("h")
        rows = self._all(
            f"""
            SELECT f.* FROM fine_heads h
            JOIN fines f ON f.fine_id = h.fine_id AND f.revision = h.revision
            LEFT JOIN claims c ON c.fine_id = h.fine_id
            WHERE h.state IS NOT NULL AND h.fine_id <> :after
              AND (c.fine_id IS NULL OR c.expires_at <= :now OR c.reviewer = :reviewer)
              {where}
            ORDER BY h.exit_time, h.fine_id LIMIT 1
            """,
            {**params, "after": after, "now": parse_time(now), "reviewer": reviewer},
        )
        return _fine(rows[0]) if rows else None

    def claim(self, fine_id: str, reviewer: str, now: str, lease_s: float) -> Claim | None:
        """Claim (or renew) one fine awaiting a decision; then who holds it, if anyone."""
        source = (
            "SELECT fine_id, revision FROM fine_heads "
            "WHERE fine_id = :fine_id AND state IS NOT NULL"
        )
        taken = self._take(
            _CLAIM_UPSERT.format(source=source), reviewer, now, lease_s, {"fine_id": fine_id}
        )
        if taken is not None:
            return taken
        record = self.fine(fine_id, now)
        return record.holder if record else None

    def renew(self, fine_id: str, claim_id: str, reviewer: str, now: str, lease_s: float) -> bool:
        """Extend the officer's claim by `lease_s` from now; False if it is gone. A claim
        released or run out that nobody took since (the same claim_id: a takeover writes a
        new one) and whose fine still awaits a decision is taken up again: a reloaded page
        released it on leaving and renews it on arriving."""
        moment = parse_time(now)
        with self.engine.begin() as connection:
            row = connection.execute(
                sa.text(
                    "UPDATE claims c SET expires_at = :expires WHERE c.fine_id = :fine_id "
                    "AND c.claim_id = :claim_id AND c.reviewer = :reviewer AND EXISTS "
                    "(SELECT 1 FROM fine_heads h WHERE h.fine_id = c.fine_id "
                    "AND h.state IS NOT NULL AND h.revision = c.revision) RETURNING 1"
                ),
                {"fine_id": fine_id, "claim_id": claim_id, "reviewer": reviewer, "now": moment,
                 "expires": moment + timedelta(seconds=lease_s)},
            ).first()  # fmt: skip
        return row is not None

    def release(
        self, fine_id: str, claim_id: str, reviewer: str, now: str, served_at: str | None = None
    ) -> None:
        """End the officer's claim now (the page was left): the fine is free at once,
        unless its page was served again after `served_at` (the leaving page's)."""
        page = parse_time(served_at) if served_at else None
        with self.engine.begin() as connection:
            connection.execute(
                sa.text(
                    "UPDATE claims SET expires_at = :now WHERE fine_id = :fine_id "
                    "AND claim_id = :claim_id AND reviewer = :reviewer AND expires_at > :now "
                    "AND (CAST(:page AS timestamptz) IS NULL OR served_at IS NULL "
                    "OR served_at <= CAST(:page AS timestamptz))"
                ),
                {"fine_id": fine_id, "claim_id": claim_id, "reviewer": reviewer,
                 "now": parse_time(now), "page": page},
            )  # fmt: skip

    def served(self, fine_id: str, reviewer: str, now: str) -> None:
        """The fine's page was just served to its holder: the minimum look starts again."""
        with self.engine.begin() as connection:
            connection.execute(
                sa.text(
                    "UPDATE claims SET served_at = :now WHERE fine_id = :fine_id "
                    "AND reviewer = :reviewer AND expires_at > :now"
                ),
                {"fine_id": fine_id, "reviewer": reviewer, "now": parse_time(now)},
            )

    def _take(
        self, sql: str, reviewer: str, now: str, lease_s: float, params: Mapping[str, Any]
    ) -> Claim | None:
        moment = parse_time(now)
        values = {
            **params,
            "reviewer": reviewer,
            "now": moment,
            "expires": moment + timedelta(seconds=lease_s),
            "claim_id": uuid.uuid4().hex,
        }
        with self.engine.begin() as connection:
            row = connection.execute(sa.text(sql), values).mappings().first()
        return _claim(row) if row else None

    # -- decisions ---------------------------------------------------------------------
    @contextmanager
    def deciding(self, fine_id: str, now: str) -> Iterator["Deciding"]:
        """One transaction on one fine, its queue row locked: read, check, then record."""
        with self.engine.begin() as connection:
            locked = connection.execute(
                sa.text("SELECT 1 FROM fine_heads WHERE fine_id = :id FOR UPDATE"),
                {"id": fine_id},
            ).first()
            record = self._record(connection, fine_id, now) if locked else None
            yield Deciding(connection, record)

    # -- undo (docs/desk.md, The undo window) -------------------------------------------
    def undo(self, review_id: str, reviewer: str, now: str, lease_s: float) -> str:
        """Undo a decision whose outbox rows are still held: in one transaction, with the
        fine's row and the decision's outbox rows locked (the publisher locks the same rows,
        so the database decides an undo racing it), record the undo, cancel the rows, put
        the fine back where it stood and claim it for the officer again. Returns the fine's
        id; UndoRefused says why not."""
        moment = parse_time(now)
        with self.engine.begin() as connection:
            review = connection.execute(
                sa.text("SELECT * FROM decisions WHERE review_id = :rid"), {"rid": review_id}
            ).mappings().first()  # fmt: skip
            if review is None or review["reviewer"] != reviewer:
                raise UndoRefused("no such decision of yours")
            fine_id = review["fine_id"]
            head = connection.execute(
                sa.text("SELECT revision, last_review_id FROM fine_heads WHERE fine_id = :id "
                        "FOR UPDATE"), {"id": fine_id},
            ).first()  # fmt: skip
            if connection.execute(
                sa.text("SELECT 1 FROM undos WHERE review_id = :rid"), {"rid": review_id}
            ).first():
                raise UndoRefused("this decision was undone already")
            rows = connection.execute(
                sa.text("""
                    SELECT id, kind, sent_at, publish_after, now() AS db_now FROM outbox
                    WHERE (kind = 'review' AND key = :rid)
                       OR (kind = 'notice' AND key IN
                           (SELECT notice_id FROM notices WHERE review_id = :rid))
                    ORDER BY id FOR UPDATE
                """),
                {"rid": review_id},
            ).mappings().all()  # fmt: skip
            sent = [r for r in rows if r["sent_at"] is not None]
            what = "its notice" if any(r["kind"] == NOTICE for r in rows) else "it"
            if sent:
                raise UndoRefused(
                    f"too late: {what} went out at {text_time(sent[0]['sent_at'])}, after "
                    "the undo window"
                )
            if not rows or any(r["db_now"] >= r["publish_after"] for r in rows):
                closed = text_time(rows[0]["publish_after"]) if rows else "the decision"
                raise UndoRefused(f"too late: the undo window closed at {closed}")
            if (
                head is None
                or head.revision != review["revision"]
                or (head.last_review_id != review_id)
            ):
                raise UndoRefused("the fine changed since your decision: decide it again")
            connection.execute(
                sa.text("INSERT INTO undos (review_id, fine_id, revision, reviewer, undone_at) "
                        "VALUES (:rid, :fid, :rev, :reviewer, :now)"),
                {"rid": review_id, "fid": fine_id, "rev": review["revision"],
                 "reviewer": reviewer, "now": moment},
            )  # fmt: skip
            connection.execute(
                sa.text("UPDATE outbox SET cancelled_at = now() WHERE id = ANY(:ids)"),
                {"ids": [r["id"] for r in rows]},
            )
            earlier = connection.execute(
                sa.text("""
                    SELECT d.review_id, d.revision FROM decisions d
                    WHERE d.fine_id = :id AND d.review_id <> :rid
                      AND NOT EXISTS (SELECT 1 FROM undos u WHERE u.review_id = d.review_id)
                    ORDER BY d.decided_at DESC, d.revision DESC LIMIT 1
                """),
                {"id": fine_id, "rid": review_id},
            ).first()  # fmt: skip
            connection.execute(
                sa.text("UPDATE fine_heads SET decided_revision = :rev, last_review_id = :last "
                        "WHERE fine_id = :id"),
                {"id": fine_id, "rev": earlier.revision if earlier else None,
                 "last": earlier.review_id if earlier else None},
            )  # fmt: skip
            # A new claim (a new claim_id): deciding again is a new decision, not a retry.
            connection.execute(
                sa.text("""
                    INSERT INTO claims AS c (fine_id, claim_id, revision, reviewer, claimed_at,
                                             expires_at, served_at)
                    VALUES (:id, :claim_id, :rev, :reviewer, :now, :expires, :now)
                    ON CONFLICT (fine_id) DO UPDATE SET claim_id = excluded.claim_id,
                        revision = excluded.revision, reviewer = excluded.reviewer,
                        claimed_at = excluded.claimed_at, expires_at = excluded.expires_at,
                        served_at = excluded.served_at
                """),
                {"id": fine_id, "claim_id": uuid.uuid4().hex, "rev": review["revision"],
                 "reviewer": reviewer, "now": moment,
                 "expires": moment + timedelta(seconds=lease_s)},
            )  # fmt: skip
        return fine_id

    def last_decision(self, reviewer: str, since: str) -> "LastDecision | None":
        """The officer's latest decision since `since`, and whether it can still be undone."""
        rows = self._all(
            """
            SELECT d.*, u.review_id IS NOT NULL AS undone, o.publish_after AS undo_until,
                   (u.review_id IS NULL AND o.sent_at IS NULL AND o.cancelled_at IS NULL
                    AND o.publish_after > now()) AS undoable
            FROM decisions d
            LEFT JOIN undos u ON u.review_id = d.review_id
            LEFT JOIN outbox o ON o.kind = 'review' AND o.key = d.review_id
            WHERE d.reviewer = :reviewer AND d.decided_at > :since
            ORDER BY d.decided_at DESC, d.review_id DESC LIMIT 1
            """,
            {"reviewer": reviewer, "since": parse_time(since)},
        )
        if not rows:
            return None
        row = rows[0]
        until = row["undo_until"]
        return LastDecision(
            _review(row), bool(row["undone"]), bool(row["undoable"]),
            text_time(until) if until is not None else None,
        )  # fmt: skip

    # -- outbox ------------------------------------------------------------------------
    @contextmanager
    def outbox_batch(self, limit: int) -> Iterator[tuple[list[OutboxItem], "OutboxMarks"]]:
        """Due outbox rows, locked (SKIP LOCKED: two publishers never send the same row at
        once) until the block ends; the marks say which were sent."""
        with self.engine.begin() as connection:
            rows = connection.execute(
                sa.text(
                    "SELECT id, kind, key, payload, attributes, attempts FROM outbox "
                    "WHERE sent_at IS NULL AND cancelled_at IS NULL AND publish_after <= now() "
                    "ORDER BY id LIMIT :n FOR UPDATE SKIP LOCKED"
                ),
                {"n": limit},
            ).mappings()
            items = [
                OutboxItem(r["id"], r["kind"], r["key"], _json(r["payload"]),
                           _json(r["attributes"]), r["attempts"])
                for r in rows
            ]  # fmt: skip
            marks = OutboxMarks()
            yield items, marks
            if marks.sent:
                connection.execute(
                    sa.text("UPDATE outbox SET sent_at = now() WHERE id = ANY(:ids)"),
                    {"ids": marks.sent},
                )
            for item_id, error in marks.failed.items():
                # Back off: a failing row waits longer each time, others go ahead.
                connection.execute(
                    sa.text(
                        "UPDATE outbox SET attempts = attempts + 1, last_error = :error, "
                        "publish_after = now() + make_interval(secs => "
                        "LEAST(60, power(2, attempts)::int)) WHERE id = :id"
                    ),
                    {"id": item_id, "error": error[:1000]},
                )

    def outbox_pending(self) -> int:
        rows = self._all(
            "SELECT count(*) AS n FROM outbox WHERE sent_at IS NULL AND cancelled_at IS NULL", {}
        )
        return int(rows[0]["n"])


_CLAIM_UPSERT = """
    INSERT INTO claims AS c
        (fine_id, claim_id, revision, reviewer, claimed_at, expires_at, served_at)
    SELECT fine_id, :claim_id, revision, :reviewer, :now, :expires, :now FROM ({source}) AS s
    ON CONFLICT (fine_id) DO UPDATE SET
        claim_id = CASE WHEN c.reviewer = excluded.reviewer AND c.expires_at > excluded.claimed_at
                        THEN c.claim_id ELSE excluded.claim_id END,
        claimed_at = CASE WHEN c.reviewer = excluded.reviewer
                               AND c.expires_at > excluded.claimed_at
                          THEN c.claimed_at ELSE excluded.claimed_at END,
        revision = excluded.revision,
        reviewer = excluded.reviewer,
        expires_at = excluded.expires_at,
        served_at = excluded.served_at
    WHERE c.expires_at <= excluded.claimed_at OR c.reviewer = excluded.reviewer
    RETURNING c.*
"""


@dataclass
class OutboxMarks:
    sent: list[int]
    failed: dict[int, str]

    def __init__(self) -> None:
        self.sent, self.failed = [], {}


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


class Deciding:
    """A decision in progress: the fine as locked, and what to record (all or nothing)."""

    def __init__(self, connection: sa.Connection, record: FineRecord | None) -> None:
        self._connection = connection
        self.record = record

    def decision_at(self, revision: int) -> Review | None:
        assert self.record is not None
        return next((r for r in self.record.reviews if r.revision == revision), None)

    def add(
        self,
        review: Review,
        notice: Mapping[str, Any] | None,
        attempt: int = 0,
        hold_s: float = 0.0,
    ) -> None:
        """The decision, its notice (if any) and their outbox rows, in this transaction;
        the outbox rows wait `hold_s` after the decision (its undo window)."""
        connection = self._connection
        values = review.record()
        values["opened_at"] = parse_time(review.opened_at)
        values["decided_at"] = parse_time(review.decided_at)
        values["attempt"] = attempt
        due = values["decided_at"] + timedelta(seconds=hold_s)
        connection.execute(
            sa.text(
                f"INSERT INTO decisions ({', '.join(REVIEW_FIELDS)}, attempt) "
                f"VALUES ({', '.join(f':{n}' for n in REVIEW_FIELDS)}, :attempt)"
            ),
            values,
        )
        connection.execute(
            sa.text(
                "UPDATE fine_heads SET decided_revision = :revision, last_review_id = :rid "
                "WHERE fine_id = :fine_id"
            ),
            {"revision": review.revision, "rid": review.review_id, "fine_id": review.fine_id},
        )
        connection.execute(
            sa.text("UPDATE claims SET expires_at = :at WHERE fine_id = :fine_id"),
            {"at": values["decided_at"], "fine_id": review.fine_id},
        )
        _add_outbox(connection, REVIEW, review.review_id, review.record(), {}, due)
        if notice is not None:
            connection.execute(
                sa.text(
                    "INSERT INTO notices (notice_id, fine_id, revision, review_id, record, "
                    "attempt) VALUES (:nid, :fid, :rev, :rid, :record, :attempt)"
                ),
                {
                    "nid": notice["notice_id"],
                    "fid": notice["fine_id"],
                    "rev": notice["revision"],
                    "rid": review.review_id,
                    "record": json.dumps(dict(notice), sort_keys=True, ensure_ascii=False),
                    "attempt": attempt,
                },
            )
            attributes = {"kind": NOTICE, "notice_id": notice["notice_id"]}
            _add_outbox(connection, NOTICE, notice["notice_id"], notice, attributes, due)
