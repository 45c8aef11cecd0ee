"""The course's traffic on a CPU-starved local runner: behind, but never wrong nor silent.

A busy loop holds one of the machine's cores while the course's traffic pattern (loops of
3 threads x 5 vehicles x 10 timeless messages, sent in bursts) is published faster than
the course's generator sends it, so the local runner, whose watermark follows the clock
(docs/architecture.md, Runners), falls behind. With a short gap and lateness, a vehicle's
ten messages are then read on both sides of a session's end or of the lateness deadline:
the runner splits the session. The test asserts what docs/course.md promises under load:

- no verdict from a split session: every output, every revision, is the mean of all of
  its vehicle's ten spot readings (the truth, from what was published);
- nothing lost silently: every vehicle is in the output or the dead letter, with a
  reason that names the lag, or the stopped pipeline's report counts it as held;
- the log said the pipeline was behind, and by how much.
"""

import json
import math
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict

import pytest

from generator.course_traffic import (
    COURSE_POINTS,
    COURSE_THREADS,
    COURSE_VEHICLES_PER_THREAD,
    CourseTrafficConfig,
    course_loops,
    simulate_course_traffic,
)
from local_stack.run import COURSE_RADAR_ID, CourseCommandPipeline, LocalTopics, OutputCollector
from local_stack.services import pubsub_clients
from section_speed.domain import defaults
from section_speed.domain.traversal import mph_to_kmh

pytestmark = [pytest.mark.integration, pytest.mark.pipeline]

RADAR_ID = COURSE_RADAR_ID
SEED = 29
LOOPS = 12
PER_LOOP = COURSE_THREADS * COURSE_VEHICLES_PER_THREAD
VEHICLES = LOOPS * PER_LOOP
MESSAGES = VEHICLES * COURSE_POINTS
# Short, so that a lag of a few seconds splits sessions: a detection read more than
# GAP + LATENESS - the 10 s margin = 3 s after it was published is too late.
GAP_S = 3
LATENESS_S = 10
LOOP_PAUSE_S = 0.5  # the course pauses 1 to 10 s between loops: here ~10x its rate
PROJECT_LIMIT_KMH = mph_to_kmh(defaults.SPEED_LIMIT_MPH)
STOP_REPORT = re.compile(r"stop report: (\{.*\})")


def course_bursts(seed: int) -> list[list[bytes]]:
    """Each loop's 150 messages in the order the course's 3 threads interleave them."""
    config = CourseTrafficConfig(
        initial=defaults.INITIAL_COORDINATES,
        final=defaults.FINAL_COORDINATES,
        radar_id=RADAR_ID,
        vehicles=VEHICLES,
        seed=seed,
    )
    events, _ = simulate_course_traffic(config, start_ms=0)
    return [[event.to_pubsub()[0] for event in loop] for loop in course_loops(events)]


@pytest.fixture(scope="module")
def starved_run(stack):
    topics = LocalTopics(
        input_topic="ul-in", input_subscription="ul-in-sub",
        output_topic="ul-out", output_subscription="ul-out-reader",
        dead_letter_topic="ul-dead", dead_letter_subscription="ul-dead-reader",
    )  # fmt: skip
    topics.create(stack)
    local = CourseCommandPipeline(
        stack, topics, session_gap_seconds=GAP_S, allowed_lateness_seconds=LATENESS_S
    )
    # Holds one of the two cores for the whole run, as another program on a student's laptop.
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        process = local.start()
        outputs = OutputCollector(stack, topics.output_subscription, producer=process)
        dead_letters = OutputCollector(stack, topics.dead_letter_subscription)
        publisher, _ = pubsub_clients(stack.env["PUBSUB_EMULATOR_HOST"])
        topic = stack.topic_path(topics.input_topic)
        sent: list[dict] = []
        for burst in course_bursts(SEED):
            futures = [publisher.publish(topic, data) for data in burst]
            for future in futures:
                future.result(timeout=30)
            sent += [json.loads(data) for data in burst]
            time.sleep(LOOP_PAUSE_S)  # pacing the traffic, not waiting for a result
        vehicles = {message["vehicle_id"] for message in sent}

        def accounted(published: list[dict]) -> bool:  # called with the outputs' lock held
            seen = {output["vehicle_id"] for output in published}
            return vehicles <= seen | {lettered_vehicle(d) for d in dead_letters.snapshot()}

        # Bounded: whatever is still held when it times out, the stop report must count.
        outputs.wait_for(accounted, timeout_s=75)
        process.stop()  # SIGTERM: the pipeline logs what it read, judged and still held
        log = process.log_path.read_text(errors="replace")
        stages = Counter(letter["stage"] for letter in dead_letters.snapshot())
        reports = STOP_REPORT.findall(log) or ["no stop report"]
        print(f"outputs {len(outputs.snapshot())}, dead letters {dict(stages)}; {reports[-1]}")
        yield sent, outputs.snapshot(), dead_letters.snapshot(), log
        for collector in (outputs, dead_letters):
            collector.close()
        publisher.transport.close()
    finally:
        busy.kill()
        busy.wait(timeout=10)


