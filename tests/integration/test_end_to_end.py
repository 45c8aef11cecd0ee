"""Generator traffic through the running pipeline on the emulators, checked against truth.

One pipeline run (module fixture) serves every test here: the output topic, the
warehouse tables, the dead letter and a replay of the same events.
"""

import json
import time
from collections import Counter

import pytest
from google.cloud import pubsub_v1

from generator.event_files import rebase
from generator.publish import publish_events
from generator.simulate import TrafficConfig, simulate_traffic
from local_stack.processes import wait_until
from local_stack.run import LocalPipeline, LocalTopics, OutputCollector
from section_speed.clients.warehouse import Warehouse
from section_speed.domain import defaults
from section_speed.domain.geometry import interpolate
from section_speed.domain.schemas import DEAD_LETTER, FINES, VEHICLE_SPEEDS
from tests.helpers import track

pytestmark = [pytest.mark.integration, pytest.mark.pipeline]

GAP_S = 20
DATASET = "it_warehouse"
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


STALE = track("stale-car", 90.0, start_ms=int(time.time() * 1000) - 3_600_000, points=2)[0]


@pytest.fixture(scope="module")
def run(stack):
    topics = LocalTopics(
        input_topic="it-events", input_subscription="it-events-sub",
        output_topic="it-fines", output_subscription="it-fines-reader",
        dead_letter_topic="it-dead", dead_letter_subscription="it-dead-reader",
    )  # fmt: skip
    topics.create(stack)
    # Lateness covers the replay test's re-sent events, so that they re-fire, not drop.
    local = LocalPipeline(
        stack, topics, GAP_S, allowed_lateness_seconds=600,
        extra_args=["--bq_dataset", DATASET], sections={SECTION.radar_id: SECTION.rule},
    )  # fmt: skip
    local.start()
    outputs = OutputCollector(stack, topics.output_subscription, producer=local.process)
    dead_letters = OutputCollector(stack, topics.dead_letter_subscription)
    events, truth = simulate_traffic(SECTION, start_ms=0)
    events = rebase(events, int(time.time() * 1000))  # live: event time is now
    assert publish_events(events, local.input_topic_path(), progress=False) == len(events)
    # Bad input is published alongside: it must reach the dead letter, not stop the job.
    publisher = pubsub_v1.PublisherClient()
    publisher.publish(local.input_topic_path(), b"{not json").result(30)
    # So is a detection an hour old, far beyond the allowed lateness: dead-lettered, counted.
    data, attributes = STALE.to_pubsub()
    publisher.publish(local.input_topic_path(), data, **attributes).result(30)
    # Every traversal fires once the watermark passes its last detection + the gap.
    assert outputs.wait_for(lambda got: len(got) >= len(truth), timeout_s=150), (
        f"only {len(outputs.snapshot())} of {len(truth)} traversals arrived; "
        f"pipeline log:\n{local.process.log_tail(30)}"
    )
    yield local, outputs, dead_letters, events, truth, Warehouse(stack.project_id, DATASET)
    outputs.close()
    dead_letters.close()
    local.process.stop()


def assert_matches_truth(records, truth):
    by_vehicle = {r["vehicle_id"]: r for r in records}
    assert len(records) == len(truth), "an extra or missing traversal"
    assert set(by_vehicle) == {t.vehicle_id for t in truth}
    for expected in truth:
        got = by_vehicle[expected.vehicle_id]
        assert got["avg_speed_kmh"] == pytest.approx(expected.avg_speed_kmh, abs=0.5)
        assert got["is_ticketed"] is expected.must_be_fined
        assert got["radar_id"] == "radar-it"
        assert got["speed_limit_mph"] == defaults.SPEED_LIMIT_MPH


def test_fines_on_the_output_topic_equal_the_generators_truth(run):
    _, outputs, _, _, truth, _ = run
    received = outputs.snapshot()[: len(truth)]
    assert Counter(r["fine_id"] for r in received).most_common(1)[0][1] == 1, "duplicates"
    assert_matches_truth(received, truth)
    fined = [r for r in received if r["is_ticketed"]]
    assert 0 < len(fined) < len(truth)


