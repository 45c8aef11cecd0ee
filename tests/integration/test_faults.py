"""Services failing mid-run: after they recover, every fine is out exactly once.

One pipeline run (module fixture, on a stack of its own so that stopping services here
cannot disturb other modules) goes through three faults in turn, each with its own
traffic on its own radar: the cars API down while fines are enriched, the storage
emulator restarted while photos are stored. Each case waits for an observable sign that
the pipeline met the fault (urllib3's retries in its log, a photo fetched while storage
was down), brings the service back on the same port with its data, and then checks the
output topic, the bucket and the warehouse against the generator's truth: one message
and one row per fine_id, the evidence complete. A last test checks the whole run once a
final vehicle is through.

A warehouse outage is a unit test (tests/unit/test_warehouse_sink.py: rows wait for the
warehouse to answer again): bqemulator restarted on disk answers inserts with 500s
("connection has an unfinished result") for minutes, which is no outage of BigQuery's.
"""

import hashlib
import json
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from google.cloud import pubsub_v1

from generator.event_files import rebase
from generator.publish import publish_events
from generator.simulate import TrafficConfig, simulate_traffic
from generator.truth import TruthRecord
from local_stack.processes import wait_until
from local_stack.run import LocalPipeline, LocalTopics, OutputCollector
from local_stack.services import LocalStack
from section_speed.clients.evidence_store import (
    EvidenceStore,
    reading_from_text,
    reading_object_name,
)
from section_speed.clients.warehouse import Warehouse
from section_speed.domain import defaults
from section_speed.domain.evidence import photo_object_name
from section_speed.domain.geometry import interpolate
from section_speed.domain.plate_formats import plate_for_vehicle

pytestmark = [pytest.mark.integration, pytest.mark.pipeline]

GAP_S = 12  # above the slowest vehicle's 9.1 s between detections on this section
BUCKET = "it-faults"
DATASET = "it_faults"
# A 122 m section, 3 detections per vehicle: a phase's traffic is over in ~20 s.
FINAL = interpolate(defaults.INITIAL_COORDINATES, defaults.FINAL_COORDINATES, 0.1)
HEARTBEAT = "fault-test heartbeat"
STORAGE_DOWN_AFTER_FETCH_S = 4.0  # google-cloud-storage retries: 1 s, 2 s, 4 s, ... for 120 s


def traffic(radar_id: str, seed: int, vehicles: int, rate: float, speeding: float) -> TrafficConfig:
    return TrafficConfig(
        initial=defaults.INITIAL_COORDINATES, final=FINAL, radar_id=radar_id,
        vehicles=vehicles, rate=rate, speeding_fraction=speeding, points=3, seed=seed,
    )  # fmt: skip


class LogWatch:
    """The lines a log file gains from now on."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size

    def lines(self, *needles: str) -> list[str]:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            text = log.read().decode("utf-8", "replace")
        return [line for line in text.splitlines() if all(n in line for n in needles)]


class Heartbeat:
    """Unparseable messages on the input topic every 0.5 s, until stopped.

    They keep the runner's pull returning at once, as continuous traffic would (an empty
    pull on the emulator blocks ~30 s, and the BundleBasedDirectRunner's watermark only
    moves when a pull returns; see bench/lib/harness.py), so a phase's sessions close
    about one gap after its traffic. They go to the dead letter, stage parse.
    """

    def __init__(self, topic_path: str, interval_s: float = 0.5) -> None:
        self.topic_path = topic_path
        self.interval_s = interval_s
        self.publisher = pubsub_v1.PublisherClient()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        beat = 0
        while not self._stop.wait(self.interval_s):
            self.publisher.publish(self.topic_path, f"{HEARTBEAT} {beat}".encode())
            beat += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.publisher.stop()


def is_heartbeat(letter: dict[str, Any]) -> bool:
    """A heartbeat's dead letter (or that of its dead-letter row, refused by the warehouse)."""
    return HEARTBEAT in json.dumps(letter)


