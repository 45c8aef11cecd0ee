"""Embedded plate reader: latency on one core and accuracy on rendered car photos.

    .venv/bin/python bench/ocr.py [--images 100] [--full-images 30] [--threads 1] [--gate 0.8]

Renders `--images` "easy" and "hard" photos (generator/car_images.py) and reads them as
the pipeline does (plate crop first, full-photo OCR as fallback): exact-plate accuracy,
wrong plates accepted, unreadable count, and which path served each photo. Then times the
crop path and the forced full-photo path per photo on `--threads` cores (onnxruntime
intra-op and OpenCV threads). A benchmark, not a test: it prints figures and asserts nothing.
"""

import argparse
import os
import sys
import time

# Before numpy/OpenCV/onnxruntime load: their thread pools read these once.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2
import numpy as np

from generator.car_images import DIFFICULTIES, render_car_photo
from pipeline.clients.embedded_ocr import CROP_PATH, FULL_PATH, EmbeddedPlateReader
from pipeline.clients.images import decode_rgb
from pipeline.clients.plate_readers import DEFAULT_MIN_CONFIDENCE
from pipeline.domain.plates import plate_for_vehicle


def render(difficulty: str, count: int) -> tuple[list[np.ndarray], list[str], float]:
    """Decoded photos of car-0..car-N at `difficulty`, their plates, and ms per render."""
    started = time.perf_counter()
    photos = [render_car_photo(f"car-{i}", difficulty) for i in range(count)]
    elapsed = (time.perf_counter() - started) * 1000 / count
    truths = [plate_for_vehicle(f"car-{i}") for i in range(count)]
    return [decode_rgb(photo) for photo in photos], truths, elapsed


def accuracy(reader: EmbeddedPlateReader, photos: list[np.ndarray], truths: list[str]) -> dict:
    """Read every photo as the pipeline does; latencies are kept per path served."""
    reader.path_counts.clear()
    exact = wrong = unreadable = 0
    latencies: dict[str, list[float]] = {CROP_PATH: [], FULL_PATH: []}
    for rgb, truth in zip(photos, truths, strict=True):
        started = time.perf_counter()
        plate = reader.read_array(rgb).license_plate
        latencies[reader.last_path].append(time.perf_counter() - started)
        exact += plate == truth
        wrong += plate is not None and plate != truth
        unreadable += plate is None
    return {
        "exact": exact / len(photos), "wrong": wrong, "unreadable": unreadable,
        "paths": dict(reader.path_counts), "latencies": latencies,
    }  # fmt: skip


def full_frame_latencies(reader: EmbeddedPlateReader, photos: list[np.ndarray]) -> list[float]:
    latencies = []
    for rgb in photos:
        started = time.perf_counter()
        reader.read_array(rgb, locate=False)
        latencies.append(time.perf_counter() - started)
    return latencies


def describe(name: str, latencies: list[float]) -> str:
    if not latencies:
        return f"{name}: no photos"
    ms = np.array(latencies) * 1000
    return (
        f"{name}: median {np.median(ms):.1f} ms, p90 {np.percentile(ms, 90):.1f} ms, "
        f"{len(ms) / ms.sum() * 1000:.1f} plates/s (n={len(ms)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="photos per difficulty")
    parser.add_argument("--full-images", type=int, default=30, help="photos timed full-frame")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gate", type=float, default=DEFAULT_MIN_CONFIDENCE, help="min confidence")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    started = time.perf_counter()
    reader = EmbeddedPlateReader(args.gate, threads=args.threads)
    print(f"reader {reader.name}: loaded in {time.perf_counter() - started:.1f} s, "
          f"{args.threads} thread(s), gate {reader.min_confidence}")  # fmt: skip
    crop_latencies, auto_latencies, full_photos = [], [], []
    for difficulty in DIFFICULTIES:
        photos, truths, render_ms = render(difficulty, args.images)
        result = accuracy(reader, photos, truths)
        crop_latencies += result["latencies"][CROP_PATH]
        auto_latencies += result["latencies"][CROP_PATH] + result["latencies"][FULL_PATH]
        full_photos += photos[: args.full_images]
        print(
            f"{difficulty}: {len(photos)} photos (render {render_ms:.0f} ms each): "
            f"exact {result['exact']:.1%}, wrong accepted {result['wrong']}, "
            f"unreadable {result['unreadable']}, paths {result['paths']}"
        )
        print("  " + describe("as run (crop, else full)", auto_latencies[-len(photos) :]))
    print(describe("crop path", crop_latencies))
    print(describe("full-frame path (forced)", full_frame_latencies(reader, full_photos)))
    print(describe("as run, both sets", auto_latencies))
    print("targets: crop median <= 50 ms; exact >= 97% easy, >= 55% hard; 0 wrong accepted")


if __name__ == "__main__":
    main()
