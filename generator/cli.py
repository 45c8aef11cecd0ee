"""Command line of the traffic generator: simulate, record, replay and publish camera events.

The flags are defined and checked in `generator.arguments`; here they are run.
"""

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from generator.arguments import (
    build_parser,
    check_flag_combinations,
    topic_path,
    traffic_config,
)
from generator.course_traffic import CourseTrafficConfig, simulate_course_traffic
from generator.event_files import read_events_jsonl, rebase, write_events_jsonl, write_jsonl
from generator.publish import PublishError, publish_events
from generator.simulate import (
    TrafficConfig,
    longest_camera_intervals,
    section_rule,
    sections_file_text,
    simulate_traffic,
)
from generator.truth import COURSE_FINE_ABOVE_KMH, TruthRecord, truth_from_events
from section_speed.domain.events import CameraEvent
from section_speed.domain.rules import SectionRule
from section_speed.domain.traversal import SPOT_MEAN

logger = logging.getLogger("generator")


def main(argv: list[str] | None = None) -> int:
    """Run the generator; returns the process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    check_flag_combinations(parser, args)
    topic = topic_path(parser, args.project_id, args.topic_name)
    try:
        if args.replay is not None:
            # The section the recording was made on: the rule its sections file gives.
            rule = section_rule(
                args.initial_coordinates,
                args.final_coordinates,
                args.speed_limit_mph,
                args.tolerance_mph,
            )
            return _replay(parser, args, topic, rule)
        config = traffic_config(parser, args)
        _write_sections_file(parser, args)
        if args.output is not None:
            return _record(args, config)
        return _live(args, config, topic)
    except PublishError as error:
        logger.error("%s", error)
        return 1


def _simulate(
    config: TrafficConfig | CourseTrafficConfig, start_ms: int
) -> tuple[list[CameraEvent], list[TruthRecord]]:
    if isinstance(config, CourseTrafficConfig):
        return simulate_course_traffic(config, start_ms)
    return simulate_traffic(config, start_ms)


def _write_sections_file(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.sections_file is None:
        return
    try:
        rule = section_rule(
            args.initial_coordinates,
            args.final_coordinates,
            args.speed_limit_mph,
            args.tolerance_mph,
        )
    except ValueError as error:
        parser.error(f"--sections_file: {error}")
    args.sections_file.write_text(sections_file_text(args.radar_id, rule), encoding="utf-8")
    logger.info("wrote the sections file for %s to %s", args.radar_id, args.sections_file)


def warn_about_session_gap(events: Sequence[CameraEvent], gap_seconds: float) -> int:
    """Warn (stderr) when vehicles take longer between cameras than the session gap.

    The pipeline would split each such traversal into sessions of one detection, which are
    no measurement. Returns how many vehicles are affected.
    """
    intervals = longest_camera_intervals(events)
    slow = [seconds for seconds in intervals.values() if seconds >= gap_seconds]
    if slow:
        logger.warning(
            "%d of %d vehicles take up to %.1f s between cameras, not less than the session "
            "gap of %g s: the pipeline would split their traversals into sessions of one "
            "detection and measure none of them. Use more --points (or leave --points out), "
            "or run the pipeline and the generator with --session_gap_seconds above %.0f",
            len(slow),
            len(intervals),
            max(slow),
            gap_seconds,
            max(slow),
        )
    return len(slow)


def _record(args: argparse.Namespace, config: TrafficConfig | CourseTrafficConfig) -> int:
    start_ms = args.start_time if args.start_time is not None else _now_ms()
    events, truth = _simulate(config, start_ms)
    warn_about_session_gap(events, args.session_gap_seconds)
    count = write_events_jsonl(args.output, events)
    _write_truth(args.truth, truth)
    _summary(f"wrote {count} events", truth, f"to {args.output}")
    return 0


def _live(args: argparse.Namespace, config: TrafficConfig | CourseTrafficConfig, topic: str) -> int:
    events, truth = _simulate(config, _now_ms())
    warn_about_session_gap(events, args.session_gap_seconds)
    _write_truth(args.truth, truth)  # before publishing, so a checker can read it meanwhile
    count = publish_events(events, topic, speedup=args.speedup)
    _summary(f"published {count} events", truth, f"to {topic}")
    return 0


def _replay(
    parser: argparse.ArgumentParser, args: argparse.Namespace, topic: str, rule: SectionRule
) -> int:
    try:
        recorded = read_events_jsonl(args.replay, default_radar_id=args.radar_id)
    except (OSError, ValueError) as error:
        parser.error(f"--replay: {error}")
    if not recorded:
        parser.error(f"--replay: no events in {args.replay}")
    events = rebase(recorded, _now_ms())
    warn_about_session_gap(events, args.session_gap_seconds)
    truth = truth_from_events(events, rule)
    _write_truth(args.truth, truth)
    count = publish_events(events, topic, speedup=args.speedup)
    _summary(f"published {count} events", truth, f"to {topic}", vehicles=_vehicles(events))
    return 0


def _write_truth(path: Path | None, truth: Sequence[TruthRecord]) -> None:
    if path is not None:
        write_jsonl(path, (record.to_json() for record in truth))
        logger.info("wrote truth for %d vehicles to %s", len(truth), path)


def _summary(
    done: str, truth: Sequence[TruthRecord], where: str, vehicles: int | None = None
) -> None:
    speeders = sum(record.must_be_fined for record in truth)
    vehicles = len(truth) if vehicles is None else vehicles
    course = ""
    if any(record.speed_method == SPOT_MEAN for record in truth):
        by_course = sum(bool(record.course_fined) for record in truth)
        course = f", {by_course} by the course's > {COURSE_FINE_ABOVE_KMH:g} km/h rule"
    print(
        f"generator: {done} for {vehicles} vehicles ({speeders} speeders{course}) {where}",
        file=sys.stderr,
    )


def _vehicles(events: Sequence[CameraEvent]) -> int:
    return len({(event.radar_id, event.vehicle_id) for event in events})


def _now_ms() -> int:
    return int(time.time() * 1000)
