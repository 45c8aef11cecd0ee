"""Batch sizes the streaming graph reaches for the plate reader and the warehouse, by rate.

    .venv/bin/python bench/batching.py [--rates 10 100 1000] [--duration 20] [--drain 20]

Issue 13 (item 5): after the keyed steps a streaming runner's bundles are small, so batching
within a bundle (BatchElements) sends about one item per service call. The graph batches
with `BatchForService` instead (GroupIntoBatches on sharded keys, waiting at most
PLATE_BATCH_WAIT_S / INSERT_WAIT_S). This prints the batch sizes that reaches.

For each rate, a fresh pipeline process on the BundleBasedDirectRunner (--streaming) reads
fined traversals (JSON) from its own Pub/Sub emulator subscription and runs the product's
own steps from the traversal identity step on: KeyTraversals -> IdentifyTraversals (the
stateful, keyed step that fines leave in the real graph) -> EnrichFine -> fine rows and
speed rows -> WriteToWarehouse, with the services faked (an instant cars API with one small
JPEG, a plate reader and a warehouse that only note each call's size in a file). Beside
them, two baseline branches batch the same fines and rows with BatchElements within the
bundle (the graph's batching before this change) and note those sizes too.

A publisher sends R traversals/s, every one a fine (so R plate reads/s and 2R rows/s: a
fine row and a speed row), for --duration s; a keep-alive message every 0.2 s (dropped by
the parse step, as other traffic on a road would be) keeps the runner pulling so that the
last batches' wait can end. Then up to --drain s for everything to come out, and the
pipeline is stopped, drained or not: a rate the local runner cannot keep up with shows as
fewer items read than published. Instant fakes make the runner's own pace the only limit,
so the sizes are those of a fast service; a slower one lets batches fill further.

A benchmark, not a test: it prints figures and asserts nothing. `--run_pipeline` is the
child process's own mode (the pipeline), not meant to be called by hand.
"""

import argparse
import functools
import io
import json
import logging
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from google.cloud import pubsub_v1
from lib.harness import load_note, start_process, stop_on_sigterm
from PIL import Image

from local_stack.processes import ManagedProcess, wait_until
from local_stack.run import READY_LINE
from local_stack.services import LocalStack
from section_speed.clients.cars_api import Photo
from section_speed.domain import defaults
from section_speed.domain.events import VehicleKey
from section_speed.domain.identity import SessionVerdict
from section_speed.domain.plate_reading import PlateReading
from section_speed.domain.schemas import FINES, Table
from section_speed.domain.traversal import (
    Traversal,
    kmh_to_mph,
    traversal_from_json,
    traversal_to_json,
)
from transforms.batching import BatchForService
from transforms.enrich import PLATE_BATCH_SIZE, PLATE_BATCH_WAIT_S, EnrichFine
from transforms.evidence_services import EvidenceServices
from transforms.traversals import FINED, NOT_FINED, IdentifyTraversalsFn
from transforms.warehouse import (
    INSERT_WAIT_S,
    ROWS_PER_INSERT,
    SpeedRows,
    ToWarehouseRows,
    WarehouseRow,
    WriteToWarehouse,
)
from transforms.worker_clients import ClientHandler

_log = logging.getLogger(__name__)

KEEP_ALIVE = b"bench-keep-alive"
KEEP_ALIVE_INTERVAL_S = 0.2
RADAR_ID = "bench-batching"
WARM_UP = 5  # fines through every stage before timing: loads, connections, first state
# The identity step keeps state this long past a traversal's exit, as the graph's defaults do.
KEEP_SECONDS = defaults.SESSION_GAP_SECONDS + defaults.ALLOWED_LATENESS_SECONDS
SERIES = {  # file -> what it records
    "plates": f"plate reader calls, GroupIntoBatches({PLATE_BATCH_SIZE}, {PLATE_BATCH_WAIT_S:g} s)",
    "plates_in_bundle": f"plate batches, BatchElements({PLATE_BATCH_SIZE}) within a bundle",
    "inserts": f"warehouse inserts, GroupIntoBatches({ROWS_PER_INSERT}, {INSERT_WAIT_S:g} s)",
    "inserts_in_bundle": f"warehouse batches, BatchElements({ROWS_PER_INSERT}) within a bundle",
}


