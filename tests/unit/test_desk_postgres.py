"""local_stack/postgres.py: a throwaway PostgreSQL server that starts, answers, and leaves
nothing behind; without PostgreSQL installed it says what to install."""

from pathlib import Path

import pytest
import sqlalchemy as sa

from local_stack import postgres
from local_stack.postgres import PostgresServer, PostgresUnavailable


def test_a_server_starts_answers_and_stops_leaving_nothing():
    with PostgresServer() as server:
        engine = sa.create_engine(server.url)
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT current_database()")).scalar() == "desk"
        engine.dispose()
        pid = int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])
        assert running(pid)
        base = server.base
    assert not running(pid)
    assert not base.exists()


def running(pid: int) -> bool:
    """Whether the process runs (a zombie waiting for its parent to reap it does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_without_postgresql_installed_it_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("POSTGRES_BIN", str(tmp_path))
    monkeypatch.setattr(postgres.glob, "glob", lambda _pattern: [])
    monkeypatch.setattr(postgres.shutil, "which", lambda _name: None)
    with pytest.raises(PostgresUnavailable, match="apt-get install postgresql"):
        PostgresServer()
