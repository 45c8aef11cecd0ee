"""PostgreSQL for the tests: one server per test process, a fresh database per use.

The server starts on first use (`server()`) and stops when the process exits; the desk's
schema is migrated once into a template database, and `fresh_database()` copies it
(CREATE DATABASE ... TEMPLATE, tens of milliseconds). Without PostgreSQL installed this
fails saying what to install (local_stack.postgres.INSTALL_HINT).
"""

import atexit
import itertools
import os
import threading

from desk import db, migrate
from local_stack.postgres import PostgresServer

TEMPLATE = "desk_template"
_server: PostgresServer | None = None
_lock = threading.Lock()
_names = itertools.count()


def server() -> PostgresServer:
    global _server
    with _lock:
        if _server is None:
            started = PostgresServer()
            started.start()
            atexit.register(started.stop)
            started.create_database(TEMPLATE)
            engine = db.engine(db.DatabaseConfig(started.database_url(TEMPLATE)), role=None)
            try:
                migrate.upgrade(engine)
            finally:
                engine.dispose()
            _server = started
        return _server


def fresh_database(migrated: bool = True) -> db.DatabaseConfig:
    """A new database of its own: the desk's schema at the latest version, or empty."""
    import pg8000.native

    running = server()
    name = f"t{os.getpid()}_{next(_names)}"
    connection = pg8000.native.Connection(
        "desk", host="127.0.0.1", port=running.port, database="postgres"
    )
    try:
        # FILE_COPY: a small database copies faster as files than through the WAL.
        template = f' TEMPLATE "{TEMPLATE}" STRATEGY FILE_COPY' if migrated else ""
        connection.run(f'CREATE DATABASE "{name}"{template}')
    finally:
        connection.close()
    return db.DatabaseConfig(running.database_url(name))
