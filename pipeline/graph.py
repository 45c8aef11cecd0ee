"""The pipeline's whole shape: read -> parse -> sessions -> speed -> branch -> sinks.

Runs locally on the BundleBasedDirectRunner against the Pub/Sub emulator:

    python -m pipeline --runner BundleBasedDirectRunner --streaming \\
        --project_id section-speed-local --input_subscription camera-events-sub \\
        --output_topic fines --dead_letter_topic dead-letter

and on Google Cloud Dataflow with `--runner DataflowRunner --project ... --region ...
--temp_location gs://BUCKET/tmp --setup_file ./setup.py` (see README.md, Deploy).
"""

import logging

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
)
from apache_beam.runners.runner import PipelineResult

from pipeline.clients.plate_readers import CLOUD_VISION_READER, EMBEDDED_READER
from pipeline.domain import defaults
from pipeline.domain.schemas import DEAD_LETTER, FINES
from pipeline.domain.speed import SectionRule, SectionRules
from pipeline.options import SectionSpeedOptions, invalid_options, resource_path
from pipeline.transforms.enrich import EnrichFine, EvidenceConfig
from pipeline.transforms.lateness import DropRepeatedTraversals, RejectTooLate
from pipeline.transforms.parse import ParseEvents
from pipeline.transforms.section_speed import FINED, NOT_FINED, SectionSpeed
from pipeline.transforms.sinks import FormatTraversals, LogDeadLetters, PublishJson
from pipeline.transforms.warehouse import SpeedRows, ToWarehouseRows, WarehouseSinks

_log = logging.getLogger(__name__)


def section_rules(options: SectionSpeedOptions) -> SectionRules:
    """The defaults from the flags, overridden per radar by --sections_file (local or gs://)."""
    default = SectionRule(options.speed_limit_mph, options.tolerance_mph)
    if not options.sections_file:
        return SectionRules(default)
    with FileSystems.open(options.sections_file) as sections:
        return SectionRules.from_json(sections.read().decode("utf-8"), default)


def build_pipeline(pipeline: beam.Pipeline, options: SectionSpeedOptions) -> None:
    """Apply every step of the section-speed pipeline to `pipeline`."""
    project = options.project_id
    messages = pipeline | "ReadCameraEvents" >> beam.io.ReadFromPubSub(
        subscription=resource_path(project, "subscriptions", options.input_subscription),
        # No timestamp_attribute: Beam's reader fails the pipeline on a malformed `ts`
        # attribute before any code of ours sees it. ParseEvents stamps each event with the
        # body's time instead and dead-letters a `ts` that disagrees.
        with_attributes=True,
    )
    parsed = messages | "ParseEvents" >> ParseEvents(options.radar_id)
    gap, lateness = options.session_gap_seconds, options.allowed_lateness_seconds
    on_time = parsed.events | "RejectTooLate" >> RejectTooLate(gap, lateness)
    traversals = on_time.events | "SectionSpeed" >> SectionSpeed(
        section_rules(options), gap, lateness
    )
    repeats_window = dedupe_seconds(options)
    fined = traversals[FINED] | "DropRepeatedFines" >> DropRepeatedTraversals(repeats_window)
    passed = traversals[NOT_FINED] | "DropRepeatedPasses" >> DropRepeatedTraversals(repeats_window)
    dead_letters = [parsed.dead_letter, on_time.dead_letter]
    if options.cars_api:
        fines, evidence_failures = fined | "EnrichFines" >> EnrichFine(evidence_config(options))
        dead_letters.append(evidence_failures)
    else:  # no evidence stage configured: fines go out with their measurement only
        fines = fined | "FormatFines" >> FormatTraversals()
    passes = passed | "FormatPasses" >> FormatTraversals()
    (
        (fines, passes)
        | "MergeTraversals" >> beam.Flatten()
        | "PublishTraversals"
        >> PublishJson(resource_path(project, "topics", options.output_topic), "fine_id")
    )
    if options.bq_dataset:
        warehouse = WarehouseSinks(project, options.bq_dataset, dedupe_seconds(options))
        all_traversals = (fined, passed) | "AllTraversals" >> beam.Flatten()
        rows = (
            fines | "FineRows" >> ToWarehouseRows(FINES),
            all_traversals | "SpeedRows" >> SpeedRows(),
        ) | "WarehouseRows" >> beam.Flatten()
        dead_letters.append(rows | "WriteToBigQuery" >> warehouse.write())
    dead_letters = dead_letters | "AllDeadLetters" >> beam.Flatten()
    if options.dead_letter_topic:
        dead_letters | "PublishDeadLetters" >> PublishJson(
            resource_path(project, "topics", options.dead_letter_topic)
        )
    else:
        dead_letters | "LogDeadLetters" >> LogDeadLetters()
    if options.bq_dataset:
        (
            dead_letters
            | "DeadLetterRows" >> ToWarehouseRows(DEAD_LETTER)
            | "WriteDeadLettersToBigQuery" >> warehouse.write()
            | "LogUnwritableDeadLetters" >> LogDeadLetters()
        )


def evidence_config(options: SectionSpeedOptions) -> EvidenceConfig:
    return EvidenceConfig(
        cars_api=options.cars_api,
        bucket=options.bucket,
        project=options.project_id,
        plate_reader=options.plate_reader,
        min_confidence=options.plate_min_confidence,
    )


def dedupe_seconds(options: SectionSpeedOptions) -> int:
    """How long a written row's id is remembered: past every late re-fire, plus margin."""
    return options.session_gap_seconds + options.allowed_lateness_seconds + 300


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
    # Pub/Sub input is unbounded: this pipeline only ever runs in streaming mode.
    options.view_as(StandardOptions).streaming = True
    # One project for both: a Flex Template launch passes only Beam's --project.
    google = options.view_as(GoogleCloudOptions)
    own.project_id = own.project_id or google.project or defaults.PROJECT_ID
    google.project = google.project or own.project_id
    if own.plate_reader is None:
        own.plate_reader = CLOUD_VISION_READER if runs_on_dataflow(options) else EMBEDDED_READER
    options.view_as(SetupOptions).save_main_session = save_main_session
    return options


def start(argv: list[str] | None = None, save_main_session: bool = True) -> PipelineResult:
    """Build and launch the pipeline; a streaming run keeps going after this returns."""
    options = pipeline_options(argv, save_main_session)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, options.view_as(SectionSpeedOptions))
    result = pipeline.run()
    own = options.view_as(SectionSpeedOptions)
    _log.info(
        "pipeline running: reading %s, writing %s",
        resource_path(own.project_id, "subscriptions", own.input_subscription),
        resource_path(own.project_id, "topics", own.output_topic),
    )
    return result


def run(argv: list[str] | None = None, save_main_session: bool = True) -> None:
    """Entry point of `python -m pipeline` and of the Flex Template (main.py).

    Locally it runs until cancelled (Ctrl-C cancels the pipeline). On Dataflow it returns
    once the job is submitted: the streaming job runs on until drained, and a Flex Template
    launch must not block in wait_until_finish (Google's Flex Template guide).
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
