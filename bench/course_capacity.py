"""The highest course rate the local runner sustains: the course's traffic at a set rate.

    .venv/bin/python bench/course_capacity.py --rate 27 [--seconds 60] [--busy]
    .venv/bin/python bench/course_capacity.py --rate 27 --rate 54 --rate 81

The pipeline runs with the course's command line (`--cars_api URL/cars`: the course's cars
API, the embedded plate reader on every fine) plus the local runner's flags, a dead-letter
topic and the course's own 15 s session gap, on the local stack (Pub/Sub emulator, cars
API). For each --rate, a fresh pipeline reads the course's traffic pattern (loops of
3 threads x 5 vehicles x 10 timeless messages, the threads interleaved) published loop by
loop so that the messages average RATE a second (the course's generator averages ~27:
150 messages, then a pause of 1 to 10 s) for --seconds. --busy holds one core with a busy
loop meanwhile, as another program on a student's laptop.

When every vehicle has an output or a too_late dead letter (a partial one may still be
completed by a late pane), or a bounded wait ends, the pipeline's CPU time is read and it is
stopped (SIGTERM), and its stop report read from its log (pipeline/stop_report.py): the
slowest read's lag behind its publish time, detections still held. CPU seconds per 1000
messages depend less on what else runs on the machine than the lag does: one core's worth
is the rate a core given to the pipeline alone would sustain. Sustained means: the
slowest read within LAG_SUSTAINED_S of its publish time (a lag that does not grow with the
run), every vehicle out, none dead-lettered, every output the mean of all ten readings.
A benchmark: it prints, asserts nothing.
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from course_traffic import dead_letter_vehicle
from lib.harness import load_note, stop_on_sigterm

from generator.course_traffic import (
    COURSE_POINTS,
    COURSE_THREADS,
    COURSE_VEHICLES_PER_THREAD,
    CourseTrafficConfig,
    course_loops,
    simulate_course_traffic,
)
from local_stack.run import CourseCommandPipeline, LocalTopics, OutputCollector
from local_stack.services import LocalStack, pubsub_clients
from section_speed.domain import defaults
from section_speed.domain.traversal import mph_to_kmh

GAP_S = 15  # the course's Sessions(15)
PER_LOOP = COURSE_THREADS * COURSE_VEHICLES_PER_THREAD * COURSE_POINTS
EMPTY_PULL_S = 30  # an idle emulator's pull blocks ~30 s; the last sessions close after it
LAG_SUSTAINED_S = GAP_S / 2  # the lag warning's threshold: sessions far from closing early
PROJECT_LIMIT_KMH = mph_to_kmh(defaults.SPEED_LIMIT_MPH)
STOP_REPORT = re.compile(r"stop report: (\{.*\})")


@dataclass
class RunFigures:
    rate: float
    busy: bool
    messages: int
    vehicles: int
    seconds_publishing: float
    report: dict[str, Any]
    outputs: int
    fined: int
    plates_read: int
    dead_letters: Counter[str]
    lost: int
    split_outputs: int  # outputs not the mean of all ten readings
    wrong_verdicts: int
    drain_s: float
    cpu_s: float = math.nan  # the pipeline process's CPU time, every thread

    @property
    def sustained(self) -> bool:
        return (
            self.report.get("max_read_lag_s", math.inf) <= LAG_SUSTAINED_S
            and not self.dead_letters
            and not self.lost
            and not self.split_outputs
        )


def one_run(stack: LocalStack, rate: float, seconds: float, busy: bool, seed: int) -> RunFigures:
    tag = f"cap{int(rate)}{'b' if busy else ''}-{seed}"
    topics = LocalTopics(
        input_topic=f"{tag}-in", input_subscription=f"{tag}-in-sub",
        output_topic=f"{tag}-out", output_subscription=f"{tag}-out-reader",
        dead_letter_topic=f"{tag}-dead", dead_letter_subscription=f"{tag}-dead-reader",
    )  # fmt: skip
    topics.create(stack)
    loops = max(1, round(rate * seconds / PER_LOOP))
    config = CourseTrafficConfig(
        initial=defaults.INITIAL_COORDINATES,
        final=defaults.FINAL_COORDINATES,
        radar_id="Adriana",
        vehicles=loops * PER_LOOP // COURSE_POINTS,
        seed=seed,
    )
    events, _ = simulate_course_traffic(config, start_ms=0)
    bursts = [[event.to_pubsub()[0] for event in loop] for loop in course_loops(events)]
    local = CourseCommandPipeline(stack, topics, session_gap_seconds=GAP_S)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        process = local.start()
        outputs = OutputCollector(stack, topics.output_subscription, producer=process)
        dead_letters = OutputCollector(stack, topics.dead_letter_subscription)
        publisher, _ = pubsub_clients(stack.env["PUBSUB_EMULATOR_HOST"])
        topic = stack.topic_path(topics.input_topic)
        sent: list[dict[str, Any]] = []
        started = time.monotonic()
        for k, burst in enumerate(bursts):
            # Loop k goes out at k x 150 / RATE s: the course's bursts at the set mean rate.
            time.sleep(max(0.0, started + k * PER_LOOP / rate - time.monotonic()))
            for future in [publisher.publish(topic, data) for data in burst]:
                future.result(timeout=60)
            sent += [json.loads(data) for data in burst]
        publishing = time.monotonic() - started
        vehicles = {message["vehicle_id"] for message in sent}

        def accounted(published: list[dict[str, Any]]) -> bool:  # the outputs' lock held
            # A partial dead letter is not final: the late pane with the rest may follow.
            seen = {str(output.get("vehicle_id")) for output in published}
            late = {dead_letter_vehicle(d) for d in dead_letters.snapshot()
                    if d.get("stage") == "too_late"}  # fmt: skip
            return vehicles <= seen | late

        drained = time.monotonic()
        outputs.wait_for(accounted, timeout_s=GAP_S + EMPTY_PULL_S + 120)
        drain_s = time.monotonic() - drained
        cpu_s = process_cpu_s(process.pid)
        process.stop()
        found = STOP_REPORT.findall(process.log_path.read_text(errors="replace"))
        report = json.loads(found[-1]) if found else {}
        figures = judge(rate, busy, sent, outputs.snapshot(), dead_letters.snapshot(), report)
        figures.seconds_publishing, figures.drain_s = publishing, drain_s
        figures.cpu_s = cpu_s
        for collector in (outputs, dead_letters):
            collector.close()
        publisher.transport.close()
        return figures
    finally:
        if hog is not None:
            hog.kill()
            hog.wait(timeout=10)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc), every thread included."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def judge(
    rate: float,
    busy: bool,
    sent: list[dict[str, Any]],
    outputs: list[dict[str, Any]],
    dead_letters: list[dict[str, Any]],
    report: dict[str, Any],
) -> RunFigures:
    speeds: dict[str, list[float]] = defaultdict(list)
    for message in sent:
        speeds[message["vehicle_id"]].append(message["speed"])
    truth = {vehicle: math.fsum(s) / len(s) for vehicle, s in speeds.items()}
    split = [
        o for o in outputs if abs(float(o["avg_speed_kmh"]) - truth[str(o["vehicle_id"])]) > 1e-9
    ]
    wrong = [
        o for o in outputs if o["is_ticketed"] is not (truth[o["vehicle_id"]] > PROJECT_LIMIT_KMH)
    ]
    seen = {str(o["vehicle_id"]) for o in outputs} | {dead_letter_vehicle(d) for d in dead_letters}
    fines = [o for o in outputs if o["is_ticketed"]]
    return RunFigures(
        rate=rate,
        busy=busy,
        messages=len(sent),
        vehicles=len(truth),
        seconds_publishing=0.0,
        report=report,
        outputs=len(outputs),
        fined=len(fines),
        plates_read=sum(f.get("license_plate") is not None for f in fines),
        dead_letters=Counter(str(d.get("stage")) for d in dead_letters),
        lost=len(set(truth) - seen),
        split_outputs=len(split),
        wrong_verdicts=len(wrong),
        drain_s=0.0,
    )


def print_run(figures: RunFigures) -> None:
    report = figures.report
    print(
        f"rate {figures.rate:g} msg/s{' + a busy core' if figures.busy else ''}: "
        f"{figures.messages} messages ({figures.vehicles} vehicles) in "
        f"{figures.seconds_publishing:.0f} s; slowest read "
        f"{report.get('max_read_lag_s', math.nan):.1f} s after its publish time; outputs "
        f"{figures.outputs} ({figures.fined} fined, plate read on {figures.plates_read}); dead "
        f"letters {dict(figures.dead_letters) or 0}; lost {figures.lost}; outputs from a split "
        f"session {figures.split_outputs}; wrong verdicts {figures.wrong_verdicts}; held at "
        f"stop {report.get('held_in_open_sessions', '?')}; every vehicle out "
        f"{figures.drain_s:.0f} s after the traffic; pipeline CPU "
        f"{figures.cpu_s:.0f} s ({1000 * figures.cpu_s / figures.messages:.0f} s per 1000 "
        f"messages: one core's worth is {figures.messages / figures.cpu_s:.0f} msg/s) -> "
        f"{'SUSTAINED' if figures.sustained else 'NOT sustained'}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, action="append", help="messages a second")
    parser.add_argument("--seconds", type=float, default=60.0, help="traffic per rate")
    parser.add_argument("--busy", action="store_true", help="hold one core with a busy loop")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    stop_on_sigterm()
    print(load_note(), flush=True)
    with LocalStack(services=("pubsub", "cars_api")) as stack:
        stack.apply_env()
        for rate in args.rate or [27.0]:
            print(load_note(), flush=True)
            print_run(one_run(stack, rate, args.seconds, args.busy, args.seed))
    print(load_note())


if __name__ == "__main__":
    main()
