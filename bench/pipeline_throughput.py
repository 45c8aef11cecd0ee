"""Events/s of the full pipeline against Beam's own ceiling, same runner, same emulator.

    .venv/bin/python bench/pipeline_throughput.py [--events 1000] [--speeding_fraction 0.1]

Each pipeline runs as a child process on the BundleBasedDirectRunner (--streaming) and
gets the same backlog of N simulated camera events (4 detections per vehicle, one
vehicle in ten speeding), published before it can read them:

1. pass-through (bench/lib/passthrough_pipeline.py: ReadFromPubSub -> WriteToPubSub);
2. the project's pipeline with everything on: fine evidence from the stack's cars API,
   embedded OCR (RapidOCR), photos to the storage emulator, and the warehouse
   (--bq_dataset) on the BigQuery emulator, its tables provisioned before it starts
   (as a deploy does);
3. the same pipeline on the same traffic with nobody speeding: the graph's own cost.
   The difference is what the fines' evidence costs (mostly reading plates on this
   machine's CPU; on Dataflow the default reader is Cloud Vision, a network call).

Why a backlog: publishing live at a chosen rate only shows whether the pipeline keeps up
with that rate; a backlog makes each pipeline read as fast as it can.

What is timed. The full pipeline emits one output per traversal, not per event, so its
outputs cannot be counted as events. Input consumption is timed instead, with markers
(unparseable messages, see bench/lib/harness.py) published just before the first event
and after the last: D = when the last marker came out - when the first did, the time to
read the N events (the backlog drains). For the pass-through that is all of its work.
The full pipeline does more when sessions close: measuring, evidence, output topic,
warehouse. So every vehicle's last detection is shifted to one instant T (speeds
unchanged), late enough that no session closes before its detections are read (T is
placed from a 200-event probe of the reading rate); all sessions then close at T + gap,
and F = (when the last traversal was on the output topic and every traversal's row in
the warehouse) - (T + gap). The idle wait for the watermark in between is not counted.
Full rate = N / (D + F); pass-through rate = N / D. A burst of closing sessions fills
the OCR and warehouse batches better than live traffic would, so F is if anything
optimistic. CPU seconds of the pipeline process per 1000 events are printed too: other
work on the same cores slows the wall clock, much less the CPU time. A benchmark, not a
test: it prints figures and asserts nothing.
"""

import argparse
import time
from dataclasses import dataclass, replace
from pathlib import Path

from lib.harness import (
    Arrivals,
    BenchPublisher,
    Heartbeat,
    bench_sections,
    bench_topics,
    cpu_seconds,
    exiting_together,
    load_note,
    start_passthrough,
    start_pipeline,
    stop_on_sigterm,
    traffic,
    wait_for_marker,
)

from generator.event_files import rebase
from generator.publish import publish_events
from generator.simulate import TrafficConfig, simulate_traffic
from local_stack.processes import wait_until
from local_stack.run import LocalPipeline, OutputCollector
from local_stack.services import LocalStack
from section_speed.clients.warehouse import Warehouse
from section_speed.domain.events import CameraEvent
from section_speed.domain.schemas import FINES, VEHICLE_SPEEDS

GAP_S = 10  # only the idle wait for the watermark, which is not counted, depends on it
LATENESS_S = 600
# T is placed for a drain at this fraction of a probe's reading rate: lower only makes the
# (uncounted) wait longer, higher risks sessions closing mid-drain (then a WARNING).
SLOWEST_FRACTION = 0.5  # of the probe's rate
PROBE_EVENTS = 200


@dataclass(frozen=True)
class Drain:
    seconds: float
    cpu_seconds: float  # the pipeline process's, while it read


def drain(
    publisher: BenchPublisher, arrivals: Arrivals, events: list[CameraEvent], pid: int
) -> Drain:
    """Publish the backlog between two markers; time from the first marker out to the last."""
    first = publisher.marker()
    cpu_before = cpu_seconds(pid)
    publish_events(events, publisher.topics[0], realtime=False, progress=False,
                   publisher=publisher)  # fmt: skip
    last = publisher.marker()
    publisher.flush()
    last_out = wait_for_marker(arrivals, last, timeout_s=900)
    first_out = wait_for_marker(arrivals, first, timeout_s=60)
    return Drain(last_out - first_out, cpu_seconds(pid) - cpu_before)