def lettered_vehicle(letter: dict) -> str | None:
    """The vehicle a dead letter is about: its attributes, else its payload's lines."""
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


def means(sent: list[dict]) -> dict[str, float]:
    speeds: dict[str, list[float]] = defaultdict(list)
    for message in sent:
        speeds[message["vehicle_id"]].append(message["speed"])
    return {vehicle: math.fsum(values) / len(values) for vehicle, values in speeds.items()}


def stop_report(log: str) -> dict:
    found = STOP_REPORT.findall(log)
    assert found, "the stopped pipeline logged no stop report:\n" + log[-3000:]
    return json.loads(found[-1])


def test_no_verdict_from_a_session_the_runner_split(starved_run):
    sent, outputs, _, _ = starved_run
    truth = means(sent)
    split = [
        f"{o['vehicle_id']} revision {o.get('revision')}: {o['avg_speed_kmh']:.3f} km/h on "
        f"{o.get('spot_readings')} readings, all 10: {truth[o['vehicle_id']]:.3f} km/h "
        f"(is_ticketed={o['is_ticketed']})"
        for o in outputs
        if o.get("spot_readings") != COURSE_POINTS
        or abs(o["avg_speed_kmh"] - truth[o["vehicle_id"]]) > 1e-9
    ]
    assert split == [], f"{len(split)} outputs from split sessions:\n" + "\n".join(split[:20])
    for output in outputs:
        assert output["is_ticketed"] is (truth[output["vehicle_id"]] > PROJECT_LIMIT_KMH)


def test_the_run_fell_behind_and_the_log_said_by_how_much(starved_run):
    _, _, dead_letters, log = starved_run
    behind = re.findall(r"the pipeline is behind: .*?read (\d+(?:\.\d+)?) s after", log)
    assert behind, "no lag warning in the log:\n" + log[-3000:]
    # The test exercises what it claims: the lag split sessions or made detections too late.
    stages = {letter["stage"] for letter in dead_letters}
    assert stages & {"too_late", "partial"}, stages


def test_every_dead_letter_names_the_lag_not_a_wrong_cause(starved_run):
    _, _, dead_letters, _ = starved_run
    for letter in dead_letters:
        assert letter["stage"] in ("too_late", "partial"), letter
        if letter["stage"] == "too_late":
            assert "waiting to be read: the pipeline is behind" in letter["error"], letter
        else:
            assert "spot readings, fewer than the" in letter["error"], letter
        assert "session gap is shorter than the time between cameras" not in letter["error"]


def test_nothing_is_lost_silently(starved_run):
    sent, outputs, dead_letters, log = starved_run
    report = stop_report(log)
    vehicles = set(means(sent))
    seen = {o["vehicle_id"] for o in outputs} | {lettered_vehicle(d) for d in dead_letters}
    unaccounted = vehicles - seen
    # What the pipeline did not publish nor dead-letter, it said it still held.
    assert len(unaccounted) * COURSE_POINTS <= report["held_in_open_sessions"], (
        unaccounted,
        report,
    )
    # Every message read is parsed into a session or dead-lettered at parse; every parsed
    # detection is in a judged session or held in an open one.
    assert report["read"] == MESSAGES, report
    assert report["read"] == (
        report["parsed"] + report["dead_lettered_at_parse"] + report["in_flight"]
    ), report
    assert report["parsed"] == report["judged"] + report["held_in_open_sessions"], report
