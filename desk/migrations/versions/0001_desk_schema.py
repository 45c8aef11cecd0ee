"""The desk's schema: fines by revision, the queue, claims, decisions, notices, recalls,
the outbox, and the runtime role that may not rewrite decisions, notices or recalls.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Fine ids are 32 lower-case hex digits; the pattern is the domain's (verification.HEX32),
# copied here as a literal because a migration must not change when code does.
FINE_ID_CHECK = "fine_id ~ '^[0-9a-f]{32}$'"

SCHEMA = f"""
-- One row per revision of a fine, as the pipeline publishes it (docs/reference.md,
-- Outputs). Typed columns; timestamps with time zone.
CREATE TABLE fines (
    fine_id text NOT NULL CHECK ({FINE_ID_CHECK}),
    revision integer NOT NULL CHECK (revision >= 0),
    radar_id text NOT NULL,
    vehicle_id text NOT NULL,
    license_plate text,
    plate_confidence double precision,
    plate_reader text,
    plate_candidates text[] NOT NULL DEFAULT '{{}}',
    plate_candidate_confidences text[] NOT NULL DEFAULT '{{}}',
    plate_box text,
    avg_speed_kmh double precision NOT NULL,
    avg_speed_mph double precision NOT NULL,
    speed_limit_mph double precision NOT NULL,
    tolerance_mph double precision,
    distance_m double precision,
    duration_s double precision,
    entry_time timestamptz NOT NULL,
    exit_time timestamptz NOT NULL,
    entry_location text NOT NULL,
    exit_location text NOT NULL,
    speed_method text NOT NULL,
    spot_readings integer,
    supersedes text[] NOT NULL DEFAULT '{{}}',
    withdrawn_reason text,
    image_url text,
    image_sha256 text,
    evidence_error text,
    is_ticketed boolean NOT NULL,
    processed_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (fine_id, revision)
);
CREATE INDEX fines_supersedes ON fines USING gin (supersedes);

-- One row per fine: its latest revision and where it stands. `state` is THE queue rule
-- (docs/desk.md, An officer's screen), written once, here:
--   new       never decided and live (ticketed, not withdrawn, not merged into another),
--   changed   decided on an older revision and live: decide again,
--   withdrawn decided on an older revision, no longer live: close only,
--   null      nothing to decide.
CREATE TABLE fine_heads (
    fine_id text PRIMARY KEY,
    revision integer NOT NULL,
    exit_time timestamptz NOT NULL,
    radar_id text NOT NULL,
    plate_confidence double precision,
    live boolean NOT NULL,
    superseded_by text,
    decided_revision integer,
    last_review_id text,
    state text GENERATED ALWAYS AS (
        CASE
            WHEN decided_revision IS NULL THEN
                CASE WHEN live AND superseded_by IS NULL THEN 'new' END
            WHEN decided_revision >= revision THEN NULL
            WHEN live AND superseded_by IS NULL THEN 'changed'
            ELSE 'withdrawn'
        END
    ) STORED,
    FOREIGN KEY (fine_id, revision) REFERENCES fines
);
CREATE INDEX fine_heads_queue ON fine_heads (exit_time, fine_id) WHERE state IS NOT NULL;

-- The latest revision of every fine, and the queue: every query reads these two views.
CREATE VIEW latest_fines AS
    SELECT f.*, h.state, h.decided_revision, h.last_review_id, h.superseded_by
    FROM fine_heads h JOIN fines f ON f.fine_id = h.fine_id AND f.revision = h.revision;
CREATE VIEW queue AS SELECT * FROM latest_fines WHERE state IS NOT NULL;

-- Who holds a fine: one lease per fine, taken or renewed in one statement.
CREATE TABLE claims (
    fine_id text PRIMARY KEY REFERENCES fine_heads,
    claim_id text NOT NULL UNIQUE,
    revision integer NOT NULL,
    reviewer text NOT NULL,
    claimed_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Decisions, append-only. One decision per fine revision (so at most one issuing one):
-- the first committed wins, a racing second is refused by this constraint.
CREATE TABLE decisions (
    review_id text PRIMARY KEY,
    fine_id text NOT NULL,
    revision integer NOT NULL,
    decision text NOT NULL
        CHECK (decision IN ('confirmed', 'corrected', 'rejected', 'acknowledged')),
    license_plate text,
    reader_plate text,
    reason text,
    note text,
    reviewer text NOT NULL,
    opened_at timestamptz NOT NULL,
    decided_at timestamptz NOT NULL,
    FOREIGN KEY (fine_id, revision) REFERENCES fines,
    CONSTRAINT decisions_one_per_revision UNIQUE (fine_id, revision),
    CHECK ((decision IN ('confirmed', 'corrected')) = (license_plate IS NOT NULL))
);

-- Notices, append-only: exactly one per issued fine revision, by these constraints.
CREATE TABLE notices (
    notice_id text PRIMARY KEY,
    fine_id text NOT NULL,
    revision integer NOT NULL,
    review_id text NOT NULL UNIQUE REFERENCES decisions,
    record json NOT NULL,
    issued_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notices_one_per_revision UNIQUE (fine_id, revision)
);

-- Recalls, append-only: at most one per notice.
CREATE TABLE recalls (
    recall_id text PRIMARY KEY,
    notice_id text NOT NULL REFERENCES notices,
    fine_id text NOT NULL,
    new_revision integer NOT NULL,
    reason text NOT NULL,
    record json NOT NULL,
    recalled_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT recalls_one_per_notice UNIQUE (notice_id)
);

-- What the publisher still has to send: written in the same transaction as the decision,
-- notice or recall it carries; `sent_at` set once the topic (and BigQuery) accepted it.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('notice', 'recall', 'review')),
    key text NOT NULL,
    payload json NOT NULL,
    attributes json NOT NULL DEFAULT '{{}}',
    created_at timestamptz NOT NULL DEFAULT now(),
    publish_after timestamptz NOT NULL DEFAULT now(),
    sent_at timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    CONSTRAINT outbox_one_per_item UNIQUE (kind, key)
);
CREATE INDEX outbox_pending ON outbox (publish_after, id) WHERE sent_at IS NULL;
"""

# The role the desk runs as (desk.db: SET ROLE on every connection). It may read
# everything and append decisions, notices and recalls, never change or remove them.
CREATE_ROLE = """
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'desk_app') THEN
        CREATE ROLE desk_app NOLOGIN;
    END IF;
END
$$
"""
GRANTS = """
GRANT desk_app TO CURRENT_USER;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO desk_app;
GRANT INSERT ON fines, fine_heads, claims, decisions, notices, recalls, outbox TO desk_app;
GRANT UPDATE ON fine_heads, claims, outbox TO desk_app;
GRANT USAGE ON SEQUENCE outbox_id_seq TO desk_app;
"""


def _statements(text: str) -> list[str]:
    """One statement per execute: the driver sends each as a prepared statement."""
    return [part.strip() for part in text.split(";\n") if part.strip()]


def upgrade() -> None:
    for statement in _statements(SCHEMA):
        op.execute(statement)
    op.execute(CREATE_ROLE)
    for statement in _statements(GRANTS):
        op.execute(statement)
