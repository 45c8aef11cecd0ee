"""`make demo`: the whole local stack, end to end, on embedded defaults.

Starts the Pub/Sub, BigQuery and Cloud Storage emulators and the cars API, runs the
pipeline on the BundleBasedDirectRunner, records simulated traffic with the generator and
replays it live, prints each fine as it arrives (with its plate and gs:// photo URL),
writes every output message to demo-output/fines.jsonl and the fines' photos to
demo-output/images/, checks the result against the generator's truth, writes the analyst
report from the warehouse (demo-output/report/index.html) and stops everything it
started (also on Ctrl-C).

Two sections: the course's (`radar-1`, 25 mph all day) and a school zone (`school-1`,
25 mph with a 15 mph window on school hours, docs/enforcement.md). So that the demo shows
the window whenever it runs, the school's hours are set around the demo's own run, in New
York time; its traffic is drawn around 15 mph. The truth checks every fine's limit and
limit source: `default` on the course's section, `window` in the school zone.
"""

import argparse
import json
import logging
import signal
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

from google.api_core.exceptions import NotFound

from analyst_report.contents import Report
from analyst_report.queries import Totals, warehouse_totals
from analyst_report.report import generate_report
from generator import cli as generator_cli
from local_stack.processes import wait_until
from local_stack.run import LocalPipeline, LocalTopics, OutputCollector
from local_stack.services import LocalStack
from section_speed.clients.evidence_store import EvidenceStore
from section_speed.clients.warehouse import Warehouse
from section_speed.domain import defaults
from section_speed.domain.events import parse_rfc3339_ms
from section_speed.domain.geometry import format_location, interpolate
from section_speed.domain.plate_formats import plate_for_vehicle
from section_speed.domain.rules import SectionCatalog, SectionRule

_log = logging.getLogger("demo")

# A 305 m stretch of the course's section: every vehicle crosses it within a minute,
# so the demo ends in about three minutes.
DEMO_FINAL = interpolate(defaults.INITIAL_COORDINATES, defaults.FINAL_COORDINATES, 0.25)
DEMO_GAP_SECONDS = 20  # above the slowest vehicle's 15 s between its 4 detections
DEMO_LATENESS_SECONDS = 60
DEMO_DATASET = "section_speed"
SCHOOL_RADAR = "school-1"
SCHOOL_LIMIT_MPH = 15
SCHOOL_ZONE = ZoneInfo("America/New_York")  # the course's coordinates are in New York City


def _print_fine(record: dict[str, Any]) -> None:
    if record.get("is_ticketed"):
        print(
            f"FINE {record['vehicle_id']} on {record['radar_id']}: "
            f"{record['avg_speed_kmh']:.1f} km/h ({record['avg_speed_mph']:.1f} mph, "
            f"limit {record['speed_limit_mph']:g} mph, {_limit_source(record)}) "
            f"{_measured(record)}  "
            f"fine_id={record['fine_id'][:12]}\n"
            f"     plate {_plate_text(record)}  photo {record['image_url'] or '-'}",
            flush=True,
        )


def _limit_source(record: dict[str, Any]) -> str:
    reference = record.get("limit_reference")
    return record["limit_source"] + (f" '{reference}'" if reference else "")


def _measured(record: dict[str, Any]) -> str:
    if record["distance_m"] is None:  # spot_mean: the mean of the spot speeds, no distance
        return f"mean of {record['spot_readings']} spot speeds"
    return f"over {record['distance_m']:.0f} m in {record['duration_s']:.1f} s"


def _plate_text(record: dict[str, Any]) -> str:
    if record["license_plate"]:
        reader, confidence = record["plate_reader"], record["plate_confidence"]
        return f"{record['license_plate']} ({reader}, confidence {confidence:.2f})"
    return f"unreadable ({record['evidence_error'] or 'low confidence'})"


def _save_photos(records: list[dict[str, Any]], bucket: str, images_dir: Path) -> int:
    """Copy the fines' stored photos out of the storage emulator, for a person to open."""
    images_dir.mkdir(parents=True, exist_ok=True)
    store = EvidenceStore(bucket)
    saved = 0
    for record in records:
        url = record.get("image_url")
        if not url:
            continue
        name = url.removeprefix(f"gs://{bucket}/")
        plate = record["license_plate"] or "unreadable"
        target = images_dir / f"{record['vehicle_id']}_{plate}_{record['fine_id'][:12]}.jpg"
        target.write_bytes(store.read(name))
        saved += 1
    return saved


