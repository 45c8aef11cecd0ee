"""Outage drill: Cloud Vision down for 2 minutes during live traffic; is every fine out once?

    .venv/bin/python bench/outage_drill.py [--vehicles 90] [--traffic_s 240] \\
        [--outage_from_s 60] [--outage_s 120]

The full pipeline (cars API, photos to the storage emulator, warehouse, dead letters)
runs on the BundleBasedDirectRunner with `--plate_reader cloud-vision` against a local
Cloud Vision (tests/fake_vision.py) that knows each photo's plate. Simulated vehicles
are published live for `--traffic_s`, half of them speeding; from `--outage_from_s` the
Vision server refuses every call (UNAVAILABLE) for `--outage_s`. Then the drill waits
for every expected fine. Should some still be missing once the pipeline is quiet, it runs
the replay command once (`python -m pipeline.replay`, docs/deploy.md) for the replayable
dead letters that name them, and waits again. It prints, for the fines the generator
expects: published once, more than once, missing, with their plate; the dead letters of
the drill's vehicles by stage; what the replay sent; and how long after the outage the
last fine came. A benchmark, not a test: it prints figures and asserts nothing
(docs/deploy.md, Replay dead letters; bench/RESULTS.md).
"""

import argparse
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import requests
from lib.harness import Heartbeat, bench_sections, load_note, stop_on_sigterm, traffic

from generator.event_files import rebase
from generator.publish import publish_events
from generator.simulate import simulate_traffic
from local_stack.processes import wait_until
from local_stack.run import LocalPipeline, LocalTopics, OutputCollector
from local_stack.services import LocalStack
from pipeline.provision import PROVISIONED_TABLES
from section_speed.clients.warehouse import Warehouse
from section_speed.domain.plate_formats import plate_for_vehicle
from tests.fake_vision import FakeVision

REPO = Path(__file__).resolve().parents[1]
RADAR = "drill"
DATASET = "drill"
GAP_S = 12
REPLAYABLE = ("partial", "unmeasurable", "implausible")


class VisionPipeline(LocalPipeline):
    """The local pipeline, its Cloud Vision reader pointed at the fake server."""

    vision_endpoint: str = ""

    def argv(self) -> list[str]:
        argv = super().argv()
        at = argv.index("-m")
        wrapper = str(REPO / "bench" / "lib" / "vision_pipeline.py")
        return [argv[0], wrapper, self.vision_endpoint, *argv[at + 2 :]]


