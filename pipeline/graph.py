"""The pipeline's whole shape: read -> enforce -> evidence -> the sinks -> dead letters.

Streaming, on the local direct runner against the Pub/Sub emulator:

    python -m pipeline --runner BundleBasedDirectRunner --streaming \\
        --project_id section-speed-local --input_subscription camera-events-sub \\
        --output_topic fines --dead_letter_topic dead-letter

Bounded, over archived detections (JSON lines, local or gs://), on Beam's fused runner:

    python -m pipeline --input_file 'archive/*.jsonl' --output_path out/day \\
        --runner DirectRunner --direct_num_workers 2

and on Google Cloud Dataflow with `--runner DataflowRunner` (docs/deploy.md). The
enforcement itself is one composite without I/O (transforms/enforcement.py); this module
attaches sources to it and the sinks of `TRAVERSAL_SINKS` and `DEAD_LETTER_SINKS` after it.
"""

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from pipeline.options import (
    SectionSpeedOptions,
    pipeline_options,
    resource_path,
    runs_on_dataflow,
)
from pipeline.startup_checks import require_valid_configuration
from pipeline.stop_report import log_stop_report
from section_speed.clients.warehouse import Warehouse
from section_speed.domain.lag import LagMonitor
from section_speed.domain.lateness import LatenessRule
from section_speed.domain.rules import SectionCatalog, SectionRule
from section_speed.domain.schemas import DEAD_LETTER
from transforms.enforcement import (
    EnforcementConfig,
    EnforcementResult,
    SectionSpeedEnforcement,
)
from transforms.enrich import PLATE_BATCH_WAIT_S, EnrichFine
from transforms.evidence_services import EvidenceServices, evidence_services
from transforms.failures import Failure, to_dead_letter_record
from transforms.parse import read_monitor
from transforms.rules_updates import SectionsFileUpdates, read_sections_file
from transforms.sinks import (
    FormatTraversals,
    LogDeadLetters,
    PublishJson,
    PublishTraversals,
    TraversalOutputs,
    TraversalRows,
    WriteJsonLines,
    WriteTraversalFiles,
    retention_checked,
)
from transforms.warehouse import (
    INSERT_WAIT_S,
    ToWarehouseRows,
    WriteToWarehouse,
    warehouse_factory,
)
from transforms.worker_clients import ClientHandler

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sink:
    """One output of the graph: its step label (what a Dataflow update matches it by), when
    the options want it, and the PTransform, whose result's `failures` become dead letters.
    `writes` and `only_with` describe it in docs/architecture.md's sinks table (`make docs`)."""

    label: str
    wanted: Callable[[SectionSpeedOptions], bool]
    transform: Callable[[SectionSpeedOptions], beam.PTransform]
    writes: str
    only_with: str = ""


def bounded(options: SectionSpeedOptions) -> bool:
    return bool(options.input_file)


def streaming(options: SectionSpeedOptions) -> bool:
    return not options.input_file


def topic(options: SectionSpeedOptions, name: str) -> str:
    return resource_path(options.project_id, "topics", name)


def warehouse(options: SectionSpeedOptions) -> ClientHandler[Warehouse]:
    """The warehouse client; workers write nothing until the tables keep non-offenders'
    ids no longer than --non_offender_retention_days."""
    return ClientHandler(
        retention_checked(
            warehouse_factory(options.project_id, options.bq_dataset),
            options.non_offender_retention_days,
        )
    )


def insert_wait_s(options: SectionSpeedOptions) -> float | None:
    return None if bounded(options) else INSERT_WAIT_S


