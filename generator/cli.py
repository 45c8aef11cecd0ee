"""Command line of the traffic generator: simulate, record, replay and publish camera events."""

import argparse
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from generator.publish import PublishError, publish_events
from generator.simulate import (
    TrafficConfig,
    TruthRecord,
    parse_coordinates,
    read_events_jsonl,
    rebase,
    simulate_traffic,
    truth_from_events,
    write_events_jsonl,
    write_jsonl,
)
from pipeline.domain import defaults
from pipeline.domain.events import CameraEvent, InvalidEvent, parse_rfc3339_ms
from pipeline.domain.speed import SectionRule

logger = logging.getLogger("generator")

T = TypeVar("T")

_TOPIC_PATH = re.compile(r"^projects/[^/\s]+/topics/[^/\s]+$")


def main(argv: list[str] | None = None) -> int:
    """Run the generator; returns the process exit code."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_combinations(parser, args)
    topic = topic_path(parser, args.project_id, args.topic_name)
    rule = SectionRule(args.speed_limit_mph, args.tolerance_mph)
    try:
        if args.replay is not None:
            return _replay(parser, args, topic, rule)
        config = _config(parser, args)
        if args.output is not None:
            return _record(args, config)
        return _live(args, config, topic)
    except PublishError as error:
        logger.error("%s", error)
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m generator",
        description=(
            "Simulate vehicles crossing a speed-camera section and publish their camera "
            "events to Pub/Sub in real time, write them to a file, or replay a file."
        ),
    )
    course = parser.add_argument_group("course flags")
    course.add_argument("--project_id", default=defaults.PROJECT_ID, help="GCP project id.")
    course.add_argument(
        "--topic_name",
        default=defaults.INPUT_TOPIC,
        help="Input topic name, or a full projects/P/topics/T path.",
    )
    course.add_argument(
        "--initial_coordinates",
        type=_arg(parse_coordinates),
        default=str(defaults.INITIAL_COORDINATES),
        help="Section entry as '(lat, lon)'.",
    )
    course.add_argument(
        "--final_coordinates",
        type=_arg(parse_coordinates),
        default=str(defaults.FINAL_COORDINATES),
        help="Section exit as '(lat, lon)'.",
    )
    traffic = parser.add_argument_group("traffic")
    traffic.add_argument("--radar_id", default=defaults.RADAR_ID, help="Section (camera) id.")
    traffic.add_argument("--vehicles", type=_positive_int, default=20, help="Vehicles to simulate.")
    traffic.add_argument(
        "--rate", type=_positive_float, default=10.0, help="Average events per second."
    )
    traffic.add_argument(
        "--speeding_fraction",
        type=_fraction,
        default=0.3,
        help="Share of vehicles over the limit, 0..1.",
    )
    traffic.add_argument("--points", type=_points, default=5, help="Detections per vehicle (>= 2).")
    traffic.add_argument("--seed", type=int, default=None, help="Random seed (repeatable runs).")
    traffic.add_argument(
        "--speed_limit_mph",
        type=_positive_float,
        default=defaults.SPEED_LIMIT_MPH,
        help="Section speed limit, mph.",
    )
    traffic.add_argument(
        "--tolerance_mph",
        type=_non_negative_float,
        default=defaults.TOLERANCE_MPH,
        help="Fined only above limit + tolerance, mph.",
    )
    modes = parser.add_argument_group("modes (default: simulate now and publish live)")
    modes.add_argument(
        "--start_time",
        type=_arg(parse_rfc3339_ms),
        default=None,
        help="First event time, RFC 3339 (default now); only with --output.",
    )
    modes.add_argument(
        "--output", type=Path, default=None, help="Write events to FILE.jsonl, do not publish."
    )
    modes.add_argument(
        "--replay",
        type=Path,
        default=None,
        help="Publish events recorded in FILE.jsonl, first event now, keeping their spacing; "
        "traffic flags other than the speed rule are ignored.",
    )
    modes.add_argument(
        "--speedup",
        type=_positive_float,
        default=1.0,
        help="Publish pace multiplier for live and --replay runs (event times keep spacing).",
    )
    modes.add_argument(
        "--truth",
        type=Path,
        default=None,
        help="Write the expected verdict per vehicle to FILE.jsonl.",
    )
    return parser


def topic_path(parser: argparse.ArgumentParser, project_id: str, topic_name: str) -> str:
    """projects/P/topics/T from a short topic name, or a full path as given."""
    if topic_name.startswith("projects/"):
        if not _TOPIC_PATH.match(topic_name):
            parser.error(f"--topic_name {topic_name!r} is not projects/PROJECT/topics/TOPIC")
        return topic_name
    if not topic_name or "/" in topic_name or not project_id or "/" in project_id:
        parser.error(f"invalid --project_id {project_id!r} or --topic_name {topic_name!r}")
    return f"projects/{project_id}/topics/{topic_name}"


def _check_combinations(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.output is not None and args.replay is not None:
        parser.error("--output and --replay cannot be combined")
    if args.start_time is not None and args.output is None:
        parser.error("--start_time only applies with --output (live and replay runs start now)")
    if args.truth is not None and args.truth in (args.output, args.replay):
        parser.error("--truth must be a different file from --output/--replay")


def _config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> TrafficConfig:
    try:
        config = TrafficConfig(
            initial=args.initial_coordinates,
            final=args.final_coordinates,
            radar_id=args.radar_id,
            vehicles=args.vehicles,
            rate=args.rate,
            speeding_fraction=args.speeding_fraction,
            points=args.points,
            seed=args.seed,
            speed_limit_mph=args.speed_limit_mph,
            tolerance_mph=args.tolerance_mph,
        )
    except ValueError as error:
        parser.error(str(error))
    if config.longest_hop_s() > defaults.SESSION_GAP_SECONDS:
        # Not an error: the pipeline's gap is an option. With the default one, though,
        # the slowest vehicles' traversals would split into several sessions.
        logger.warning(
            "slow vehicles take up to %.0f s between detections, more than the default "
            "session gap of %d s: use more --points or a larger --session_gap_seconds",
            config.longest_hop_s(),
            defaults.SESSION_GAP_SECONDS,
        )
    return config


def _record(args: argparse.Namespace, config: TrafficConfig) -> int:
    start_ms = args.start_time if args.start_time is not None else _now_ms()
    events, truth = simulate_traffic(config, start_ms)
    count = write_events_jsonl(args.output, events)
    _write_truth(args.truth, truth)
    _summary(f"wrote {count} events", truth, f"to {args.output}")
    return 0


def _live(args: argparse.Namespace, config: TrafficConfig, topic: str) -> int:
    events, truth = simulate_traffic(config, _now_ms())
    _write_truth(args.truth, truth)  # before publishing, so a checker can read it meanwhile
    count = publish_events(events, topic, speedup=args.speedup)
    _summary(f"published {count} events", truth, f"to {topic}")
    return 0


def _replay(
    parser: argparse.ArgumentParser, args: argparse.Namespace, topic: str, rule: SectionRule
) -> int:
    try:
        recorded = read_events_jsonl(args.replay)
    except (OSError, ValueError) as error:
        parser.error(f"--replay: {error}")
    if not recorded:
        parser.error(f"--replay: no events in {args.replay}")
    events = rebase(recorded, _now_ms())
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
    print(
        f"generator: {done} for {vehicles} vehicles ({speeders} speeders) {where}",
        file=sys.stderr,
    )


def _vehicles(events: Sequence[CameraEvent]) -> int:
    return len({(event.radar_id, event.vehicle_id) for event in events})


def _now_ms() -> int:
    return int(time.time() * 1000)


def _arg(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a parser raising ValueError, keeping its message."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except (ValueError, InvalidEvent) as error:
            raise argparse.ArgumentTypeError(str(error)) from error

    return convert


def _number(
    text: str, kind: Callable[[str], float], check: Callable[[float], bool], need: str
) -> float:
    try:
        value = kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if not check(value):
        raise argparse.ArgumentTypeError(f"must be {need}, got {text}")
    return value


def _positive_int(text: str) -> int:
    return int(_number(text, int, lambda v: v >= 1, "an integer >= 1"))


def _points(text: str) -> int:
    return int(_number(text, int, lambda v: v >= 2, "an integer >= 2"))


def _positive_float(text: str) -> float:
    return _number(text, float, lambda v: 0 < v < float("inf"), "a finite number > 0")


def _non_negative_float(text: str) -> float:
    return _number(text, float, lambda v: 0 <= v < float("inf"), "a finite number >= 0")


def _fraction(text: str) -> float:
    return _number(text, float, lambda v: 0 <= v <= 1, "between 0 and 1")
