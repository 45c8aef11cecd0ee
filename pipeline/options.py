"""Every pipeline option, defined once (docs/reference.md, Options), and the defaults that
depend on the runner.

`OPTION_SPECS` is the single table behind `SectionSpeedOptions` (argparse flags),
the Flex Template's metadata.json and docs/reference.md's option table, so the three can
never drift apart. `pipeline_options` parses a command line into them and fills in what
depends on the runner: the local streaming runner, the plate reader and its threads, the
lateness clock, the package the Dataflow workers need.
"""

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)

from section_speed.clients.cars_api import DEFAULT_PHOTO_HOSTS, invalid_cars_api
from section_speed.domain import defaults
from section_speed.domain.defaults import PLATE_MIN_CONFIDENCE
from section_speed.domain.events import ID_PATTERN
from section_speed.domain.lateness import LATENESS_CLOCKS, PUBLISH_TIME, WALL_CLOCK
from section_speed.domain.plate_reading import (
    CASCADE_READER,
    CLOUD_VISION_READER,
    EMBEDDED_READER,
    PLATE_READERS,
)
from transforms.enrich import PLATE_BATCH_SIZE

_log = logging.getLogger(__name__)

LOCAL_STREAMING_RUNNER = "BundleBasedDirectRunner"
SETUP_FILE = Path(__file__).resolve().parents[1] / "setup.py"  # in a source checkout


@dataclass(frozen=True)
class OptionSpec:
    name: str
    label: str
    help: str
    type: type = str
    default: Any = None
    regex: str | None = None  # the value Flex Templates accept, also checked at parse time
    choices: tuple[str, ...] | None = None

    @property
    def is_optional(self) -> bool:
        return True  # every option has a local default, or enables an optional stage


_PUBSUB_NAME = r"[A-Za-z][-A-Za-z0-9._~%+]{2,254}"
SUBSCRIPTION_REGEX = rf"^(projects/[a-z][-a-z0-9:.]{{4,61}}[a-z0-9]/subscriptions/)?{_PUBSUB_NAME}$"
TOPIC_REGEX = rf"^(projects/[a-z][-a-z0-9:.]{{4,61}}[a-z0-9]/topics/)?{_PUBSUB_NAME}$"
NUMBER_REGEX = r"^[0-9]+(\.[0-9]+)?$"
INTEGER_REGEX = r"^[0-9]+$"
_HOST_NAME = r"[A-Za-z0-9]([-A-Za-z0-9.]{0,251}[A-Za-z0-9])?"
PHOTO_HOSTS_REGEX = rf"^({_HOST_NAME}(,{_HOST_NAME})*)?$"

