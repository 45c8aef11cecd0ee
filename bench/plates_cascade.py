"""The plate cascade on real, labelled photos: Cloud Vision calls saved, and what it costs.

    .venv/bin/python bench/plates_cascade.py FOLDER [--gate 0.8] [--limit N] [--show]
        [--published-labels]

FOLDER holds labelled photos as `bench/plates_real.py` reads them (openalpr/benchmarks'
`endtoend/us`: 222 US photos, docs/plates.md says how to get them; never committed), scored
against the true plates: the labels, but for those the photos contradict
(`label_corrections.csv`, applied and printed unless `--published-labels`). In one run, side
by side, on the same photos:

- **Cloud Vision alone**: the pipeline's `CloudVisionPlateReader` against the local fake
  Vision server (tests/fake_vision.py) on loopback, answering each photo's *true* plate
  as one line of text, every character at 0.99: a perfect-oracle Cloud Vision. Its
  readings still go through the gates, so a labelled plate the gates do not take (all
  digits, all letters, a look-alike one swap from a known format) is no plate here either.
  Its times are a loopback call's, not Google's.
- **Embedded alone**: `EmbeddedPlateReader` on one thread (onnxruntime and OpenCV held to
  one core), as `plates_real.py` runs it.
- **Cascade**: `CascadePlateReader`, the embedded reader first and the oracle Vision only
  for the photos it gave no plate for. The embedded reader is the same instance: its
  readings are the embedded-alone column's (the reader is deterministic, so reading every
  photo twice would only double the run); the cascade's time is the embedded reading's plus
  its Vision call's.

Printed per reader: Vision calls (photos sent to the fake; each is a paid image on
Google) and the share of Vision-alone calls saved, plates read exactly (equal to the label),
wrong plates accepted (any accepted plate that is not the label, each listed), unreadable,
the true plate among the top 3 candidates, and the median and p90 time per photo (wall
clock; CPU time of this process, which includes the in-process fake's for Vision calls).
A benchmark, not a test: it asserts nothing.
"""

import argparse
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

# Before numpy/OpenCV/onnxruntime load: their thread pools read these once.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2
import numpy as np
from plates_real import add_photo_set_arguments, labels_from_arguments

from section_speed.clients.cloud_vision import CloudVisionPlateReader
from section_speed.clients.embedded_ocr import EmbeddedPlateReader
from section_speed.clients.plate_cascade import CascadePlateReader
from section_speed.clients.plate_readers import PlateReader
from section_speed.domain.plate_reading import PlateReading
from tests.fake_vision import FakeVision

ORACLE_CONFIDENCE = 0.99  # every character; the look-alike gate at 0.8 is 0.989


@dataclass(frozen=True, slots=True)
class Timed:
    reading: PlateReading
    wall_s: float
    cpu_s: float


class TimedReader:
    """A reader that keeps each photo's reading and time (the embedded-alone column)."""

    def __init__(self, reader: PlateReader) -> None:
        self.reader = reader
        self.name = reader.name
        self.seen: list[Timed] = []

    def read(self, images: Sequence[bytes]) -> list[PlateReading]:
        readings = []
        for image in images:
            wall, cpu = time.perf_counter(), time.process_time()
            (reading,) = self.reader.read([image])
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            self.seen.append(Timed(reading, wall, cpu))
            readings.append(reading)
        return readings


def timed_read(reader: PlateReader, image: bytes) -> Timed:
    wall, cpu = time.perf_counter(), time.process_time()
    (reading,) = reader.read([image])
    return Timed(reading, time.perf_counter() - wall, time.process_time() - cpu)


@dataclass(frozen=True)
class Column:
    name: str
    outcomes: list[Timed]
    vision_calls: int


def summary(column: Column, truths: list[str], files: list[str], vision_alone: int) -> dict:
    plates = [t.reading.license_plate for t in column.outcomes]
    exact = sum(1 for plate, truth in zip(plates, truths, strict=True) if plate == truth)
    wrong = [
        (file, truth, plate)
        for file, truth, plate in zip(files, truths, plates, strict=True)
        if plate is not None and plate != truth
    ]
    top3 = sum(
        1
        for t, truth in zip(column.outcomes, truths, strict=True)
        if truth in [c.plate for c in t.reading.candidates[:3]]
    )
    wall = np.array([t.wall_s for t in column.outcomes]) * 1000
    cpu = np.array([t.cpu_s for t in column.outcomes]) * 1000
    return {
        "name": column.name,
        "vision_calls": column.vision_calls,
        "saved": 1 - column.vision_calls / vision_alone if vision_alone else float("nan"),
        "exact": exact,
        "wrong": wrong,
        "unreadable": sum(1 for plate in plates if plate is None),
        "top3": top3,
        "wall": (np.median(wall), np.percentile(wall, 90)),
        "cpu": (np.median(cpu), np.percentile(cpu, 90)),
    }