def _wait_for_warehouse(warehouse: Warehouse, traversals: int, fines: int) -> bool:
    """Wait until every table the report reads holds the truth's traversals and fines.

    The warehouse writes follow the topic's by a batch or two, and a fine's row in `fines`
    (with its plate and photo) comes after its `vehicle_speeds` row: the report counts
    as the warehouse_totals read here, so it is written only once both tables are in.
    """
    seen: list[Totals] = []

    def arrived() -> bool:
        try:
            seen.append(warehouse_totals(warehouse))
        except NotFound:  # the pipeline creates the tables with its first write
            return False
        now = seen[-1]
        return (
            now.traversals >= traversals and now.fines >= fines and not now.fines_without_evidence
        )

    try:
        wait_until(arrived, timeout_s=60, what="the traversals and fines in the warehouse",
                   interval_s=0.5)  # fmt: skip
    except TimeoutError as error:
        print(f"demo: {error}; last seen: {seen[-1] if seen else 'no tables'}", flush=True)
        return False
    return True


def write_report(stack: LocalStack, dataset: str, out_dir: Path) -> tuple[Path, Report]:
    """The analyst report of a running local stack's warehouse: OUT_DIR/index.html.

    Sets the stack's emulator variables in this process (as `stack.apply_env()` does), so
    that the BigQuery (and, when the stack has one, Cloud Storage) clients find them.
    """
    stack.apply_env()
    return generate_report(Warehouse(stack.project_id, dataset), Path(out_dir))


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def school_hours_around_now() -> dict[str, object]:
    """The school zone's limits: a window from two hours before now to two after, in New
    York time (the hours a real file gives are fixed, e.g. 07:00-16:00 on school days)."""
    now = datetime.now(SCHOOL_ZONE)
    start, end = now - timedelta(hours=2), now + timedelta(hours=2)
    if start.date() != now.date() or end.date() != now.date():  # near midnight: all day
        start, end = now.replace(hour=0, minute=0), now.replace(hour=23, minute=59)
    return {
        "time_zone": SCHOOL_ZONE.key,
        "windows": [{
            "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
            "from": f"{start:%H:%M}", "to": f"{end:%H:%M}",
            "speed_limit_mph": SCHOOL_LIMIT_MPH, "name": "school hours",
        }],
    }  # fmt: skip


def record_traffic(out_dir: Path, vehicles: int, seed: int) -> tuple[int, Path, Path]:
    """Both sections' traffic in one recording, their truth, and one sections file."""
    parts = []
    for radar_id, limit_mph, part_seed, points in (
        (defaults.RADAR_ID, defaults.SPEED_LIMIT_MPH, seed, 4),
        # Other vehicle ids; more cameras, so that the slowest (9 mph) passes one every 15 s.
        (SCHOOL_RADAR, SCHOOL_LIMIT_MPH, seed + 1, 6),
    ):
        traffic, truth = out_dir / f"traffic-{radar_id}.jsonl", out_dir / f"truth-{radar_id}.jsonl"
        sections = out_dir / f"sections-{radar_id}.json"
        recorded = generator_cli.main([
            "--output", str(traffic), "--truth", str(truth), "--seed", str(part_seed),
            "--vehicles", str(vehicles), "--rate", "4", "--points", str(points),
            "--radar_id", radar_id, "--speed_limit_mph", str(limit_mph),
            "--final_coordinates", format_location(DEMO_FINAL),
            "--session_gap_seconds", str(DEMO_GAP_SECONDS), "--sections_file", str(sections),
        ])  # fmt: skip
        if recorded != 0:
            return recorded, traffic, truth
        parts.append((traffic, truth, sections))
    # One sections file: the school zone's default is the course's 25 mph, its window 15.
    merged: dict[str, Any] = {}
    for _, _, sections in parts:
        merged |= json.loads(sections.read_text())
    merged[SCHOOL_RADAR] |= {"speed_limit_mph": defaults.SPEED_LIMIT_MPH} | (
        school_hours_around_now()
    )
    (out_dir / "sections.json").write_text(json.dumps(merged, indent=2) + "\n")
    lines = [line for traffic, _, _ in parts for line in traffic.read_text().splitlines()]
    lines.sort(key=lambda line: (json.loads(line)["timestamp"], line))
    (out_dir / "traffic.jsonl").write_text("\n".join(lines) + "\n")
    truth_lines = [line for _, truth, _ in parts for line in truth.read_text().splitlines()]
    (out_dir / "truth.jsonl").write_text("\n".join(truth_lines) + "\n")
    return 0, out_dir / "traffic.jsonl", out_dir / "truth.jsonl"


def expected_limits(truth: list[dict[str, Any]], sections: Path) -> dict[tuple[str, str], Any]:
    """(radar_id, vehicle_id) -> (limit, limit source) the truth's times give under the file."""
    catalog = SectionCatalog.from_json(sections.read_text(), SectionRule())
    expected = {}
    for record in truth:
        applied = catalog.for_radar(record["radar_id"]).applied_limit(
            parse_rfc3339_ms(record["entry_time"]), parse_rfc3339_ms(record["exit_time"])
        )
        expected[(record["radar_id"], record["vehicle_id"])] = (
            applied.speed_limit_mph, applied.source)  # fmt: skip
    return expected


