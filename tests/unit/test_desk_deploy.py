"""scripts/desk_deploy.sh: the desk's deploy on Cloud Run, Cloud SQL and Pub/Sub, offline.

- Its --dry_run prints every command and runs none (gcloud and bq are stand-ins that
  record any call).
- Every binding, as a set: the desk's account may only insert rows into `fine_reviews` and
  `notices` (a custom role of get and updateData; no query jobs, nothing on `fines` or
  `fine_claims`, which earlier deploys granted and this one removes), connect to and log
  in to its own Cloud SQL instance (conditioned on it), read the evidence bucket, publish
  notices and read the session key; the build account may only write logs, read the staged
  source and push to the repository; IAP's agent and the push account may invoke.
- Cloud SQL: PostgreSQL 15, Enterprise edition, db-f1-micro, IAM authentication on,
  connectors only, the `desk` database, two IAM users and their grants run as an import;
  no password in any command. On a real server, with roles as Cloud SQL has them: the
  migration's user migrates, the desk's user runs the desk and, even after RESET ROLE,
  cannot update or delete the record, change a table or grant anything; over an install
  the desk's user migrated, the grants take its tables and rights back.
- The schema is migrated by a Cloud Run job of the same image, as the migration's account
  (Cloud SQL roles on the instance only), before the services, which only check it.
- The service: IAP, CPU always allocated, a small instance cap; its environment names the
  Cloud SQL instance, database, IAM user and push audience and holds nothing secret.
- The push: a service reachable from inside the project only, without Cloud Run's invoker
  check (the desk verifies the token), and a push subscription on the fines topic whose
  endpoint, audience and account are the ones the desk is told to expect.
- Every gcloud command and flag exists in the installed Cloud SDK; bq's in `bq help`.
- Run for real against stand-ins it runs exactly the commands the dry run listed; run again
  over existing resources it creates nothing and still grants everything.
- The image's command reads the environment the deploy sets; docs/desk.md quotes the dry
  run verbatim.
"""

import itertools
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.unit import test_smoke_script as smoke

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "desk_deploy.sh"
DOCKERFILE = REPO / "desk" / "Dockerfile"
CLOUDBUILD = REPO / "desk" / "cloudbuild.yaml"
DESK_DOC = REPO / "docs" / "desk.md"
PROJECT, REGION, BUCKET = "my-project", "us-central1", "my-project-section-speed-evidence"
OFFICERS = ["group:traffic-officers@city.example", "user:ana@city.example"]
SA_EMAIL = "section-speed-desk@my-project.iam.gserviceaccount.com"
SA = f"serviceAccount:{SA_EMAIL}"
BUILD_SA = "section-speed-desk-build@my-project.iam.gserviceaccount.com"
PUSH_SA = "section-speed-desk-push@my-project.iam.gserviceaccount.com"
MIGRATE_SA_EMAIL = "section-speed-desk-migrate@my-project.iam.gserviceaccount.com"
MIGRATE_SA = f"serviceAccount:{MIGRATE_SA_EMAIL}"
DB_USER, MIGRATE_DB_USER = (
    "section-speed-desk@my-project.iam",
    "section-speed-desk-migrate@my-project.iam",
)
DESK_ROLE = "projects/my-project/roles/sectionSpeedDeskTables"
DEPLOY_BUCKET = "gs://my-project-section-speed-desk-deploy"
PUSH_AUDIENCE = "https://section-speed-desk-push-$PROJECT_NUMBER.us-central1.run.app/push/fines"
PROJECT_NUMBER = "123456789012"
SQL_AGENT = "p123456789012-ab12cd@gcp-sa-cloud-sql.iam.gserviceaccount.com"
URL = "https://section-speed-desk-abc123-uc.a.run.app"
# A stand-in gcloud: projects, services and the instance's agent describe answer; other
# describes find nothing (so the script creates) unless EXISTING is set; everything else
# succeeds; every call is logged.
FAKE_GCLOUD = f"""#!/bin/sh
echo "gcloud $*" >> "$CALLS"
case "$*" in
  "projects describe"*) echo {PROJECT_NUMBER} ;;
  "run services describe"*) echo {URL} ;;
  "sql instances describe"*serviceAccountEmailAddress*) echo {SQL_AGENT} ;;
  *" describe "*) [ -n "$EXISTING" ] || exit 1 ;;
esac
"""


def tools(directory: Path) -> tuple[dict[str, str], Path]:
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "bq").write_text('#!/bin/sh\necho "bq $*" >> "$CALLS"\n')
    for tool in ("gcloud", "bq"):
        (bin_dir / tool).chmod(0o755)
    log = directory / "calls.log"
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "CALLS": str(log)}, log


