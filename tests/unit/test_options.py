import json
import os
import re
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import GoogleCloudOptions, SetupOptions, StandardOptions

from pipeline.graph import section_rules
from pipeline.options import OPTION_SPECS, SectionSpeedOptions, pipeline_options, resource_path
from section_speed.domain.rules import SectionRule
from section_speed.domain.traversal import IMPLAUSIBLE, PARTIAL, UNMEASURABLE
from transforms.enrich import PLATE_BATCH_SIZE
from transforms.failures import DEAD_LETTER_STAGES

# The design card's options, in its order (docs/reference.md): the contract the class keeps.
DESIGN_OPTIONS = [
    "project_id", "input_subscription", "output_topic", "radar_id", "cars_api", "bucket",
    "bq_dataset", "speed_limit_mph", "tolerance_mph", "session_gap_seconds",
    "allowed_lateness_seconds", "sections_file", "plate_reader", "plate_min_confidence",
    "dead_letter_topic", "photo_hosts",
    # Added with issues 10, 11 and 13 (docs/reference.md): the plausibility gate, the clock
    # lateness is judged against, a bounded run over files, and how many photos a worker
    # process reads at once.
    "max_speed_mph", "lateness_clock", "input_file", "output_path", "plate_reader_threads",
    # Issue 18: how long the warehouse may keep who a vehicle that was not fined was.
    "non_offender_retention_days",
    # Issue 28: the sections file read again while streaming, and signalled limits.
    "rules_refresh_seconds", "limit_signals_subscription",
    # Issue 29: a timeless session with fewer readings is partial (a split session).
    "min_spot_readings",
]  # fmt: skip


def test_options_class_has_exactly_the_design_options():
    assert [spec.name for spec in OPTION_SPECS] == DESIGN_OPTIONS


def test_the_course_command_line_runs_streaming_on_the_local_runner():
    course = [
        "--project_id", "edem-course", "--radar_id", "Adriana",
        "--input_subscription", "projects/edem-course/subscriptions/camera-in-sub",
        "--output_topic", "projects/edem-course/topics/camera-out",
        "--cars_api", "https://europe-west1-edem-course.cloudfunctions.net/car-api",
    ]  # fmt: skip
    options = pipeline_options(course, save_main_session=False)
    standard = options.view_as(StandardOptions)
    assert standard.streaming and standard.runner == "BundleBasedDirectRunner"
    assert options.view_as(SectionSpeedOptions).bucket is None  # optional, as in the course
    bounded = pipeline_options(["--input_file=a.jsonl", "--output_path=o"], False)
    assert not bounded.view_as(StandardOptions).streaming
    assert bounded.view_as(StandardOptions).runner is None  # Beam's batch default


def test_defaults_and_streaming_are_set():
    options = pipeline_options(["--speed_limit_mph", "30"], save_main_session=False)
    own = options.view_as(SectionSpeedOptions)
    assert own.speed_limit_mph == 30.0 and own.tolerance_mph == 0.0
    assert own.session_gap_seconds == 60 and own.plate_reader == "embedded"
    assert options.view_as(StandardOptions).streaming is True
    assert options.view_as(GoogleCloudOptions).project == own.project_id


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input_subscription", "projects/p/subscriptions/x y"], "input_subscription"),
        (["--output_topic", "9starts-with-digit"], "output_topic"),
        (["--bucket", "gs://with-scheme"], "bucket"),
        (["--plate_min_confidence", "1.5"], "plate_min_confidence"),
        (["--plate_reader_threads", "0"], "plate_reader_threads"),
    ],
)
def test_invalid_values_are_rejected_with_the_option_named(argv, message):
    with pytest.raises(ValueError, match=message):
        pipeline_options(argv, save_main_session=False)


@pytest.mark.parametrize(
    ("argv", "reader"),
    [
        ([], "embedded"),
        (["--runner", "BundleBasedDirectRunner"], "embedded"),
        (["--runner", "DataflowRunner"], "cloud-vision"),
        (["--runner", "dataflow"], "cloud-vision"),
        (["--runner=apache_beam.runners.dataflow.dataflow_runner.DataflowRunner"], "cloud-vision"),
        (["--runner", "DataflowRunner", "--plate_reader", "embedded"], "embedded"),
        (["--plate_reader", "cloud-vision"], "cloud-vision"),
    ],
)
def test_plate_reader_defaults_to_cloud_vision_on_dataflow_only(argv, reader):
    options = pipeline_options(argv, save_main_session=False)
    assert options.view_as(SectionSpeedOptions).plate_reader == reader