# -- the pipeline (child process) ---------------------------------------------------------


class SizeLog:
    """Appends `time size` lines to one file: the side channel from pipeline to bench."""

    def __init__(self, path: str) -> None:
        self.path = path

    def note(self, size: int) -> None:
        with open(self.path, "a") as log:
            log.write(f"{time.time():.3f} {size}\n")


def _small_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (90, 120, 150)).save(buffer, "JPEG")
    return buffer.getvalue()


class InstantCarsApi:
    max_image_bytes = 10_000

    def __init__(self) -> None:
        self.photo = _small_jpeg()

    def fetch(self, vehicle_id: str) -> Photo:
        return Photo(f"https://cars.example/{vehicle_id}.jpg", self.photo)


class SizeNotingReader:
    name = "bench-reader"

    def __init__(self, path: str) -> None:
        self.sizes = SizeLog(path)

    def read(self, images: Sequence[bytes]) -> list[PlateReading]:
        self.sizes.note(len(images))
        return [PlateReading("ABC1234", 0.99, "ABC 1234", self.name) for _ in images]


class SizeNotingWarehouse:
    def __init__(self, path: str) -> None:
        self.sizes = SizeLog(path)

    def insert(self, table: Table, rows: Sequence[dict], row_ids: Sequence[str]) -> list:
        self.sizes.note(len(rows))
        return []  # every row accepted


def parse_traversal(data: bytes) -> list[Traversal]:
    return [] if data == KEEP_ALIVE else [traversal_from_json(json.loads(data))]


def note_size(batch: Sequence[object], path: str) -> None:
    SizeLog(path).note(len(batch))


def build(pipeline: beam.Pipeline, subscription: str, sizes: Path) -> None:
    """The product's steps from the identity step to the sinks, and the baselines."""
    fined = (
        pipeline
        | "ReadTraversals" >> beam.io.ReadFromPubSub(subscription=subscription)
        | "ParseTraversals" >> beam.FlatMap(parse_traversal).with_output_types(Traversal)
        | "KeyTraversals"
        >> beam.Map(
            lambda t: ((t.radar_id, t.vehicle_id), SessionVerdict(traversal=t))
        ).with_output_types(tuple[VehicleKey, SessionVerdict])
        | "IdentifyTraversals"
        >> beam.ParDo(IdentifyTraversalsFn(KEEP_SECONDS)).with_outputs(FINED, NOT_FINED)
    )[FINED]
    services = EvidenceServices(
        cars_api=ClientHandler(InstantCarsApi),
        plate_reader=ClientHandler(functools.partial(SizeNotingReader, str(sizes / "plates"))),
    )
    records, _ = fined | "EnrichFines" >> EnrichFine(services, PLATE_BATCH_WAIT_S)
    rows = (
        records | "FineRows" >> ToWarehouseRows(FINES),
        fined | "SpeedRows" >> SpeedRows(),
    ) | "WarehouseRows" >> beam.Flatten()
    warehouse = ClientHandler(functools.partial(SizeNotingWarehouse, str(sizes / "inserts")))
    rows | "WriteToBigQuery" >> WriteToWarehouse(warehouse, INSERT_WAIT_S)
    (
        fined
        | "PlatesInBundle"
        >> BatchForService(lambda t: t.radar_id, Traversal, PLATE_BATCH_SIZE, wait_s=None)
        | "NotePlatesInBundle" >> beam.Map(note_size, str(sizes / "plates_in_bundle"))
    )
    (
        rows
        | "InsertsInBundle"
        >> BatchForService(lambda r: r.table, WarehouseRow, ROWS_PER_INSERT, wait_s=None)
        | "NoteInsertsInBundle" >> beam.Map(note_size, str(sizes / "inserts_in_bundle"))
    )