def deploy(
    directory: Path, *args: str, existing: bool = False
) -> tuple[subprocess.CompletedProcess, Path]:
    env, log = tools(directory)
    env["EXISTING"] = "1" if existing else ""
    result = subprocess.run(
        [str(SCRIPT), PROJECT, REGION, BUCKET, *OFFICERS, *args],
        capture_output=True, text=True, env=env, cwd=directory, timeout=60,
    )  # fmt: skip
    return result, log


@pytest.fixture(scope="module")
def listing(tmp_path_factory) -> str:
    result, log = deploy(tmp_path_factory.mktemp("dry"), "--dry_run")
    assert result.returncode == 0, result.stderr
    assert not log.exists(), f"the dry run ran commands: {log.read_text()}"
    return result.stdout


@pytest.fixture(scope="module")
def commands(listing) -> list[list[str]]:
    # The secret is created from a pipe: its gcloud command is the pipe's last part.
    lines = [line.split(" | ")[-1] for line in listing.splitlines()]
    return smoke.parse("\n".join(lines))


def flags(argv: list[str]) -> dict[str, str]:
    return {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}


def one(commands: list[list[str]], *prefix: str) -> list[str]:
    found = [argv for argv in commands if argv[: len(prefix)] == list(prefix)]
    assert len(found) == 1, f"{' '.join(prefix)}: {len(found)} commands"
    return found[0]


def position(commands: list[list[str]], *prefix: str) -> int:
    return commands.index(one(commands, *prefix))


def bindings(commands: list[list[str]], verb="add-iam-policy-binding") -> set[tuple[str, str, str]]:
    """(member, role, resource) of every add-iam-policy-binding (or `verb`)."""
    found = set()
    for argv in commands:
        if verb not in argv:
            continue
        flag = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
        words = [w for i, w in enumerate(argv) if not w.startswith("--")
                 and not argv[i - 1].startswith("--")]  # fmt: skip
        resource = words[-1] if words[-1] != verb else flag["--service"]
        found.add((flag["--member"], flag["--role"], resource))
    return found


def test_each_role_is_on_the_one_resource_it_needs(commands):
    iap_agent = "serviceAccount:service-$PROJECT_NUMBER@gcp-sa-iap.iam.gserviceaccount.com"
    pubsub_agent = "serviceAccount:service-$PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com"
    build = f"serviceAccount:{BUILD_SA}"
    assert bindings(commands) == {
        (SA, DESK_ROLE, "my-project:section_speed.fine_reviews"),
        (SA, DESK_ROLE, "my-project:section_speed.notices"),
        (SA, "roles/cloudsql.client", PROJECT),
        (SA, "roles/cloudsql.instanceUser", PROJECT),
        (SA, "roles/storage.objectViewer", f"gs://{BUCKET}"),
        (SA, "roles/pubsub.publisher", "notices"),
        (SA, "roles/secretmanager.secretAccessor", "section-speed-desk-session-key"),
        (MIGRATE_SA, "roles/cloudsql.client", PROJECT),
        (MIGRATE_SA, "roles/cloudsql.instanceUser", PROJECT),
        ("serviceAccount:$SQL_AGENT", "roles/storage.objectViewer", DEPLOY_BUCKET),
        (build, "roles/logging.logWriter", PROJECT),
        (build, "roles/storage.objectViewer", DEPLOY_BUCKET),
        (build, "roles/artifactregistry.writer", "section-speed"),
        (iap_agent, "roles/run.invoker", "section-speed-desk"),
        (f"serviceAccount:{PUSH_SA}", "roles/run.invoker", "section-speed-desk-push"),
        (pubsub_agent, "roles/iam.serviceAccountTokenCreator", PUSH_SA),
        *((o, "roles/iap.httpsResourceAccessor", "section-speed-desk") for o in OFFICERS),
    }  # fmt: skip
    (role,) = [argv for argv in commands if argv[1:4] == ["iam", "roles", "create"]]
    assert sorted(flags(role)["--permissions"].split(",")) == [
        "bigquery.tables.get",
        "bigquery.tables.updateData",  # tabledata.insertAll; no getData: it reads nothing
    ]


