"""The desk's database connection: PostgreSQL locally (a URL) or Cloud SQL (IAM login).

`DatabaseConfig` is what the command line gives: `--database_url` (a SQLAlchemy URL,
`postgresql+pg8000://desk@127.0.0.1:PORT/desk`) or, on Google Cloud, `--cloudsql_instance
PROJECT:REGION:INSTANCE --database_user IAM_USER --database_name desk`, reached through the
Cloud SQL Python Connector with IAM database authentication: no password anywhere.

`engine(config)` is the desk's runtime engine: every connection runs `SET ROLE desk_app`,
the role the migrations create with no UPDATE or DELETE on decisions, notices and recalls
(docs/desk.md, Store). `engine(config, role=None)` is the login role's, for migrations.
"""

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

APP_ROLE = "desk_app"
POOL_SIZE = 8  # connections per desk process: requests, ingest, the publisher


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = ""
    cloudsql_instance: str = ""
    user: str = ""
    name: str = "desk"

    def check(self) -> str | None:
        """What is wrong with the combination given, or None."""
        if bool(self.url) == bool(self.cloudsql_instance):
            return "give --database_url, or --cloudsql_instance with --database_user"
        if self.cloudsql_instance and not self.user:
            return "--cloudsql_instance needs --database_user (the IAM database user)"
        return None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database_url",
        default="",
        help="SQLAlchemy URL of the desk's PostgreSQL, e.g. "
        "postgresql+pg8000://desk@127.0.0.1:5432/desk (local).",
    )
    parser.add_argument(
        "--cloudsql_instance",
        default="",
        help="Cloud SQL instance PROJECT:REGION:INSTANCE (Google Cloud; IAM login).",
    )
    parser.add_argument(
        "--database_user", default="", help="With --cloudsql_instance: the IAM database user."
    )
    parser.add_argument("--database_name", default="desk", help="The database (desk).")


def config_from(args: argparse.Namespace) -> DatabaseConfig:
    return DatabaseConfig(
        args.database_url, args.cloudsql_instance, args.database_user, args.database_name
    )


def _cloudsql_creator(config: DatabaseConfig) -> Callable[[], Any]:
    from google.cloud.sql.connector import Connector, IPTypes

    connector = Connector(refresh_strategy="lazy")

    def connect() -> Any:
        return connector.connect(
            config.cloudsql_instance,
            "pg8000",
            user=config.user,
            db=config.name,
            enable_iam_auth=True,
            ip_type=IPTypes.PUBLIC,
        )

    return connect


def engine(config: DatabaseConfig, role: str | None = APP_ROLE) -> sa.Engine:
    options: dict[str, Any] = {
        "pool_size": POOL_SIZE,
        "max_overflow": POOL_SIZE,
        "pool_pre_ping": True,  # a connection the server dropped is replaced, not used
        "pool_recycle": 1800,
    }
    if config.cloudsql_instance:
        made = sa.create_engine(
            "postgresql+pg8000://", creator=_cloudsql_creator(config), **options
        )
    else:
        made = sa.create_engine(config.url, **options)

    @event.listens_for(made, "connect")
    def _session(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SET TIME ZONE 'UTC'")
        if role is not None:
            cursor.execute(f"SET ROLE {role}")  # a constant, never input
        cursor.close()
        dbapi_connection.commit()  # a SET inside a rolled-back transaction would not last

    return made
