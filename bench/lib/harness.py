"""What the pipeline benchmarks share: traffic, markers, keep-alive, pipeline processes.

Markers are unparseable messages (`bench-marker SEQ`) published on the input topic. The
pass-through pipeline copies them to its output; the project's pipeline sends them to its
dead-letter topic straight from the parse step (no window, no group). Either way the time
a marker comes out says that the input published before it has been read (the emulator
delivers a backlog in about publish order), so markers time input consumption from
outside the pipeline. They are few: in the project's pipeline a dead letter is costly
(its own publish and warehouse insert, each with the runner's per-bundle set-up).

`Heartbeat` keeps the runner pulling when no traffic flows, as a busy road would: an
empty pull on the emulator blocks ~30 s and the BundleBasedDirectRunner's watermark only
moves when a pull returns. Its messages are one detection repeated (same event_id, time
= now): one key, deduplicated, never a traversal, so it costs the pipeline little.
"""

import dataclasses
import math
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from google.cloud import pubsub_v1

from generator.publish import PublishFuture
from generator.simulate import TrafficConfig
from local_stack.processes import ManagedProcess, wait_until
from local_stack.run import READY_LINE, LocalPipeline, LocalTopics
from local_stack.services import LocalStack
from section_speed.domain import defaults
from section_speed.domain.events import EVENT_ID_ATTRIBUTE, CameraEvent
from section_speed.domain.geometry import interpolate
from section_speed.domain.rules import SectionRule

LIB_DIR = Path(__file__).resolve().parent
MARKER_PREFIX = "bench-marker"
HEARTBEAT_ID = "bench-heartbeat"  # event, radar and vehicle id of the keep-alive
POINTS = 4
# 122 m of the course's section: 4 detections 41 m apart, so even the slowest lawful
# vehicle (24 km/h) is seen every 6.1 s and a 10 s session gap holds each traversal.
SECTION_FINAL = interpolate(defaults.INITIAL_COORDINATES, defaults.FINAL_COORDINATES, 0.1)


def traffic(
    vehicles: int, rate: float, speeding_fraction: float, seed: int, radar_id: str = "bench"
) -> TrafficConfig:
    """`vehicles` crossing the short section, `rate` events/s on average."""
    return TrafficConfig(
        initial=defaults.INITIAL_COORDINATES, final=SECTION_FINAL, radar_id=radar_id,
        vehicles=vehicles, rate=rate, speeding_fraction=speeding_fraction, points=POINTS,
        seed=seed,
    )  # fmt: skip


def bench_sections(*radar_ids: str) -> dict[str, SectionRule]:
    """The short section's rule for each radar id (the pipeline's --sections_file)."""
    return {radar_id: traffic(1, 1.0, 0.0, 0, radar_id).rule for radar_id in radar_ids}


def exiting_together(events: Iterable[CameraEvent], exit_ms: int) -> list[CameraEvent]:
    """Shift each vehicle so that its last detection is at `exit_ms` (speeds unchanged).

    Every session then closes at the same watermark, so the work done when sessions
    close can be timed as one burst, apart from the work done while reading.
    """
    events = list(events)
    last: dict[str, int] = defaultdict(int)
    for event in events:
        last[event.vehicle_id] = max(last[event.vehicle_id], event.event_time_ms)
    shifted = [
        dataclasses.replace(
            event, event_time_ms=event.event_time_ms + exit_ms - last[event.vehicle_id]
        )
        for event in events
    ]
    shifted.sort(key=lambda event: (event.event_time_ms, event.event_id))
    return shifted


def last_detections(events: Iterable[CameraEvent]) -> dict[str, str]:
    """event_id of each vehicle's last detection -> vehicle_id."""
    last: dict[str, CameraEvent] = {}
    for event in events:
        seen = last.get(event.vehicle_id)
        if seen is None or event.event_time_ms > seen.event_time_ms:
            last[event.vehicle_id] = event
    return {event.event_id: vehicle for vehicle, event in last.items()}


def new_client() -> pubsub_v1.PublisherClient:
    """The generator's batch settings (generator.publish._new_client)."""
    settings = pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.05)
    return pubsub_v1.PublisherClient(batch_settings=settings)


class BenchPublisher:
    """A Publisher for `publish_events` that also times and routes events, and sends markers.

    - `track`: event ids whose publish time is recorded (a speeder's last detection);
    - `route`: event id -> topic, to split vehicles over several pipelines' topics.
    """

    def __init__(
        self,
        topics: list[str],
        *,
        track: Iterable[str] = (),
        route: Callable[[str], str] | None = None,
    ) -> None:
        self.client = new_client()
        self.topics = topics
        self.track = set(track)
        self.route = route
        self.published_at: dict[str, float] = {}
        self.events = 0
        # seq -> (publish time, events published before it)
        self.markers: dict[int, tuple[float, int]] = {}
        self._lock = threading.Lock()
        self._futures: list[PublishFuture] = []

    def publish(self, topic: str, data: bytes, **attrs: str) -> PublishFuture:
        event_id = attrs.get(EVENT_ID_ATTRIBUTE, "")
        target = self.route(event_id) if self.route else topic
        future = self.client.publish(target, data, **attrs)
        with self._lock:
            self.events += 1
        if event_id in self.track:  # published = acknowledged by Pub/Sub, after batching
            future.add_done_callback(lambda _, key=event_id: self._published(key))
        return future

    def _published(self, event_id: str) -> None:
        self.published_at[event_id] = time.time()

    def marker(self) -> int:
        """Publish the next marker on every topic; returns its sequence number."""
        with self._lock:
            seq = len(self.markers)
            self.markers[seq] = (time.time(), self.events)
        data = f"{MARKER_PREFIX} {seq}".encode()
        with self._lock:
            self._futures.extend(self.client.publish(topic, data) for topic in self.topics)
        return seq

    def flush(self) -> None:
        with self._lock:
            futures, self._futures = self._futures, []
        for future in futures:
            future.result(timeout=60)


