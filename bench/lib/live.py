"""Live traffic through running pipelines: fine latency and input consumption, as one run.

Shared by bench/fine_latency.py and bench/scaling.py. Vehicles are published as they
pass (event time = now, `publish_events(realtime=True)`), optionally split by vehicle over
several pipelines, each a full pipeline (evidence + warehouse) with its own topics. A
speeder's fine latency is from the publish of its last detection (acknowledged by
Pub/Sub) to its fine arriving on the output topic; its floor is the session gap, since a
session closes one gap after its last detection. A keep-alive (harness.Heartbeat) runs
throughout, as other traffic on a real road would, so that the last vehicles' sessions
do not wait for an empty 30 s pull.
"""

import hashlib
import statistics
import time
from dataclasses import dataclass

from generator.event_files import rebase
from generator.publish import publish_events
from generator.simulate import TrafficConfig, simulate_traffic
from lib.harness import (
    Arrivals,
    BenchPublisher,
    Heartbeat,
    bench_sections,
    bench_topics,
    last_detections,
    percentile,
    start_pipeline,
    traffic,
    wait_for_marker,
)
from local_stack.processes import ManagedProcess
from local_stack.run import LocalPipeline, OutputCollector
from local_stack.services import LocalStack
from section_speed.domain.events import CameraEvent, parse_rfc3339_ms

LATENESS_S = 120


@dataclass(frozen=True)
class LiveResult:
    gap_s: int
    pipelines: int
    events: int
    publish_s: float  # first to last event published
    consumed_s: float  # first event published -> marker after the last event out
    end_lag_s: float  # that marker's own publish -> out: the input queue at the end
    vehicles_at_once: float
    latencies: list[float]  # per speeder, seconds
    in_pipeline: list[float]  # last detection published -> fine's processed_at
    fines_expected: int
    traversals_expected: int
    traversals: int
    repeated: int

    @property
    def offered_rate(self) -> float:
        return self.events / self.publish_s

    @property
    def consumed_rate(self) -> float:
        return self.events / self.consumed_s

    def median(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")

    def p95(self) -> float:
        return percentile(self.latencies, 95)


def vehicles_at_once(events: list[CameraEvent]) -> float:
    """Mean number of vehicles inside the section: total time inside / traffic span."""
    spans: dict[str, list[int]] = {}
    for event in events:
        span = spans.setdefault(event.vehicle_id, [event.event_time_ms, event.event_time_ms])
        span[0], span[1] = min(span[0], event.event_time_ms), max(span[1], event.event_time_ms)
    inside_ms = sum(last - first for first, last in spans.values())
    total_ms = max(s[1] for s in spans.values()) - min(s[0] for s in spans.values())
    return inside_ms / max(total_ms, 1)


def shard_of(vehicle_id: str, shards: int) -> int:
    """A stable vehicle -> pipeline split (Python's hash() changes between runs)."""
    return int(hashlib.sha256(vehicle_id.encode()).hexdigest(), 16) % shards


def run_live(
    stack: LocalStack,
    name: str,
    config: TrafficConfig,
    gap_s: int,
    pipelines: int = 1,
) -> LiveResult:
    """Start `pipelines` pipelines, warm them up, publish `config` live, measure, stop them."""
    locals_: list[LocalPipeline] = []
    processes: list[ManagedProcess] = []
    collectors: list[OutputCollector] = []
    arrivals = Arrivals(shards=pipelines)
    heartbeat: Heartbeat | None = None
    try:
        for shard in range(pipelines):
            topics = bench_topics(f"bench-{name}-{shard}")
            topics.create(stack)
            dataset = f"bench_{name}_{shard}".replace("-", "_")
            local = LocalPipeline(stack, topics, gap_s, LATENESS_S,
                                  extra_args=["--bq_dataset", dataset],
                                  sections=bench_sections(config.radar_id,
                                                          f"bench-warm-{shard}"))  # fmt: skip
            process = start_pipeline(local, f"pipeline-{name}-{shard}")
            locals_.append(local)
            processes.append(process)
            collectors.append(OutputCollector(stack, topics.output_subscription,
                                              on_message=arrivals, producer=process))  # fmt: skip
            collectors.append(
                OutputCollector(stack, topics.dead_letter_subscription, on_message=arrivals)
            )
        inputs = [local.input_topic_path() for local in locals_]
        heartbeat = Heartbeat(inputs).start()
        _warm_up(inputs, collectors[::2])
        events, truth = simulate_traffic(config, start_ms=0)
        events = rebase(events, int(time.time() * 1000))
        speeders = {record.vehicle_id for record in truth if record.must_be_fined}
        last = {e: v for e, v in last_detections(events).items() if v in speeders}
        by_event = {event.event_id: event.vehicle_id for event in events}
        publisher = BenchPublisher(
            inputs,
            track=last,
            route=lambda event_id: inputs[shard_of(by_event[event_id], pipelines)],
        )
        started = time.time()
        publish_events(events, inputs[0], realtime=True, progress=False, publisher=publisher)
        published = time.time()
        marker = publisher.marker()
        publisher.flush()
        marker_out = wait_for_marker(arrivals, marker, timeout_s=900)
        collectors[0].wait_for(lambda _: arrivals.fines().keys() >= speeders, timeout_s=300)
        _wait_quiet(arrivals, len(truth))
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        for collector in collectors:
            collector.close()
        for process in processes:
            process.stop()
    fines = arrivals.fines()
    records = {vehicle: outputs[0][1] for vehicle, outputs in arrivals.traversals.items()}
    latencies, in_pipeline = [], []
    for event_id, vehicle in last.items():
        if vehicle in fines and event_id in publisher.published_at:
            sent = publisher.published_at[event_id]
            latencies.append(fines[vehicle] - sent)
            in_pipeline.append(parse_rfc3339_ms(records[vehicle]["processed_at"]) / 1000 - sent)
    return LiveResult(
        gap_s=gap_s, pipelines=pipelines, events=len(events), publish_s=published - started,
        consumed_s=marker_out - started, end_lag_s=marker_out - publisher.markers[marker][0],
        vehicles_at_once=vehicles_at_once(events), latencies=latencies, in_pipeline=in_pipeline,
        fines_expected=len(speeders), traversals_expected=len(truth),
        traversals=arrivals.traversal_count() - pipelines, repeated=arrivals.repeated(),
    )  # fmt: skip


def _warm_up(inputs: list[str], outputs: list[OutputCollector]) -> None:
    """One fine per pipeline through every stage (OCR model, tables, bucket, connections)."""
    publisher = BenchPublisher(inputs)
    for shard, topic in enumerate(inputs):
        config = traffic(1, rate=1.0, speeding_fraction=1.0, seed=4, radar_id=f"bench-warm-{shard}")
        events = rebase(simulate_traffic(config, 0)[0], int(time.time() * 1000))
        publish_events(events, topic, realtime=False, progress=False, publisher=publisher)
    for collector in outputs:
        if not collector.wait_for(lambda got: len(got) >= 1, timeout_s=180):
            raise TimeoutError("a pipeline sent no warm-up fine within 180 s")


def _wait_quiet(arrivals: Arrivals, expected: int, quiet_s: float = 5.0) -> None:
    """Wait for every traversal (or 60 s), then for `quiet_s` without a new output."""
    deadline = time.time() + 60
    seen = -1
    while time.time() < deadline:
        count = sum(len(outputs) for outputs in arrivals.traversals.values())
        if count == seen and arrivals.traversal_count() >= expected:
            return
        seen = count
        time.sleep(quiet_s)