# Sinks of TraversalOutputs. Adding one is one entry here (docs/development.md).
TRAVERSAL_SINKS: tuple[Sink, ...] = (
    Sink(
        "PublishTraversals",
        streaming,
        lambda o: PublishTraversals(topic(o, o.output_topic)),
        writes="every traversal's record to the output topic, plus output keys "
        "([course.md](course.md))",
        only_with="streaming",
    ),
    Sink(
        "WriteTraversals",
        bounded,
        lambda o: WriteTraversalFiles(f"{o.output_path}-traversals"),
        writes="the same records to `PREFIX-traversals-*.jsonl`",
        only_with="`--input_file`",
    ),
    Sink(
        "WriteToBigQuery",
        lambda o: bool(o.bq_dataset),
        lambda o: WriteToWarehouse(
            warehouse(o), insert_wait_s(o), rows=TraversalRows(o.non_offender_retention_days)
        ),
        writes="`fines` and `vehicle_speeds` rows, and `vehicle_identities` rows with "
        "`--non_offender_retention_days` > 0 ([warehouse.md](warehouse.md))",
        only_with="`--bq_dataset`",
    ),
)

# Sinks of the dead letters (Failures); what they cannot write is logged.
DEAD_LETTER_SINKS: tuple[Sink, ...] = (
    Sink(
        "PublishDeadLetters",
        lambda o: streaming(o) and bool(o.dead_letter_topic),
        lambda o: PublishJson(topic(o, o.dead_letter_topic), to_record=to_dead_letter_record),
        writes="the dead-letter topic",
        only_with="streaming, `--dead_letter_topic`",
    ),
    Sink(
        "LogDeadLetters",
        lambda o: streaming(o) and not o.dead_letter_topic,
        lambda o: LogDeadLetters(),
        writes="a warning in the log",
        only_with="streaming, no `--dead_letter_topic`",
    ),
    Sink(
        "WriteDeadLetters",
        bounded,
        lambda o: WriteJsonLines(f"{o.output_path}-dead_letter", to_record=to_dead_letter_record),
        writes="`PREFIX-dead_letter-*.jsonl`",
        only_with="`--input_file`",
    ),
    Sink(
        "WriteDeadLettersToBigQuery",
        lambda o: bool(o.bq_dataset),
        # Dead letters are few: batched within bundles, with no keyed wait.
        lambda o: WriteToWarehouse(
            warehouse(o), None, rows=ToWarehouseRows(DEAD_LETTER, to_dead_letter_record)
        ),
        writes="the `dead_letter` table; a row it refuses is logged (`LogUnwritableDeadLetters`)",
        only_with="`--bq_dataset`",
    ),
)


def build_pipeline(
    pipeline: beam.Pipeline, options: SectionSpeedOptions
) -> ClientHandler[LagMonitor] | None:
    """Apply every step of the section-speed pipeline to `pipeline`; returns the read monitor
    (streaming), whose tally the stop report gives."""
    messages = read_files(pipeline, options) if bounded(options) else read_pubsub(pipeline, options)
    config = enforcement_config(options)
    enforced: EnforcementResult = messages | "SectionSpeedEnforcement" >> (
        SectionSpeedEnforcement(
            config,
            rules_updates(pipeline, messages, options),
            read_limit_signals(pipeline, options),
        )
    )
    failures = [enforced.failures]
    if options.cars_api:
        enriched = enforced.fined | "EnrichFines" >> EnrichFine(
            evidence_services_of(options),
            batch_wait_s=None if bounded(options) else PLATE_BATCH_WAIT_S,
        )
        fine_records = enriched.records
        failures.append(enriched.failures)
    else:  # no evidence stage configured: fines go out with their measurement only
        fine_records = enforced.fined | "FormatFines" >> FormatTraversals()
    passes = enforced.not_fined | "FormatPasses" >> FormatTraversals()
    outputs = TraversalOutputs(
        records=(fine_records, passes) | "AllTraversals" >> beam.Flatten(),
        fine_records=fine_records,
        fined=enforced.fined,
        not_fined=enforced.not_fined,
        withdrawn_fines=enforced.withdrawn_fines,
    )
    failures += apply_sinks(TRAVERSAL_SINKS, outputs, options)
    write_dead_letters(failures, options)
    return config.monitor


def apply_sinks(
    sinks: tuple[Sink, ...], elements: Any, options: SectionSpeedOptions
) -> list[beam.PCollection]:
    """Each sink the options want, applied to `elements`: the failures of those that have any."""
    results = [
        elements | sink.label >> sink.transform(options) for sink in sinks if sink.wanted(options)
    ]
    return [result.failures for result in results if result.failures is not None]