OPTION_SPECS: tuple[OptionSpec, ...] = (
    OptionSpec(
        "project_id",
        "Project ID",
        "Google Cloud project of the topics and subscription; default: Beam's --project "
        f"(the job's project on Dataflow), else {defaults.PROJECT_ID}.",
        regex=r"^[a-z][-a-z0-9:.]{4,61}[a-z0-9]$",
    ),
    OptionSpec(
        "input_subscription",
        "Input subscription",
        "Pub/Sub subscription of camera events: a name in --project_id or "
        "projects/PROJECT/subscriptions/NAME.",
        default=defaults.INPUT_SUBSCRIPTION,
        regex=SUBSCRIPTION_REGEX,
    ),
    OptionSpec(
        "output_topic",
        "Output topic",
        "Pub/Sub topic for fines and measured traversals (JSON).",
        default=defaults.OUTPUT_TOPIC,
        regex=TOPIC_REGEX,
    ),
    OptionSpec(
        "radar_id",
        "Default radar id",
        "Section id given to timeless messages, which carry none (docs/course.md).",
        default=defaults.RADAR_ID,
        regex=f"^{ID_PATTERN.pattern}$",
    ),
    OptionSpec(
        "cars_api",
        "Cars API URL",
        "Cars API URL; enables fine evidence (photo, plate). A template with {vehicle_id}, "
        "e.g. http://HOST/cars/{vehicle_id} (a bare http://HOST means HOST/cars/{vehicle_id}). "
        'Without {vehicle_id}: GET URL answers {"image_url": ...} (docs/course.md).',
        regex=r"^https?://[^\s/$.?#].[^\s]*$",
    ),
    OptionSpec(
        "bucket",
        "Evidence bucket",
        "Cloud Storage bucket for copies of fine photos (no gs://); without it no copy is "
        "kept and image_url is the cars API's photo URL.",
        regex=r"^[a-z0-9][-_.a-z0-9]{1,61}[a-z0-9]$",
    ),
    OptionSpec(
        "bq_dataset",
        "BigQuery dataset",
        "Dataset for the fines, vehicle_speeds, vehicle_identities and dead_letter tables.",
        regex=r"^[A-Za-z0-9_]{1,1024}$",
    ),
    OptionSpec(
        "speed_limit_mph",
        "Speed limit (mph)",
        "Default section speed limit.",
        type=float,
        default=defaults.SPEED_LIMIT_MPH,
        regex=NUMBER_REGEX,
    ),
    OptionSpec(
        "tolerance_mph",
        "Tolerance (mph)",
        "Fined only when the average speed exceeds limit + tolerance.",
        type=float,
        default=defaults.TOLERANCE_MPH,
        regex=NUMBER_REGEX,
    ),
    OptionSpec(
        "session_gap_seconds",
        "Session gap (s)",
        "Detections of one vehicle further apart than this start a new traversal.",
        type=int,
        default=defaults.SESSION_GAP_SECONDS,
        regex=INTEGER_REGEX,
    ),
    OptionSpec(
        "allowed_lateness_seconds",
        "Allowed lateness (s)",
        "How late (event time behind the watermark) a detection may still count.",
        type=int,
        default=defaults.ALLOWED_LATENESS_SECONDS,
        regex=INTEGER_REGEX,
    ),
    OptionSpec(
        "sections_file",
        "Sections file",
        "JSON file (local path or gs://) keyed by radar_id: each section's speed_limit_mph, "
        "tolerance_mph, length_m, entry and exit ([lat, lon]), end_radius_m, max_speed_mph, "
        "and the limits that vary (time_zone, windows, temporary, classes); overrides the "
        "defaults per section; read again while streaming (docs/enforcement.md).",
        regex=r"^(gs://)?[^\s]+\.json$",
    ),
    OptionSpec(
        "plate_reader",
        "Plate reader",
        "Licence-plate reader: embedded OCR, Google Cloud Vision, or the cascade (embedded "
        "first, Cloud Vision only for the photos it cannot accept, docs/plates.md); default: "
        "embedded locally; on DataflowRunner cascade when the workers run the image "
        "(--sdk_container_image, which ships the embedded OCR), else cloud-vision.",
        choices=PLATE_READERS,
        regex=rf"^({'|'.join(PLATE_READERS)})$",
    ),
    OptionSpec(
        "plate_min_confidence",
        "Plate minimum confidence",
        "Plates read with a lower confidence (0..1) are reported as unreadable.",
        type=float,
        default=PLATE_MIN_CONFIDENCE,
        regex=r"^(0(\.[0-9]+)?|1(\.0+)?)$",
    ),
    OptionSpec(
        "dead_letter_topic",
        "Dead-letter topic",
        "Pub/Sub topic for rejected inputs and failed stages (JSON with the reason).",
        regex=TOPIC_REGEX,
    ),
    OptionSpec(
        "photo_hosts",
        "Photo hosts",
        "Comma-separated host names that the cars API's photo URLs may point to besides the "
        "API's own host (default: Cloud Storage, where a fixed-URL API's photos are); fetched "
        "over https only, never from a loopback, private or link-local address; empty: the "
        "API's host only.",
        default=",".join(DEFAULT_PHOTO_HOSTS),
        regex=PHOTO_HOSTS_REGEX,
    ),
    OptionSpec(
        "max_speed_mph",
        "Maximum plausible speed (mph)",
        "A measured average above this is no car's speed but a faulty measurement: never "
        "fined, dead-lettered as implausible. A sections file may set it per section.",
        type=float,
        default=defaults.MAX_SPEED_MPH,
        regex=NUMBER_REGEX,
    ),
    OptionSpec(
        "lateness_clock",
        "Lateness clock",
        "What a detection's lateness is judged against: publish_time (Dataflow, whose "
        "Pub/Sub watermark follows publish times) or wall_clock (the local direct runner, "
        "whose watermark is the clock); default: publish_time on DataflowRunner, else "
        "wall_clock.",
        choices=LATENESS_CLOCKS,
        regex=rf"^({'|'.join(LATENESS_CLOCKS)})$",
    ),
    OptionSpec(
        "input_file",
        "Input files",
        "Bounded run: camera events as JSON lines (a local or gs:// glob) instead of "
        "--input_subscription; needs --output_path.",
        regex=r"^[^\s]+$",
    ),
    OptionSpec(
        "output_path",
        "Output path prefix",
        "Bounded run: traversals go to PREFIX-traversals-*.jsonl and dead letters to "
        "PREFIX-dead_letter-*.jsonl (local or gs://).",
        regex=r"^[^\s]+$",
    ),
    OptionSpec(
        "plate_reader_threads",
        "Plate reader threads",
        "Photos one worker process reads at once with the embedded reader, each on one "
        "core; default: 1 on DataflowRunner (which runs one SDK process per vCPU), else the "
        "cores this process may use, at most the photos of one batch (the local runner is one "
        "process).",
        type=int,
        regex=r"^[1-9][0-9]{0,2}$",
    ),
    OptionSpec(
        "non_offender_retention_days",
        "Non-offender identity retention (days)",
        "Days the warehouse keeps who a vehicle that was not fined was. vehicle_speeds never "
        "holds a non-offender's vehicle_id; with N > 0 the vehicle_identities table does, "
        "and its day partitions expire after N days (python -m pipeline.provision "
        "--non_offender_retention_days N sets that; workers check it); 0: never written. "
        "docs/warehouse.md, Retention.",
        type=int,
        default=defaults.NON_OFFENDER_RETENTION_DAYS,
        regex=r"^[0-9]{1,5}$",
    ),
    OptionSpec(
        "rules_refresh_seconds",
        "Sections file refresh (s)",
        "Streaming: the sections file is read again every this many seconds, so that a "
        "change of limits applies without a redeploy; a traversal is judged under the "
        "version read in the interval it began in (docs/enforcement.md, Changing limits).",
        type=int,
        default=defaults.RULES_REFRESH_SECONDS,
        regex=r"^[1-9][0-9]{0,5}$",
    ),
    OptionSpec(
        "limit_signals_subscription",
        "Limit signals subscription",
        "Streaming: Pub/Sub subscription of signalled limits, JSON messages "
        '{"signal_id", "radar_id", "speed_limit_mph" (null: signalling off), '
        '"in_force_from" (RFC 3339)}, applied by event time like detections '
        "(docs/enforcement.md, Signalled limits).",
        regex=SUBSCRIPTION_REGEX,
    ),
    OptionSpec(
        "min_spot_readings",
        "Minimum spot readings",
        "A timeless (course) session with fewer distinct spot readings is partial: "
        "dead-lettered, never judged, as a session cut short, most often by a pipeline that "
        "fell behind; the course's generator sends 10 per vehicle (docs/course.md).",
        type=int,
        default=defaults.MIN_SPOT_READINGS,
        regex=r"^([2-9]|[1-9][0-9]{1,2})$",
    ),
)


