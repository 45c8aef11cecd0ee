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

from domain.events import TIMESTAMP_ATTRIBUTE
from domain.speed import SectionRule, SectionRules
from pipeline.options import SectionSpeedOptions, invalid_options, resource_path
from transforms.parse import ParseEvents
from transforms.section_speed import FINED, NOT_FINED, SectionSpeed
from transforms.sinks import FormatTraversals, LogDeadLetters, PublishJson

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
        with_attributes=True,
        timestamp_attribute=TIMESTAMP_ATTRIBUTE,
    )
    parsed = messages | "ParseEvents" >> ParseEvents(options.radar_id)
    traversals = parsed.events | "SectionSpeed" >> SectionSpeed(
        section_rules(options), options.session_gap_seconds, options.allowed_lateness_seconds
    )
    fines = traversals[FINED] | "FormatFines" >> FormatTraversals()
    passes = traversals[NOT_FINED] | "FormatPasses" >> FormatTraversals()
    (
        (fines, passes)
        | "MergeTraversals" >> beam.Flatten()
        | "PublishTraversals"
        >> PublishJson(resource_path(project, "topics", options.output_topic), "fine_id")
    )
    if options.dead_letter_topic:
        parsed.dead_letter | "PublishDeadLetters" >> PublishJson(
            resource_path(project, "topics", options.dead_letter_topic)
        )
    else:
        parsed.dead_letter | "LogDeadLetters" >> LogDeadLetters()


def pipeline_options(argv: list[str] | None, save_main_session: bool) -> PipelineOptions:
    options = PipelineOptions(argv)
    own = options.view_as(SectionSpeedOptions)
    problems = invalid_options(own)
    if problems:
        raise ValueError("invalid options:\n  " + "\n  ".join(problems))
    # Pub/Sub input is unbounded: this pipeline only ever runs in streaming mode.
    options.view_as(StandardOptions).streaming = True
    google = options.view_as(GoogleCloudOptions)
    google.project = google.project or own.project_id
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
    """Entry point of `python -m pipeline`: run until cancelled (Ctrl-C cancels the job)."""
    result = start(argv, save_main_session)
    try:
        result.wait_until_finish()
    except KeyboardInterrupt:
        _log.info("interrupted: cancelling the pipeline")
        result.cancel()