@dataclass
class FaultRun:
    stack: LocalStack
    local: LocalPipeline
    outputs: OutputCollector
    dead_letters: OutputCollector
    warehouse: Warehouse
    heartbeat: Heartbeat
    truths: dict[str, list[TruthRecord]] = field(default_factory=dict)

    def publish(self, config: TrafficConfig) -> list[TruthRecord]:
        """The config's traffic with event time now; returns the generator's truth."""
        assert config.longest_hop_s() < GAP_S
        events, truth = simulate_traffic(config, start_ms=0)
        events = rebase(events, int(time.time() * 1000))
        path = self.local.input_topic_path()
        assert publish_events(events, path, realtime=False, progress=False) == len(events)
        self.truths[config.radar_id] = truth
        return truth

    def read_so_far(self, label: str) -> None:
        """Wait until the pipeline has read what was published before now.

        A marker published now is dead-lettered at parse; the emulator delivers a backlog
        in publish order, so once the marker is out, what came before it has been read.
        """
        marker = f"{HEARTBEAT} marker {label}"
        published = self.heartbeat.publisher.publish(self.local.input_topic_path(), marker.encode())
        published.result(timeout=30)
        assert self.dead_letters.wait_for(
            lambda got: any(x.get("payload") == marker for x in got), timeout_s=60
        ), f"the pipeline did not read {marker!r}"

    def log_watch(self) -> LogWatch:
        assert self.local.process is not None
        return LogWatch(self.local.process.log_path)

    def traversals(self, truth: list[TruthRecord], timeout_s: float) -> dict[str, dict[str, Any]]:
        """Wait for every traversal of `truth` on the output topic; by vehicle id."""
        vehicles = {t.vehicle_id for t in truth}
        arrived = self.outputs.wait_for(
            lambda got: vehicles <= {r.get("vehicle_id") for r in got}, timeout_s
        )
        got = {r["vehicle_id"]: r for r in self.outputs.snapshot() if r["vehicle_id"] in vehicles}
        assert arrived, (
            f"missing on the output topic: {sorted(vehicles - set(got))}; pipeline log:\n"
            f"{self.local.process.log_tail(40) if self.local.process else ''}"
        )
        return got

    def rows(self, table: str, radar_id: str) -> list[dict[str, Any]]:
        return self.warehouse.query(
            f"SELECT * FROM `{self.warehouse.project}.{DATASET}.{table}` "
            f"WHERE radar_id = '{radar_id}'"
        )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultRun]:
    work_dir = tmp_path_factory.mktemp("faults-stack")  # kept by pytest: the services' logs
    with LocalStack(work_dir=work_dir, bigquery_on_disk=True) as stack:
        stack.apply_env()
        topics = LocalTopics(
            input_topic="fa-events", input_subscription="fa-events-sub",
            output_topic="fa-fines", output_subscription="fa-fines-reader",
            dead_letter_topic="fa-dead", dead_letter_subscription="fa-dead-reader",
        )  # fmt: skip
        topics.create(stack)
        radars = ("radar-fa1", "radar-fa2", "radar-fa2b", "radar-fa9")
        local = LocalPipeline(
            stack, topics, GAP_S, bucket=BUCKET, extra_args=["--bq_dataset", DATASET],
            sections={radar: traffic(radar, 0, 1, 1.0, 0.0).rule for radar in radars},
        )  # fmt: skip
        local.start()
        outputs = OutputCollector(stack, topics.output_subscription, producer=local.process)
        dead_letters = OutputCollector(stack, topics.dead_letter_subscription)
        warehouse = Warehouse(stack.project_id, DATASET)
        heartbeat = Heartbeat(local.input_topic_path())
        yield FaultRun(stack, local, outputs, dead_letters, warehouse, heartbeat)
        heartbeat.stop()
        outputs.close()
        dead_letters.close()


def store() -> EvidenceStore:
    return EvidenceStore(BUCKET)


def stored_photos(prefix: str) -> list[str]:
    """The photos under `prefix` (each has its recorded reading beside it once read)."""
    return [name for name in store().list_names(prefix) if name.endswith(".jpg")]


def photo_name(fine: dict[str, Any]) -> str:
    entry_ms = int(datetime.fromisoformat(fine["entry_time"]).timestamp() * 1000)
    return photo_object_name(fine["radar_id"], entry_ms, fine["fine_id"])


def assert_fines_complete(records: dict[str, dict[str, Any]], truth: list[TruthRecord]) -> None:
    """Each traversal has the truth's verdict; each fine its plate and its stored photo."""
    assert {v: r["is_ticketed"] for v, r in records.items()} == {
        t.vehicle_id: t.must_be_fined for t in truth
    }
    for expected in truth:
        fine = records[expected.vehicle_id]
        assert fine["avg_speed_kmh"] == pytest.approx(expected.avg_speed_kmh, abs=0.5)
        if not expected.must_be_fined:
            assert fine["license_plate"] is None and fine["image_url"] is None
            continue
        assert fine["evidence_error"] is None, fine
        assert fine["license_plate"] == plate_for_vehicle(expected.vehicle_id), fine
        assert fine["image_url"] == f"gs://{BUCKET}/{photo_name(fine)}"
        photo = store().read(photo_name(fine))
        assert hashlib.sha256(photo).hexdigest() == fine["image_sha256"]


