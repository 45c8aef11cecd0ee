"""The limit in force on each fine revision: its source, reference, the vehicle's class and
the rules' version (docs/enforcement.md, The limit in force), shown at the desk and carried
by the notice.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

COLUMNS = ("limit_source", "limit_reference", "vehicle_class", "rules_version")

# A view's `f.*` is expanded when the view is made: both views are made again so that they
# carry the new columns. Nothing else changes; the runtime role keeps SELECT on them.
VIEWS = """
DROP VIEW queue;
DROP VIEW latest_fines;
CREATE VIEW latest_fines AS
    SELECT f.*, h.state, h.decided_revision, h.last_review_id, h.superseded_by
    FROM fine_heads h JOIN fines f ON f.fine_id = h.fine_id AND f.revision = h.revision;
CREATE VIEW queue AS SELECT * FROM latest_fines WHERE state IS NOT NULL;
GRANT SELECT ON latest_fines, queue TO desk_app
"""


def upgrade() -> None:
    for column in COLUMNS:
        op.execute(f"ALTER TABLE fines ADD COLUMN {column} text")
    for statement in VIEWS.split(";\n"):
        op.execute(statement.strip())
