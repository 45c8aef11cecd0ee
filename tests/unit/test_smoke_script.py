"""scripts/dataflow_smoke.sh: the operator's smoke test, checked offline.

- Its --dry-run prints every command and runs none (gcloud, bq and python are stand-ins
  that record any call); the commands come in the procedure's order, the first launch has
  no --update, the job name is stable, the input subscription retains acknowledged
  messages, the job is drained at the end and everything created is deleted.
- docs/deploy.md quotes that dry run verbatim, and its update command is the launch plus
  --update.
- Every gcloud command and flag exists in the installed Cloud SDK (its static completion
  tree, the data behind gcloud's TAB completion); bq's in `bq help`.
- Run for real against stand-ins of gcloud, bq and python: it waits until the expected
  fines are seen, drains and cleans up; when the fines never come it gives up within its
  bound, cancels the job and still cleans up.
"""

import base64
import functools
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from section_speed.domain.schemas import TABLES

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "scripts" / "dataflow_smoke.sh"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
ARGS = ["my-project", "us-central1", "my-project-section-speed"]
# One bucket per writer (docs/deploy.md, Buckets): Dataflow's staging and temp files (the
# workers write them), the configuration (the workers only read it), the build's source,
# log and the template spec (only the build and the deployer write them).
STAGING, CONFIG, BUILD = (f"gs://{ARGS[2]}{suffix}" for suffix in ("", "-config", "-build"))
JOB_NAME = "section-speed"
SUBSCRIPTION = "camera-events-sub"


def parse(listing: str) -> list[list[str]]:
    """Commands of a dry-run listing, one argv each (`VAR=$(command)` gives the command)."""
    commands = []
    for line in listing.splitlines():
        if line.strip() and not line.startswith("#"):
            captured = re.fullmatch(r"[A-Za-z_]+=\$\((.*)\)", line)
            commands.append(shlex.split(captured[1] if captured else line))
    return commands


def recording_tools(directory: Path) -> tuple[dict[str, str], Path]:
    """gcloud, bq and python stand-ins that only record being called (PYTHON stays the
    script's default, .venv/bin/python, as the doc shows it)."""
    log = directory / "calls.log"
    bin_dir = directory / "bin"
    bin_dir.mkdir()
    for tool in ("gcloud", "bq", "python"):
        (bin_dir / tool).write_text(f'#!/bin/sh\necho "{tool} $*" >> {log}\n')
        (bin_dir / tool).chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}, log


def dry_run(tmp_path: Path, **env: str) -> str:
    tools, log = recording_tools(tmp_path)
    result = subprocess.run(
        [str(SMOKE), *ARGS, "--dry-run"],
        capture_output=True, text=True, env={**tools, **env}, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not log.exists(), f"the dry run ran commands: {log.read_text()}"
    return result.stdout


@pytest.fixture(scope="module")
def listing(tmp_path_factory) -> str:
    return dry_run(tmp_path_factory.mktemp("dry"))


@pytest.fixture(scope="module")
def commands(listing) -> list[list[str]]:
    return parse(listing)


def index(commands: list[list[str]], *prefix: str) -> int:
    found = [i for i, argv in enumerate(commands) if argv[: len(prefix)] == list(prefix)]
    assert len(found) == 1, f"{' '.join(prefix)}: {len(found)} commands"
    return found[0]


def indices(commands: list[list[str]], *prefix: str) -> list[int]:
    return [i for i, argv in enumerate(commands) if argv[: len(prefix)] == list(prefix)]


def named(commands: list[list[str]], *prefix: str) -> list[str]:
    """The word after `prefix` (what the command acts on) of each command starting so."""
    return [commands[i][len(prefix)] for i in indices(commands, *prefix)]


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def launch(commands: list[list[str]]) -> list[str]:
    return commands[index(commands, "gcloud", "dataflow", "flex-template", "run")]


def parameters(argv: list[str]) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in flag(argv, "--parameters").split(","))


# --- the dry run --------------------------------------------------------------------------


