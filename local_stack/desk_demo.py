"""`make desk`: the verification desk on the demo's fines (docs/desk.md).

Starts the local stack (Pub/Sub, BigQuery and Cloud Storage emulators, the cars API) and
a PostgreSQL server (local_stack/postgres.py), records the demo's traffic (the same
generator arguments and seed as `make demo`), runs the real pipeline over it as a bounded
run (`python -m pipeline --input_file ...` with the cars API, the evidence bucket and the
warehouse), publishes its output records to the fines topic as the streaming pipeline
does, then serves the desk, which pulls them from its subscription, and prints its login
link. Ctrl-C stops the desk, PostgreSQL and every service (by process group, as
`LocalStack` does).

The bounded run writes the same records as the streaming demo (same composite, same
evidence stage, same sinks) in seconds instead of the live replay's minutes.
"""

import argparse
import json
import logging
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from generator import cli as generator_cli
from local_stack.demo import DEMO_DATASET, DEMO_FINAL, DEMO_GAP_SECONDS
from local_stack.desk_hints import reading_notices
from local_stack.postgres import PostgresServer
from local_stack.processes import wait_until
from local_stack.services import LocalStack, pubsub_clients
from pipeline.provision import PROVISIONED_TABLES
from section_speed.clients.warehouse import Warehouse
from section_speed.domain import defaults
from section_speed.domain.geometry import format_location
from section_speed.domain.schemas import FINES

if TYPE_CHECKING:
    from desk.app import DeskConfig

_log = logging.getLogger("desk_demo")

DEMO_VEHICLES, DEMO_SEED = 24, 7  # make demo's defaults (local_stack/demo.py)
NOTICES_TOPIC, NOTICES_SUBSCRIPTION = "notices", "notices-reader"
FINES_TOPIC, FINES_SUBSCRIPTION = "fines", "desk-fines"  # the pipeline's output topic
PIPELINE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class DemoTraffic:
    traffic: Path  # the detections, one JSON message per line
    truth: Path  # per vehicle: its speed and whether it must be fined
    sections: Path  # the section's rules (--sections_file)

    def must_be_fined(self) -> set[str]:
        rows = [json.loads(line) for line in self.truth.read_text().splitlines()]
        return {row["vehicle_id"] for row in rows if row["must_be_fined"]}


def record_demo_traffic(
    out_dir: Path, vehicles: int = DEMO_VEHICLES, seed: int = DEMO_SEED
) -> DemoTraffic:
    """The demo's traffic, truth and sections: `make demo`'s generator arguments."""
    out_dir.mkdir(parents=True, exist_ok=True)
    recorded = DemoTraffic(
        out_dir / "traffic.jsonl", out_dir / "truth.jsonl", out_dir / "sections.json"
    )
    code = generator_cli.main([
        "--output", str(recorded.traffic), "--truth", str(recorded.truth),
        "--seed", str(seed), "--vehicles", str(vehicles), "--rate", "4", "--points", "4",
        "--final_coordinates", format_location(DEMO_FINAL),
        "--session_gap_seconds", str(DEMO_GAP_SECONDS),
        "--sections_file", str(recorded.sections),
    ])  # fmt: skip
    if code != 0:
        raise RuntimeError(f"the generator failed with exit code {code}")
    return recorded


def pipeline_argv(
    stack: LocalStack, recorded: DemoTraffic, dataset: str, bucket: str, output: Path
) -> list[str]:
    """The bounded run over the recorded traffic, with evidence and the warehouse."""
    return [
        sys.executable, "-m", "pipeline",
        "--input_file", str(recorded.traffic), "--output_path", str(output),
        "--runner", "DirectRunner",
        "--project_id", stack.project_id,
        "--session_gap_seconds", str(DEMO_GAP_SECONDS),
        "--sections_file", str(recorded.sections),
        "--cars_api", f"{stack.cars_api_url}/cars/{{vehicle_id}}",
        "--bucket", bucket,
        "--bq_dataset", dataset,
    ]  # fmt: skip


def latest_fines(warehouse: Warehouse) -> list[dict]:
    """The fines the desk will queue: the latest ticketed, not withdrawn revision per id."""
    rows = warehouse.query(
        f"SELECT * FROM `{warehouse.table_id(FINES)}` "
        "QUALIFY ROW_NUMBER() OVER (PARTITION BY fine_id ORDER BY revision DESC, "
        "processed_at DESC) = 1"
    )
    live = [r for r in rows if r["is_ticketed"] and not r.get("withdrawn_reason")]
    return sorted(live, key=lambda r: (r["exit_time"], r["fine_id"]))


def seed_demo_fines(
    stack: LocalStack,
    out_dir: Path,
    dataset: str = DEMO_DATASET,
    bucket: str = defaults.EVIDENCE_BUCKET,
    vehicles: int = DEMO_VEHICLES,
    seed: int = DEMO_SEED,
) -> list[dict]:
    """The demo's fines in the stack's warehouse and bucket, as the pipeline writes them.

    Provisions what an operator would (bucket, the pipeline's and the desk's tables), runs
    the bounded pipeline and checks that it fined exactly the vehicles the truth says.
    Returns the fines rows, oldest exit first (the desk's queue order).
    """
    recorded = record_demo_traffic(out_dir, vehicles, seed)
    stack.create_bucket(bucket)
    stack.apply_env()  # the warehouse client below finds the emulator from the env
    warehouse = Warehouse(stack.project_id, dataset)
    warehouse.ensure_tables(PROVISIONED_TABLES)  # python -m pipeline.provision's tables
    log_path = out_dir / "pipeline-bounded.log"
    with log_path.open("wb") as log:
        run = subprocess.run(
            pipeline_argv(stack, recorded, dataset, bucket, out_dir / "bounded"),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=stack.child_env(),
            timeout=PIPELINE_TIMEOUT_S,
            check=False,
        )
    if run.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"the bounded pipeline failed (log {log_path}):\n{tail}")
    fines = latest_fines(warehouse)
    fined, expected = {f["vehicle_id"] for f in fines}, recorded.must_be_fined()
    if fined != expected:
        raise RuntimeError(f"fined {sorted(fined)}, the truth says {sorted(expected)}")
    return fines


