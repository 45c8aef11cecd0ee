"""The course's traffic through this pipeline: every vehicle accounted for, verdicts compared.

    .venv/bin/python bench/course_traffic.py [--loops 5] [--seed 1]
    .venv/bin/python bench/course_traffic.py --course_generator PATH/generator.py [--loops 5]
    .venv/bin/python bench/course_traffic.py --backlog_loops 12 --loops 16 [--dump DIR]

The local stack (Pub/Sub emulator, cars API) runs the pipeline with the course's command
line (`--project_id P --input_subscription projects/P/subscriptions/S --output_topic
projects/P/topics/T --radar_id Adriana --cars_api http://127.0.0.1:PORT/cars`, the course's
cars API form), plus the local runner's flags and a dead-letter topic. The traffic is this
project's `python -m generator --course_format` (--loops x 15 vehicles x 10 timeless
messages, seeded) or, with --course_generator, a course-style generator file run as it is
with the course's four flags; it loops forever, so it is stopped (by process group) once
--loops x 150 messages are on the topic. With --backlog_loops the pipeline starts only
after that many loops are on the topic, as when a student starts the generator first.

A second subscription on the input topic captures every message as Pub/Sub holds it (body,
publish time). The course's verdict is computed from those: per vehicle_id, sessions with a
15 s gap on publish time (its `Sessions(15)`), fined when the mean spot speed is above
40 km/h. It is set beside the pipeline's outputs and dead letters: vehicles, messages,
outputs (fined / not), dead letters by stage, vehicles lost (neither output nor dead
letter), verdicts agreeing and why any differ. A benchmark: it prints, asserts nothing.
"""

import argparse
import json
import math
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lib.harness import load_note, stop_on_sigterm

from generator.course_traffic import COURSE_POINTS, COURSE_THREADS, COURSE_VEHICLES_PER_THREAD
from generator.truth import COURSE_FINE_ABOVE_KMH
from local_stack.processes import ManagedProcess, wait_until
from local_stack.run import COURSE_RADAR_ID, CourseCommandPipeline, LocalTopics, OutputCollector
from local_stack.services import LocalStack, pubsub_clients
from section_speed.domain import defaults
from section_speed.domain.traversal import IMPLAUSIBLE, PARTIAL, UNMEASURABLE, mph_to_kmh

RADAR_ID = COURSE_RADAR_ID
INITIAL = "(40.819390, -73.940744)"  # the course's section, as its README passes it
FINAL = "(40.811, -73.950)"
SECTION_START, SECTION_END = "40.819390,-73.940744", "40.811000,-73.950000"  # as records say
COURSE_SESSION_GAP_S = 15  # the course's window.Sessions(15)
MESSAGES_PER_LOOP = COURSE_THREADS * COURSE_VEHICLES_PER_THREAD * COURSE_POINTS
# This project's limit: 25 mph. The course fines above 40 km/h, so means in between differ.
PROJECT_LIMIT_KMH = mph_to_kmh(defaults.SPEED_LIMIT_MPH)
TRAVERSAL_STAGES = (UNMEASURABLE, IMPLAUSIBLE, PARTIAL)
SAME_SPEED_KMH = 1e-6  # an output's avg_speed this close to the course's mean is the same
# An empty pull on the emulator blocks ~30 s, and only a returning pull moves the local
# runner's watermark: the last sessions close up to a gap + 30 s after the traffic.
EMPTY_PULL_S = 30


@dataclass(frozen=True)
class InputMessage:
    """One message on the input topic, as the course's pipeline would read it."""

    body: dict[str, Any] | None  # None: not a JSON object
    publish_time_ms: int

    @property
    def vehicle_id(self) -> str | None:
        vehicle = (self.body or {}).get("vehicle_id")
        return vehicle if isinstance(vehicle, str) else None