def report(rows: list[dict], count: int) -> None:
    print(
        "| reader | Vision calls | Vision calls saved | read exactly | wrong plates accepted "
        "| unreadable | true plate in top 3 | time per photo, median (p90): wall | CPU |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        print(
            f"| {row['name']} | {row['vision_calls']} | {row['saved']:.1%} "
            f"| {row['exact']} ({row['exact'] / count:.1%}) | {len(row['wrong'])} "
            f"| {row['unreadable']} | {row['top3']} ({row['top3'] / count:.1%}) "
            f"| {row['wall'][0]:.0f} ms ({row['wall'][1]:.0f}) "
            f"| {row['cpu'][0]:.0f} ms ({row['cpu'][1]:.0f}) |"
        )
    for row in rows:
        for file, truth, plate in row["wrong"]:
            print(f"  {row['name']}: wrong {file}: labelled {truth}, accepted {plate}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_photo_set_arguments(parser)
    args = parser.parse_args()
    labels = labels_from_arguments(args, "plates_cascade")
    if labels is None:
        return
    cv2.setNumThreads(1)
    photos = {path: path.read_bytes() for path in labels}
    files = [path.name for path in labels]
    truths = list(labels.values())
    print(
        f"photos: {len(labels)} from {args.folder}; gate {args.gate}; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the start"
    )
    started = time.perf_counter()
    oracle = {photos[path]: truth for path, truth in labels.items()}
    with FakeVision.answering_plates(oracle, ORACLE_CONFIDENCE) as fake:
        vision = CloudVisionPlateReader(args.gate, endpoint=fake.endpoint)
        embedded = TimedReader(EmbeddedPlateReader(args.gate, threads=1))
        cascade = CascadePlateReader(embedded, lambda: vision)
        try:
            # Vision alone first, so the server and the client are warm for the cascade.
            before = fake.images_annotated()
            alone = [timed_read(vision, photos[path]) for path in labels]
            vision_alone = fake.images_annotated() - before
            before = fake.images_annotated()
            cascaded = [timed_read(cascade, photos[path]) for path in labels]
            cascade_calls = fake.images_annotated() - before
        finally:
            cascade.close()  # closes the Vision reader too
    columns = [
        Column("Cloud Vision alone (oracle)", alone, vision_alone),
        Column(f"embedded alone ({embedded.name})", embedded.seen, 0),
        Column("cascade", cascaded, cascade_calls),
    ]
    rows = [summary(column, truths, files, vision_alone) for column in columns]
    if args.show:
        for file, truth, one, two, three in zip(
            files, truths, alone, embedded.seen, cascaded, strict=True
        ):
            print(
                f"{file} truth {truth}: vision {one.reading.license_plate} "
                f"embedded {two.reading.license_plate} cascade {three.reading.license_plate} "
                f"({three.reading.reader}) {three.reading.reason or three.reading.error or ''}"
            )
    report(rows, len(labels))
    by_reader: dict[str, int] = {}
    for outcome in cascaded:
        if outcome.reading.license_plate is not None:
            by_reader[outcome.reading.reader] = by_reader.get(outcome.reading.reader, 0) + 1
    print(f"cascade's accepted plates by reader: {by_reader}")
    print(
        f"cascade: {cascade.first_accepted} photos accepted by the embedded reader, "
        f"{cascade.fallback_asked} sent to Vision ({cascade.fallback_asked / len(labels):.1%})"
    )
    cpu = [t.cpu_s for t in embedded.seen]
    print(f"embedded reader CPU per photo: mean {np.mean(cpu) * 1000:.0f} ms")
    print(
        f"run: {time.perf_counter() - started:.0f} s; load average "
        f"{os.getloadavg()[0]:.1f} at the end"
    )


if __name__ == "__main__":
    main()
