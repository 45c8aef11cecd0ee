"""`python -m desk.migrate`: bring the desk's database to the latest schema (Alembic).

    python -m desk.migrate --database_url postgresql+pg8000://desk@127.0.0.1:PORT/desk
    python -m desk.migrate --cloudsql_instance P:R:I --database_user USER [--database_name desk]

The desk runs the same at start (`upgrade`), so a new version migrates before it serves.
Migrations live in desk/migrations/versions/, one file per version, never edited once
released. Concurrent starts are serialised by an advisory lock.
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