def test_the_procedure_runs_in_order(commands):
    order = [
        index(commands, "gcloud", "services", "enable"),
        indices(commands, "gcloud", "iam", "service-accounts", "create")[0],
        index(commands, "gcloud", "iam", "roles", "create"),
        indices(commands, "gcloud", "storage", "buckets", "create")[0],
        index(commands, "gcloud", "pubsub", "topics", "create"),
        index(commands, "gcloud", "pubsub", "subscriptions", "create", SUBSCRIPTION),
        index(commands, "gcloud", "artifacts", "repositories", "create"),
        indices(commands, "gcloud", "projects", "add-iam-policy-binding")[0],
        max(
            i
            for i, argv in enumerate(commands)
            if argv[:1] == ["gcloud"] and "add-iam-policy-binding" in argv
        ),
        index(commands, sys_python(commands), "-m", "pipeline.provision"),
        indices(commands, "bq", "add-iam-policy-binding")[0],  # on the tables provision made
        indices(commands, "bq", "add-iam-policy-binding")[-1],
        index(commands, "gcloud", "builds", "submit"),
        index(commands, "gcloud", "dataflow", "flex-template", "build"),
        indices(commands, sys_python(commands), "-m", "generator")[0],  # the sections file
        index(commands, "gcloud", "storage", "cp"),
        index(commands, "gcloud", "dataflow", "flex-template", "run"),
        indices(commands, sys_python(commands), "-m", "generator")[-1],  # the traffic
        index(commands, "gcloud", "pubsub", "subscriptions", "pull"),
        index(commands, "bq", "query"),
        index(commands, "gcloud", "dataflow", "jobs", "drain"),
        index(commands, "gcloud", "pubsub", "subscriptions", "delete"),
        indices(commands, "gcloud", "iam", "service-accounts", "delete")[0],
    ]
    assert order == sorted(order), order
    assert commands[-1][:4] == ["gcloud", "iam", "service-accounts", "delete"]
    assert not indices(commands, "gcloud", "dataflow", "jobs", "cancel")  # drained, not cancelled


def sys_python(commands: list[list[str]]) -> str:
    (python,) = {argv[0] for argv in commands if argv[1:3] == ["-m", "pipeline.provision"]}
    return python


def test_the_first_launch_has_a_stable_name_and_no_update(commands):
    argv = launch(commands)
    assert argv[4] == JOB_NAME and not re.search(r"\d", argv[4])
    assert "--update" not in argv and "--transform-name-mappings" not in argv
    drain = commands[index(commands, "gcloud", "dataflow", "jobs", "drain")]
    assert drain[4] == "$JOB_ID"  # the id the launch printed (--format value(job.id))
    assert flag(argv, "--format") == "value(job.id)"


def test_the_input_subscription_keeps_acknowledged_messages_for_a_seek(commands):
    argv = commands[index(commands, "gcloud", "pubsub", "subscriptions", "create", SUBSCRIPTION)]
    assert "--retain-acked-messages" in argv
    assert flag(argv, "--message-retention-duration") == "7d"
    assert parameters(launch(commands))["input_subscription"] == SUBSCRIPTION


def test_the_launch_passes_the_sections_it_uploaded(commands):
    """Without each section's ends no timed traversal is fined (docs/enforcement.md)."""
    written = commands[indices(commands, sys_python(commands), "-m", "generator")[0]]
    upload = commands[index(commands, "gcloud", "storage", "cp")]
    assert upload[-2] == flag(written, "--sections_file")
    assert parameters(launch(commands))["sections_file"] == upload[-1]
    assert upload[-1].startswith(f"{CONFIG}/")


def test_the_launch_uses_the_built_image_for_the_workers(commands):
    built = flag(commands[index(commands, "gcloud", "builds", "submit")], "--tag")
    template = commands[index(commands, "gcloud", "dataflow", "flex-template", "build")]
    assert flag(template, "--image") == built
    argv = launch(commands)
    assert parameters(argv)["sdk_container_image"] == built
    assert flag(argv, "--template-file-gcs-location") == template[4]
    assert re.fullmatch(r"us-central1-docker\.pkg\.dev/my-project/section-speed/\S+:\S+", built)


