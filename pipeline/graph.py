"""The pipeline's whole shape: read -> enforce -> evidence -> publish, store, dead-letter.

Streaming, on the local direct runner against the Pub/Sub emulator:

    python -m pipeline --runner BundleBasedDirectRunner --streaming \\
        --project_id section-speed-local --input_subscription camera-events-sub \\
        --output_topic fines --dead_letter_topic dead-letter

Bounded, over archived detections (JSON lines, local or gs://), on Beam's fused runner:

    python -m pipeline --input_file 'archive/*.jsonl' --output_path out/day \\
        --runner DirectRunner --direct_num_workers 2

and on Google Cloud Dataflow with `--runner DataflowRunner` (docs/deploy.md). The
enforcement itself is one composite without I/O (transforms/enforcement.py); this module
only attaches sources and sinks to it.
"""

import logging
import os
from pathlib import Path

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.runners.runner import PipelineResult

from pipeline.options import SectionSpeedOptions, invalid_options, resource_path
from pipeline.startup_checks import require_valid_configuration
from section_speed.domain import defaults
from section_speed.domain.lateness import PUBLISH_TIME, WALL_CLOCK, LatenessRule
from section_speed.domain.plate_reading import CLOUD_VISION_READER, EMBEDDED_READER
from section_speed.domain.rules import SectionCatalog, SectionRule
from section_speed.domain.schemas import DEAD_LETTER, FINES, output_message
from transforms.enforcement import (
    EnforcementConfig,
    EnforcementResult,
    SectionSpeedEnforcement,
)
from transforms.enrich import (
    PLATE_BATCH_SIZE,
    PLATE_BATCH_WAIT_S,
    EnrichFine,
    evidence_services,
)
from transforms.failures import Failure, ToDeadLetterRecords, to_dead_letter_record
from transforms.sinks import (
    FormatTraversals,
    IdentityRows,
    LogDeadLetters,
    PublishJson,
    WriteJsonLines,
    retention_checked,
)
from transforms.warehouse import (
    INSERT_WAIT_S,
    SpeedRows,
    ToWarehouseRows,
    WriteToWarehouse,
    warehouse_factory,
)
from transforms.worker_clients import ClientHandler

_log = logging.getLogger(__name__)

LOCAL_STREAMING_RUNNER = "BundleBasedDirectRunner"
SETUP_FILE = Path(__file__).resolve().parents[1] / "setup.py"  # in a source checkout