def passthrough(stack: LocalStack, events: list[CameraEvent]) -> Drain:
    topics = bench_topics("bench-pt")
    topics.create(stack)
    process = start_passthrough(stack, "passthrough", topics)
    arrivals = Arrivals()
    outputs = OutputCollector(stack, topics.output_subscription, on_message=arrivals,
                              producer=process)  # fmt: skip
    publisher = BenchPublisher([stack.topic_path(topics.input_topic)])
    try:
        wait_for_marker(arrivals, publisher.marker(), timeout_s=120)  # it reads
        result = drain(publisher, arrivals, events, process.pid)
        wait_until(lambda: arrivals.events >= len(events), timeout_s=120, what="every event out")
    finally:
        outputs.close()
        process.stop()
    return result


@dataclass(frozen=True)
class FullRun:
    drain: Drain
    fire_s: float  # sessions can close -> every traversal out and in the warehouse
    fire_cpu_s: float
    slack_s: float  # sessions could close this long after the drain ended (< 0: too early)
    traversals: int
    fines: int
    repeated: int

    def rate(self, events: int) -> float:
        return events / (self.drain.seconds + self.fire_s)

    def cpu_per_1000(self, events: int) -> float:
        return (self.drain.cpu_seconds + self.fire_cpu_s) / events * 1000


def full_pipeline(stack: LocalStack, config: TrafficConfig, name: str) -> FullRun:
    """One run of the project's pipeline on the backlog of `config`; see the module doc."""
    topics = bench_topics(f"bench-{name}")
    topics.create(stack)
    dataset = f"bench_{name.replace('-', '_')}"
    local = LocalPipeline(
        stack, topics, GAP_S, LATENESS_S, extra_args=["--bq_dataset", dataset],
        sections=bench_sections(config.radar_id, "bench-warm-up", "bench-probe"),
    )  # fmt: skip
    process = start_pipeline(local, f"pipeline-{name}")
    arrivals = Arrivals()
    outputs = OutputCollector(stack, topics.output_subscription, on_message=arrivals,
                              producer=process)  # fmt: skip
    dead_letters = OutputCollector(stack, topics.dead_letter_subscription, on_message=arrivals)
    publisher = BenchPublisher([local.input_topic_path()])
    warehouse = Warehouse(stack.project_id, dataset)
    heartbeat = Heartbeat(publisher.topics).start()
    try:
        # Warm-up: one fine through every stage (OCR model, tables, bucket, connections).
        warm_up = traffic(1, rate=1.0, speeding_fraction=1.0, seed=4, radar_id="bench-warm-up")
        publish_events(rebase(simulate_traffic(warm_up, 0)[0], int(time.time() * 1000)),
                       local.input_topic_path(), realtime=False, progress=False,
                       publisher=publisher)  # fmt: skip
        if not outputs.wait_for(lambda got: len(got) >= 1, timeout_s=180):
            raise TimeoutError(f"no warm-up traversal; log:\n{process.log_tail(30)}")
        wait_until(lambda: warehouse.count(VEHICLE_SPEEDS) >= 1, timeout_s=60,
                   what="the warm-up row")  # fmt: skip
        heartbeat.stop()
        # Probe: how fast this pipeline reads here and now, to place T (sessions that
        # close an hour from now: they never fire during the run).
        probe = traffic(PROBE_EVENTS // 4, rate=1000.0, speeding_fraction=0.0, seed=5,
                        radar_id="bench-probe")  # fmt: skip
        probe_events = exiting_together(simulate_traffic(probe, 0)[0], _ms(time.time() + 3600))
        probe_rate = PROBE_EVENTS / drain(publisher, arrivals, probe_events, process.pid).seconds
        events, truth = simulate_traffic(config, start_ms=0)
        expected_fines = sum(record.must_be_fined for record in truth)
        exit_s = time.time() + 15 + len(events) / (SLOWEST_FRACTION * probe_rate)
        events = exiting_together(events, _ms(exit_s))
        vehicles = config.vehicles
        read = drain(publisher, arrivals, events, process.pid)
        drained_at = time.time()
        close_at = exit_s + GAP_S
        print(f"  {name}: read the backlog in {read.seconds:.1f} s (probe: "
              f"{probe_rate:.0f} events/s); sessions close {close_at - drained_at:.0f} s later",
              flush=True)  # fmt: skip
        heartbeat = Heartbeat(publisher.topics).start()  # the watermark moves on a pull
        cpu_before = cpu_seconds(process.pid)
        if not outputs.wait_for(lambda got: len(got) >= vehicles + 1, timeout_s=900):
            raise TimeoutError(f"{len(outputs.snapshot()) - 1} of {vehicles} traversals out")
        wait_until(lambda: warehouse.count(VEHICLE_SPEEDS) >= vehicles + 1, timeout_s=300,
                   what="every traversal in the warehouse", interval_s=0.25)  # fmt: skip
        wait_until(lambda: warehouse.count(FINES) >= expected_fines + 1, timeout_s=300,
                   what="every fine in the warehouse", interval_s=0.25)  # fmt: skip
        done_at = time.time()
        fire_cpu = cpu_seconds(process.pid) - cpu_before
        fines = len(arrivals.fines()) - 1  # less the warm-up
    finally:
        heartbeat.stop()
        outputs.close()
        dead_letters.close()
        process.stop()
    return FullRun(read, done_at - close_at, fire_cpu, close_at - drained_at,
                   arrivals.traversal_count() - 1, fines, arrivals.repeated())  # fmt: skip


