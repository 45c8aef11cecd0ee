"""Sessions the server can revoke, single-use login links, a login throttle, when a fine was
served (the minimum look), and undoing a decision inside its window (docs/desk.md, Store).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCHEMA = """
-- A signed-in officer: the cookie holds the session id (signed); the table holds only its
-- SHA-256, so a copy of the table signs nobody in. Ended by revoked_at or by its age.
CREATE TABLE sessions (
    session_sha256 text PRIMARY KEY,
    reviewer text NOT NULL,
    csrf text NOT NULL,
    created_at timestamptz NOT NULL,
    last_seen timestamptz NOT NULL,
    revoked_at timestamptz
);
CREATE INDEX sessions_reviewer ON sessions (reviewer, created_at);

-- Login links beyond the one the desk prints (python -m desk.login_link): SHA-256 only.
CREATE TABLE login_tokens (
    token_sha256 text PRIMARY KEY,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Each login token exchanged, at most once (append-only): a second exchange, on this desk
-- or another, is refused by the primary key.
CREATE TABLE login_token_uses (
    token_sha256 text PRIMARY KEY,
    reviewer text NOT NULL,
    used_at timestamptz NOT NULL
);

-- Failed logins, counted per client address and overall over the last minute (the
-- throttle holds across desk instances because it is here).
CREATE TABLE login_failures (
    id bigserial PRIMARY KEY,
    client text NOT NULL,
    failed_at timestamptz NOT NULL
);
CREATE INDEX login_failures_at ON login_failures (failed_at, client);

-- When the fine was last served to its holder: a decision sooner than the minimum look
-- after it is refused.
ALTER TABLE claims ADD COLUMN served_at timestamptz;

-- A decision undone inside its window: append-only, at most one per decision. An undone
-- decision's notice is never published (the outbox row is cancelled in the undo's
-- transaction, under the row lock the publisher also takes).
CREATE TABLE undos (
    review_id text PRIMARY KEY REFERENCES decisions,
    fine_id text NOT NULL,
    revision integer NOT NULL,
    reviewer text NOT NULL,
    undone_at timestamptz NOT NULL
);
CREATE INDEX undos_fine ON undos (fine_id, revision);

-- After an undo the revision may be decided again: one decision per (fine, revision,
-- attempt), attempt = how many decisions on that revision were undone before it.
ALTER TABLE decisions ADD COLUMN attempt integer NOT NULL DEFAULT 0 CHECK (attempt >= 0);
ALTER TABLE decisions DROP CONSTRAINT decisions_one_per_revision;
ALTER TABLE decisions ADD CONSTRAINT decisions_one_per_revision
    UNIQUE (fine_id, revision, attempt);
CREATE INDEX decisions_reviewer ON decisions (reviewer, decided_at);
ALTER TABLE notices ADD COLUMN attempt integer NOT NULL DEFAULT 0 CHECK (attempt >= 0);
ALTER TABLE notices DROP CONSTRAINT notices_one_per_revision;
ALTER TABLE notices ADD CONSTRAINT notices_one_per_revision UNIQUE (fine_id, revision, attempt);

-- An outbox row withdrawn before it was sent (its decision undone): never published.
ALTER TABLE outbox ADD COLUMN cancelled_at timestamptz;
ALTER TABLE outbox ADD CONSTRAINT outbox_sent_or_cancelled
    CHECK (sent_at IS NULL OR cancelled_at IS NULL)
"""

GRANTS = """
GRANT SELECT ON sessions, login_tokens, login_token_uses, login_failures, undos TO desk_app;
GRANT INSERT ON sessions, login_tokens, login_token_uses, login_failures, undos TO desk_app;
GRANT UPDATE (last_seen, revoked_at) ON sessions TO desk_app;
GRANT USAGE ON SEQUENCE login_failures_id_seq TO desk_app
"""


def _statements(text: str) -> list[str]:
    """One statement per execute: the driver sends each as a prepared statement."""
    return [part.strip() for part in text.split(";\n") if part.strip()]


def upgrade() -> None:
    for statement in _statements(SCHEMA) + _statements(GRANTS):
        op.execute(statement)