class InputTap:
    """Every message of a subscription, with its publish time, on a background pull."""

    def __init__(self, stack: LocalStack, subscription: str) -> None:
        self._lock = threading.Lock()
        self.messages: list[InputMessage] = []
        self.last_at = time.monotonic()
        self._publisher, self._subscriber = pubsub_clients(stack.env["PUBSUB_EMULATOR_HOST"])
        self._future = self._subscriber.subscribe(
            stack.subscription_path(subscription), callback=self._receive
        )

    def _receive(self, message: Any) -> None:
        try:
            body = json.loads(message.data)
        except ValueError:
            body = None
        published = message.publish_time.timestamp()
        with self._lock:
            self.messages.append(
                InputMessage(body if isinstance(body, dict) else None, round(published * 1000))
            )
            self.last_at = time.monotonic()
        message.ack()

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def quiet_for(self, seconds: float) -> bool:
        with self._lock:
            return time.monotonic() - self.last_at >= seconds

    def snapshot(self) -> list[InputMessage]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self._future.cancel()
        try:
            self._future.result(timeout=10)
        except Exception:
            pass
        self._subscriber.close()
        self._publisher.transport.close()


def course_sessions(
    messages: Iterable[InputMessage], gap_s: int = COURSE_SESSION_GAP_S
) -> dict[str, list[list[InputMessage]]]:
    """Per vehicle_id, its messages in Beam's session windows on publish time."""
    by_vehicle: dict[str, list[InputMessage]] = defaultdict(list)
    for message in messages:
        if message.vehicle_id is not None:
            by_vehicle[message.vehicle_id].append(message)
    sessions: dict[str, list[list[InputMessage]]] = {}
    for vehicle, group in by_vehicle.items():
        group.sort(key=lambda message: message.publish_time_ms)
        split: list[list[InputMessage]] = []
        end_ms = -math.inf
        for message in group:
            if message.publish_time_ms >= end_ms:  # [t, t + gap) windows that do not overlap
                split.append([])
            split[-1].append(message)
            end_ms = max(end_ms, message.publish_time_ms + gap_s * 1000)
        sessions[vehicle] = split
    return sessions


def mean_spot_speed(session: list[InputMessage]) -> float:
    """The course's avg_speed: sum of the messages' speeds / their number."""
    return math.fsum(float((m.body or {})["speed"]) for m in session) / len(session)


def dead_letter_vehicle(letter: dict[str, Any]) -> str | None:
    """The vehicle a dead letter is about: from its attributes, else its payload."""
    attributes = json.loads(letter.get("attributes") or "{}")
    if "vehicle_id" in attributes:
        return str(attributes["vehicle_id"])
    for line in (letter.get("payload") or "").splitlines():
        try:
            body = json.loads(line)
        except ValueError:
            continue
        if isinstance(body, dict) and isinstance(body.get("vehicle_id"), str):
            return body["vehicle_id"]
    return None


def course_consumer_reads(message: dict[str, Any]) -> bool:
    """What a consumer written for the course's output does with a message, unchanged."""
    try:
        lat, lon = message["coordinates"]
        float(message["avg_speed"]), float(lat), float(lon)
        return isinstance(message["is_Ticketed"], bool) and isinstance(message["radar_id"], str)
    except (KeyError, TypeError, ValueError):
        return False


@dataclass
class Figures:
    vehicles: int = 0
    messages: int = 0
    messages_per_vehicle: Counter[int] = field(default_factory=Counter)
    publish_spread_ms: list[int] = field(default_factory=list)  # per vehicle, last - first
    course_sessions_split: int = 0  # vehicles the course's 15 s sessions split in two or more
    outputs: int = 0
    fined: int = 0
    not_fined: int = 0
    repeated_outputs: int = 0  # outputs beyond the first for a vehicle
    dead_letters_by_stage: Counter[str] = field(default_factory=Counter)
    vehicles_by_stage: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    lost: list[str] = field(default_factory=list)
    course_fined: int = 0
    agreeing: int = 0
    compared: int = 0
    band: list[tuple[str, float]] = field(default_factory=list)  # (vehicle, course mean)
    other_disagreements: list[str] = field(default_factory=list)
    partial_outputs: list[str] = field(default_factory=list)
    partial_wrong_verdict: int = 0  # partial outputs whose verdict is not the course's
    without_output: int = 0  # vehicles only in the dead letter
    not_one_to_one: list[str] = field(default_factory=list)
    max_speed_error_kmh: float = 0.0
    max_fined_kmh: float = math.nan
    methods: Counter[str] = field(default_factory=Counter)
    consumer_failures: int = 0
    plates_read: int = 0
    evidence_errors: Counter[str] = field(default_factory=Counter)
    other_inputs: int = 0  # messages without a course vehicle_id
    # Records claiming a distance over no duration, or a speed their numbers contradict.
    incoherent: list[str] = field(default_factory=list)
    entry_exit_as_sent: int = 0  # entry at the section's start, exit at its end, as sent