def output_records(out_dir: Path) -> list[bytes]:
    """The bounded run's output records (`--output_path`'s traversal files): what the
    streaming pipeline publishes to its output topic, one message each."""
    lines = []
    for path in sorted(out_dir.glob("bounded-traversals*")):
        lines += [line.encode("utf-8") for line in path.read_text().splitlines() if line]
    return lines


def publish_fines(stack: LocalStack, topic: str, messages: list[bytes]) -> None:
    """Publish the records to the fines topic, as the streaming pipeline does."""
    publisher, subscriber = pubsub_clients(stack.env["PUBSUB_EMULATOR_HOST"])
    with subscriber:
        path = stack.topic_path(topic)
        for future in [publisher.publish(path, message) for message in messages]:
            future.result(timeout=30)
    publisher.transport.close()


def desk_config(
    stack: LocalStack,
    database_url: str,
    dataset: str,
    bucket: str,
    notices_topic: str,
    fines_subscription: str,
    **options: object,
) -> "DeskConfig":
    """The desk on this stack: PostgreSQL at `database_url`, fines from the subscription,
    notices to the topic, decisions and notices exported to the dataset."""
    from desk.app import DeskConfig
    from desk.db import DatabaseConfig

    return DeskConfig(
        project=stack.project_id,
        bucket=bucket,
        notices_topic=notices_topic,
        database=DatabaseConfig(database_url),
        bq_dataset=dataset,
        fines_subscription=fines_subscription,
        **options,  # type: ignore[arg-type]
    )


def wait_for_queue(database_url: str, expected: int, timeout_s: float = 60.0) -> None:
    """Until the desk has ingested `expected` awaiting fines."""
    import sqlalchemy as sa

    from desk.db import DatabaseConfig, engine

    made = engine(DatabaseConfig(database_url))

    def ingested() -> bool:
        with made.connect() as connection:
            return connection.execute(sa.text("SELECT count(*) FROM queue")).scalar() >= expected

    try:
        wait_until(ingested, timeout_s=timeout_s, what=f"{expected} fines in the desk's queue")
    finally:
        made.dispose()


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def serve(
    stack: LocalStack, database_url: str, port: int, reviewer: str | None, started: float
) -> None:
    """The desk on this stack until Ctrl-C (uvicorn returns on SIGINT and SIGTERM)."""
    import uvicorn

    from desk.app import create_app
    from desk.services import cloud_services

    bucket = defaults.EVIDENCE_BUCKET
    config = desk_config(stack, database_url, DEMO_DATASET, bucket, NOTICES_TOPIC,
                         FINES_SUBSCRIPTION, reviewer=reviewer)  # fmt: skip
    services = cloud_services(stack.project_id, DEMO_DATASET, bucket, NOTICES_TOPIC)
    app = create_app(config, services)  # its lifespan migrates the database and starts ingest
    print(f"desk: open http://127.0.0.1:{port}/login?token={config.token} "
          f"(after {time.monotonic() - started:.0f} s)", flush=True)  # fmt: skip
    print("desk: Ctrl-C stops the desk, PostgreSQL and the local stack", flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def run(out_dir: Path, port: int, reviewer: str | None, vehicles: int, seed: int) -> int:
    started = time.monotonic()
    with LocalStack(work_dir=out_dir / "logs") as stack, PostgresServer() as postgres:
        print("desk: local stack and PostgreSQL up; running the pipeline over the demo's "
              "traffic", flush=True)  # fmt: skip
        fines = seed_demo_fines(stack, out_dir, vehicles=vehicles, seed=seed)
        stack.create_topics(
            [NOTICES_TOPIC, FINES_TOPIC],
            {NOTICES_SUBSCRIPTION: NOTICES_TOPIC, FINES_SUBSCRIPTION: FINES_TOPIC},
        )
        publish_fines(stack, FINES_TOPIC, output_records(out_dir))
        read = sum(1 for f in fines if f["license_plate"])
        print(
            f"desk: {len(fines)} fines to verify ({read} with a plate read), published to "
            f"topic {FINES_TOPIC} for the desk (PostgreSQL {postgres.url}); notices go to "
            f"topic {NOTICES_TOPIC} (subscription {NOTICES_SUBSCRIPTION})",
            flush=True,
        )
        for line in reading_notices(
            stack.env, stack.project_id, DEMO_DATASET, NOTICES_SUBSCRIPTION
        ):
            print(line, flush=True)
        serve(stack, postgres.url, port, reviewer, started)
    print("desk: stopped; everything it started is stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", type=Path, default=Path("demo-output/desk"))
    parser.add_argument("--port", type=int, default=8080, help="the desk's port on 127.0.0.1")
    parser.add_argument("--reviewer", help="the officer's name (else the login page asks)")
    parser.add_argument("--vehicles", type=int, default=DEMO_VEHICLES)
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)  # stop the stack on `kill` as on Ctrl-C
    try:
        return run(args.out_dir, args.port, args.reviewer, args.vehicles, args.seed)
    except KeyboardInterrupt:
        print("desk: interrupted; everything it started is stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