def test_the_desk_keeps_no_bigquery_read_and_loses_what_earlier_deploys_granted(commands):
    assert bindings(commands, "remove-iam-policy-binding") == {
        (SA, "roles/bigquery.dataViewer", "my-project:section_speed.fines"),
        (SA, DESK_ROLE, "my-project:section_speed.fine_claims"),
        (SA, "roles/bigquery.jobUser", PROJECT),
    }
    granted = {role for _, role, _ in bindings(commands)}
    assert not {r for r in granted if r.startswith("roles/bigquery.")}
    assert not [argv for argv in commands if "fines" in " ".join(argv) and "bq" in argv[0]
                and "add-iam-policy-binding" in argv]  # fmt: skip


def test_the_cloud_sql_roles_hold_on_the_desks_instance_only(commands):
    for role in ("roles/cloudsql.client", "roles/cloudsql.instanceUser"):
        granted = [a for a in commands if "add-iam-policy-binding" in a and role in a]
        assert {flags(argv)["--member"] for argv in granted} == {SA, MIGRATE_SA}
        for argv in granted:
            assert flags(argv)["--condition"] == (
                'expression=resource.name == "projects/my-project/instances/section-speed-desk",'
                "title=desk-instance-only"
            )
    # The migration's account connects to the instance and logs in, nothing else.
    assert {role for member, role, _ in bindings(commands) if member == MIGRATE_SA} == {
        "roles/cloudsql.client",
        "roles/cloudsql.instanceUser",
    }
    (build_logs,) = [a for a in commands if "roles/logging.logWriter" in a]
    assert flags(build_logs)["--condition"] == "None"


def grants_sql(listing: str) -> str:
    """The SQL the deploy imports as postgres (desk-grants.sql)."""
    (upload,) = [line for line in listing.splitlines() if "desk-grants.sql --project" in line]
    (text,) = shlex.split(upload.split(" | ")[0])[2:]
    return text


# The grants an earlier deploy imported: the desk's own IAM user migrated at start.
EARLIER_GRANTS = (
    'GRANT CONNECT, CREATE ON DATABASE desk TO "section-speed-desk@my-project.iam"; '
    'GRANT USAGE, CREATE ON SCHEMA public TO "section-speed-desk@my-project.iam"; '
    "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'desk_app') "
    "THEN CREATE ROLE desk_app NOLOGIN; END IF; END $$; "
    'GRANT desk_app TO "section-speed-desk@my-project.iam" WITH ADMIN OPTION;'
)
_clusters = itertools.count()


class CloudSqlLike:
    """A fresh database on the test server with the roles Cloud SQL gives it: `postgres`,
    no superuser but CREATEROLE and CREATEDB, a member of the role that owns the database
    (Cloud SQL's cloudsqlsuperuser), and the migration's and the desk's IAM users, logins
    without CREATEROLE or superuser. Names are unique: roles are the server's, not the
    database's."""

    def __init__(self, admin_port: int) -> None:
        import pg8000.native

        from tests.pg import fresh_database

        n = f"{os.getpid()}_{next(_clusters)}"
        self.url = fresh_database(migrated=False).url
        self.database = self.url.rsplit("/", 1)[-1]
        self.port = admin_port
        self.postgres = f"postgres{n}"
        self.migrator = f"migrate{n}@my-project.iam"
        self.runtime = f"desk{n}@my-project.iam"
        self.other = f"other{n}"
        superuser = pg8000.native.Connection(
            "desk", host="127.0.0.1", port=admin_port, database=self.database
        )
        try:
            for statement in [
                f'CREATE ROLE "cloudsqlsuperuser{n}" NOLOGIN CREATEROLE CREATEDB',
                f'CREATE ROLE "{self.postgres}" LOGIN CREATEROLE CREATEDB NOSUPERUSER '
                f'IN ROLE "cloudsqlsuperuser{n}"',
                f'ALTER DATABASE "{self.database}" OWNER TO "cloudsqlsuperuser{n}"',
                f'CREATE ROLE "{self.migrator}" LOGIN NOCREATEROLE NOSUPERUSER',
                f'CREATE ROLE "{self.runtime}" LOGIN NOCREATEROLE NOSUPERUSER',
                f'CREATE ROLE "{self.other}" NOLOGIN',
            ]:
                superuser.run(statement)
        finally:
            superuser.close()

    def config(self, user: str):
        from desk import db

        return db.DatabaseConfig(self.url.replace("://desk@", f"://{quote(user)}@", 1))

    def import_as_postgres(self, sql: str) -> None:
        """`gcloud sql import sql ... --user postgres`: the file's statements, one at a
        time as psql sends them, as postgres, with this database's names."""
        import pg8000.native

        sql = sql.replace("section-speed-desk-migrate@my-project.iam", self.migrator)
        sql = sql.replace("section-speed-desk@my-project.iam", self.runtime)
        sql = sql.replace("DATABASE desk", f'DATABASE "{self.database}"')
        connection = pg8000.native.Connection(
            self.postgres, host="127.0.0.1", port=self.port, database=self.database
        )
        try:  # "; " outside $$ bodies ends a statement
            for statement in re.split(r";\s+(?=(?:[^$]*\$\$[^$]*\$\$)*[^$]*$)", sql):
                connection.run(statement.rstrip(";"))
        finally:
            connection.close()

    def owned_by(self, user: str) -> list[str]:
        """The relations (tables, views, sequences) `user` owns in the database."""
        return self.query(
            self.postgres,
            "SELECT relname FROM pg_class WHERE relowner = "
            "(SELECT oid FROM pg_roles WHERE rolname = :user) ORDER BY relname",
            user=user,
        )

    def query(self, login: str, sql: str, **params) -> list:
        import sqlalchemy as sa

        from desk import db

        engine = db.engine(self.config(login), role=None)
        try:
            with engine.connect() as connection:
                return list(connection.execute(sa.text(sql), params).scalars())
        finally:
            engine.dispose()


