"""Fixtures every test folder may use: PostgreSQL for the desk (tests/pg.py)."""

import pytest

from desk.db import DatabaseConfig
from local_stack.postgres import PostgresServer
from tests import pg


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    """The test process's PostgreSQL server (started on first use, stopped at exit); a
    missing installation fails here saying what to install."""
    return pg.server()


@pytest.fixture
def desk_database(postgres: PostgresServer) -> DatabaseConfig:
    """A fresh database of this test's own, at the desk's latest schema."""
    return pg.fresh_database()
