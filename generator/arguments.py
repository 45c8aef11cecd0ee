"""The generator's command line: its flags, their checks, and the traffic config they give.

`python -m generator --help` prints what `build_parser` defines; the commands that use the
parsed flags are in `generator.cli`.
"""

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from generator.checks import check_point
from generator.course_traffic import CourseTrafficConfig
from generator.simulate import TrafficConfig, default_points
from generator.truth import COURSE_FINE_ABOVE_KMH
from section_speed.domain import defaults
from section_speed.domain.events import InvalidEvent, parse_rfc3339_ms
from section_speed.domain.geometry import LatLon

T = TypeVar("T")

DEFAULT_RATE = 10.0
DEFAULT_SPEEDING_FRACTION = 0.3
_TOPIC_PATH = re.compile(r"^projects/[^/\s]+/topics/[^/\s]+$")
_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_COORDINATES = re.compile(rf"^\s*([(\[]?)\s*({_NUMBER})\s*,\s*({_NUMBER})\s*([)\]]?)\s*$")
_BRACKETS = {"": "", "(": ")", "[": "]"}


def parse_coordinates(text: str) -> LatLon:
    """Parse "(40.8, -73.9)", "40.8,-73.9" or "[40.8, -73.9]" as (lat, lon); never evaluates."""
    match = _COORDINATES.match(text)
    if match is None or _BRACKETS[match.group(1)] != match.group(4):
        raise ValueError(f"coordinates must look like '(40.819390, -73.940744)', got {text!r}")
    point = (float(match.group(2)), float(match.group(3)))
    check_point("coordinates", point)
    return point


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
        "--rate",
        type=_positive_float,
        default=None,
        help=f"Average events per second (default {DEFAULT_RATE:g}).",
    )
    traffic.add_argument(
        "--speeding_fraction",
        type=_fraction,
        default=None,
        help=f"Share of vehicles over the limit, 0..1 (default {DEFAULT_SPEEDING_FRACTION:g}).",
    )
    traffic.add_argument(
        "--points",
        type=_points,
        default=None,
        help="Detections (cameras) per vehicle, >= 2; default: enough that the slowest "
        "vehicle passes one every third of --session_gap_seconds (at least 5).",
    )
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
    traffic.add_argument(
        "--session_gap_seconds",
        type=_positive_float,
        default=defaults.SESSION_GAP_SECONDS,
        help="The pipeline's session gap: the default --points keep every vehicle's "
        "detections well within it, and a warning says when a vehicle's are not.",
    )
    traffic.add_argument(
        "--course_format",
        action="store_true",
        help="Send exactly the course generator's messages: {vehicle_id (6 letters and "
        "digits), speed (km/h), location}, 10 points from initial to final, no time and no "
        "attributes, 3 bursts x 5 vehicles per loop every 1-10 s; truth gives the course's "
        f"verdict (mean spot speed > {COURSE_FINE_ABOVE_KMH:g} km/h) beside this project's.",
    )
    traffic.add_argument(
        "--sections_file",
        type=Path,
        default=None,
        help="Also write the pipeline's sections file (JSON) for the simulated section: "
        "radar_id -> entry, exit, length_m, speed_limit_mph, tolerance_mph.",
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
        "traffic flags other than the speed rule and the section's coordinates (the section "
        "the recording was made on, for --truth) are ignored.",
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


def check_flag_combinations(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit through `parser.error` when flags that do not apply together are given."""
    if args.output is not None and args.replay is not None:
        parser.error("--output and --replay cannot be combined")
    if args.start_time is not None and args.output is None:
        parser.error("--start_time only applies with --output (live and replay runs start now)")
    if args.truth is not None and args.truth in (args.output, args.replay):
        parser.error("--truth must be a different file from --output/--replay")
    if args.replay is not None:
        for flag in ("course_format", "sections_file"):
            if getattr(args, flag):
                parser.error(f"--{flag} does not apply with --replay (it sends the file as is)")
    if args.course_format:
        for flag in ("points", "rate", "speeding_fraction"):
            if getattr(args, flag) is not None:
                parser.error(
                    f"--{flag} does not apply with --course_format (the course sends 10 points "
                    "per vehicle in bursts, each with its own random speed)"
                )


def traffic_config(
    parser: argparse.ArgumentParser, args: argparse.Namespace
) -> TrafficConfig | CourseTrafficConfig:
    """The traffic the flags describe; a value the config rejects exits through `parser.error`."""
    try:
        if args.course_format:
            return CourseTrafficConfig(
                initial=args.initial_coordinates,
                final=args.final_coordinates,
                radar_id=args.radar_id,
                vehicles=args.vehicles,
                seed=args.seed,
                speed_limit_mph=args.speed_limit_mph,
                tolerance_mph=args.tolerance_mph,
            )
        points = args.points
        if points is None:
            points = default_points(
                args.initial_coordinates,
                args.final_coordinates,
                args.session_gap_seconds,
                args.speed_limit_mph,
                args.tolerance_mph,
            )
        return TrafficConfig(
            initial=args.initial_coordinates,
            final=args.final_coordinates,
            radar_id=args.radar_id,
            vehicles=args.vehicles,
            rate=DEFAULT_RATE if args.rate is None else args.rate,
            speeding_fraction=(
                DEFAULT_SPEEDING_FRACTION
                if args.speeding_fraction is None
                else args.speeding_fraction
            ),
            points=points,
            seed=args.seed,
            speed_limit_mph=args.speed_limit_mph,
            tolerance_mph=args.tolerance_mph,
        )
    except ValueError as error:
        parser.error(str(error))


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