@pytest.fixture
def cloud_sql(postgres) -> CloudSqlLike:
    return CloudSqlLike(postgres.port)


def migrate_as(cluster: CloudSqlLike, user: str, target: str = "head") -> str | None:
    from desk import db, migrate

    login = db.engine(cluster.config(user), role=None)
    try:
        return migrate.upgrade(login, target)
    finally:
        login.dispose()


def assert_the_desks_login_cannot_rewrite_the_record(cluster: CloudSqlLike) -> None:
    """As the desk's IAM user after RESET ROLE (its own rights, not desk_app's)."""
    import sqlalchemy as sa

    from desk import db

    refused = [
        statement.format(t=table)
        for table in ("decisions", "notices", "recalls")
        for statement in ("UPDATE {t} SET fine_id = fine_id", "DELETE FROM {t}")
    ] + [
        "ALTER TABLE decisions ADD COLUMN rewritten text",
        "ALTER TABLE decisions OWNER TO CURRENT_USER",
        "DROP TABLE recalls",
        "CREATE TABLE mine (id int)",
        f'GRANT desk_app TO "{cluster.other}"',
        "ALTER ROLE desk_app SUPERUSER",
        f'CREATE ROLE "{cluster.other}x" SUPERUSER',
    ]
    engine = db.engine(cluster.config(cluster.runtime))
    try:
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT current_user")).scalar() == db.APP_ROLE
            connection.execute(sa.text("RESET ROLE"))
            assert connection.execute(sa.text("SELECT current_user")).scalar() == cluster.runtime
            answers = {}
            for statement in refused:
                try:
                    connection.execute(sa.text(statement))
                    answers[statement] = "done"
                except sa.exc.ProgrammingError as error:
                    answers[statement] = error.orig.args[0]["C"]  # pg8000: the SQLSTATE
                connection.rollback()
                connection.execute(sa.text("RESET ROLE"))
            assert answers == dict.fromkeys(refused, "42501")  # insufficient_privilege
            # Without a grant option GRANT and REVOKE change nothing (a warning, no error).
            connection.execute(sa.text(f'GRANT UPDATE, DELETE ON decisions TO "{cluster.other}"'))
            connection.execute(sa.text("GRANT UPDATE, DELETE ON decisions TO desk_app"))
            connection.execute(sa.text("REVOKE INSERT ON decisions FROM desk_app"))
            connection.commit()
    finally:
        engine.dispose()
    held = {
        (role, privilege): cluster.query(
            cluster.postgres, "SELECT has_table_privilege(:r, 'decisions', :p)", r=role, p=privilege
        )[0]
        for role in (cluster.other, "desk_app")
        for privilege in ("INSERT", "UPDATE", "DELETE")
    }
    assert {key for key, value in held.items() if value} == {("desk_app", "INSERT")}
    assert cluster.owned_by(cluster.runtime) == []
    rights = cluster.query(
        cluster.postgres,
        "SELECT array[has_database_privilege(:u, current_database(), 'CREATE'), "
        "has_schema_privilege(:u, 'public', 'CREATE'), "
        "(SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = :u), "
        "(SELECT bool_or(admin_option) FROM pg_auth_members WHERE member = "
        "(SELECT oid FROM pg_roles WHERE rolname = :u))]",
        u=cluster.runtime,
    )
    assert rights == [[False, False, False, False]]  # CREATE, CREATE, roles, ADMIN OPTION