def incoherence(record: dict[str, Any]) -> str | None:
    """What a record claims that its own numbers contradict; None when it agrees with itself."""
    distance, duration = record.get("distance_m"), record.get("duration_s")
    if distance is None and duration is None:
        return None if record.get("speed_method") == "spot_mean" else "no distance nor duration"
    if not duration:
        return f"{distance} m over a duration of {duration} s"
    implied_kmh = float(distance) / float(duration) * 3.6
    if abs(implied_kmh - float(record["avg_speed_kmh"])) > 1e-6 * implied_kmh:
        return (
            f"{distance} m in {duration} s is {implied_kmh:.3f} km/h, not {record['avg_speed_kmh']}"
        )
    return None


def compare(
    inputs: list[InputMessage], outputs: list[dict[str, Any]], dead_letters: list[dict[str, Any]]
) -> Figures:
    figures = Figures(messages=len(inputs))
    sessions = course_sessions(inputs)
    figures.vehicles = len(sessions)
    figures.other_inputs = sum(message.vehicle_id is None for message in inputs)
    for split in sessions.values():
        every = [message for session in split for message in session]
        figures.messages_per_vehicle[len(every)] += 1
        times = [message.publish_time_ms for message in every]
        figures.publish_spread_ms.append(max(times) - min(times))
        figures.course_sessions_split += len(split) > 1
    by_vehicle: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for output in outputs:
        by_vehicle[str(output.get("vehicle_id"))].append(output)
        figures.outputs += 1
        problem = incoherence(output)
        if problem:
            figures.incoherent.append(f"{output.get('vehicle_id')}: {problem}")
        sent_order = (output.get("entry_location"), output.get("exit_location"))
        figures.entry_exit_as_sent += sent_order == (SECTION_START, SECTION_END)
        figures.methods[str(output.get("speed_method"))] += 1
        figures.consumer_failures += not course_consumer_reads(output)
        if output.get("is_ticketed"):
            figures.fined += 1
            figures.plates_read += output.get("license_plate") is not None
            if output.get("evidence_error"):
                figures.evidence_errors[str(output["evidence_error"]).split(":")[0]] += 1
        else:
            figures.not_fined += 1
    fined_speeds = [float(o["avg_speed_kmh"]) for o in outputs if o.get("is_ticketed")]
    figures.max_fined_kmh = max(fined_speeds, default=math.nan)
    figures.repeated_outputs = sum(len(found) - 1 for found in by_vehicle.values())
    for letter in dead_letters:
        stage = str(letter.get("stage"))
        figures.dead_letters_by_stage[stage] += 1
        vehicle = dead_letter_vehicle(letter)
        if vehicle is not None:
            figures.vehicles_by_stage[stage].add(vehicle)
    lettered = set().union(*figures.vehicles_by_stage.values())
    figures.lost = sorted(v for v in sessions if v not in by_vehicle and v not in lettered)
    for vehicle, split in sorted(sessions.items()):
        verdicts = [mean_spot_speed(session) > COURSE_FINE_ABOVE_KMH for session in split]
        figures.course_fined += sum(verdicts)
        found = by_vehicle.get(vehicle, [])
        if len(split) != 1 or not found:
            if found or len(split) != 1:
                figures.not_one_to_one.append(
                    f"{vehicle}: {len(split)} course sessions, {len(found)} outputs"
                )
            else:
                figures.without_output += 1
            continue
        course_mean = mean_spot_speed(split[0])
        for output in found:
            # Measured on only some of the vehicle's messages: a session fired before the
            # rest were read (a lagging runner), then fired again.
            if abs(float(output["avg_speed_kmh"]) - course_mean) > SAME_SPEED_KMH:
                figures.partial_outputs.append(
                    f"{vehicle}: output {found.index(output) + 1} of {len(found)} at "
                    f"{output['avg_speed_kmh']:.3f} km/h (is_ticketed={output['is_ticketed']}),"
                    f" mean of all {len(split[0])} messages {course_mean:.3f} km/h"
                )
                figures.partial_wrong_verdict += bool(output["is_ticketed"]) != verdicts[0]
        # The highest revision counts, not the last to arrive (a fine waits for evidence).
        output = max(found, key=lambda candidate: int(candidate.get("revision") or 0))
        figures.compared += 1
        figures.max_speed_error_kmh = max(
            figures.max_speed_error_kmh, abs(float(output["avg_speed_kmh"]) - course_mean)
        )
        if bool(output["is_ticketed"]) == verdicts[0]:
            figures.agreeing += 1
        elif COURSE_FINE_ABOVE_KMH < course_mean <= PROJECT_LIMIT_KMH:
            figures.band.append((vehicle, course_mean))
        else:
            figures.other_disagreements.append(
                f"{vehicle}: course mean {course_mean:.4f} km/h -> fined={verdicts[0]}; "
                f"pipeline {output['avg_speed_kmh']:.4f} km/h ({output.get('speed_method')}) "
                f"-> is_ticketed={output['is_ticketed']}"
            )
    return figures