def build_pipeline(pipeline: beam.Pipeline, options: SectionSpeedOptions) -> None:
    """Apply every step of the section-speed pipeline to `pipeline`."""
    bounded = bool(options.input_file)
    messages = read_files(pipeline, options) if bounded else read_pubsub(pipeline, options)
    enforced: EnforcementResult = messages | "SectionSpeedEnforcement" >> (
        SectionSpeedEnforcement(enforcement_config(options, bounded))
    )
    failures = [enforced.failures]
    if options.cars_api:
        fines, evidence_failures = enforced.fined | "EnrichFines" >> EnrichFine(
            evidence_services(
                cars_api=options.cars_api,
                plate_reader=options.plate_reader,
                min_confidence=options.plate_min_confidence,
                reader_threads=options.plate_reader_threads,
                bucket=options.bucket,
                project=options.project_id,
                photo_hosts=options.photo_hosts,
            ),
            batch_wait_s=None if bounded else PLATE_BATCH_WAIT_S,
        )
        failures.append(evidence_failures)
    else:  # no evidence stage configured: fines go out with their measurement only
        fines = enforced.fined | "FormatFines" >> FormatTraversals()
    passes = enforced.not_fined | "FormatPasses" >> FormatTraversals()
    records = (fines, passes) | "AllTraversals" >> beam.Flatten()
    if bounded:
        (
            records
            | "CourseCompatible" >> beam.Map(output_message)
            | "WriteTraversals" >> WriteJsonLines(f"{options.output_path}-traversals")
        )
    else:  # a superset of the course's output message, so its consumers read it unchanged
        records | "PublishTraversals" >> PublishJson(
            topic(options, options.output_topic), to_record=output_message, id_field="fine_id"
        )
    if options.bq_dataset:
        retention_days = options.non_offender_retention_days
        # Workers write nothing until the tables keep non-offenders' ids no longer than that.
        warehouse = ClientHandler(
            retention_checked(
                warehouse_factory(options.project_id, options.bq_dataset), retention_days
            )
        )
        measured = (enforced.fined, enforced.not_fined) | "Measured" >> beam.Flatten()
        rows = (
            fines | "FineRows" >> ToWarehouseRows(FINES),
            # A withdrawn fine's row says so (not ticketed, why), no evidence fetched.
            enforced.withdrawn_fines
            | "FormatWithdrawnFines" >> FormatTraversals()
            | "WithdrawnFineRows" >> ToWarehouseRows(FINES),
            # Every traversal's speeds; vehicle_id only for a fine.
            measured | "SpeedRows" >> SpeedRows(),
            # Who a non-offender was, apart, in partitions that expire (none with 0 days).
            *([measured | "IdentityRows" >> IdentityRows()] if retention_days > 0 else []),
        ) | "WarehouseRows" >> beam.Flatten()
        insert_wait_s = None if bounded else INSERT_WAIT_S
        failures.append(rows | "WriteToBigQuery" >> WriteToWarehouse(warehouse, insert_wait_s))
    # Dead letters are written in a stage of their own: a failing write retries only
    # itself, not the parse or evidence work before it. The grouping also keeps the local
    # runner, which runs every step up to the first grouping after each pull, from running
    # the dead-letter sinks' steps on pulls that had no failure. The sinks format the
    # Failures as they write.
    dead_letters = (
        failures
        | "AllFailures" >> beam.Flatten().with_output_types(Failure)  # for their JSON coder
        | "DeadLettersApart" >> beam.Reshuffle()
    )
    if bounded:
        (
            dead_letters
            | "DeadLetters" >> ToDeadLetterRecords()
            | "WriteDeadLetters" >> WriteJsonLines(f"{options.output_path}-dead_letter")
        )
    elif options.dead_letter_topic:
        dead_letters | "PublishDeadLetters" >> PublishJson(
            topic(options, options.dead_letter_topic), to_record=to_dead_letter_record
        )
    else:
        dead_letters | "LogDeadLetters" >> LogDeadLetters()
    if options.bq_dataset:
        (
            dead_letters
            | "DeadLetterRows" >> ToWarehouseRows(DEAD_LETTER, to_record=to_dead_letter_record)
            # Dead letters are few, and need no keyed wait to fill an insert: batched
            # within bundles (four steps fewer than GroupIntoBatches on each local pull).
            | "WriteDeadLettersToBigQuery" >> WriteToWarehouse(warehouse, batch_wait_s=None)
            | "LogUnwritableDeadLetters" >> LogDeadLetters()
        )


def read_pubsub(pipeline: beam.Pipeline, options: SectionSpeedOptions) -> beam.PCollection:
    return pipeline | "ReadCameraEvents" >> beam.io.ReadFromPubSub(
        subscription=resource_path(options.project_id, "subscriptions", options.input_subscription),
        # No timestamp_attribute: elements carry their publish time, which the watermark
        # follows and lateness is judged against, and a malformed `ts` attribute cannot
        # fail Beam's reader. ParseEvents stamps each detection with its body's time.
        with_attributes=True,
    )


def read_files(pipeline: beam.Pipeline, options: SectionSpeedOptions) -> beam.PCollection:
    """Archived camera events, one JSON message body per line, as Pub/Sub would carry them."""
    return (
        pipeline
        | "ReadCameraEventFiles" >> beam.io.ReadFromText(options.input_file)
        | "AsMessages" >> beam.Map(lambda line: PubsubMessage(line.encode("utf-8"), {}))
    )


def topic(options: SectionSpeedOptions, name: str) -> str:
    return resource_path(options.project_id, "topics", name)


def enforcement_config(options: SectionSpeedOptions, bounded: bool) -> EnforcementConfig:
    gap = options.session_gap_seconds
    lateness = LatenessRule(gap, options.allowed_lateness_seconds, options.lateness_clock)
    return EnforcementConfig(
        default_radar_id=options.radar_id,
        rules=section_rules(options),
        gap_seconds=gap,
        lateness=None if bounded else lateness,
    )