class SectionSpeedOptions(PipelineOptions):
    """The pipeline's own options; Beam's (--runner, --streaming, ...) come from Beam."""

    @classmethod
    def _add_argparse_args(cls, parser: Any) -> None:
        for spec in OPTION_SPECS:
            parser.add_argument(
                f"--{spec.name}",
                type=spec.type,
                default=spec.default,
                choices=spec.choices,
                help=spec.help + (f" Default: {spec.default}." if spec.default is not None else ""),
            )


def invalid_options(options: SectionSpeedOptions) -> list[str]:
    """Values that do not match their option's regex, as messages."""
    problems = []
    for spec in OPTION_SPECS:
        value = getattr(options, spec.name)
        if value is not None and spec.regex and not re.match(spec.regex, str(value)):
            problems.append(f"--{spec.name}={value!r} does not match {spec.regex}")
    if bool(options.input_file) != bool(options.output_path):
        problems.append("--input_file and --output_path go together (a bounded run)")
    cars_api_problem = invalid_cars_api(options.cars_api) if options.cars_api else None
    if cars_api_problem:
        problems.append(f"--cars_api={options.cars_api!r} {cars_api_problem}")
    return problems


def resource_path(project_id: str, kind: str, name: str) -> str:
    """projects/P/KIND/NAME for a short name; a full path is returned unchanged."""
    return name if name.startswith("projects/") else f"projects/{project_id}/{kind}/{name}"