@pytest.mark.parametrize(
    ("argv", "project_id", "project"),
    [
        ([], "section-speed-local", "section-speed-local"),
        (["--project_id", "topics-proj"], "topics-proj", "topics-proj"),
        # A Flex Template launch passes only Beam's --project: the topics live there too.
        (["--project", "job-proj"], "job-proj", "job-proj"),
        (["--project", "job-proj", "--project_id", "topics-proj"], "topics-proj", "job-proj"),
    ],
)
def test_project_id_and_beam_project_fill_each_other(argv, project_id, project):
    options = pipeline_options(argv, save_main_session=False)
    assert options.view_as(SectionSpeedOptions).project_id == project_id
    assert options.view_as(GoogleCloudOptions).project == project


@pytest.mark.parametrize(
    ("argv", "threads"),
    [
        ([], min(len(os.sched_getaffinity(0)), PLATE_BATCH_SIZE)),
        (["--runner", "DataflowRunner"], 1),
        (["--runner", "DataflowRunner", "--plate_reader_threads", "3"], 3),
        (["--plate_reader_threads", "1"], 1),
    ],
)
def test_plate_reader_threads_default_to_one_per_sdk_process_on_dataflow(argv, threads):
    options = pipeline_options(argv, save_main_session=False)
    assert options.view_as(SectionSpeedOptions).plate_reader_threads == threads


def test_unknown_plate_reader_is_an_argparse_error():
    with pytest.raises(SystemExit):
        pipeline_options(["--plate_reader", "tesseract"], save_main_session=False).view_as(
            SectionSpeedOptions
        )


def test_resource_paths_accept_short_names_and_full_paths():
    assert resource_path("p", "topics", "fines") == "projects/p/topics/fines"
    assert resource_path("p", "topics", "projects/q/topics/t") == "projects/q/topics/t"


def test_sections_file_overrides_the_flags_for_its_radars(tmp_path):
    sections = tmp_path / "sections.json"
    sections.write_text(json.dumps({"radar-9": {"speed_limit_mph": 40, "length_m": 900}}))
    options = pipeline_options(
        ["--sections_file", str(sections), "--tolerance_mph", "2"], save_main_session=False
    ).view_as(SectionSpeedOptions)
    rules = section_rules(options)
    assert rules.for_radar("radar-9") == SectionRule(40.0, 2.0, 900.0)
    assert rules.for_radar("radar-1") == SectionRule(25.0, 2.0, None)


def test_the_docs_tables_are_generated_from_the_code():
    from pipeline import docs

    for page in docs.PAGES:
        text = page.read_text()
        assert docs.render(page, text) == text, f"docs/{page.name} is stale: run `make docs`"


def test_every_dead_letter_stage_is_registered_once_and_in_the_reference():
    from pipeline import docs

    names = [stage.name for stage in DEAD_LETTER_STAGES]
    assert len(set(names)) == len(names)
    # JudgeTraversal dead-letters a rejected session under its kind.
    assert {UNMEASURABLE, IMPLAUSIBLE, PARTIAL} <= set(names)
    text = docs.REFERENCE.read_text()
    block = text.split("dead-letter-stages:start -->")[1].split("<!-- dead-letter-stages:end")[0]
    assert re.findall(r"^\| `([^`]+)` \|", block, re.MULTILINE) == names


def test_on_dataflow_the_package_reaches_the_workers_by_image_or_setup_file():
    course = ["--runner=DataflowRunner", "--project=edem-course", "--requirements_file=r.txt"]
    staged = pipeline_options(course, save_main_session=False).view_as(SetupOptions)
    assert staged.setup_file == str(Path(__file__).resolve().parents[2] / "setup.py")
    image = [*course, "--sdk_container_image=us-docker.pkg.dev/p/r/section-speed:1"]
    assert pipeline_options(image, save_main_session=False).view_as(SetupOptions).setup_file is None
    local = pipeline_options([], save_main_session=False).view_as(SetupOptions)
    assert local.setup_file is None  # the local runner imports the package in place