def section_rules(options: SectionSpeedOptions) -> SectionCatalog:
    """The defaults from the flags, overridden per radar by --sections_file (local or gs://)."""
    default = SectionRule(
        options.speed_limit_mph, options.tolerance_mph, max_speed_mph=options.max_speed_mph
    )
    if not options.sections_file:
        _log.info(
            "no --sections_file: no section's entry and exit are known, so a timed traversal "
            "over the limit is dead-lettered as partial, never fined (docs/enforcement.md); "
            "timeless (course) traffic is judged as usual"
        )
        return SectionCatalog(default)
    with FileSystems.open(options.sections_file) as sections:
        return SectionCatalog.from_json(sections.read().decode("utf-8"), default)


def runs_on_dataflow(options: PipelineOptions) -> bool:
    """Whether --runner names Dataflow (DataflowRunner, dataflow, or the class's full path)."""
    runner = options.view_as(StandardOptions).runner or ""
    name = runner.rsplit(".", 1)[-1].lower()
    return name in ("dataflow", "dataflowrunner")


def pipeline_options(argv: list[str] | None, save_main_session: bool) -> PipelineOptions:
    options = PipelineOptions(argv)
    own = options.view_as(SectionSpeedOptions)
    problems = invalid_options(own)
    if problems:
        raise ValueError("invalid options:\n  " + "\n  ".join(problems))
    # Pub/Sub input is unbounded: streaming. Files are bounded: a batch job.
    standard = options.view_as(StandardOptions)
    standard.streaming = not own.input_file
    if standard.runner is None and standard.streaming:
        # The course's command names no runner. Beam's default may hand a streaming job
        # to Prism, which downloads a binary (no network: fails) and mishandles sessions.
        standard.runner = LOCAL_STREAMING_RUNNER
    # One project for both: a Flex Template launch passes only Beam's --project.
    google = options.view_as(GoogleCloudOptions)
    own.project_id = own.project_id or google.project or defaults.PROJECT_ID
    google.project = google.project or own.project_id
    on_dataflow = runs_on_dataflow(options)
    if own.plate_reader is None:
        own.plate_reader = CLOUD_VISION_READER if on_dataflow else EMBEDDED_READER
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


def ship_the_package(options: PipelineOptions) -> None:
    """Dataflow workers need this package: from the image, or staged from setup.py.

    The course's Dataflow command passes only --requirements_file, which would leave the
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


def start(argv: list[str] | None = None, save_main_session: bool = True) -> PipelineResult:
    """Build and launch the pipeline; a streaming run keeps going after this returns."""
    options = pipeline_options(argv, save_main_session)
    # Before the first pull: a missing bucket or credential fails here, with its fix named.
    require_valid_configuration(options)
    pipeline = beam.Pipeline(options=options)
    own = options.view_as(SectionSpeedOptions)
    build_pipeline(pipeline, own)
    result = pipeline.run()
    # Streaming runs go on from here (local tooling waits for this line); a bounded run on
    # a local runner has already read everything by now.
    source = own.input_file or resource_path(
        own.project_id, "subscriptions", own.input_subscription
    )
    _log.info("pipeline running: reading %s", source)
    return result


def run(argv: list[str] | None = None, save_main_session: bool = True) -> None:
    """Entry point of `python -m pipeline` and of the Flex Template (main.py).

    Locally it runs until cancelled (Ctrl-C cancels the pipeline), or to the end of a
    bounded input. On Dataflow it returns once the job is submitted: the streaming job
    runs on until drained, and a Flex Template launch must not block in
    wait_until_finish (Google's Flex Template guide).
    """
    result = start(argv, save_main_session)
    if runs_on_dataflow(PipelineOptions(argv)):
        _log_submitted(result)
        return
    try:
        result.wait_until_finish()
    except KeyboardInterrupt:
        _log.info("interrupted: cancelling the pipeline")
        result.cancel()


def _log_submitted(result: PipelineResult) -> None:
    if getattr(result, "has_job", False):  # submitted directly by DataflowRunner
        _log.info(
            "Dataflow job %s submitted; it runs until drained (gcloud dataflow jobs drain %s)",
            result.job_id(),
            result.job_id(),
        )
    else:  # Flex Template launch (the service submits the staged graph) or --dry_run
        _log.info("Dataflow job graph built; the Dataflow service starts the job")