def test_launch_parameters_are_the_templates_and_pass_its_regexes(tmp_path, commands):
    metadata = json.loads((REPO / "metadata.json").read_text())
    regexes = {p["name"]: p["regexes"][0] for p in metadata["parameters"]}
    with_evidence = parse(dry_run(tmp_path, CARS_API="https://cars.example.com/cars"))
    for argv in (launch(commands), launch(with_evidence)):
        for name, value in parameters(argv).items():
            if name == "sdk_container_image":  # Beam's own option, passed to the launcher
                continue
            assert name in regexes, f"{name} is no parameter of metadata.json"
            assert re.fullmatch(regexes[name], value), f"{name}={value}"
    evidence = parameters(launch(with_evidence))
    assert evidence["cars_api"] == "https://cars.example.com/cars"
    created = [
        argv[4] for argv in with_evidence if argv[:4] == ["gcloud", "storage", "buckets", "create"]
    ]
    assert f"gs://{evidence['bucket']}" in created
    assert "cars_api" not in parameters(launch(commands))


def test_everything_created_is_deleted(commands):
    def words(*prefix: str) -> set[str]:
        found = set()
        for argv in commands:
            if argv[: len(prefix)] == list(prefix):
                found |= {w for w in argv[len(prefix) :] if not w.startswith("-")}
        return found

    topics = words("gcloud", "pubsub", "topics", "create")
    assert topics and topics <= words("gcloud", "pubsub", "topics", "delete")
    subscriptions = {
        argv[4] for argv in commands if argv[:4] == ["gcloud", "pubsub", "subscriptions", "create"]
    }
    assert subscriptions <= words("gcloud", "pubsub", "subscriptions", "delete")
    buckets = {
        argv[4] for argv in commands if argv[:4] == ["gcloud", "storage", "buckets", "create"]
    }
    assert buckets and buckets <= words("gcloud", "storage", "rm")
    repository = commands[index(commands, "gcloud", "artifacts", "repositories", "create")][4]
    assert repository in words("gcloud", "artifacts", "repositories", "delete")
    provision = next(argv for argv in commands if "pipeline.provision" in argv)
    dataset = f"{flag(provision, '--project')}:{flag(provision, '--bq_dataset')}"
    assert commands[index(commands, "bq", "rm")][-1] == dataset
    project_roles = {
        flag(argv, "--role")
        for argv in commands
        if argv[:3] == ["gcloud", "projects", "add-iam-policy-binding"]
    }
    removed = {
        flag(argv, "--role")
        for argv in commands
        if argv[:3] == ["gcloud", "projects", "remove-iam-policy-binding"]
    }
    assert project_roles == removed  # project bindings outlive the service account otherwise
    accounts = named(commands, "gcloud", "iam", "service-accounts", "create")
    deleted = named(commands, "gcloud", "iam", "service-accounts", "delete")
    assert sorted(a.split("@")[0] for a in deleted) == sorted(accounts) and len(accounts) == 2
    # The one thing kept: the custom role (a deleted role's id stays taken for weeks, and
    # the next run would fail to create it); the doc says so.
    assert not indices(commands, "gcloud", "iam", "roles", "delete")
    assert "deletes everything again but the custom" in DEPLOY_DOC.read_text()