def write_dead_letters(failures: list[beam.PCollection], options: SectionSpeedOptions) -> None:
    """Failures of every stage -> each dead-letter sink; what those refuse, to the log.

    Written in a stage of their own, after a reshuffle: a failing write retries only
    itself, not the parse or evidence work before it (docs/architecture.md, Runners).
    """
    dead_letters = (
        failures
        | "AllFailures" >> beam.Flatten().with_output_types(Failure)  # for their JSON coder
        | "DeadLettersApart" >> beam.Reshuffle()
    )
    unwritable = apply_sinks(DEAD_LETTER_SINKS, dead_letters, options)
    if unwritable:
        (
            unwritable
            | "UnwritableDeadLetters" >> beam.Flatten().with_output_types(Failure)
            | "LogUnwritableDeadLetters" >> LogDeadLetters()
        )


def evidence_services_of(options: SectionSpeedOptions) -> EvidenceServices:
    return evidence_services(
        cars_api=options.cars_api,
        plate_reader=options.plate_reader,
        min_confidence=options.plate_min_confidence,
        reader_threads=options.plate_reader_threads,
        bucket=options.bucket,
        project=options.project_id,
        photo_hosts=options.photo_hosts,
    )


def read_pubsub(pipeline: beam.Pipeline, options: SectionSpeedOptions) -> beam.PCollection:
    return pipeline | "ReadCameraEvents" >> beam.io.ReadFromPubSub(
        subscription=resource_path(options.project_id, "subscriptions", options.input_subscription),
        # No timestamp_attribute: elements carry their publish time, which the watermark
        # follows and lateness is judged against, and a malformed `ts` attribute cannot
        # fail Beam's reader. ParseEvents stamps each detection with its body's time.
        with_attributes=True,
    )


def read_limit_signals(
    pipeline: beam.Pipeline, options: SectionSpeedOptions
) -> beam.PCollection | None:
    """Signalled limits (streaming, --limit_signals_subscription), applied by event time."""
    if bounded(options) or not options.limit_signals_subscription:
        return None
    return pipeline | "ReadLimitSignals" >> beam.io.ReadFromPubSub(
        subscription=resource_path(
            options.project_id, "subscriptions", options.limit_signals_subscription
        ),
        with_attributes=True,
    )


def read_files(pipeline: beam.Pipeline, options: SectionSpeedOptions) -> beam.PCollection:
    """Archived camera events, one JSON message body per line, as Pub/Sub would carry them."""
    return (
        pipeline
        | "ReadCameraEventFiles" >> beam.io.ReadFromText(options.input_file)
        | "AsMessages" >> beam.Map(lambda line: PubsubMessage(line.encode("utf-8"), {}))
    )


def rules_updates(
    pipeline: beam.Pipeline, messages: beam.PCollection, options: SectionSpeedOptions
) -> beam.PCollection | None:
    """Streaming with --sections_file: the file read again every --rules_refresh_seconds.

    PeriodicImpulse ticks, except on the local direct runner, which cannot run it: there
    the detections tick (transforms/rules_updates.py). A bounded run judges under the file
    as read at start.
    """
    if bounded(options) or not options.sections_file:
        return None
    updates = SectionsFileUpdates(
        options.sections_file,
        default_rule(options),
        options.rules_refresh_seconds,
        default_radar_id=options.radar_id,
        allowed_lateness_seconds=options.allowed_lateness_seconds,
    )
    if runs_periodic_impulse(options):
        return pipeline | "SectionsFileUpdates" >> updates
    return messages | "SectionsFileUpdates" >> updates


def runs_periodic_impulse(options: PipelineOptions) -> bool:
    """Whether the runner runs PeriodicImpulse in streaming: not Beam's direct runners."""
    runner = options.view_as(StandardOptions).runner or ""
    return runner.rsplit(".", 1)[-1] not in ("DirectRunner", "BundleBasedDirectRunner")