def run_pipeline(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run_pipeline", action="store_true")
    parser.add_argument("--subscription", required=True)
    parser.add_argument("--sizes", type=Path, required=True)
    known, beam_args = parser.parse_known_args(argv)
    options = PipelineOptions(beam_args)
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(options=options)
    build(pipeline, known.subscription, known.sizes)
    result = pipeline.run()
    _log.info("%s: batching bench reading %s", READY_LINE, known.subscription)
    result.wait_until_finish()


# -- the bench ------------------------------------------------------------------------


def traversal_json(seq: int, phase: str, now_ms: int) -> bytes:
    """One fined traversal of a 305 m section in 20 s (55 km/h), exiting just now."""
    duration_s, distance_m = 20.0, 305.0
    speed_kmh = distance_m / duration_s * 3.6
    traversal = Traversal(
        traversal_id=f"{phase}-{seq:07d}", radar_id=RADAR_ID, vehicle_id=f"{phase}-v{seq}",
        distance_m=distance_m, duration_s=duration_s, avg_speed_kmh=speed_kmh,
        avg_speed_mph=kmh_to_mph(speed_kmh), speed_limit_mph=defaults.SPEED_LIMIT_MPH,
        entry_time_ms=now_ms - 21_000, exit_time_ms=now_ms - 1_000,
        entry_location=defaults.INITIAL_COORDINATES, exit_location=defaults.FINAL_COORDINATES,
        detections=4, is_speeding=True,
    )  # fmt: skip
    return json.dumps(traversal_to_json(traversal), separators=(",", ":")).encode()


class KeepAlive:
    """A message the pipeline drops, every KEEP_ALIVE_INTERVAL_S, until stopped."""

    def __init__(self, client: pubsub_v1.PublisherClient, topic: str) -> None:
        self.client, self.topic = client, topic
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(KEEP_ALIVE_INTERVAL_S):
            self.client.publish(self.topic, KEEP_ALIVE)

    def __enter__(self) -> "KeepAlive":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def publish_at(
    client: pubsub_v1.PublisherClient, topic: str, rate: float, count: int, phase: str
) -> float:
    """Publish `count` traversals paced at `rate` per second; returns the seconds it took."""
    started = time.monotonic()
    futures = []
    sent = 0
    while sent < count:
        due = min(count, int((time.monotonic() - started) * rate) + 1)
        now_ms = int(time.time() * 1000)
        for seq in range(sent, due):
            futures.append(client.publish(topic, traversal_json(seq, phase, now_ms)))
        sent = due
        time.sleep(0.002)
    for future in futures:
        future.result(timeout=120)
    return time.monotonic() - started


@dataclass(frozen=True)
class Batch:
    at: float
    size: int


def batches(path: Path, since: float = 0.0) -> list[Batch]:
    if not path.exists():
        return []
    rows = (line.split() for line in path.read_text().splitlines() if line)
    return [batch for at, size in rows if (batch := Batch(float(at), int(size))).at >= since]


def items(path: Path, since: float = 0.0) -> int:
    return sum(batch.size for batch in batches(path, since))


@dataclass(frozen=True)
class Phase:
    rate: float
    published: int
    publish_s: float
    started: float  # epoch s of the first publish
    sizes: Path
    stopped_after_s: float

    def summary(self, name: str, full: int) -> str:
        found = batches(self.sizes / name, self.started)
        sizes = [batch.size for batch in found]
        if not sizes:
            return f"  {SERIES[name]}: none"
        full_share = sum(size >= full for size in sizes) / len(sizes)
        return (
            f"  {SERIES[name]}: {sum(sizes):,} items in {len(sizes):,} batches: "
            f"mean {statistics.fmean(sizes):.1f}, median {statistics.median(sizes):g}, "
            f"max {max(sizes)}, full {full_share:.0%}"
        )

    def report(self) -> str:
        plates = batches(self.sizes / "plates", self.started)
        read = sum(batch.size for batch in plates)
        read_s = (plates[-1].at - self.started) if plates else float("nan")
        lines = [
            f"{self.rate:g} traversals/s: published {self.published:,} fines in "
            f"{self.publish_s:.1f} s ({self.published / self.publish_s:,.1f}/s); plates read: "
            f"{read:,} ({read / self.published:.0%}), the last {read_s:.1f} s after the first "
            f"publish ({read / read_s:,.1f}/s); pipeline stopped at {self.stopped_after_s:.1f} s",
            self.summary("plates", PLATE_BATCH_SIZE),
            self.summary("plates_in_bundle", PLATE_BATCH_SIZE),
            self.summary("inserts", ROWS_PER_INSERT),
            self.summary("inserts_in_bundle", ROWS_PER_INSERT),
        ]
        return "\n".join(lines)


def start_bench_pipeline(stack: LocalStack, name: str, sizes: Path) -> tuple[ManagedProcess, str]:
    topic, subscription = f"{name}-in", f"{name}-in-sub"
    stack.create_topics([topic], {subscription: topic})
    argv = [
        sys.executable, str(Path(__file__).resolve()), "--run_pipeline",
        "--subscription", stack.subscription_path(subscription), "--sizes", str(sizes),
        "--runner", "BundleBasedDirectRunner", "--streaming",
    ]  # fmt: skip
    return start_process(stack, name, argv), stack.topic_path(topic)


def measure(stack: LocalStack, rate: float, duration_s: float, drain_s: float) -> Phase:
    name = f"batching-{rate:g}"
    sizes = stack.work_dir / name
    shutil.rmtree(sizes, ignore_errors=True)  # a --logs dir used before: only this run's sizes
    sizes.mkdir()
    process, topic = start_bench_pipeline(stack, name, sizes)
    client = pubsub_v1.PublisherClient(
        batch_settings=pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.01)
    )
    try:
        with KeepAlive(client, topic):
            publish_at(client, topic, WARM_UP, WARM_UP, f"{name}-warm-up")
            wait_until(
                lambda: (
                    items(sizes / "plates") >= WARM_UP and items(sizes / "inserts") >= 2 * WARM_UP
                ),
                timeout_s=180,
                what=f"{name}: the warm-up fines through every stage",
                interval_s=0.2,
            )
            count = round(rate * duration_s)
            started = time.time()
            publish_s = publish_at(client, topic, rate, count, name)
            try:
                wait_until(
                    lambda: (
                        items(sizes / "plates", started) >= count
                        and items(sizes / "inserts", started) >= 2 * count
                    ),
                    timeout_s=drain_s,
                    what=f"{name}: every fine read and both its rows inserted",
                    interval_s=0.2,
                )
            except TimeoutError:
                pass  # the runner fell behind: the report says how far it got
            stopped_after_s = time.time() - started
    finally:
        process.stop()
        client.transport.close()
    return Phase(rate, count, publish_s, started, sizes, stopped_after_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=float, nargs="+", default=[10, 100, 1000],
                        help="fined traversals per second, one pipeline run each")  # fmt: skip
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of traffic")
    parser.add_argument("--drain", type=float, default=20.0,
                        help="then at most this long for the rest to come out")  # fmt: skip
    parser.add_argument("--logs", type=Path, help="keep the services' and pipelines' logs here")
    args = parser.parse_args()
    stop_on_sigterm()
    print(load_note(), flush=True)
    with LocalStack(work_dir=args.logs, services=("pubsub",)) as stack:
        stack.apply_env()
        for rate in args.rates:
            print(measure(stack, rate, args.duration, args.drain).report(), flush=True)
    print(load_note())


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if "--run_pipeline" in sys.argv:
        run_pipeline(sys.argv[1:])
    else:
        logging.getLogger().setLevel(logging.WARNING)  # the figures, not the stack's chatter
        main()