def assert_the_desk_runs_as_its_login(cluster: CloudSqlLike) -> None:
    """The desk's normal path as its IAM user: the check at start, a fine ingested,
    claimed and decided, its notice recorded."""
    from desk import db, migrate
    from tests.unit.desk_fakes import StoreProbe, add_and_decide_one

    login = db.engine(cluster.config(cluster.runtime), role=None)
    try:
        assert migrate.check(login) == migrate.head()
    finally:
        login.dispose()
    store = StoreProbe(cluster.config(cluster.runtime))
    try:
        review = add_and_decide_one(store)
        assert [r["review_id"] for r in store.reviews_] == [review.review_id]
        assert len(store.notices) == 1
    finally:
        store.engine.dispose()


def test_the_deploys_grants_let_the_migration_user_migrate_and_the_desks_rewrite_nothing(
    cloud_sql, listing
):
    """On a real server, as on Cloud SQL: the deploy's grant file, imported as a postgres
    without superuser, lets the migration's IAM user (no CREATEROLE) migrate the schema
    to the latest version; the desk's IAM user then runs the desk, and even after RESET
    ROLE cannot update or delete a decision, notice or recall, change or drop a table,
    create one or grant anything."""
    import sqlalchemy as sa

    from desk import migrate

    with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
        migrate_as(cloud_sql, cloud_sql.migrator)  # no grants: no tables, no role
    cloud_sql.import_as_postgres(grants_sql(listing))
    cloud_sql.import_as_postgres(grants_sql(listing))  # a redeploy: idempotent
    with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
        migrate_as(cloud_sql, cloud_sql.runtime)  # the desk's user may not migrate
    assert migrate_as(cloud_sql, cloud_sql.migrator) == migrate.head()
    assert "decisions" in cloud_sql.owned_by(cloud_sql.migrator)
    assert "alembic_version" in cloud_sql.owned_by(cloud_sql.migrator)
    assert_the_desk_runs_as_its_login(cloud_sql)
    assert_the_desks_login_cannot_rewrite_the_record(cloud_sql)


def test_a_deploy_over_an_install_the_desks_user_migrated_takes_the_tables_back(cloud_sql, listing):
    """An earlier deploy's desk migrated as its own IAM user, so that user owns the tables
    and holds CREATE and desk_app WITH ADMIN OPTION. The deploy's grant file hands the
    tables to the migration's user, which migrates on from there (0003 alters a table the
    desk's user made), and takes back every right the desk's user no longer needs."""
    from desk import migrate

    cloud_sql.import_as_postgres(EARLIER_GRANTS)
    assert migrate_as(cloud_sql, cloud_sql.runtime, "0002") == "0002"
    assert "decisions" in cloud_sql.owned_by(cloud_sql.runtime)
    cloud_sql.import_as_postgres(grants_sql(listing))
    assert cloud_sql.owned_by(cloud_sql.runtime) == []
    assert {"alembic_version", "decisions", "fines"} <= set(cloud_sql.owned_by(cloud_sql.migrator))
    assert migrate_as(cloud_sql, cloud_sql.migrator) == migrate.head()
    assert_the_desk_runs_as_its_login(cloud_sql)
    assert_the_desks_login_cannot_rewrite_the_record(cloud_sql)