def test_warehouse_rows_equal_the_generators_truth(run):
    _, outputs, _, _, truth, warehouse = run
    n_fines = sum(t.must_be_fined for t in truth)
    wait_until(
        lambda: warehouse.count(VEHICLE_SPEEDS) >= len(truth) and warehouse.count(FINES) >= n_fines,
        timeout_s=60,
        what="the traversals' rows in the warehouse",
        interval_s=0.5,
    )
    speeds = warehouse.query(f"SELECT * FROM `{warehouse.project}.{DATASET}.vehicle_speeds`")
    # vehicle_speeds names a fined vehicle only (docs/warehouse.md, Retention); the output
    # topic says who each traversal was.
    who = {r["fine_id"]: r["vehicle_id"] for r in outputs.snapshot()}
    assert {r["traversal_id"]: r["vehicle_id"] for r in speeds if r["vehicle_id"]} == {
        r["traversal_id"]: who[r["traversal_id"]] for r in speeds if r["is_ticketed"]
    }
    assert_matches_truth([{**r, "vehicle_id": who[r["traversal_id"]]} for r in speeds], truth)
    fines = warehouse.query(f"SELECT * FROM `{warehouse.project}.{DATASET}.fines`")
    assert {f["vehicle_id"] for f in fines} == {t.vehicle_id for t in truth if t.must_be_fined}
    assert all(f["is_ticketed"] for f in fines)
    assert len({f["fine_id"] for f in fines}) == len(fines) == n_fines


def test_bad_input_reaches_the_dead_letter_topic_and_table(run):
    _, _, dead_letters, _, _, warehouse = run
    assert dead_letters.wait_for(lambda got: len(got) >= 2, timeout_s=30)
    (letter,) = [x for x in dead_letters.snapshot() if x["stage"] == "parse"]
    assert letter["stage"] == "parse"
    assert letter["payload"] == "{not json"
    assert letter["error"].startswith("body is not JSON")
    wait_until(
        lambda: warehouse.count(DEAD_LETTER) >= 2,
        timeout_s=60,
        what="the dead letters' rows",
        interval_s=0.5,
    )
    (row,) = warehouse.query(
        f"SELECT * FROM `{warehouse.project}.{DATASET}.dead_letter` WHERE stage = 'parse'"
    )
    assert (row["stage"], row["payload"], row["error"]) == (
        "parse", "{not json", letter["error"]
    )  # fmt: skip


def test_a_detection_beyond_allowed_lateness_is_dead_lettered_not_dropped(run):
    _, outputs, dead_letters, _, _, _ = run
    assert dead_letters.wait_for(
        lambda got: any(x["stage"] == "too_late" for x in got), timeout_s=30
    )
    (letter,) = [x for x in dead_letters.snapshot() if x["stage"] == "too_late"]
    # The local runner's watermark is the clock: lateness is judged against it.
    assert (
        letter["error"].startswith("read ") and "plus allowed lateness (600 s)" in letter["error"]
    )
    assert json.loads(letter["payload"])["event_id"] == STALE.event_id
    assert not any(r["vehicle_id"] == "stale-car" for r in outputs.snapshot())


def test_replaying_the_same_events_adds_no_row_and_no_message(run):
    local, outputs, _, events, truth, warehouse = run
    test_warehouse_rows_equal_the_generators_truth(run)  # the first delivery is all in
    before = len(outputs.snapshot())
    # The same events again (same ids and times): late, within allowed lateness.
    publish_events(events, local.input_topic_path(), realtime=False, progress=False)
    # A fresh vehicle behind them: once its row is in, the replay has gone through too
    # (late events fire at once; the sentinel's session needs its gap to pass).
    sentinel_config = TrafficConfig(**{**SECTION.__dict__, "vehicles": 1, "seed": 99})
    sentinel, (sentinel_truth,) = simulate_traffic(sentinel_config, start_ms=0)
    publish_events(rebase(sentinel, int(time.time() * 1000)), local.input_topic_path(),
                   progress=False)  # fmt: skip
    assert outputs.wait_for(
        lambda got: any(r["vehicle_id"] == sentinel_truth.vehicle_id for r in got),
        timeout_s=120,
    )
    # Its vehicle_speeds row has no vehicle_id unless it was fined: found by its id.
    (sentinel_id,) = {
        r["fine_id"] for r in outputs.snapshot() if r["vehicle_id"] == sentinel_truth.vehicle_id
    }
    wait_until(
        lambda: (
            warehouse.query(
                f"SELECT COUNT(*) AS n FROM `{warehouse.project}.{DATASET}.vehicle_speeds` "
                f"WHERE traversal_id = '{sentinel_id}'"
            )[0]["n"]
            >= 1
        ),
        timeout_s=60,
        what="the sentinel vehicle's row",
        interval_s=0.5,
    )
    # The replay re-fired every session (same measurement): nothing new on the topic ...
    assert [r["vehicle_id"] for r in outputs.snapshot()[before:]] == [sentinel_truth.vehicle_id]
    # ... and no new row: only the sentinel is new.
    assert warehouse.count(VEHICLE_SPEEDS) == len(truth) + 1
    assert warehouse.count(FINES) == sum(t.must_be_fined for t in truth) + int(
        sentinel_truth.must_be_fined
    )