def test_the_image_is_built_as_an_account_of_the_procedures_own_with_what_it_needs(commands):
    """Cloud Build's default account is the Compute Engine one in projects made since 2024,
    often without the roles a build needs: the build runs as an account created here, with
    a push role on the repository and the staging bucket for its source and its log."""
    build = commands[index(commands, "gcloud", "builds", "submit")]
    account = flag(build, "--service-account").split("/serviceAccounts/")[1]
    assert flag(build, "--service-account") == f"projects/my-project/serviceAccounts/{account}"
    created = named(commands, "gcloud", "iam", "service-accounts", "create")
    assert account.split("@")[0] in created
    grants = {
        (argv[1], argv[argv.index("add-iam-policy-binding") + 1], flag(argv, "--role"))
        for argv in commands
        if "add-iam-policy-binding" in argv
        and flag(argv, "--member") == f"serviceAccount:{account}"
    }
    repository = commands[index(commands, "gcloud", "artifacts", "repositories", "create")][4]
    assert grants == {
        ("artifacts", repository, "roles/artifactregistry.writer"),
        ("storage", BUILD, "roles/storage.objectAdmin"),
    }
    assert flag(build, "--gcs-source-staging-dir").startswith(f"{BUILD}/")
    assert flag(build, "--gcs-log-dir").startswith(f"{BUILD}/")
    assert flag(build, "--tag").startswith(f"us-central1-docker.pkg.dev/my-project/{repository}/")


def bucket_grants(commands: list[list[str]]) -> dict[str, set[tuple[str, str]]]:
    """Each bucket's (member, role) grants."""
    grants: dict[str, set[tuple[str, str]]] = {}
    for argv in commands:
        if argv[:4] == ["gcloud", "storage", "buckets", "add-iam-policy-binding"]:
            grants.setdefault(argv[4], set()).add((flag(argv, "--member"), flag(argv, "--role")))
    return grants


def test_each_bucket_is_written_only_by_whoever_must_write_it(commands):
    """Workers can rewrite neither the rules (the sections file) nor the next build (its
    source, the template spec): they only read the configuration, and the build account
    holds nothing but its own bucket."""
    created = {
        argv[4] for argv in commands if argv[:4] == ["gcloud", "storage", "buckets", "create"]
    }
    assert {STAGING, CONFIG, BUILD} <= created
    worker = f"serviceAccount:{flag(launch(commands), '--service-account-email')}"
    build = commands[index(commands, "gcloud", "builds", "submit")]
    builder = f"serviceAccount:{flag(build, '--service-account').split('/serviceAccounts/')[1]}"
    grants = bucket_grants(commands)
    assert grants[STAGING] == {(worker, "roles/storage.objectAdmin")}
    assert grants[CONFIG] == {(worker, "roles/storage.objectViewer")}
    assert grants[BUILD] == {(builder, "roles/storage.objectAdmin")}
    # What each holds: the launch's staging and temp files; the sections file; the
    # template spec the launch reads and the build's source and log.
    argv = launch(commands)
    assert flag(argv, "--staging-location").startswith(f"{STAGING}/")
    assert flag(argv, "--temp-location").startswith(f"{STAGING}/")
    assert parameters(argv)["sections_file"].startswith(f"{CONFIG}/")
    assert flag(argv, "--template-file-gcs-location").startswith(f"{BUILD}/")


def test_the_workers_get_a_custom_role_on_each_table_not_a_dataset_role(commands):
    """Data Editor on the dataset would let workers create and delete tables."""
    (role,) = [commands[i] for i in indices(commands, "gcloud", "iam", "roles", "create")]
    name = f"projects/{flag(role, '--project')}/roles/{role[4]}"
    provision = next(argv for argv in commands if "pipeline.provision" in argv)
    assert "--worker_service_account" not in provision  # it grants roles/bigquery.dataEditor
    tables = [commands[i] for i in indices(commands, "bq", "add-iam-policy-binding")]
    assert {flag(argv, "--role") for argv in tables} == {name}
    assert all("--table" in argv for argv in tables)
    dataset = f"{flag(provision, '--project')}:{flag(provision, '--bq_dataset')}"
    assert sorted(argv[-1] for argv in tables) == sorted(
        f"{dataset}.{table.name}" for table in TABLES
    )


def test_wrong_arguments_are_refused_with_the_usage(tmp_path):
    tools, log = recording_tools(tmp_path)
    assert os.access(SMOKE, os.X_OK)
    for arguments in ([], ARGS[:2], [*ARGS, "--dry_run"], [*ARGS, "--dry-run", "extra"]):
        result = subprocess.run([str(SMOKE), *arguments], capture_output=True, text=True, env=tools)
        assert result.returncode == 2 and "usage:" in result.stderr, arguments
    assert not log.exists()