def test_the_database_is_the_smallest_postgresql_with_iam_login_only(commands, listing):
    create = one(commands, "gcloud", "sql", "instances", "create")
    assert create[4] == "section-speed-desk"
    assert (
        flags(create).items()
        >= {
            "--database-version": "POSTGRES_15",  # the local stack's and tests' major version
            "--edition": "enterprise",  # shared-core tiers exist in Enterprise edition only
            "--tier": "db-f1-micro",
            "--region": REGION,
            "--availability-type": "zonal",
            "--database-flags": "cloudsql.iam_authentication=on",
            "--connector-enforcement": "REQUIRED",
        }.items()
    )
    assert "--deletion-protection" in create and "--root-password" not in create
    database = one(commands, "gcloud", "sql", "databases", "create")
    assert database[4] == "desk" and flags(database)["--instance"] == "section-speed-desk"
    users = [argv for argv in commands if argv[1:4] == ["sql", "users", "create"]]
    # A service account's PostgreSQL user is its email without .gserviceaccount.com.
    assert [user[4] for user in users] == [MIGRATE_DB_USER, DB_USER]
    for user in users:
        assert flags(user) == {
            "--instance": "section-speed-desk",
            "--project": PROJECT,
            "--type": "cloud_iam_service_account",
        }
    imported = one(commands, "gcloud", "sql", "import", "sql")
    assert imported[4:6] == ["section-speed-desk", f"{DEPLOY_BUCKET}/sql/desk-grants.sql"]
    assert flags(imported)["--user"] == "postgres" and flags(imported)["--database"] == "desk"
    (upload,) = [line for line in listing.splitlines() if "desk-grants.sql --project" in line]
    (text,) = shlex.split(upload.split(" | ")[0])[2:]
    assert text == grants_sql(listing)
    assert text.startswith(
        f'GRANT CONNECT, CREATE ON DATABASE desk TO "{MIGRATE_DB_USER}"; '
        f'GRANT USAGE, CREATE ON SCHEMA public TO "{MIGRATE_DB_USER}";'
    )
    # The desk's user gains nothing it could rewrite the record with, and loses what
    # earlier deploys gave it (the real-server tests above run this file).
    assert f'GRANT desk_app TO "{MIGRATE_DB_USER}" WITH ADMIN OPTION;' in text
    assert f'REASSIGN OWNED BY "{DB_USER}" TO "{MIGRATE_DB_USER}";' in text
    granted_runtime = re.findall(rf'GRANT ([^;]*) TO "{DB_USER}";', text)
    assert granted_runtime == ["CONNECT ON DATABASE desk", "USAGE ON SCHEMA public", "desk_app"]
    assert "CREATEROLE" not in text and "SUPERUSER" not in text
    order = [
        position(commands, "gcloud", "sql", "instances", "create"),
        position(commands, "gcloud", "sql", "databases", "create"),
        commands.index(users[-1]),
        position(commands, "gcloud", "sql", "import", "sql"),
        position(commands, "gcloud", "run", "jobs", "deploy"),  # migrates, as the owner
        position(commands, "gcloud", "beta", "run", "deploy"),  # checks the schema at start
    ]
    assert order == sorted(order)


def test_no_password_is_set_sent_or_kept_anywhere(commands, listing):
    words = [w for argv in commands for w in argv]
    assert not [w for w in words if re.search(r"password", w, re.I)]
    assert not [argv for argv in commands if argv[1:4] == ["sql", "users", "set-password"]]
    for run in deployments(commands).values():
        env = environment(run)
        assert not [k for k in env if re.search(r"PASS|SECRET|TOKEN|KEY|CRED", k)], env
        assert not [v for v in env.values() if re.search(r"pass(word)?=|://[^/]*:[^/]*@", v)]
        # the one secret, the session key, is a Secret Manager reference, never a value
        assert flags(run)["--set-secrets"] == "DESK_SECRET=section-speed-desk-session-key:latest"


def deployments(commands: list[list[str]]) -> dict[str, list[str]]:
    found = {}
    for argv in commands:
        if argv[1:4] == ["beta", "run", "deploy"] or argv[1:3] == ["run", "deploy"]:
            found[argv[argv.index("deploy") + 1]] = argv
    return found