def runs_on_dataflow(options: PipelineOptions) -> bool:
    """Whether --runner names Dataflow (DataflowRunner, dataflow, or the class's full path)."""
    runner = options.view_as(StandardOptions).runner or ""
    name = runner.rsplit(".", 1)[-1].lower()
    return name in ("dataflow", "dataflowrunner")


def pipeline_options(argv: list[str] | None, save_main_session: bool) -> PipelineOptions:
    """The command line's options, checked, with every runner-dependent default filled in."""
    options = PipelineOptions(argv)
    own = options.view_as(SectionSpeedOptions)
    problems = invalid_options(own)
    if problems:
        raise ValueError("invalid options:\n  " + "\n  ".join(problems))
    # Pub/Sub input is unbounded: streaming. Files are bounded: a batch job.
    standard = options.view_as(StandardOptions)
    standard.streaming = not own.input_file
    if standard.runner is None and standard.streaming:
        # A streaming command without --runner stays local
        # (docs/course.md, docs/architecture.md Runners).
        standard.runner = LOCAL_STREAMING_RUNNER
    # One project for both: a Flex Template launch passes only Beam's --project.
    google = options.view_as(GoogleCloudOptions)
    own.project_id = own.project_id or google.project or defaults.PROJECT_ID
    google.project = google.project or own.project_id
    on_dataflow = runs_on_dataflow(options)
    if own.plate_reader is None:
        own.plate_reader = default_plate_reader(options, on_dataflow)
    if own.plate_reader_threads is None:
        # More engines than a batch has photos would never read at once.
        cores = min(len(os.sched_getaffinity(0)), PLATE_BATCH_SIZE)
        own.plate_reader_threads = 1 if on_dataflow else cores
    if own.lateness_clock is None:  # what the runner's Pub/Sub watermark follows
        own.lateness_clock = PUBLISH_TIME if on_dataflow else WALL_CLOCK
    if on_dataflow:
        ship_the_package(options)
    options.view_as(SetupOptions).save_main_session = save_main_session
    return options


def default_plate_reader(options: PipelineOptions, on_dataflow: bool) -> str:
    """Embedded locally. On Dataflow the cascade, which pays Cloud Vision only for the
    photos the embedded reader cannot accept, where the workers run the image (its
    Dockerfile installs the embedded OCR); Cloud Vision where they install the package
    staged from setup.py, which holds no extra (docs/plates.md, The cascade)."""
    if not on_dataflow:
        return EMBEDDED_READER
    if options.view_as(WorkerOptions).sdk_container_image:
        return CASCADE_READER
    return CLOUD_VISION_READER


def ship_the_package(options: PipelineOptions) -> None:
    """Dataflow workers need this package: from the image, or staged from setup.py.

    A Dataflow command with only --requirements_file (docs/course.md) would leave the
    workers without it; from a source checkout, setup.py is staged in that case.
    """
    setup = options.view_as(SetupOptions)
    if options.view_as(WorkerOptions).sdk_container_image or setup.setup_file:
        return
    if not SETUP_FILE.exists():
        raise ValueError(
            "invalid options: Dataflow workers need the pipeline package: pass "
            "--sdk_container_image IMAGE (docs/deploy.md) or --setup_file ./setup.py"
        )
    setup.setup_file = str(SETUP_FILE)
    _log.info("staging the pipeline package for the workers from %s", SETUP_FILE)
