"""Generator traffic through the running pipeline on the Pub/Sub emulator, checked against truth."""

import time
from collections import Counter

import pytest
from google.cloud import pubsub_v1

from domain import defaults
from domain.geometry import interpolate
from generator.publish import publish_events
from generator.simulate import TrafficConfig, rebase, simulate_traffic
from pipeline.local_run import LocalPipeline, LocalTopics, OutputCollector

pytestmark = pytest.mark.integration

GAP_S = 20
SECTION = TrafficConfig(
    initial=defaults.INITIAL_COORDINATES,
    # 305 m: slow vehicles' detections stay within the 20 s gap, and the test stays short.
    final=interpolate(defaults.INITIAL_COORDINATES, defaults.FINAL_COORDINATES, 0.25),
    radar_id="radar-it",
    vehicles=10,
    rate=8.0,
    speeding_fraction=0.4,
    points=4,
    seed=20261123,
)


@pytest.fixture(scope="module")
def running_pipeline(stack):
    topics = LocalTopics(
        input_topic="it-events", input_subscription="it-events-sub",
        output_topic="it-fines", output_subscription="it-fines-reader",
        dead_letter_topic="it-dead", dead_letter_subscription="it-dead-reader",
    )  # fmt: skip
    topics.create(stack)
    local = LocalPipeline(stack, topics, session_gap_seconds=GAP_S, allowed_lateness_seconds=60)
    local.start()
    outputs = OutputCollector(stack, topics.output_subscription)
    dead_letters = OutputCollector(stack, topics.dead_letter_subscription)
    yield local, outputs, dead_letters
    outputs.close()
    dead_letters.close()
    local.process.stop()


def test_fines_on_the_output_topic_equal_the_generators_truth(running_pipeline):
    local, outputs, dead_letters = running_pipeline
    events, truth = simulate_traffic(SECTION, start_ms=0)
    events = rebase(events, int(time.time() * 1000))  # live: event time is now
    assert publish_events(events, local.input_topic_path(), progress=False) == len(events)
    # Bad input is published alongside: it must reach the dead letter, not stop the job.
    publisher = pubsub_v1.PublisherClient()
    publisher.publish(local.input_topic_path(), b"{not json").result(timeout=30)

    # Every traversal fires once the watermark passes its last detection + the gap.
    assert outputs.wait_for(lambda got: len(got) >= len(truth), timeout_s=150), (
        f"only {len(outputs.snapshot())} of {len(truth)} traversals arrived; "
        f"pipeline log:\n{local.process.log_tail(30)}"
    )
    assert dead_letters.wait_for(lambda got: len(got) >= 1, timeout_s=30)

    received = outputs.snapshot()
    by_vehicle = {r["vehicle_id"]: r for r in received}
    assert Counter(r["fine_id"] for r in received).most_common(1)[0][1] == 1, "duplicates"
    assert len(received) == len(truth), "an extra or missing traversal"
    assert set(by_vehicle) == {t.vehicle_id for t in truth}
    fined = {r["vehicle_id"] for r in received if r["is_ticketed"]}
    assert fined == {t.vehicle_id for t in truth if t.must_be_fined}
    assert 0 < len(fined) < len(truth)
    for expected in truth:
        got = by_vehicle[expected.vehicle_id]
        assert got["avg_speed_kmh"] == pytest.approx(expected.avg_speed_kmh, abs=0.5)
        assert got["radar_id"] == "radar-it"
        assert got["speed_limit_mph"] == defaults.SPEED_LIMIT_MPH

    (letter,) = dead_letters.snapshot()
    assert letter["stage"] == "parse"
    assert letter["payload"] == "{not json"
    assert letter["error"].startswith("body is not JSON")