def environment(run: list[str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in flags(run)["--set-env-vars"].split(","))


def test_the_service_runs_behind_iap_on_cloud_sql_with_cpu_always_and_few_instances(commands):
    run = deployments(commands)["section-speed-desk"]
    assert run[:4] == ["gcloud", "beta", "run", "deploy"]
    assert {"--iap", "--no-allow-unauthenticated", "--no-cpu-throttling"} <= set(run)
    assert "--allow-unauthenticated" not in run and "--cpu-throttling" not in run
    assert flags(run)["--service-account"] == SA_EMAIL
    assert flags(run)["--max-instances"] == "2" and flags(run)["--min-instances"] == "1"
    assert environment(run) == {
        "DESK_PROJECT": PROJECT,
        "DESK_DATASET": "section_speed",
        "DESK_BUCKET": BUCKET,
        "DESK_NOTICES_TOPIC": "notices",
        "DESK_IAP_AUDIENCE": "/projects/$PROJECT_NUMBER/locations/us-central1/services/"
        "section-speed-desk",
        "DESK_CLOUDSQL_INSTANCE": "my-project:us-central1:section-speed-desk",
        "DESK_DATABASE_USER": "section-speed-desk@my-project.iam",
        "DESK_DATABASE": "desk",
        "DESK_PUSH_AUDIENCE": PUSH_AUDIENCE,
        "DESK_PUSH_SERVICE_ACCOUNT": PUSH_SA,
        "DESK_MIGRATIONS": "check",  # the migration job migrates; the desk's login may not
    }


def test_the_schema_is_migrated_by_a_job_of_its_own_account_before_the_services(commands):
    job = one(commands, "gcloud", "run", "jobs", "deploy")
    assert job[4] == "section-speed-desk-migrate"
    assert flags(job)["--service-account"] == MIGRATE_SA_EMAIL
    assert flags(job)["--image"] == flags(deployments(commands)["section-speed-desk"])["--image"]
    assert flags(job)["--command"] == "python"
    (args,) = [word.split("=", 1)[1] for word in job if word.startswith("--args=")]
    assert args.split(",") == [
        "-m", "desk.migrate", "--cloudsql_instance", "my-project:us-central1:section-speed-desk",
        "--database_user", MIGRATE_DB_USER, "--database_name", "desk",
    ]  # fmt: skip
    # run now, to its end, once: the services deploy only after it succeeded
    assert {"--execute-now", "--wait"} <= set(job)
    assert flags(job)["--tasks"] == "1" and flags(job)["--max-retries"] == "0"
    assert "--set-env-vars" not in job and "--set-secrets" not in job  # it needs neither
    after = position(commands, "gcloud", "run", "jobs", "deploy")
    assert position(commands, "gcloud", "sql", "import", "sql") < after
    assert position(commands, "gcloud", "builds", "submit") < after
    for name, run in deployments(commands).items():
        assert commands.index(run) > after, name
        assert flags(run)["--service-account"] == SA_EMAIL  # never the schema's owner
        assert environment(run)["DESK_DATABASE_USER"] == DB_USER
        assert environment(run)["DESK_MIGRATIONS"] == "check"


def test_the_image_is_built_by_the_desks_own_build_account(commands):
    build = one(commands, "gcloud", "builds", "submit")
    assert flags(build)["--config"] == "desk/cloudbuild.yaml"
    assert flags(build)["--service-account"] == f"projects/my-project/serviceAccounts/{BUILD_SA}"
    assert flags(build)["--gcs-source-staging-dir"] == f"{DEPLOY_BUCKET}/source"
    created = [argv[4] for argv in commands if argv[1:4] == ["iam", "service-accounts", "create"]]
    assert created == ["section-speed-desk", "section-speed-desk-migrate",
                       "section-speed-desk-build", "section-speed-desk-push"]  # fmt: skip
    made = position(commands, "gcloud", "iam", "service-accounts", "create",
                    "section-speed-desk-build")  # fmt: skip
    assert made < position(commands, "gcloud", "builds", "submit")
    assert "cloudbuild.gserviceaccount.com" not in " ".join(w for a in commands for w in a)
    # a user-chosen build account has no logs bucket: the build logs to Cloud Logging only
    assert re.search(r"^options:\n  logging: CLOUD_LOGGING_ONLY$", CLOUDBUILD.read_text(), re.M)


def test_fines_are_pushed_with_the_token_the_desk_expects(commands):
    push = deployments(commands)["section-speed-desk-push"]
    assert push[:3] == ["gcloud", "run", "deploy"]
    assert flags(push)["--ingress"] == "internal"  # Pub/Sub of the project reaches it
    assert "--no-invoker-iam-check" in push  # else Cloud Run strips the token's signature
    assert "--iap" not in push and "--allow-unauthenticated" not in push
    assert "--no-cpu-throttling" in push and flags(push)["--max-instances"] == "1"
    assert flags(push)["--service-account"] == SA_EMAIL
    desk_env = environment(deployments(commands)["section-speed-desk"])
    assert environment(push) == desk_env | {
        "DESK_IAP_AUDIENCE": "/projects/$PROJECT_NUMBER/locations/us-central1/services/"
        "section-speed-desk-push"  # never issued by IAP: no officer signs in there
    }
    subscription = one(commands, "gcloud", "pubsub", "subscriptions", "create")
    assert subscription[4] == "desk-fines-push"
    assert (
        flags(subscription).items()
        >= {
            "--topic": "fines",
            "--push-endpoint": PUSH_AUDIENCE,
            "--push-auth-service-account": PUSH_SA,
            "--push-auth-token-audience": PUSH_AUDIENCE,
        }.items()
    )
    assert desk_env["DESK_PUSH_AUDIENCE"] == flags(subscription)["--push-auth-token-audience"]
    assert (
        desk_env["DESK_PUSH_SERVICE_ACCOUNT"] == flags(subscription)["--push-auth-service-account"]
    )
    # the endpoint is the push service's deterministic URL, /push/fines
    assert PUSH_AUDIENCE.startswith("https://section-speed-desk-push-$PROJECT_NUMBER.")
    assert position(commands, "gcloud", "run", "deploy") < position(
        commands, "gcloud", "pubsub", "subscriptions", "create"
    )


def test_run_again_over_existing_resources_it_creates_nothing_and_grants_all(tmp_path, commands):
    result, log = deploy(tmp_path, existing=True)
    assert result.returncode == 0, result.stderr
    ran = log.read_text().splitlines()
    created = [line for line in ran if re.search(r" create( |$)", line)]
    assert created == ["gcloud beta services identity create --service iap.googleapis.com "
                       "--project my-project"]  # fmt: skip
    update = "gcloud iam roles update sectionSpeedDeskTables --project my-project"
    assert f"{update} --permissions bigquery.tables.get,bigquery.tables.updateData --quiet" in ran
    granted = [line for line in ran if "add-iam-policy-binding" in line]
    assert len(granted) == len([a for a in commands if "add-iam-policy-binding" in a])
    assert sum(" deploy " in line for line in ran) == 3  # the job, the two services
    assert sum("gcloud sql import sql" in line for line in ran) == 1  # GRANT is idempotent


def test_every_command_and_flag_exists(commands):
    problems = []
    for argv in commands:
        if argv[0] == "gcloud":
            problems += smoke.gcloud_problems(argv)
        elif argv[0] == "bq":
            problems += smoke.bq_problems(argv)
        else:
            problems.append(f"not a gcloud or bq command: {argv}")
    assert problems == []


def test_run_for_real_it_runs_what_the_dry_run_listed(tmp_path, commands):
    result, log = deploy(tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"desk_deploy: officers open {URL}" in result.stderr
    ran = [line for line in log.read_text().splitlines() if " describe " not in line]
    listed = [
        " ".join(argv).replace("$PROJECT_NUMBER", PROJECT_NUMBER).replace("$SQL_AGENT", SQL_AGENT)
        for argv in commands
        if "describe" not in argv
    ]
    assert ran == listed
    described = [line for line in log.read_text().splitlines() if " describe " in line]
    # 14 existence checks (4 accounts, role, topic, secret, instance, database, 2 users,
    # bucket, repository, subscription), the project number, the instance's agent, the URL
    assert len(described) == 17


def test_an_officer_that_is_no_iam_member_is_refused(tmp_path):
    env, log = tools(tmp_path)
    result = subprocess.run(
        [str(SCRIPT), PROJECT, REGION, BUCKET, "ana@city.example", "--dry_run"],
        capture_output=True, text=True, env=env, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2 and "is no IAM member" in result.stderr
    assert not log.exists()


def test_the_image_runs_the_desk_behind_iap_on_the_deploys_environment(commands):
    text = DOCKERFILE.read_text()
    (cmd,) = re.findall(r"^CMD (.*)$", text, re.M)
    assert "exec python -m desk --auth iap --host 0.0.0.0" in cmd
    for run in deployments(commands).values():
        env = set(environment(run))
        assert set(re.findall(r"\$\{?(DESK_[A-Z_]+)", cmd)) == env  # DESK_SECRET: the secret
    for flag, variable in [
        ("--cloudsql_instance", "DESK_CLOUDSQL_INSTANCE"),
        ("--database_user", "DESK_DATABASE_USER"),
        ("--database_name", "DESK_DATABASE"),
        ("--push_audience", "DESK_PUSH_AUDIENCE"),
        ("--push_service_account", "DESK_PUSH_SERVICE_ACCOUNT"),
        ("--migrations", "DESK_MIGRATIONS"),
    ]:
        assert f'{flag} \\"${variable}\\"' in cmd, flag
    assert re.search(r"^USER 10001$", text, re.M)  # not root


def test_the_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(smoke.sys.executable).with_name("hadolint"))
    assert Path(hadolint).exists(), "hadolint is missing: pip install -r requirements.txt"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_docs_quote_the_dry_run_verbatim(tmp_path):
    env, log = tools(tmp_path)
    result = subprocess.run(
        [str(SCRIPT), PROJECT, REGION, BUCKET, OFFICERS[0], "--dry_run"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not log.exists(), "the dry run ran commands"
    text = DESK_DOC.read_text()
    section = text[text.index("## Deploy on Google Cloud") : text.index("## Code and tests")]
    quoted = re.search(r"it prints\n.*?```\n(.*?)```", section, re.S)
    assert quoted, "docs/desk.md, Deploy on Google Cloud, quotes no dry run"
    assert quoted[1] == result.stdout.lstrip("\n")
