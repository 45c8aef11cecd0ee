"""The enforcement core on Beam's fused local runner against a plain Python loop.

    .venv/bin/python bench/core.py [--events 20000 100000] [--workers 1] [--limits fixed]

Same simulated camera events (4 detections per vehicle, one JSON body per line of a file,
as a bounded run reads them), same process, one run: (1) SectionSpeedEnforcement, bounded,
on the DirectRunner's
FnApiRunner; (2) a plain loop over the same domain functions (parse_camera_event,
grouping into sessions by vehicle, judge_traversal). Prints both rates and the ratio
(Beam / loop; issue 10's target is >= 0.25). Both must reach the same verdicts: the
script checks the counts before it prints a ratio. A benchmark, not a test.

`--limits varying` (the default, issue 28): the section has a school window, roadworks
over part of the traffic and a class limit (docs/enforcement.md, The limit in force), so
every traversal's limit is the highest in force during it; `fixed`: one limit.
"""

import argparse
import gc
import json
import os
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from generator.simulate import TrafficConfig, section_rule, simulate_traffic
from section_speed.domain import defaults
from section_speed.domain.events import CameraEvent, InvalidEvent, parse_camera_event
from section_speed.domain.judging import judge_traversal
from section_speed.domain.limits import limits_from_json
from section_speed.domain.rules import SectionCatalog, SectionRule
from section_speed.domain.sessions import split_sessions
from section_speed.domain.traversal import Rejection
from transforms.enforcement import (
    EnforcementConfig,
    SectionSpeedEnforcement,
)

GAP_S = defaults.SESSION_GAP_SECONDS
Counts = tuple[int, int, int]  # traversals, fines, failures
START_MS = 1_795_000_000_000


def camera_messages(events: int) -> list[str]:
    config = TrafficConfig(
        initial=defaults.INITIAL_COORDINATES,
        final=defaults.FINAL_COORDINATES,
        radar_id=defaults.RADAR_ID,
        vehicles=events // 4,
        rate=50.0,
        speeding_fraction=0.3,
        points=4,
        seed=7,
    )
    simulated, _ = simulate_traffic(config, START_MS)
    return [json.dumps(event.to_json(), separators=(",", ":")) for event in simulated]


def sessions(events: Iterable[CameraEvent]) -> Iterable[list[CameraEvent]]:
    """Per vehicle, the domain's session split (as the bounded core does it)."""
    by_vehicle: dict[tuple[str, str], list[CameraEvent]] = defaultdict(list)
    for event in events:
        by_vehicle[(event.radar_id, event.vehicle_id)].append(event)
    for detections in by_vehicle.values():
        yield from split_sessions(detections, GAP_S)


def plain_loop(path: Path, rules: SectionCatalog) -> Counts:
    events, failures = [], 0
    for line in path.read_text().splitlines():
        try:
            event = parse_camera_event(
                line.encode(),
                {},
                message_id=None,
                publish_time_ms=0,
                default_radar_id=defaults.RADAR_ID,
            )
        except InvalidEvent:
            failures += 1
            continue
        events.append(event)
    traversals = fines = 0
    for session in sessions(events):
        verdict = judge_traversal(session, rules.for_radar(session[0].radar_id))
        if isinstance(verdict, Rejection):
            failures += 1
        else:
            traversals += 1
            fines += verdict.is_speeding
    return traversals, fines, failures


def beam_core(path: Path, rules: SectionCatalog, workers: int) -> Counts:
    options = PipelineOptions(
        flags=[],  # not this script's own arguments
        runner="DirectRunner",
        direct_num_workers=workers,
        direct_running_mode="in_memory",
    )
    config = EnforcementConfig(defaults.RADAR_ID, rules, GAP_S, lateness=None)
    pipeline = beam.Pipeline(options=options)
    enforced = (
        pipeline
        | beam.io.ReadFromText(str(path))
        | beam.Map(lambda line: PubsubMessage(line.encode(), {}))
        | SectionSpeedEnforcement(config)
    )
    outputs = {"fined": enforced.fined, "not_fined": enforced.not_fined}
    outputs["failures"] = enforced.failures
    for name, pcoll in outputs.items():
        pcoll | f"Count{name}" >> beam.Map(_count, Metrics.counter("bench", name))
    result = pipeline.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace("bench"))["counters"]
    }
    fined, passed = counters.get("fined", 0), counters.get("not_fined", 0)
    return fined + passed, fined, counters.get("failures", 0)


def _count(_: object, counter: Any) -> None:
    counter.inc()


def timed(fn: Callable[..., Counts], *args: Any) -> tuple[Counts, float]:
    gc.collect()
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def varying(catalog: SectionCatalog) -> SectionCatalog:
    """The same section with limits that vary during the simulated traffic."""
    limits = limits_from_json({
        "time_zone": "America/New_York",
        "windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "from": "06:15",
                     "to": "16:00", "speed_limit_mph": 20, "name": "school hours"}],
        # The traffic starts 06:06:40 local: roadworks over its first ten minutes, the
        # window from its ninth; traversals cross both boundaries.
        "temporary": [{"from": "2026-11-18T11:06:40Z", "to": "2026-11-18T11:16:40Z",
                       "speed_limit_mph": 22, "reference": "RW-BENCH"}],
        "classes": {"hgv": 20},
    })  # fmt: skip
    rule = catalog.for_radar(defaults.RADAR_ID)
    return SectionCatalog(catalog.default, {defaults.RADAR_ID: replace(rule, limits=limits)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--limits", choices=("varying", "fixed"), default="varying")
    args = parser.parse_args()
    # The simulated section's ends: without them every timed speeder is dead-lettered as
    # partial (docs/enforcement.md), and the core would never take its fine path.
    section = section_rule(defaults.INITIAL_COORDINATES, defaults.FINAL_COORDINATES)
    rules = SectionCatalog(SectionRule(), {defaults.RADAR_ID: section})
    if args.limits == "varying":
        rules = varying(rules)
    print(
        f"core benchmark, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
        f"{args.limits} limits, Beam DirectRunner (FnApiRunner) vs loop"
    )
    for count in args.events:
        lines = camera_messages(count)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder, "events.jsonl")
            path.write_text("\n".join(lines) + "\n")
            loop_result, loop_s = timed(plain_loop, path, rules)
            beam_result, beam_s = timed(beam_core, path, rules, args.workers)
        if beam_result != loop_result:
            raise SystemExit(f"verdicts differ: beam {beam_result} vs loop {loop_result}")
        traversals, fines, failures = loop_result
        loop_rate, beam_rate = len(lines) / loop_s, len(lines) / beam_s
        print(
            f"{len(lines):>7} events ({traversals} traversals, {fines} fines, {failures} "
            f"failures): loop {loop_rate:,.0f} events/s, beam {beam_rate:,.0f} events/s, "
            f"ratio {beam_rate / loop_rate:.3f}"
        )


if __name__ == "__main__":
    main()