# --- the doc quotes the script --------------------------------------------------------------


def doc_block(name: str) -> str:
    text = DEPLOY_DOC.read_text()
    return re.search(rf"<!-- {name}:start -->\n```sh\n(.*?)```\n<!-- {name}:end -->", text, re.S)[1]


def test_the_doc_quotes_the_dry_run_verbatim(listing):
    assert doc_block("smoke-commands").strip() == listing.strip(), (
        "docs/deploy.md differs from the script: paste the output of "
        "`scripts/dataflow_smoke.sh my-project us-central1 my-project-section-speed --dry-run`"
    )


def test_the_doc_update_command_is_the_launch_with_update(commands):
    text = DEPLOY_DOC.read_text().split("**Update**", 1)[1]
    block = re.search(r"```\n(gcloud dataflow flex-template run .*?)\n```", text, re.S)[1]
    documented = shlex.split(block)
    first = launch(commands)
    at = first.index("--format")
    assert documented == [*first[:at], *first[at + 2 :], "--update"]
    assert "--transform-name-mappings=OldStep=NewStep" in text  # gcloud's KEY=VALUE form


def doc_commands_by_section() -> list[tuple[str, list[str]]]:
    """Every gcloud command of deploy.md's code blocks, with the section it is in."""
    found = []
    for section in re.split(r"\n(?=## )", DEPLOY_DOC.read_text()):
        for block in re.findall(r"```(?:sh)?\n(.*?)```", section, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = re.sub(r"^[A-Za-z_]+=\$\((.*)\)$", r"\1", line.strip())
                if line.startswith("gcloud "):
                    found.append((section.split("\n", 1)[0], shlex.split(line)))
    return found


def test_the_doc_seeks_only_a_subscription_no_job_reads():
    """A seek under a running Dataflow job replays detections behind its watermark, which
    the runner drops unseen (docs/deploy.md, Replay): every seek the doc shows comes after
    a drain in its section, with a snapshot taken before that drain, sought to."""
    commands = doc_commands_by_section()

    def where(argvs: list[list[str]], *words: str) -> list[int]:
        return [i for i, argv in enumerate(argvs) if argv[1 : 1 + len(words)] == list(words)]

    seeks = where([argv for _, argv in commands], "pubsub", "subscriptions", "seek")
    assert seeks, "docs/deploy.md shows no replay"
    for at in seeks:
        section = commands[at][0]
        before = [argv for name, argv in commands[:at] if name == section]
        drains = where(before, "dataflow", "jobs", "drain")
        snapshots = where(before, "pubsub", "snapshots", "create")
        assert drains, f"{section}: a seek with no drain before it: {commands[at][1]}"
        assert snapshots and snapshots[0] < drains[0], f"{section}: no snapshot before the drain"
        snapshot = before[snapshots[0]][4]
        assert flag(commands[at][1], "--snapshot") == snapshot
    text = DEPLOY_DOC.read_text()
    assert "https://cloud.google.com/dataflow/docs/guides/using-cloud-pubsub-seek" in text
    assert "Never seek the subscription under a running job" in text
    assert "for a fix that must see past events again" not in text  # the seek it offered


def test_the_readme_points_to_the_procedure():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Deploy on Google Cloud Dataflow", 1)[1].split("\n## ", 1)[0]
    assert "docs/deploy.md" in section and "scripts/dataflow_smoke.sh" in section
    assert "gcloud dataflow jobs update" not in readme  # no such command for this
    assert "$(date" not in readme and "$(date" not in DEPLOY_DOC.read_text()


# --- every command exists in the installed Cloud SDK ------------------------------------------


@functools.cache
def gcloud_tree() -> dict:
    """gcloud's static completion tree: every command and its flags, shipped with the SDK."""
    gcloud = shutil.which("gcloud")
    assert gcloud, "gcloud is missing (scripts/bootstrap.sh installs it for the emulators)"
    path = Path(gcloud).resolve().parents[1] / "data" / "cli" / "gcloud_completions.py"
    spec = importlib.util.spec_from_file_location("gcloud_completions", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.STATIC_COMPLETION_CLI_TREE


def gcloud_problems(argv: list[str]) -> list[str]:
    tree = gcloud_tree()
    node, position = tree, 1
    while position < len(argv) and argv[position] in node["commands"]:
        node = node["commands"][argv[position]]
        position += 1
    if node["commands"]:  # stopped on a group: the command word is wrong
        return [f"no gcloud command {' '.join(argv[: position + 1])}"]
    known = set(node["flags"]) | set(tree["flags"])
    used = {word.split("=", 1)[0] for word in argv[position:] if word.startswith("--")}
    negatable = {f"--no-{name[2:]}" for name in known}
    return [f"{' '.join(argv[:position])}: no flag {f}" for f in used - known - negatable]


@functools.cache
def bq_help(*arguments: str) -> str:
    result = subprocess.run(["bq", *arguments], capture_output=True, text=True, timeout=60)
    return result.stdout


def bq_problems(argv: list[str]) -> list[str]:
    command = bq_help("help", argv[1])
    if not re.search(rf"^{re.escape(argv[1])}\s", command, re.M):
        return [f"no bq command {argv[1]}"]
    known = set()
    text = command + bq_help("--helpfull")  # the command's flags, then the global ones
    for names in re.findall(r"^\s+((?:-\w,)?--(?:\[no\])?\w+)", text, re.M):
        for name in names.split(","):
            known |= {name.replace("[no]", ""), name.replace("[no]", "no")}
    used = {word.split("=", 1)[0] for word in argv[2:] if word.startswith("-")}
    return [f"bq {argv[1]}: no flag {f}" for f in used - known]


def all_documented_commands(commands: list[list[str]]) -> list[list[str]]:
    """The script's commands, the doc's update and seek commands, and the watch block."""
    text = DEPLOY_DOC.read_text()
    extra = []
    for block in re.findall(r"```\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"#.*$", "", line).strip()
            line = re.sub(r"^[A-Z_]+=\$\((.*)\)$", r"\1", line)
            if line.startswith("gcloud "):
                extra.append(shlex.split(line))
    return commands + extra


def test_every_gcloud_and_bq_command_and_flag_exists(commands):
    problems = []
    for argv in all_documented_commands(commands):
        if argv[0] == "gcloud":
            problems += gcloud_problems(argv)
        elif argv[0] == "bq":
            problems += bq_problems(argv)
    assert not problems, problems


def test_the_sdk_check_does_fail():
    assert gcloud_problems(["gcloud", "dataflow", "jobs", "update", "x"])
    assert gcloud_problems(["gcloud", "dataflow", "flex-template", "run", "x", "--upgrade"])
    assert not gcloud_problems(["gcloud", "dataflow", "flex-template", "run", "x", "--update"])
    assert bq_problems(["bq", "query", "--use_legacy_sqlx=false"])


# --- run for real, against stand-ins --------------------------------------------------------

FAKE_GCLOUD = r"""#!/bin/sh
echo "gcloud $*" >> "$CALLS"
case "$*" in
  "dataflow flex-template run"*) echo 2026-11-23_00_00_00-42 ;;
  "dataflow jobs describe"*)
    if grep -q "jobs drain" "$CALLS"; then echo JOB_STATE_DRAINED
    else echo JOB_STATE_RUNNING; fi ;;
  "pubsub subscriptions pull"*) cat "$FAKE_PULL"; echo "[]" > "$FAKE_PULL" ;;
esac
"""
FAKE_BQ = r"""#!/bin/sh
echo "bq $*" >> "$CALLS"
case "$1" in query) printf 'fines\n%s\n' "$FAKE_BQ_COUNT" ;; esac
"""
FAKE_PYTHON = r"""#!/bin/sh
if [ "$1" = "-m" ]; then
  echo "python $*" >> "$CALLS"
  if [ "$2" = "generator" ]; then
    while [ $# -gt 0 ]; do
      if [ "$1" = "--truth" ]; then cp "$FAKE_TRUTH" "$2"; fi
      shift
    done
  fi
  exit 0
fi
exec "$REAL_PYTHON" "$@"
"""


def fake_cloud(tmp_path: Path, fines_in_bigquery: int) -> tuple[dict[str, str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("gcloud", FAKE_GCLOUD), ("bq", FAKE_BQ), ("python", FAKE_PYTHON)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    truth = tmp_path / "truth.jsonl"
    verdicts = [("car-1", True), ("car-2", False), ("car-3", True)]
    truth.write_text(
        "".join(
            json.dumps({"vehicle_id": v, "must_be_fined": fined}, separators=(",", ":")) + "\n"
            for v, fined in verdicts
        )
    )
    messages = [
        {"message": {"data": base64.b64encode(json.dumps(body).encode()).decode()}}
        for body in (
            {"fine_id": "f1", "is_ticketed": True},
            {"fine_id": "p2", "is_ticketed": False},
            {"fine_id": "f3", "is_ticketed": True},
            {"fine_id": "f1", "is_ticketed": True},  # a redelivery counts once
        )
    ]
    pull = tmp_path / "pull.json"
    pull.write_text(json.dumps(messages))
    calls = tmp_path / "calls.log"
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "PYTHON": str(bin_dir / "python"),
        "REAL_PYTHON": sys.executable,
        "CALLS": str(calls),
        "FAKE_TRUTH": str(truth),
        "FAKE_PULL": str(pull),
        "FAKE_BQ_COUNT": str(fines_in_bigquery),
        "SMOKE_WORK": str(tmp_path / "work"),
        "POLL_S": "0.1",
        "WAIT_JOB_S": "5",
        "WAIT_FINES_S": "2",
        "WAIT_DRAIN_S": "5",
        "HOME": str(tmp_path),
    }
    return env, calls


def run_smoke(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SMOKE), *ARGS], capture_output=True, text=True, env=env, cwd=REPO, timeout=120
    )


def test_a_passing_run_waits_for_the_fines_drains_and_cleans_up(tmp_path):
    env, calls = fake_cloud(tmp_path, fines_in_bigquery=2)
    result = run_smoke(env)
    assert result.returncode == 0, result.stderr
    assert "smoke: passed: 2 fines" in result.stderr
    log = calls.read_text().splitlines()
    drain = next(i for i, line in enumerate(log) if "jobs drain 2026-11-23_00_00_00-42" in line)
    assert log[drain + 1].startswith("gcloud dataflow jobs describe 2026-11-23_00_00_00-42")
    assert "JOB_STATE_DRAINED" not in result.stdout
    assert any("pubsub topics delete" in line for line in log[drain:])
    assert log[-1].startswith("gcloud iam service-accounts delete")
    assert not any("jobs cancel" in line for line in log)
    # Everything ran as the dry run lists it (minus the waits' repetitions).
    (tmp_path / "dry").mkdir()

    def key(argv: list[str]) -> tuple[str, ...]:
        return (Path(argv[0]).name, *argv[1:4])

    listed = {key(argv) for argv in parse(dry_run(tmp_path / "dry"))}
    assert {key(shlex.split(line)) for line in log} <= listed


def test_a_run_whose_fines_never_arrive_gives_up_cancels_and_cleans_up(tmp_path):
    env, calls = fake_cloud(tmp_path, fines_in_bigquery=0)
    result = run_smoke(env)
    assert result.returncode != 0
    assert "gave up waiting until every expected fine is in BigQuery" in result.stderr
    log = calls.read_text()
    assert "dataflow jobs cancel 2026-11-23_00_00_00-42" in log
    assert "jobs drain" not in log
    assert log.rstrip().splitlines()[-1].startswith("gcloud iam service-accounts delete")