def report(figures: Figures, wall: dict[str, float]) -> None:
    spread = figures.publish_spread_ms
    judged = {v for s in TRAVERSAL_STAGES for v in figures.vehicles_by_stage.get(s, set())}
    print(f"input: {figures.messages} messages, {figures.vehicles} vehicles "
          f"(messages per vehicle: {dict(sorted(figures.messages_per_vehicle.items()))}; "
          f"{figures.other_inputs} without a vehicle_id)")  # fmt: skip
    if spread:
        print(f"publish-time spread of a vehicle's messages: median "
              f"{statistics.median(spread)} ms, max {max(spread)} ms; the course's 15 s "
              f"sessions split {figures.course_sessions_split} vehicles")  # fmt: skip
    print(f"outputs: {figures.outputs} ({figures.fined} fined, {figures.not_fined} not fined), "
          f"{figures.repeated_outputs} repeated; speed_method {dict(figures.methods)}")  # fmt: skip
    stages = ", ".join(f"{stage} {n}" for stage, n in sorted(figures.dead_letters_by_stage.items()))
    print(f"dead letters: {sum(figures.dead_letters_by_stage.values())} ({stages or 'none'}); "
          f"vehicles without a verdict (traversal dead-lettered): {len(judged)}")  # fmt: skip
    print(f"vehicles with a dead letter and no output: {figures.without_output}")
    print(f"records contradicting themselves (distance, duration, speed): {len(figures.incoherent)}"
          + "".join(f"\n  {line}" for line in figures.incoherent[:5]))  # fmt: skip
    print(f"records with entry at the section's start and exit at its end, as sent: "
          f"{figures.entry_exit_as_sent} of {figures.outputs}")  # fmt: skip
    print(f"vehicles lost (neither output nor dead letter): {len(figures.lost)}"
          + (f" {figures.lost[:10]}" if figures.lost else ""))  # fmt: skip
    print(
        f"course's verdict (mean spot speed > {COURSE_FINE_ABOVE_KMH:g} km/h): "
        f"{figures.course_fined} fined, {figures.vehicles - figures.course_fined} not"
    )
    print(f"verdicts agreeing with the course's: {figures.agreeing} of {figures.compared} "
          f"compared (a vehicle's highest revision); largest |avg_speed - course mean| "
          f"{figures.max_speed_error_kmh:.2e} km/h")  # fmt: skip
    if figures.band:
        means = ", ".join(f"{vehicle} {mean:.3f}" for vehicle, mean in figures.band)
        print(f"  {len(figures.band)} differ by the limit: course mean in "
              f"({COURSE_FINE_ABOVE_KMH:g}, {PROJECT_LIMIT_KMH:.4f}] km/h, fined by the "
              f"course's > 40 km/h, not by 25 mph: {means}")  # fmt: skip
    for line in figures.other_disagreements:
        print(f"  DISAGREES: {line}")
    if figures.partial_outputs:
        print(
            f"  {len(figures.partial_outputs)} outputs measured on part of a vehicle's "
            f"messages, {figures.partial_wrong_verdict} of them with the wrong verdict:"
        )
    for line in figures.partial_outputs[:20]:
        print(f"    {line}")
    for line in figures.not_one_to_one:
        print(f"  not one to one: {line}")
    print(
        f"fines: fastest {figures.max_fined_kmh:.1f} km/h; plate read on {figures.plates_read}"
        f" of {figures.fined}; evidence errors {dict(figures.evidence_errors) or 'none'}"
    )
    print(
        f"a course-style consumer (msg['avg_speed'], msg['coordinates'], msg['is_Ticketed']) "
        f"fails on {figures.consumer_failures} of {figures.outputs} messages"
    )
    print("time: " + ", ".join(f"{what} {seconds:.0f} s" for what, seconds in wall.items()))