def enforcement_config(options: SectionSpeedOptions) -> EnforcementConfig:
    gap = options.session_gap_seconds
    lateness = LatenessRule(gap, options.allowed_lateness_seconds, options.lateness_clock)
    return EnforcementConfig(
        default_radar_id=options.radar_id,
        rules=section_rules(options),
        gap_seconds=gap,
        lateness=None if bounded(options) else lateness,  # nothing in files is late
        min_spot_readings=options.min_spot_readings,
        monitor=None if bounded(options) else read_monitor(lateness),
    )


def default_rule(options: SectionSpeedOptions) -> SectionRule:
    return SectionRule(
        options.speed_limit_mph, options.tolerance_mph, max_speed_mph=options.max_speed_mph
    )


def section_rules(options: SectionSpeedOptions) -> SectionCatalog:
    """The defaults from the flags, overridden per section by --sections_file (local or gs://)."""
    default = default_rule(options)
    if not options.sections_file:
        _log.info(
            "no --sections_file: no section's entry and exit are known, so a timed traversal "
            "over the limit is dead-lettered as partial, never fined (docs/enforcement.md); "
            "timeless traffic is judged as usual"
        )
        return SectionCatalog(default)
    return read_sections_file(options.sections_file, default)


def start(argv: list[str] | None = None, save_main_session: bool = True) -> PipelineResult:
    """Build and launch the pipeline; a streaming run keeps going after this returns."""
    return _launch(argv, save_main_session)[0]


def _launch(
    argv: list[str] | None, save_main_session: bool
) -> tuple[PipelineResult, ClientHandler[LagMonitor] | None]:
    options = pipeline_options(argv, save_main_session)
    # Before the first pull: a missing bucket or credential fails here, with its fix named.
    require_valid_configuration(options)
    pipeline = beam.Pipeline(options=options)
    own = options.view_as(SectionSpeedOptions)
    monitor = build_pipeline(pipeline, own)
    result = pipeline.run()
    # Streaming runs go on from here (local tooling waits for this line); a bounded run on
    # a local runner has already read everything by now.
    source = own.input_file or resource_path(
        own.project_id, "subscriptions", own.input_subscription
    )
    _log.info("pipeline running: reading %s", source)
    return result, monitor


def run(argv: list[str] | None = None, save_main_session: bool = True) -> None:
    """Entry point of `python -m pipeline` and of the Flex Template (main.py).

    Locally it runs until cancelled (Ctrl-C cancels the pipeline), or to the end of a
    bounded input. On Dataflow it returns once the job is submitted: the streaming job
    runs on until drained, and a Flex Template launch must not block in
    wait_until_finish (Google's Flex Template guide).
    """
    result, monitor = _launch(argv, save_main_session)
    if runs_on_dataflow(PipelineOptions(argv)):
        _log_submitted(result)
        return
    # A local stop (Ctrl-C, or SIGTERM from a process manager) says what the pipeline still
    # held before it goes (pipeline/stop_report.py).
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        result.wait_until_finish()
    except KeyboardInterrupt as stop:
        if monitor is not None:
            log_stop_report(monitor)
        if str(stop) == signal.SIGTERM.name:
            # As SIGTERM's default would, now that the report is out: a cancel waits for the
            # runner's threads, which may block in a 30 s pull.
            logging.shutdown()
            os._exit(128 + signal.SIGTERM)
        _log.info("interrupted: cancelling the pipeline")
        result.cancel()
        return
    if monitor is not None:
        log_stop_report(monitor)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _log_submitted(result: PipelineResult) -> None:
    if getattr(result, "has_job", False):  # submitted directly by DataflowRunner
        _log.info(
            "Dataflow job %s submitted; it runs until drained (gcloud dataflow jobs drain %s)",
            result.job_id(),
            result.job_id(),
        )
    else:  # Flex Template launch (the service submits the staged graph) or --dry_run
        _log.info("Dataflow job graph built; the Dataflow service starts the job")