def fines_of(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """vehicle_id -> its ticketed messages on the output topic."""
    found: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        if record.get("radar_id") == RADAR and record.get("is_ticketed"):
            found.setdefault(record["vehicle_id"], []).append(record)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=90)
    parser.add_argument("--traffic_s", type=float, default=240.0)
    parser.add_argument("--outage_from_s", type=float, default=60.0)
    parser.add_argument("--outage_s", type=float, default=120.0)
    parser.add_argument("--wait_s", type=float, default=300.0, help="for the fines, each time")
    parser.add_argument("--logs", type=Path, help="keep the services' and pipeline's logs here")
    args = parser.parse_args()
    stop_on_sigterm()
    print(load_note(), flush=True)
    config = traffic(args.vehicles, args.vehicles * 3 / args.traffic_s, 0.5, 26, RADAR)
    events, truth = simulate_traffic(config, start_ms=0)
    expected = {t.vehicle_id for t in truth if t.must_be_fined}
    with LocalStack(work_dir=args.logs) as stack, FakeVision() as vision:
        stack.apply_env()
        # Each speeder's photo, as the cars API renders it, read as its plate.
        for vehicle in expected:
            photo = requests.get(f"{stack.cars_api_url}/cars/{vehicle}/image.jpg", timeout=30)
            photo.raise_for_status()
            vision.answers[photo.content] = [(plate_for_vehicle(vehicle), 0.98)]
        topics = LocalTopics(
            input_topic="drill-events", input_subscription="drill-events-sub",
            output_topic="drill-fines", output_subscription="drill-fines-reader",
            dead_letter_topic="drill-dead", dead_letter_subscription="drill-dead-reader",
        )  # fmt: skip
        topics.create(stack)
        local = VisionPipeline(
            stack, topics, GAP_S, bucket="drill-evidence", sections=bench_sections(RADAR),
            extra_args=["--bq_dataset", DATASET, "--plate_reader", "cloud-vision"],
        )  # fmt: skip
        local.vision_endpoint = vision.endpoint
        local.start()
        # What python -m pipeline.provision adds to the local stack's tables: the replay
        # command's record, should the drill need it.
        Warehouse(stack.project_id, DATASET).ensure_tables(PROVISIONED_TABLES)
        outputs = OutputCollector(stack, topics.output_subscription, producer=local.process)
        dead = OutputCollector(stack, topics.dead_letter_subscription)
        heartbeat = Heartbeat([local.input_topic_path()]).start()

        started = time.time()
        live = rebase(events, int(started * 1000) + 2000)
        publisher = threading.Thread(
            target=publish_events, args=(live, local.input_topic_path()),
            kwargs={"realtime": True, "progress": False}, daemon=True,
        )  # fmt: skip
        publisher.start()
        wait_until(lambda: time.time() - started >= args.outage_from_s, timeout_s=3600,
                   what="the outage's start", interval_s=0.5)  # fmt: skip
        refused_before = len(vision.log)
        vision.fail(10**9, grpc.StatusCode.UNAVAILABLE)
        print(f"outage: Vision refuses every call from {args.outage_from_s:.0f} s", flush=True)
        wait_until(lambda: time.time() - started >= args.outage_from_s + args.outage_s,
                   timeout_s=3600, what="the outage's end", interval_s=0.5)  # fmt: skip
        with vision._lock:  # the fake's queue of refusals: the service is back
            vision._failures.clear()
        outage_calls = len(vision.log) - refused_before
        outage_over = time.time()
        print(f"outage over after {args.outage_s:.0f} s: {outage_calls} calls refused",
              flush=True)  # fmt: skip
        publisher.join()

        def all_out() -> bool:
            return expected <= fines_of(outputs.snapshot()).keys()

        def wait_for_fines() -> bool:
            try:
                wait_until(all_out, timeout_s=args.wait_s, what="every fine", interval_s=1.0)
            except TimeoutError:
                return False
            return True

        waited = wait_for_fines()
        replay_line = "not needed"
        if not waited:
            missing = expected - fines_of(outputs.snapshot()).keys()
            stages = {
                letter.get("stage")
                for letter in dead.snapshot()
                if any(v in json.dumps(letter) for v in missing)
            }
            wanted = sorted(s for s in stages if s in REPLAYABLE)
            if wanted:
                since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started - 60))
                command = [
                    sys.executable, "-m", "pipeline.replay", "--project_id", stack.project_id,
                    "--bq_dataset", DATASET, "--topic", local.input_topic_path(),
                    "--since", since, "--session_gap_seconds", str(GAP_S),
                    *(f"--stage={s}" for s in wanted),
                ]  # fmt: skip
                done = subprocess.run(command, env=stack.child_env(), capture_output=True,
                                      text=True, timeout=300, check=False)  # fmt: skip
                replay_line = (done.stdout or done.stderr).strip().splitlines()[-1]
                wait_for_fines()
            else:
                replay_line = f"nothing replayable names them (stages: {sorted(stages)})"
        last_fine = time.time()
        heartbeat.stop()
        got = fines_of(outputs.snapshot())
        # A correction is a new revision, published as such; a repeat is the same again.
        per_revision = Counter(
            (r["fine_id"], r["revision"]) for records in got.values() for r in records
        )
        revisions = sum(len({r["revision"] for r in records}) - 1 for records in got.values())
        twice = sum(1 for n in per_revision.values() if n > 1)
        once = sum(
            1
            for v in expected
            if v in got and all(per_revision[(r["fine_id"], r["revision"])] == 1 for r in got[v])
        )
        plated = sum(1 for v in expected if v in got and got[v][-1].get("license_plate"))
        unplated = Counter(
            str(got[v][-1].get("evidence_error"))[:80]
            for v in expected
            if v in got and not got[v][-1].get("license_plate")
        )
        letters = Counter(
            letter.get("stage")
            for letter in dead.snapshot()
            if any(t.vehicle_id in json.dumps(letter) for t in truth)
        )
        images = [image for call in vision.log for image in call.images]
        known = sum(1 for image in images if image in vision.answers)
        outputs.close()
        dead.close()
    print(f"traffic: {args.vehicles} vehicles over {args.traffic_s:.0f} s, "
          f"{len(expected)} fines expected; session gap {GAP_S} s")  # fmt: skip
    print(f"outage: Vision down {args.outage_s:.0f} s from {args.outage_from_s:.0f} s; "
          f"{outage_calls} calls refused")  # fmt: skip
    print(f"fines published once: {once} of {len(expected)}; a revision published more than "
          f"once: {twice}; corrections (later revisions): {revisions}; "
          f"missing: {len(expected - got.keys())}; with their plate: {plated}")  # fmt: skip
    if unplated:
        print(f"published without a plate, by evidence_error: {dict(unplated)}")
    print(f"Vision: {len(vision.log)} calls, {len(images)} images, {known} of them speeders' "
          f"photos; {outage_calls} calls refused in the outage")  # fmt: skip
    print(f"dead letters naming the drill's vehicles: {dict(letters) or 'none'}")
    print(f"after waiting: {'every fine out' if waited else 'fines missing'}; replay: "
          f"{replay_line}")  # fmt: skip
    print(f"last check {last_fine - outage_over:.0f} s after the outage ended")


if __name__ == "__main__":
    main()