def repeated(records: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """The records whose `key` is not unique (empty when each one is there once)."""
    counts = Counter(r[key] for r in records)
    return [r for r in records if counts[r[key]] > 1]


def assert_exactly_once(run: FaultRun, truth: list[TruthRecord]) -> None:
    """One message and one warehouse row per traversal of `truth`, the fines with evidence."""
    radar_id = truth[0].radar_id
    fined = {t.vehicle_id for t in truth if t.must_be_fined}
    on_topic = [r for r in run.outputs.snapshot() if r["radar_id"] == radar_id]
    assert repeated(on_topic, "fine_id") == []
    assert {r["vehicle_id"] for r in on_topic} == {t.vehicle_id for t in truth}

    def all_rows_in() -> bool:
        return len(run.rows("fines", radar_id)) >= len(fined) and len(
            run.rows("vehicle_speeds", radar_id)
        ) >= len(truth)

    wait_until(all_rows_in, timeout_s=60, what=f"{radar_id}'s rows", interval_s=0.5)
    fines = run.rows("fines", radar_id)
    assert repeated(fines, "fine_id") == []
    assert {r["vehicle_id"] for r in fines} == fined
    by_vehicle = {r["vehicle_id"]: r for r in on_topic}
    for row in fines:  # the row is the message: same id, plate and photo digest
        message = by_vehicle[row["vehicle_id"]]
        assert (row["fine_id"], row["license_plate"], row["image_sha256"]) == (
            message["fine_id"], message["license_plate"], message["image_sha256"]
        )  # fmt: skip
    speeds = run.rows("vehicle_speeds", radar_id)
    assert repeated(speeds, "traversal_id") == []
    # A speed row names a fined vehicle only (docs/warehouse.md, Retention): the topic says
    # who each traversal was.
    who = {r["fine_id"]: r["vehicle_id"] for r in on_topic}
    assert {who.get(r["traversal_id"]) for r in speeds} == {t.vehicle_id for t in truth}
    assert {r["vehicle_id"] for r in speeds} - {None} == {
        who[r["traversal_id"]] for r in speeds if r["is_ticketed"]
    }


def assert_no_dead_letter_names(run: FaultRun, truth: list[TruthRecord]) -> None:
    vehicles = {t.vehicle_id for t in truth}
    named = [x for x in run.dead_letters.snapshot() if any(v in json.dumps(x) for v in vehicles)]
    assert named == []


def cars_api_log(run: FaultRun) -> list[dict[str, Any]]:
    response = requests.get(f"{run.stack.cars_api_url}/_admin/requests", timeout=5)
    response.raise_for_status()
    return response.json()


class ResettingPort:
    """A stopped service's port, held: each connection is accepted, counted and reset.

    The client sees what it would see of a warehouse refusing writes (a connection error,
    retried as transient), and the test sees that, and how often, the pipeline tried.
    """

    def __init__(self, port: int) -> None:
        self.connections = 0
        self._server = socket.create_server(("127.0.0.1", port), reuse_port=False)
        self._server.settimeout(0.1)
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "ResettingPort":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        self._server.close()

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            # SO_LINGER 0: close() sends a reset, as a refusing server would.
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()
            self.connections += 1


def offset_s(rfc3339: str) -> float:
    """A truth time of traffic simulated from 0 (start_ms=0), in seconds."""
    return datetime.fromisoformat(rfc3339).timestamp()


def wait_then(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """wait_until, returning the monotonic time at which the condition was seen."""
    wait_until(condition, timeout_s=timeout_s, what=what, interval_s=0.05)
    return time.monotonic()


def test_cars_api_down_while_fines_are_enriched_then_every_fine_is_complete(run):
    config = traffic("radar-fa1", seed=41, vehicles=6, rate=6.0, speeding=0.5)
    watch = run.log_watch()
    run.stack.stop_service("cars_api")
    try:
        truth = run.publish(config)
        # urllib3 logs "Retrying (Retry(total=N ..." as it makes each new attempt, after its
        # backoff (0, 1, 2, 4, 8 s): total=4 is the 2nd attempt, right after the first was
        # refused; total=1 is the 5th, ~7 s later, with 8 s to go before the last one.
        first = wait_then(
            lambda: bool(watch.lines("Retrying (Retry(total=4,", "/cars/veh-")),
            timeout_s=GAP_S + 60,
            what="the pipeline's first failed photo fetch",
        )
        wait_then(
            lambda: bool(watch.lines("Retrying (Retry(total=1,", "/cars/veh-")),
            timeout_s=20,
            what="the photo fetch's 5th attempt",
        )
    finally:
        run.stack.restart_service("cars_api")
    outage_s = time.monotonic() - first
    assert outage_s >= 7.0, "the pipeline met the outage for less time than planned"
    assert "NewConnectionError" in watch.lines("Retrying (Retry(total=4,")[0]

    records = run.traversals(truth, timeout_s=90)
    assert_fines_complete(records, truth)
    # The restarted API (its request log starts empty) served every fine's photo.
    fined = {t.vehicle_id for t in truth if t.must_be_fined}
    served = {e["path"].split("/")[2] for e in cars_api_log(run) if e["status"] == 200}
    assert fined <= served
    assert_exactly_once(run, truth)
    assert_no_dead_letter_names(run, truth)


def test_storage_restarted_while_fines_are_stored_then_every_photo_is_there(run):
    # Before: fines whose photos are all stored, so that no store is in flight when storage
    # stops (it would hold the runner's one thread in the library's retries). During: fines
    # whose sessions close while storage is down; their photos are fetched then, stored after.
    before = traffic("radar-fa2", seed=42, vehicles=4, rate=1.5, speeding=1.0)
    during = traffic("radar-fa2b", seed=44, vehicles=4, rate=1.5, speeding=0.75)
    before_truth = run.publish(before)
    before_names = f"fines/{before.radar_id}/"
    wait_until(
        lambda: len(stored_photos(before_names)) == len(before_truth),
        timeout_s=GAP_S + 90,
        what="every photo of the first fines stored",
        interval_s=0.1,
    )
    requests_before_stop = len(cars_api_log(run))
    run.stack.stop_service("storage")
    try:
        truth = run.publish(during)
        fined = {t.vehicle_id for t in truth if t.must_be_fined}

        def fetched_since_stop() -> set[str]:
            newer = cars_api_log(run)[requests_before_stop:]
            return {e["path"].split("/")[2] for e in newer if e["path"].endswith("/image.jpg")}

        fetched = wait_then(
            lambda: bool(fetched_since_stop() & fined),
            timeout_s=GAP_S + 60,
            what="a fine's photo fetched while storage is down",
        )
        wait_until(
            lambda: time.monotonic() > fetched + STORAGE_DOWN_AFTER_FETCH_S,
            timeout_s=STORAGE_DOWN_AFTER_FETCH_S + 1,
            what="the end of the storage outage",
        )
        held = fetched_since_stop() & fined
    finally:
        run.stack.restart_service("storage")

    for phase in (before_truth, truth):
        records = run.traversals(phase, timeout_s=90)
        assert_fines_complete(records, phase)
        assert_exactly_once(run, phase)
        assert_no_dead_letter_names(run, phase)
    # Photos stored before the outage survived it; those fetched during it were stored after.
    assert len(stored_photos(before_names)) == len(before_truth)
    records = run.traversals(truth, timeout_s=1)
    during_names = set(stored_photos(f"fines/{during.radar_id}/"))
    assert held and {photo_name(records[v]) for v in held} <= during_names
    assert during_names == {photo_name(records[v]) for v in fined}
    # Each with the reading its fine carries, recorded beside it once storage was back.
    for vehicle in fined:
        name = photo_name(records[vehicle])
        recorded = store().read(reading_object_name(name)).decode()
        reading = reading_from_text(recorded, records[vehicle]["image_sha256"])
        assert reading.license_plate == records[vehicle]["license_plate"], vehicle


def test_after_all_faults_no_fine_is_repeated_or_dead_lettered(run):
    """A last vehicle behind everything: once its row is in, nothing else is on its way."""
    assert run.truths, "run with the fault cases"
    sentinel = run.publish(traffic("radar-fa9", seed=49, vehicles=1, rate=1.0, speeding=1.0))
    run.traversals(sentinel, timeout_s=90)
    wait_until(
        lambda: len(run.rows("fines", "radar-fa9")) >= 1,
        timeout_s=60,
        what="the last vehicle's row",
        interval_s=0.5,
    )
    truth = [t for phase in run.truths.values() for t in phase]
    messages = run.outputs.snapshot()
    assert repeated(messages, "fine_id") == []
    assert sorted(r["vehicle_id"] for r in messages) == sorted(t.vehicle_id for t in truth)
    table = f"`{run.warehouse.project}.{DATASET}"
    fines = run.warehouse.query(f"SELECT fine_id, vehicle_id FROM {table}.fines`")
    assert repeated(fines, "fine_id") == []
    assert {r["vehicle_id"] for r in fines} == {t.vehicle_id for t in truth if t.must_be_fined}
    speeds = run.warehouse.query(f"SELECT traversal_id, vehicle_id FROM {table}.vehicle_speeds`")
    assert repeated(speeds, "traversal_id") == []
    assert len(speeds) == len(truth)
    assert [x for x in run.dead_letters.snapshot() if not is_heartbeat(x)] == []