def _ms(epoch_s: float) -> int:
    return int(epoch_s * 1000)


def report(name: str, run: FullRun, events: int, vehicles: int, pt_rate: float) -> None:
    print(f"{name}: {run.rate(events):6,.1f} events/s  (read {run.drain.seconds:.1f} s = "
          f"{events / run.drain.seconds:,.1f} events/s, then sessions closed -> all out "
          f"{run.fire_s:.1f} s = {run.fire_s / vehicles * 1000:.0f} ms per traversal; "
          f"{run.cpu_per_1000(events):.1f} CPU s per 1000 events); "
          f"ratio to pass-through {run.rate(events) / pt_rate:.2f}")  # fmt: skip
    if run.slack_s < 0 or run.repeated or run.traversals != vehicles:
        print(
            f"  WARNING: sessions could close {-run.slack_s:.1f} s before the drain ended; "
            f"{run.traversals} traversals for {vehicles} vehicles, {run.repeated} repeated"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000, help="backlog (4 per vehicle)")
    parser.add_argument("--speeding_fraction", type=float, default=0.1)
    parser.add_argument("--logs", type=Path, help="keep the services' and pipelines' logs here")
    args = parser.parse_args()
    stop_on_sigterm()
    vehicles = args.events // 4
    config = traffic(vehicles, rate=1000.0, speeding_fraction=args.speeding_fraction, seed=3)
    # The same traffic with nobody speeding: the graph's own cost, without the evidence
    # stage's per-fine work (a cars API call, a plate read on this machine's CPU, a photo
    # stored), which no change in the graph's shape removes.
    no_fines = replace(config, speeding_fraction=0.0)
    events, _ = simulate_traffic(config, start_ms=0)
    print(load_note(), flush=True)
    with LocalStack(work_dir=args.logs) as stack:
        stack.apply_env()
        pt = passthrough(stack, events)
        print(f"  pass-through: read the backlog in {pt.seconds:.1f} s", flush=True)
        full = full_pipeline(stack, config, "full")
        graph_only = full_pipeline(stack, no_fines, "no-fines")
    pt_rate = len(events) / pt.seconds
    print(f"backlog: {len(events)} events, {vehicles} vehicles, {full.fines} fines "
          f"(speeding fraction {args.speeding_fraction:g}); session gap {GAP_S} s")  # fmt: skip
    print(f"pass-through: {pt_rate:6,.1f} events/s  (read {pt.seconds:.1f} s; "
          f"{pt.cpu_seconds / len(events) * 1000:.1f} CPU s per 1000 events)")  # fmt: skip
    report("full pipeline", full, len(events), vehicles, pt_rate)
    report("same traffic, no fines", graph_only, len(events), vehicles, pt_rate)
    fine_s = (full.fire_s - graph_only.fire_s) / max(full.fines, 1)
    print(f"ratio full/pass-through: {full.rate(len(events)) / pt_rate:.2f}; with no fines "
          f"{graph_only.rate(len(events)) / pt_rate:.2f}; reading alone "
          f"{pt.seconds / full.drain.seconds:.2f} "
          f"(issue 10's target >= 0.6)")  # fmt: skip
    print(f"each fine adds {fine_s * 1000:.0f} ms after its session closes (evidence: cars "
          f"API, embedded plate reading, photo store)")  # fmt: skip
    print(load_note())


if __name__ == "__main__":
    main()