def course_generator_argv(path: Path, topics: LocalTopics, project_id: str) -> list[str]:
    return [
        sys.executable, str(path), "--project_id", project_id,
        "--topic_name", topics.input_topic,
        "--initial_coordinates", INITIAL, "--final_coordinates", FINAL,
    ]  # fmt: skip


def project_generator_argv(
    loops: int, seed: int, topics: LocalTopics, project_id: str
) -> list[str]:
    per_loop = COURSE_THREADS * COURSE_VEHICLES_PER_THREAD
    return [
        sys.executable, "-m", "generator", "--course_format",
        "--project_id", project_id, "--topic_name", topics.input_topic,
        "--initial_coordinates", INITIAL, "--final_coordinates", FINAL,
        "--vehicles", str(loops * per_loop), "--seed", str(seed),
    ]  # fmt: skip


def run_traffic(
    stack: LocalStack,
    args: argparse.Namespace,
    topics: LocalTopics,
    tap: InputTap,
    start_pipeline: Callable[[], None],
) -> None:
    """Publish the traffic, starting the pipeline first or after --backlog_loops loops.

    Returns once every message the generator published is in the tap.
    """
    target = args.loops * MESSAGES_PER_LOOP
    backlog = args.backlog_loops * MESSAGES_PER_LOOP
    if not backlog:
        start_pipeline()
    if args.course_generator is None:
        argv = project_generator_argv(args.loops, args.seed, topics, stack.project_id)
        generator = stack.spawn("generator", argv)
    else:
        argv = course_generator_argv(args.course_generator, topics, stack.project_id)
        generator = stack.spawn("course-generator", argv)
    timeout_s = 12 * args.loops + 60  # the generators pause up to 10 s per loop
    if backlog:
        until(lambda: tap.count() >= backlog, timeout_s, f"{backlog} messages", generator)
        start_pipeline()
    if args.course_generator is None:
        until(lambda: not generator.running(), timeout_s, "the generator", generator)
        if generator.process.returncode != 0:
            raise RuntimeError(f"the generator failed:\n{generator.log_tail(20)}")
        until(lambda: tap.count() >= target, 60, f"{target} messages on the input topic")
        return
    until(lambda: tap.count() >= target, timeout_s, f"{target} messages", generator)
    generator.stop()  # it loops forever; a loop begun meanwhile is judged as it arrived
    until(lambda: tap.quiet_for(3.0), 60, "the input topic to fall quiet")