def run_demo(out_dir: Path, vehicles: int, seed: int) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    # The sections' ends go to the pipeline too: only a traversal seen at both is judged.
    sections = out_dir / "sections.json"
    recorded, traffic, truth_path = record_traffic(out_dir, vehicles, seed)
    if recorded != 0:
        return recorded
    truth = [json.loads(line) for line in truth_path.read_text().splitlines()]

    with LocalStack(work_dir=out_dir / "logs") as stack:
        topics = LocalTopics()
        topics.create(stack)
        pipeline = LocalPipeline(
            stack,
            topics,
            DEMO_GAP_SECONDS,
            DEMO_LATENESS_SECONDS,
            extra_args=["--bq_dataset", DEMO_DATASET, "--sections_file", str(sections)],
        )
        print(f"demo: starting the pipeline (log: {stack.work_dir / 'pipeline.log'})", flush=True)
        pipeline.start()
        outputs = OutputCollector(
            stack, topics.output_subscription, on_message=_print_fine, producer=pipeline.process
        )
        try:
            stack.apply_env()  # the generator's publisher finds the emulator from the env
            replayed = generator_cli.main([
                "--replay", str(traffic), "--project_id", stack.project_id,
                "--topic_name", topics.input_topic,
                # The course's section: the replay's own count of speeders (both sections'
                # traffic at 25 mph; the demo's truth is the recording's).
                "--final_coordinates", format_location(DEMO_FINAL),
            ])  # fmt: skip
            if replayed != 0:
                return replayed
            print(f"demo: traffic sent; waiting for {len(truth)} traversals", flush=True)
            # Sessions close one gap after a vehicle's last detection, once the runner's
            # next Pub/Sub pull (up to 30 s on an idle emulator) advances the watermark.
            complete = outputs.wait_for(lambda got: len(got) >= len(truth), timeout_s=120)
            truth_fines = len({(t["radar_id"], t["vehicle_id"]) for t in truth
                               if t["must_be_fined"]})  # fmt: skip
            warehouse = Warehouse(stack.project_id, DEMO_DATASET)
            complete = _wait_for_warehouse(warehouse, len(truth), truth_fines) and complete
            fined = [r for r in outputs.snapshot() if r["is_ticketed"]]
            photos = _save_photos(fined, pipeline.bucket, out_dir / "images")
            # One as_of for every section: the summary, charts and table count the same rows.
            report_page, report = write_report(stack, DEMO_DATASET, out_dir / "report")
        finally:
            outputs.close()
        received = outputs.snapshot()

    received.sort(key=lambda r: (r["entry_time"], r["vehicle_id"]))
    with (out_dir / "fines.jsonl").open("w") as out:
        out.writelines(json.dumps(record) + "\n" for record in received)
    fines = sum(1 for r in received if r["is_ticketed"])
    expected = {(t["radar_id"], t["vehicle_id"]) for t in truth if t["must_be_fined"]}
    fined_keys = {(r["radar_id"], r["vehicle_id"]) for r in received if r["is_ticketed"]}
    matches = fined_keys == expected
    # Every fine under the limit the truth's times give, from the source they give.
    limits = expected_limits(truth, sections)
    wrong_limits = [
        (r["radar_id"], r["vehicle_id"], r["speed_limit_mph"], r["limit_source"])
        for r in received
        if r["is_ticketed"]
        and (r["speed_limit_mph"], r["limit_source"])
        != limits.get((r["radar_id"], r["vehicle_id"]))
    ]
    sources = sorted({r["limit_source"] for r in received if r["is_ticketed"]})
    plates_right = sum(
        r["license_plate"] == plate_for_vehicle(r["vehicle_id"])
        for r in received
        if r["is_ticketed"]
    )
    print(f"demo: output messages in {out_dir / 'fines.jsonl'}")
    print(
        f"demo: truth says {len(truth)} traversals, {len(expected)} fines: "
        + ("all matched" if complete and matches else "MISMATCH")
    )
    print(
        f"demo: every fine's limit and limit source ({', '.join(sources)}) as the truth's "
        "times give them: " + ("yes" if not wrong_limits else f"NO: {wrong_limits}")
    )
    print(f"demo: plates read right for {plates_right} of {fines} fines (truth: the renderer's)")
    print(f"demo: {photos} fine photos copied to {out_dir / 'images'}")
    shown = (report.totals.traversals, report.totals.fines)
    report_right = shown == (len(truth), len(expected))
    print(
        f"demo: analyst report in {report_page}, as of {report.as_of:%H:%M:%S} UTC: "
        f"{report.summary} " + ("Agrees with the truth." if report_right else "MISMATCH")
    )
    print(f"demo: {len(received)} traversals, {fines} fines", flush=True)
    return 0 if complete and matches and report_right and not wrong_limits else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", type=Path, default=Path("demo-output"))
    parser.add_argument("--vehicles", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)  # stop the stack on `kill` as on Ctrl-C
    started = time.monotonic()
    try:
        code = run_demo(args.out_dir, args.vehicles, args.seed)
    except KeyboardInterrupt:
        print("demo: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    print(f"demo: finished in {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