class Heartbeat:
    """A keep-alive detection every `interval_s` on a background thread, until stopped."""

    def __init__(self, topics: list[str], interval_s: float = 0.5) -> None:
        self.client = new_client()
        self.topics = topics
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._futures: list[PublishFuture] = []

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            now_ms = int(time.time() * 1000)
            beat = CameraEvent(HEARTBEAT_ID, HEARTBEAT_ID, HEARTBEAT_ID, SECTION_FINAL, now_ms)
            data, attributes = beat.to_pubsub()
            for topic in self.topics:
                self._futures.append(self.client.publish(topic, data, **attributes))

    def start(self) -> "Heartbeat":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        for future in self._futures:
            future.result(timeout=60)


@dataclass
class Arrivals:
    """When outputs arrive, as an `OutputCollector` callback: markers, events, traversals."""

    shards: int = 1  # a marker is out when it came out of every pipeline
    markers: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    traversals: dict[str, list[tuple[float, dict[str, Any]]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    events: int = 0
    last_event_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, record: dict[str, Any]) -> None:
        now = time.time()
        text = record.get("payload") or record.get("undecodable") or ""
        with self._lock:
            if isinstance(text, str) and text.startswith(MARKER_PREFIX):
                self.markers[int(text.split()[1])].append(now)
            elif "fine_id" in record and record["vehicle_id"] != HEARTBEAT_ID:
                self.traversals[record["vehicle_id"]].append((now, record))
            elif "event_id" in record:  # a camera event, passed through
                self.events += 1
                self.last_event_at = now

    def marker_out(self, seq: int) -> float | None:
        """When marker `seq` had come out of every pipeline, or None."""
        with self._lock:
            times = self.markers.get(seq, [])
            return max(times) if len(times) >= self.shards else None

    def traversal_count(self) -> int:
        with self._lock:
            return len(self.traversals)

    def fines(self) -> dict[str, float]:
        """vehicle_id -> when its first fine arrived."""
        with self._lock:
            return {
                vehicle: outputs[0][0]
                for vehicle, outputs in self.traversals.items()
                if outputs[0][1]["is_ticketed"]
            }

    def repeated(self) -> int:
        """Traversals that came out more than once (an early or late firing)."""
        with self._lock:
            return sum(len(outputs) - 1 for outputs in self.traversals.values())


def wait_for_marker(arrivals: Arrivals, seq: int, timeout_s: float) -> float:
    wait_until(
        lambda: arrivals.marker_out(seq) is not None,
        timeout_s=timeout_s,
        what=f"marker {seq} to come out",
        interval_s=0.02,
    )
    out = arrivals.marker_out(seq)
    assert out is not None
    return out


def start_process(
    stack: LocalStack, name: str, argv: list[str], timeout_s: float = 180.0
) -> ManagedProcess:
    """Spawn a pipeline under its own name (own log) and wait for its ready line."""
    process = stack.spawn(name, argv)

    def launched() -> bool:
        if not process.running():
            raise RuntimeError(f"{name} exited at start:\n{process.log_tail(40)}")
        return READY_LINE in process.log_path.read_text(errors="replace")

    wait_until(launched, timeout_s=timeout_s, what=f"{name} to start", interval_s=0.25)
    return process


def start_pipeline(local: LocalPipeline, name: str) -> ManagedProcess:
    """`LocalPipeline.start`, but under `name`: several runs share one stack's log dir."""
    local.provision()
    local.process = start_process(local.stack, name, local.argv())
    return local.process


def start_passthrough(stack: LocalStack, name: str, topics: LocalTopics) -> ManagedProcess:
    """The pass-through pipeline on `topics`' input subscription and output topic."""
    argv = [
        sys.executable, str(LIB_DIR / "passthrough_pipeline.py"),
        "--runner", "BundleBasedDirectRunner", "--streaming",
        "--subscription", stack.subscription_path(topics.input_subscription),
        "--topic", stack.topic_path(topics.output_topic),
    ]  # fmt: skip
    return start_process(stack, name, argv)


def bench_topics(prefix: str) -> LocalTopics:
    """A run's own topics and subscriptions, so runs on one stack never share messages."""
    return LocalTopics(
        input_topic=f"{prefix}-in", input_subscription=f"{prefix}-in-sub",
        output_topic=f"{prefix}-out", output_subscription=f"{prefix}-out-reader",
        dead_letter_topic=f"{prefix}-dead", dead_letter_subscription=f"{prefix}-dead-reader",
    )  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its reaped children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / _CLOCK_TICKS


_CLOCK_TICKS = float(os.sysconf("SC_CLK_TCK"))


def stop_on_sigterm() -> None:
    """`kill` (or `timeout`) then unwinds like Ctrl-C, so the LocalStack stops its children."""

    def interrupt(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


def load_note() -> str:
    """The machine's load when a run starts: other work on the same cores skews figures."""
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} CPUs"
