"""The desk's schema: migrated from an empty database to the latest version by the one
command, and the runtime role refused UPDATE and DELETE on the append-only tables; a desk
told it may not migrate (--migrations check) starts only on a database at the latest
version."""

import pytest
import sqlalchemy as sa

from desk import db, migrate
from tests.pg import fresh_database
from tests.unit.desk_fakes import add_and_decide_one, new_store


def test_an_empty_database_is_migrated_to_the_latest_version_by_one_command(postgres, capsys):
    config = fresh_database(migrated=False)
    login = db.engine(config, role=None)
    try:
        assert migrate.current(login) is None
        assert migrate.main(["--database_url", config.url]) == 0
        assert migrate.current(login) == migrate.head()
        assert f"version {migrate.head()}" in capsys.readouterr().out
        assert migrate.main(["--database_url", config.url]) == 0  # again: nothing to do
        with login.connect() as connection:
            tables = set(sa.inspect(connection).get_table_names())
            views = set(sa.inspect(connection).get_view_names())
    finally:
        login.dispose()
    assert {"fines", "fine_heads", "claims", "decisions", "notices", "recalls", "outbox"} <= tables
    assert {"latest_fines", "queue"} <= views


@pytest.mark.parametrize("table", ["decisions", "notices", "recalls"])
@pytest.mark.parametrize("statement", ["UPDATE {t} SET fine_id = fine_id", "DELETE FROM {t}"])
def test_the_desk_role_cannot_rewrite_the_record(table, statement):
    store = new_store()
    add_and_decide_one(store)
    try:
        with store.engine.connect() as connection:
            assert connection.execute(sa.text("SELECT current_user")).scalar() == db.APP_ROLE
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                connection.execute(sa.text(statement.format(t=table)))
    finally:
        store.engine.dispose()
    assert len(store.reviews_) == 1 and len(store.notices) == 1


def test_the_database_refuses_a_second_decision_or_notice_on_a_revision():
    store = new_store()
    review = add_and_decide_one(store)
    row = {**review.record(), "review_id": "e" * 32, "decision": "rejected",
           "license_plate": None, "reason": "other"}  # fmt: skip
    columns = ", ".join(row)
    with store.engine.connect() as connection:
        with pytest.raises(sa.exc.IntegrityError, match="decisions_one_per_revision"):
            connection.execute(
                sa.text(f"INSERT INTO decisions ({columns}) VALUES "
                        f"({', '.join(':' + c for c in row)})"), row)  # fmt: skip
        connection.rollback()
        duplicate = r"notices_(one_per_revision|review_id_key)"
        with pytest.raises(sa.exc.IntegrityError, match=duplicate):
            connection.execute(
                sa.text("INSERT INTO notices (notice_id, fine_id, revision, review_id, record) "
                        "SELECT 'x', fine_id, revision, review_id, record FROM notices")
            )  # fmt: skip
    store.engine.dispose()


def test_the_desk_needs_one_database_and_no_password_on_cloud_sql():
    from desk.__main__ import build_parser, config_from

    base = ["--project", "p", "--bucket", "b", "--notices_topic", "n"]
    local = config_from(
        build_parser().parse_args([*base, "--database_url", "postgresql+pg8000://desk@h/desk"])
    )
    assert local.database.check() is None
    cloud = ["--cloudsql_instance", "p:europe-west1:desk", "--database_user", "desk@p.iam"]
    assert config_from(build_parser().parse_args([*base, *cloud])).database.check() is None
    assert "give --database_url" in config_from(build_parser().parse_args(base)).database.check()
    both = [*base, *cloud, "--database_url", "postgresql+pg8000://desk@h/desk"]
    assert config_from(build_parser().parse_args(both)).database.check() is not None
    no_user = [*base, "--cloudsql_instance", "p:europe-west1:desk"]
    assert "--database_user" in config_from(build_parser().parse_args(no_user)).database.check()
    assert not any("password" in action.dest for action in build_parser()._actions)


@pytest.mark.parametrize("at", [None, "0002"])
def test_the_desk_that_may_not_migrate_refuses_a_database_not_at_the_latest_version(at):
    """--migrations check (Cloud Run): the desk does not start on a database never
    migrated or behind, says what it found, what it needs and what to run, and leaves the
    database as it was."""
    from fastapi.testclient import TestClient

    from tests.unit.desk_fakes import StoreProbe, make_app

    config = fresh_database(migrated=False)
    login = db.engine(config, role=None)
    try:
        if at:
            migrate.upgrade(login, at)
        app, *_ = make_app(store=StoreProbe(config), migrations="check")
        with pytest.raises(migrate.NotMigrated) as refused:
            with TestClient(app):
                pass
        assert migrate.current(login) == at  # checked, not migrated
    finally:
        login.dispose()
    message = str(refused.value)
    assert f"at revision {at or 'none (never migrated)'}," in message
    assert f"needs revision {migrate.head()} " in message
    assert "python -m desk.migrate" in message
    assert "gcloud run jobs execute section-speed-desk-migrate" in message


def test_the_desk_command_that_may_not_migrate_exits_saying_why(postgres, capsys):
    from desk.__main__ import main

    config = fresh_database(migrated=False)
    base = ["--project", "p", "--bucket", "b", "--notices_topic", "n"]
    assert main([*base, "--database_url", config.url, "--migrations", "check"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("desk: the desk's database is at revision none (never migrated),")
    assert len(err.splitlines()) == 1  # one line in the service's log, no traceback


def test_the_desk_that_may_not_migrate_starts_on_a_database_at_the_latest_version():
    from fastapi.testclient import TestClient

    from tests.unit.desk_fakes import make_app

    app, store, *_ = make_app(migrations="check")
    with TestClient(app) as client:
        # a wrong login link: refused, the failure recorded in the database (throttle)
        assert client.get("/login?token=wrong", follow_redirects=False).status_code == 401
    assert len(store.rows("SELECT * FROM login_failures")) == 1
    store.engine.dispose()


def test_the_desk_migrates_at_start_unless_told_to_check():
    from desk.__main__ import build_parser, config_from

    base = ["--project", "p", "--bucket", "b", "--notices_topic", "n"]
    base += ["--database_url", "postgresql+pg8000://desk@h/desk"]
    assert config_from(build_parser().parse_args(base)).migrations == "apply"
    checking = build_parser().parse_args([*base, "--migrations", "check"])
    assert config_from(checking).migrations == "check"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--migrations", "never"])
