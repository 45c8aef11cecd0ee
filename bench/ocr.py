"""Embedded plate reader: accuracy on rendered car photos, and time per photo on one core.

    .venv/bin/python bench/ocr.py [--images 100] [--threads 1] [--gate 0.8]

Renders `--images` "easy" and "hard" photos (generator/car_images.py) and reads them as
the pipeline does (the fast detection pass, the fine one when the fast one found no plate
text): exact-plate accuracy, wrong plates accepted, unreadable count, which pass served each
photo, and the time per photo on `--threads` cores (onnxruntime intra-op and OpenCV threads),
as wall clock and as CPU time. Then the look-alike set: `--images` clean, front-on ("easy")
New York plates with O, I, Q and D in every letter place and 0 and 1 in every digit place,
where the automatic read may refuse a plate but the first candidate should be the plate.
Real photos: bench/plates_real.py. A benchmark, not a test: it prints figures and asserts
nothing.
"""

import argparse
import os
import random
import sys
import time

# Before numpy/OpenCV/onnxruntime load: their thread pools read these once.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2
import numpy as np

from generator.car_images import DIFFICULTIES, render_car_photo, render_scene
from section_speed.clients.embedded_ocr import EmbeddedPlateReader
from section_speed.clients.images import decode_rgb
from section_speed.domain.defaults import PLATE_MIN_CONFIDENCE
from section_speed.domain.plate_formats import plate_for_vehicle


def render(difficulty: str, count: int) -> tuple[list[np.ndarray], list[str], float]:
    """Decoded photos of car-0..car-N at `difficulty`, their plates, and ms per render."""
    started = time.perf_counter()
    photos = [render_car_photo(f"car-{i}", difficulty) for i in range(count)]
    elapsed = (time.perf_counter() - started) * 1000 / count
    truths = [plate_for_vehicle(f"car-{i}") for i in range(count)]
    return [decode_rgb(photo) for photo in photos], truths, elapsed


def accuracy(reader: EmbeddedPlateReader, photos: list[np.ndarray], truths: list[str]) -> dict:
    """Read every photo as the pipeline does, timing each (wall clock and CPU)."""
    reader.path_counts.clear()
    exact = wrong = unreadable = 0
    wall, cpu = [], []
    for rgb, truth in zip(photos, truths, strict=True):
        started, started_cpu = time.perf_counter(), time.process_time()
        plate = reader.read_array(rgb).license_plate
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
        exact += plate == truth
        wrong += plate is not None and plate != truth
        unreadable += plate is None
    return {
        "exact": exact / len(photos), "wrong": wrong, "unreadable": unreadable,
        "paths": dict(reader.path_counts), "wall": wall, "cpu": cpu,
    }  # fmt: skip


LOOKALIKE_LETTERS, LOOKALIKE_DIGITS = "OIQD", "01"
OTHER_LETTERS, OTHER_DIGITS = "ABCEFGHJKLMNPRSTUVWXYZ", "23456789"


def lookalike_plates(count: int, seed: int = 20) -> list[str]:
    """New York LLLDDDD plates, every other place (alternating by plate) a look-alike, so that
    each of O, I, Q, D comes in every letter place and 0, 1 in every digit place."""
    rng = random.Random(seed)
    plates = []
    for index in range(count):
        chars = []
        for place in range(7):
            letter = place < 3
            if (index + place) % 2 == 0:
                pool = LOOKALIKE_LETTERS if letter else LOOKALIKE_DIGITS
                chars.append(pool[(index // 2 + place) % len(pool)])
            else:
                chars.append(rng.choice(OTHER_LETTERS if letter else OTHER_DIGITS))
        plates.append("".join(chars))
    return plates


def candidates(reader: EmbeddedPlateReader, count: int) -> dict:
    """The look-alike set: automatic reads, and the true plate first among the candidates."""
    exact = wrong = first = top3 = 0
    for index, truth in enumerate(lookalike_plates(count)):
        rgb = np.asarray(render_scene(truth, 7000 + index, "easy").convert("RGB"))
        reading = reader.read_array(rgb)
        plates = [candidate.plate for candidate in reading.candidates]
        exact += reading.license_plate == truth
        wrong += reading.license_plate not in (None, truth)
        first += plates[:1] == [truth]
        top3 += truth in plates[:3]
    return {"exact": exact, "wrong": wrong, "first": first, "top3": top3}


def describe(name: str, latencies: list[float]) -> str:
    ms = np.array(latencies) * 1000
    return f"{name}: median {np.median(ms):.0f} ms, p90 {np.percentile(ms, 90):.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100, help="photos per difficulty")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gate", type=float, default=PLATE_MIN_CONFIDENCE, help="min confidence")
    args = parser.parse_args()
    cv2.setNumThreads(args.threads)
    started = time.perf_counter()
    reader = EmbeddedPlateReader(args.gate, threads=args.threads)
    print(f"reader {reader.name}: loaded in {time.perf_counter() - started:.1f} s, "
          f"{args.threads} thread(s), gate {reader.min_confidence}")  # fmt: skip
    for difficulty in DIFFICULTIES:
        photos, truths, render_ms = render(difficulty, args.images)
        result = accuracy(reader, photos, truths)
        print(
            f"{difficulty}: {len(photos)} photos (render {render_ms:.0f} ms each): "
            f"exact {result['exact']:.1%}, wrong accepted {result['wrong']}, "
            f"unreadable {result['unreadable']}, passes {result['paths']}"
        )
        print(f"  {describe('wall', result['wall'])}; {describe('CPU', result['cpu'])}")
    looks = candidates(reader, args.images)
    print(
        f"look-alikes: {args.images} clean plates: auto-read exactly {looks['exact']}, "
        f"wrong accepted {looks['wrong']}, true plate first candidate {looks['first']}, "
        f"in the top 3 {looks['top3']}"
    )
    print(
        "targets: exact >= 97% easy, >= 55% hard; 0 wrong accepted; "
        "look-alikes: true plate first >= 99%"
    )


if __name__ == "__main__":
    main()
