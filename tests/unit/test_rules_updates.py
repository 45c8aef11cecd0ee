"""The sections file as a slowly updating side input (docs/enforcement.md, Changing limits on
a running job): a change applies to traversals that begin after it, without a redeploy."""

import json
import logging
import threading
import time
from dataclasses import replace
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.transforms.window import TimestampedValue

from section_speed.domain.lateness import PUBLISH_TIME, LatenessRule
from section_speed.domain.rules import RulesSnapshot, SectionCatalog, SectionRule
from section_speed.domain.traversal import mph_to_kmh
from tests.helpers import ENTRY, EXIT, T0_MS, track
from tests.unit.test_deploy import (
    DATAFLOW_ARGS,
    built_pipeline,
    no_network,  # noqa: F401 (a fixture: no connection made)
    transform_names,
)
from tests.unit.test_enforcement import message
from tests.unit.test_transforms import ClockedStream, streaming_pipeline
from transforms.enforcement import EnforcementConfig, SectionSpeedEnforcement
from transforms.rules_updates import ReadSectionsFileFn, SectionsFileUpdates

GAP_S, LATENESS_S, REFRESH_S = 30, 60, 60
INTERVAL_MS = REFRESH_S * 1000
BASE_MS = -(-T0_MS // INTERVAL_MS) * INTERVAL_MS  # an interval's start


def sections(limit_mph: float) -> str:
    return json.dumps({"radar-1": {"speed_limit_mph": limit_mph, "entry": list(ENTRY),
                                   "exit": list(EXIT)}})  # fmt: skip


V1 = SectionCatalog.from_json(sections(25), SectionRule())
V2 = SectionCatalog.from_json(sections(30), SectionRule())  # the limit raised while running


def test_a_rules_file_changed_while_the_pipeline_runs_applies_from_its_interval_on():
    # Two snapshots, as the refresh reads them: 25 mph, then 30 mph one interval later.
    snapshots = [
        TimestampedValue(RulesSnapshot(BASE_MS, V1), BASE_MS / 1000),
        TimestampedValue(RulesSnapshot(BASE_MS + INTERVAL_MS, V2), (BASE_MS + INTERVAL_MS) / 1000),
    ]
    # 28 mph in each interval; the second vehicle enters 10 s into the new version's interval.
    before = track("before", mph_to_kmh(28), start_ms=BASE_MS + 10_000)
    after = track("after", mph_to_kmh(28), start_ms=BASE_MS + INTERVAL_MS + 10_000)
    stream = (
        ClockedStream()
        .advance_watermark_to(BASE_MS / 1000)
        .add_elements([message(e) for e in before])
        .advance_watermark_to((BASE_MS + INTERVAL_MS) / 1000)
        .add_elements([message(e) for e in after])
        .advance_watermark_to_infinity()
    )
    config = EnforcementConfig(
        default_radar_id="radar-1",
        rules=SectionCatalog(SectionRule(10.0)),  # at start; every interval here has a snapshot
        gap_seconds=GAP_S,
        lateness=LatenessRule(GAP_S, LATENESS_S, PUBLISH_TIME),
        clock=lambda: (BASE_MS + 3 * INTERVAL_MS) / 1000,
    )
    p = streaming_pipeline()
    updates = (
        p
        | "Snapshots" >> beam.Create(snapshots)
        | "Intervals" >> beam.WindowInto(window.FixedWindows(REFRESH_S))
    )
    result = p | stream | SectionSpeedEnforcement(config, updates)
    judged = (result.fined, result.not_fined) | beam.Flatten()
    assert_that(
        judged
        | beam.Map(lambda t: (t.vehicle_id, t.speed_limit_mph, t.is_speeding, t.rules_version)),
        equal_to([("before", 25.0, True, V1.version), ("after", 30.0, False, V2.version)]),
    )
    p.run()


def test_a_session_in_an_interval_without_a_snapshot_takes_the_rules_read_at_start():
    events = track("early", mph_to_kmh(28), start_ms=BASE_MS + 10_000)
    stream = (
        ClockedStream()
        .advance_watermark_to(BASE_MS / 1000)
        .add_elements([message(e) for e in events])
        .advance_watermark_to_infinity()
    )
    later = BASE_MS + 5 * INTERVAL_MS
    config = EnforcementConfig("radar-1", V2, GAP_S, LatenessRule(GAP_S, LATENESS_S, PUBLISH_TIME),
                               clock=lambda: later / 1000)  # fmt: skip
    p = streaming_pipeline()
    updates = (
        p
        | "Snapshots" >> beam.Create([TimestampedValue(RulesSnapshot(later, V1), later / 1000)])
        | "Intervals" >> beam.WindowInto(window.FixedWindows(REFRESH_S))
    )
    result = p | stream | SectionSpeedEnforcement(config, updates)
    assert_that(
        result.not_fined | beam.Map(lambda t: (t.speed_limit_mph, t.rules_version)),
        equal_to([(30.0, V2.version)]),
    )
    p.run()


class _Reads(logging.Handler):
    """Counts the reader's 'rules version' log lines: the test waits on them, not a sleep."""

    def __init__(self) -> None:
        super().__init__()
        self.versions: list[str] = []
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "rules version" in record.getMessage():
            self.versions.append(record.getMessage())
            self.seen.set()


def test_periodic_impulse_reads_the_file_again_and_a_change_shows_in_later_intervals(
    tmp_path: Path,
):
    """Beam's pattern (PeriodicImpulse, windowed) on the bounded DirectRunner, the file
    changed while it runs."""
    path = tmp_path / "sections.json"
    path.write_text(sections(25))
    reads = _Reads()
    logger = logging.getLogger("transforms.rules_updates")
    logger.addHandler(reads)
    logger.setLevel(logging.INFO)

    done = threading.Event()

    def change_after_first_read() -> None:
        while not done.is_set():
            if reads.seen.wait(timeout=0.1):
                path.write_text(sections(30))
                return

    out = tmp_path / "snapshots.txt"

    def record(snapshot: RulesSnapshot, w: window.BoundedWindow = beam.DoFn.WindowParam) -> None:
        with out.open("a") as lines:  # the runner is in this process: a file collects output
            lines.write(f"{w.start.micros} {snapshot.catalog.version}\n")

    changer = threading.Thread(target=change_after_first_read)
    changer.start()
    start = time.time()
    try:
        p = TestPipeline(runner="DirectRunner")
        _ = (
            p
            | PeriodicImpulse(start, start + 4, fire_interval=1.0, apply_windowing=True)
            | beam.ParDo(ReadSectionsFileFn(str(path), SectionRule()))
            | beam.Map(record)
        )
        p.run().wait_until_finish()
    finally:
        done.set()
        changer.join(timeout=10)
        logger.removeHandler(reads)
    found = sorted(tuple(line.split()) for line in out.read_text().splitlines())
    _first_v1_last_v2([(int(start), version) for start, version in found])
    assert len(reads.versions) == 2  # read as 25 mph, then as 30 mph: logged once each


def _first_v1_last_v2(found: list[tuple[int, str]]) -> None:
    versions = [version for _, version in found]
    assert len(versions) == 4, versions  # one snapshot per interval
    assert versions[0] == V1.version and versions[-1] == V2.version, versions


def test_a_wrong_file_is_not_applied_and_the_last_good_version_is_kept(tmp_path: Path):
    path = tmp_path / "sections.json"
    path.write_text(sections(25))
    reader = ReadSectionsFileFn(str(path), SectionRule())
    reader.setup()
    assert [s.catalog.version for s in reader.process(0)] == [V1.version]
    path.write_text('{"radar-1": {"speed_limit_mph": -5}}')
    assert [s.catalog.version for s in reader.process(1)] == [V1.version]
    path.unlink()
    assert [s.catalog.version for s in reader.process(2)] == [V1.version]


@pytest.mark.parametrize("refresh_s", [60])
def test_the_local_runner_ticks_with_the_detections(tmp_path: Path, refresh_s: int):
    """BundleBasedDirectRunner cannot run PeriodicImpulse: one snapshot per interval that
    has detections, at their event time."""
    path = tmp_path / "sections.json"
    path.write_text(sections(25))
    events = [
        *track("a", 50.0, start_ms=BASE_MS + 1_000),
        *track("b", 50.0, start_ms=BASE_MS + 2 * INTERVAL_MS + 1_000),
    ]
    stream = (
        ClockedStream()
        .advance_watermark_to(BASE_MS / 1000)
        .add_elements([message(e) for e in events])
        .advance_watermark_to_infinity()
    )
    p = streaming_pipeline()
    snapshots = (
        p
        | stream
        | SectionsFileUpdates(str(path), SectionRule(), refresh_s, default_radar_id="radar-1")
    )
    assert_that(
        snapshots
        | beam.Map(lambda s, w=beam.DoFn.WindowParam: (w.start.micros // 1000, s.catalog.version)),
        equal_to([(BASE_MS, V1.version), (BASE_MS + 2 * INTERVAL_MS, V1.version)]),
    )
    p.run()


def test_a_heavy_goods_vehicle_is_fined_under_its_class_limit_through_the_composite():
    """The class goes from the camera's message to the record: hgv at 23 mph on a 25 mph
    section with a 20 mph hgv limit is fined (source class); a car at 23 mph is not."""
    text = json.dumps({"radar-1": {"speed_limit_mph": 25, "entry": list(ENTRY),
                                   "exit": list(EXIT), "classes": {"hgv": 20}}})  # fmt: skip
    rules = SectionCatalog.from_json(text, SectionRule())
    lorry = [replace(e, vehicle_class="hgv") for e in track("lorry", mph_to_kmh(23))]
    car = track("car", mph_to_kmh(23), start_ms=T0_MS + 1_000)
    stream = (
        ClockedStream()
        .advance_watermark_to(T0_MS / 1000)
        .add_elements([message(e) for e in [*lorry, *car]])
        .advance_watermark_to_infinity()
    )
    config = EnforcementConfig("radar-1", rules, GAP_S,
                               LatenessRule(GAP_S, LATENESS_S, PUBLISH_TIME),
                               clock=lambda: T0_MS / 1000 + 30)  # fmt: skip
    p = streaming_pipeline()
    result = p | stream | SectionSpeedEnforcement(config)
    judged = (result.fined, result.not_fined) | beam.Flatten()
    assert_that(
        judged
        | beam.Map(
            lambda t: (
                t.vehicle_id,
                t.vehicle_class,
                t.speed_limit_mph,
                t.limit_source,
                t.is_speeding,
                t.rules_version,
            )
        ),
        equal_to(
            [
                ("lorry", "hgv", 20.0, "class", True, rules.version),
                ("car", None, 25.0, "default", False, rules.version),
            ]
        ),
    )
    p.run()


def test_the_graph_reads_the_file_with_periodic_impulse_on_dataflow_and_ticks_locally(
    tmp_path: Path,
    no_network,  # noqa: F811 (the fixture imported above)
):
    """Dataflow gets Beam's PeriodicImpulse and the signals' subscription; the local runner,
    which cannot run PeriodicImpulse, the detections' ticks. Built offline (a dry run)."""
    path = tmp_path / "sections.json"
    path.write_text(sections(25))
    own = [f"--sections_file={path}", "--limit_signals_subscription=limit-signals-sub"]
    dataflow = transform_names(built_pipeline([*DATAFLOW_ARGS, *own]).run().job.proto_pipeline)
    local = transform_names(
        built_pipeline(["--runner=BundleBasedDirectRunner", *own]).to_runner_api()
    )
    measure = "SectionSpeedEnforcement/MeasureTraversals"
    for names in (dataflow, local):
        assert "ReadLimitSignals" in names
        assert "SectionSpeedEnforcement/ParseLimitSignals" in names
        assert f"{measure}/ApplyLimitSignals/ApplySignals" in names
        assert f"{measure}/IdentifyTraversals" in names  # the identity state's step: unchanged
    assert "SectionsFileUpdates/Ticks" in dataflow
    assert "SectionsFileUpdates/TicksAtEventTime" not in dataflow
    assert "SectionsFileUpdates/TicksAtEventTime" in local
    assert "SectionsFileUpdates/Ticks" not in local
    assert no_network == []