def until(
    condition: Callable[[], bool],
    timeout_s: float,
    what: str,
    process: ManagedProcess | None = None,
) -> None:
    def done() -> bool:
        if process is not None and not process.running() and not condition():
            if process.process.returncode not in (0, None):
                raise RuntimeError(f"{process.name} exited:\n{process.log_tail(20)}")
        return condition()

    wait_until(done, timeout_s=timeout_s, what=what, interval_s=0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loops", type=int, default=5, help="generator loops (15 vehicles each)")
    parser.add_argument("--seed", type=int, default=1, help="this project's generator's seed")
    parser.add_argument(
        "--course_generator", type=Path, help="run this course-style generator file instead"
    )
    parser.add_argument(
        "--gap", type=int, help="--session_gap_seconds (default: the course's command line)"
    )
    parser.add_argument(
        "--backlog_loops",
        type=int,
        default=0,
        help="start the pipeline only after this many loops are published (a student who "
        "starts the generator first)",
    )
    parser.add_argument("--logs", type=Path, help="keep the services' and pipeline's logs here")
    parser.add_argument(
        "--dump", type=Path, help="write inputs, outputs and dead letters (JSON lines) here"
    )
    args = parser.parse_args()
    stop_on_sigterm()
    print(load_note(), flush=True)
    source = args.course_generator or "python -m generator --course_format"
    print(f"traffic: {source}, {args.loops} loops", flush=True)
    topics = LocalTopics(
        input_topic="course-in", input_subscription="course-in-sub",
        output_topic="course-out", output_subscription="course-out-reader",
        dead_letter_topic="course-dead", dead_letter_subscription="course-dead-reader",
    )  # fmt: skip
    wall: dict[str, float] = {}
    with LocalStack(work_dir=args.logs, services=("pubsub", "cars_api")) as stack:
        stack.apply_env()
        topics.create(stack)
        stack.create_topics([], {"course-in-tap": topics.input_topic})
        gap = defaults.SESSION_GAP_SECONDS if args.gap is None else args.gap
        local = CourseCommandPipeline(stack, topics, session_gap_seconds=gap)
        tap = InputTap(stack, "course-in-tap")
        outputs = OutputCollector(stack, topics.output_subscription)
        dead_letters = OutputCollector(stack, topics.dead_letter_subscription)

        def start_pipeline() -> None:
            started = time.monotonic()
            outputs.producer = local.start()
            wall["pipeline start"] = time.monotonic() - started
            print(f"pipeline started after {tap.count()} messages: "
                  + " ".join(local.argv()[1:]), flush=True)  # fmt: skip

        try:
            started = time.monotonic()
            run_traffic(stack, args, topics, tap, start_pipeline)
            wall["traffic"] = time.monotonic() - started
            gap_s = args.gap or defaults.SESSION_GAP_SECONDS
            wall["every vehicle accounted for, after the traffic"] = accounted_for(
                tap, outputs, dead_letters, gap_s
            )
            figures = compare(tap.snapshot(), outputs.snapshot(), dead_letters.snapshot())
            if args.dump is not None:
                dump(args.dump, tap.snapshot(), outputs.snapshot(), dead_letters.snapshot())
        finally:
            for collector in (tap, outputs, dead_letters):
                collector.close()
        report(figures, wall)
    print(load_note())


def dump(
    directory: Path,
    inputs: list[InputMessage],
    outputs: list[dict[str, Any]],
    dead_letters: list[dict[str, Any]],
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rows = {
        "inputs": [{"publish_time_ms": m.publish_time_ms, "body": m.body} for m in inputs],
        "outputs": outputs,
        "dead_letters": dead_letters,
    }
    for name, records in rows.items():
        with (directory / f"{name}.jsonl").open("w", encoding="utf-8") as out:
            out.writelines(json.dumps(record) + "\n" for record in records)


def accounted_for(
    tap: InputTap, outputs: OutputCollector, dead_letters: OutputCollector, gap_s: int
) -> float:
    """Wait until every vehicle has an output or a dead letter (bounded), then for repeats.

    Returns the seconds until every vehicle was accounted for (or the timeout).
    """
    started = time.monotonic()
    vehicles = {message.vehicle_id for message in tap.snapshot()} - {None}

    def seen() -> set[str]:
        found = {str(output.get("vehicle_id")) for output in outputs.snapshot()}
        return found | {dead_letter_vehicle(letter) for letter in dead_letters.snapshot()}

    try:
        wait_until(
            lambda: vehicles <= seen(),
            timeout_s=gap_s + EMPTY_PULL_S + 120,
            what="a verdict or dead letter for every vehicle",
            interval_s=0.5,
        )
    except TimeoutError as error:
        print(f"{error}: {len(vehicles - seen())} vehicles still missing", flush=True)
    waited = time.monotonic() - started
    # A late or repeated firing would come within one more empty pull.
    count = len(outputs.snapshot()) + len(dead_letters.snapshot())
    outputs.wait_for(lambda got: len(got) + len(dead_letters.snapshot()) > count, EMPTY_PULL_S)
    return waited


if __name__ == "__main__":
    main()
