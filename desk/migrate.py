"""`python -m desk.migrate`: bring the desk's database to the latest schema (Alembic).

    python -m desk.migrate --database_url postgresql+pg8000://desk@127.0.0.1:PORT/desk
    python -m desk.migrate --cloudsql_instance P:R:I --database_user USER [--database_name desk]

The desk runs the same at start (`upgrade`, `--migrations apply`, the default), so a new
version migrates before it serves; concurrent starts are serialised by an advisory lock. On
Google Cloud the schema's owner is a login of its own, which runs this as a Cloud Run job
before the desk is deployed, and the desk only checks (`check`, `--migrations check`): its
own login owns nothing, so it cannot rewrite decisions (docs/desk.md, Deploy on Google
Cloud). Migrations live in desk/migrations/versions/, one file per version, never edited
once released.
"""

import argparse
import logging
import sys
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from desk import db

_log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
LOCK_KEY = 0x6465736B  # "desk": one migration at a time per database
# What applies the migrations where the desk may not (scripts/desk_deploy.sh makes the job).
HOW_TO_MIGRATE = (
    "python -m desk.migrate as the schema's owner; on Google Cloud the deploy's job: "
    "gcloud run jobs execute section-speed-desk-migrate --region REGION --wait"
)


class NotMigrated(RuntimeError):
    """The database is not at the migrations' head and the desk may not migrate it."""


def _config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def head() -> str:
    script = ScriptDirectory.from_config(_config(None))  # type: ignore[arg-type]
    current = script.get_current_head()
    assert current is not None
    return current


def current(engine: sa.Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: sa.Engine, target: str = "head") -> str | None:
    """Apply every migration up to `target`; returns the version now current."""
    with engine.connect() as connection:
        connection.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
        connection.commit()
        try:
            command.upgrade(_config(connection), target)
            connection.commit()
        finally:
            # A failed migration leaves its transaction aborted: end it first, so the unlock
            # runs and the migration's own error is the one raised.
            connection.rollback()
            connection.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
            connection.commit()
    return current(engine)


def check(engine: sa.Engine) -> str:
    """The head, if the database is at it; else NotMigrated naming what was found, what
    is expected and how to apply the migrations (a database ahead of this code, after a
    rollback of the image, is refused too: its schema is not the one this code knows)."""
    found, expected = current(engine), head()
    if found != expected:
        raise NotMigrated(
            f"the desk's database is at revision {found or 'none (never migrated)'}, this "
            f"desk needs revision {expected} (the head of desk/migrations); apply the "
            f"migrations first: {HOW_TO_MIGRATE} (docs/desk.md, Deploy on Google Cloud)"
        )
    return expected


def at_start(database: db.DatabaseConfig, migrations: str) -> str | None:
    """What the desk does before it serves: `apply` the migrations or `check` that they
    were applied (NotMigrated if not); returns the version now current."""
    login = db.engine(database, role=None)
    try:
        return upgrade(login) if migrations == "apply" else check(login)
    finally:
        login.dispose()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m desk.migrate", description=__doc__)
    db.add_arguments(parser)
    args = parser.parse_args(argv)
    config = db.config_from(args)
    problem = config.check()
    if problem:
        parser.error(problem)
    engine = db.engine(config, role=None)
    try:
        version = upgrade(engine)
    finally:
        engine.dispose()
    print(f"desk.migrate: database at version {version}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
