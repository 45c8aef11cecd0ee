"""Embedded plate reader on real, labelled photos: plates read, wrong plates, time per photo.

    .venv/bin/python bench/plates_real.py FOLDER [--gate 0.8] [--limit N] [--show]
        [--plate-detector MODEL.onnx] [--published-labels]

FOLDER holds photos with their true plates, either as openalpr/benchmarks does (`NAME.jpg`
beside `NAME.txt`, a line `NAME.jpg<TAB>x<TAB>y<TAB>w<TAB>h<TAB>PLATE`) or in a
`labels.csv` of `file,plate` lines. For openalpr's 222 US photos:

    git clone https://github.com/openalpr/benchmarks /tmp/openalpr   # or any local copy
    .venv/bin/python bench/plates_real.py /tmp/openalpr/endtoend/us      # then eu, br

(outside this repository: the photos are never committed; offline, clone a local mirror
of that repository the same way, docs/plates.md). The labels the photos contradict are
corrected from `label_corrections.csv`, each printed as it is applied (`--published-labels`
scores against the set's own). Each photo's bytes go through the reader as
the pipeline's do (decode, detect, read), on one thread: onnxruntime's and OpenCV's pools
are held to one core. A plate counts as read when it equals the label exactly; a wrong
plate is any accepted plate that does not; the candidates count when the label is the
first, or among the three. Where the labels give the plate's box (openalpr's do), the
reader's plate box counts as found when its centre lies in the labelled box, and a plate
detector's best box when it overlaps the labelled one by IoU 0.3 or more.
`--plate-detector` runs a one-class YOLOv8 plate detector (ONNX) before the recogniser,
for measuring one the project does not ship. Time per photo is given as wall clock and as
this process's CPU time, which is what one core spends when other work shares the machine.
A benchmark, not a test: it asserts nothing.
"""

import argparse
import csv
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# Before numpy/OpenCV/onnxruntime load: their thread pools read these once.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2
import numpy as np

from section_speed.clients.embedded_ocr import EmbeddedPlateReader
from section_speed.clients.embedded_ocr_plates import PlateDetector
from section_speed.domain.defaults import PLATE_MIN_CONFIDENCE

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
# Labels of the public sets that the photos contradict, each looked at and its evidence
# written beside it (docs/plates.md, Labels corrected). Applied unless --published-labels.
CORRECTIONS_FILE = Path(__file__).with_name("label_corrections.csv")


Box = tuple[float, float, float, float]  # x0, y0, x1, y1


@dataclass(frozen=True, slots=True)
class Outcome:
    file: str
    truth: str
    plate: str | None
    confidence: float
    reason: str
    path: str
    wall_s: float
    cpu_s: float
    candidates: tuple[str, ...] = ()
    state: str | None = None
    box: tuple[int, int, int, int] | None = None
    box_found: bool | None = None  # None: the set gives no box
    detector_found: bool | None = None  # None: no box, or no plate detector


def load_boxes(folder: Path) -> dict[Path, Box]:
    """Photo path -> the labelled plate's box, from openalpr's `.txt` files (x, y, w, h)."""
    boxes: dict[Path, Box] = {}
    for text_path in sorted(folder.glob("*.txt")):
        for line in text_path.read_text().splitlines():
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) >= 6 and fields[0].lower().endswith(PHOTO_SUFFIXES):
                try:
                    x, y, w, h = (float(value) for value in fields[1:5])
                except ValueError:
                    continue
                boxes.setdefault(folder / fields[0], (x, y, x + w, y + h))
    return boxes


def iou(a: Box, b: Box) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def load_labels(folder: Path) -> dict[Path, str]:
    """Photo path -> true plate, from `labels.csv` or openalpr `.txt` files beside the photos."""
    labels: dict[Path, str] = {}
    csv_path = folder / "labels.csv"
    if csv_path.is_file():
        with csv_path.open(newline="") as handle:
            for row in csv.reader(handle):
                if len(row) >= 2 and row[0].strip() and row[0].strip().lower() != "file":
                    labels[folder / row[0].strip()] = _clean(row[1])
    for text_path in sorted(folder.glob("*.txt")):
        for line in text_path.read_text().splitlines():
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) >= 6 and fields[0].lower().endswith(PHOTO_SUFFIXES):
                labels.setdefault(folder / fields[0], _clean(fields[5]))
    return {path: plate for path, plate in sorted(labels.items()) if path.is_file() and plate}


@dataclass(frozen=True, slots=True)
class Correction:
    file: str
    published_label: str
    plate: str
    evidence: str


def load_corrections(folder: Path, path: Path = CORRECTIONS_FILE) -> dict[str, Correction]:
    """File name -> correction, for the set `folder` is (its last part: `us`, `eu`, `br`)."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {
        row["file"]: Correction(row["file"], row["published_label"], row["plate"], row["evidence"])
        for row in rows
        if row["set"] == folder.name
    }


def corrected(
    labels: dict[Path, str], corrections: dict[str, Correction]
) -> tuple[dict[Path, str], list[Correction]]:
    """`labels` with the corrections applied, and those applied.

    A correction applies only where the published label is still the one it corrects: a
    set whose label was fixed, or changed, upstream is taken as it now is, and said.
    """
    fixed = dict(labels)
    applied = []
    for path, label in labels.items():
        correction = corrections.get(path.name)
        if correction is None:
            continue
        if label == correction.published_label:
            fixed[path] = correction.plate
            applied.append(correction)
        else:
            print(
                f"label correction for {path.name} not applied: it corrects "
                f"{correction.published_label}, the set now says {label}"
            )
    return fixed, applied


def labels_for_run(folder: Path, published: bool) -> dict[Path, str]:
    """The labels a benchmark scores against: corrected unless `published`, which is said."""
    labels = load_labels(folder)
    if published:
        print("labels: as published (no correction applied)")
        return labels
    labels, applied = corrected(labels, load_corrections(folder))
    print(
        f"labels: {len(applied)} corrected ({CORRECTIONS_FILE.name}; --published-labels "
        "scores against the set's own)"
    )
    for correction in applied:
        print(f"  {correction.file}: {correction.published_label} -> {correction.plate}")
    return labels


def add_photo_set_arguments(parser: argparse.ArgumentParser) -> None:
    """What both plate benchmarks take: the labelled photos, the gate, how many, how shown."""
    parser.add_argument("folder", type=Path, nargs="?")
    parser.add_argument("--gate", type=float, default=PLATE_MIN_CONFIDENCE, help="min confidence")
    parser.add_argument("--limit", type=int, default=0, help="read only the first N photos")
    parser.add_argument("--show", action="store_true", help="print every photo's outcome")
    parser.add_argument(
        "--published-labels", action="store_true", help="score against the set's own labels"
    )


def labels_from_arguments(args: argparse.Namespace, script: str) -> dict[Path, str] | None:
    """The photos to read and their true plates; None, said, when no folder was given (`make
    bench` runs every script bare: the photos are not ours); exits when it holds none."""
    if args.folder is None:
        print(
            f"{script}: skipped, no FOLDER of labelled photos given (docs/plates.md says "
            "how to get openalpr/benchmarks and run this on endtoend/us)"
        )
        return None
    labels = labels_for_run(args.folder, args.published_labels)
    if args.limit:
        labels = dict(list(labels.items())[: args.limit])
    if not labels:
        sys.exit(f"{script}: no labelled photos in {args.folder} (NAME.txt or labels.csv)")
    return labels


def _clean(plate: str) -> str:
    return "".join(char for char in plate.upper() if char.isalnum())


def run(
    reader: EmbeddedPlateReader, labels: dict[Path, str], boxes: dict[Path, Box]
) -> list[Outcome]:
    outcomes = []
    for path, truth in labels.items():
        data = path.read_bytes()
        wall, cpu = time.perf_counter(), time.process_time()
        (reading,) = reader.read([data])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        why = reading.error or reading.reason or ""
        plate, confidence = reading.license_plate, reading.confidence
        label_box = boxes.get(path)
        box_found = detector_found = None
        if label_box is not None:
            box_found = reading.plate_box is not None and _centre_in(reading.plate_box, label_box)
            if reader.has_plate_detector:
                best = reader.last_plates[0][0] if reader.last_plates else None
                detector_found = best is not None and iou(_bounds(best), label_box) >= 0.3
        outcomes.append(
            Outcome(
                path.name,
                truth,
                plate,
                confidence,
                why,
                reader.last_path,
                wall,
                cpu,
                tuple(candidate.plate for candidate in reading.candidates),
                reading.state,
                reading.plate_box,
                box_found,
                detector_found,
            )
        )
    return outcomes


def _bounds(corners: np.ndarray) -> Box:
    (left, top), (right, bottom) = corners.min(axis=0), corners.max(axis=0)
    return float(left), float(top), float(right), float(bottom)


def _centre_in(box: tuple[int, int, int, int], label: Box) -> bool:
    x, y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return label[0] <= x <= label[2] and label[1] <= y <= label[3]


def describe(name: str, seconds: list[float]) -> str:
    ms = np.array(seconds) * 1000
    return f"{name}: median {np.median(ms):.0f} ms, p90 {np.percentile(ms, 90):.0f} ms"


def kind_of_reason(reason: str) -> str:
    """ "ABC123: 'B' read at 0.60, under the gate 0.800" -> "a character under the gate"."""
    for marker, kind in REASON_KINDS:
        if marker in reason:
            return kind
    return reason


REASON_KINDS = (
    ("does not fit", "the plate does not fit its state's formats"),
    ("fits no known format", "a look-alike's twin fits a known format"),
    ("under the gate", "a character under the gate"),
    ("crops read", "crops disagree"),
    ("readings sure", "too few crops sure"),
    ("several plates", "several plates in view"),
    ("second recogniser", "the second recogniser does not confirm a character"),
    ("no plate among", "no plate-like text"),
    ("not plate-shaped", "no plate-like text"),
)


def report(outcomes: list[Outcome], show: bool) -> None:
    count = len(outcomes)
    exact = [o for o in outcomes if o.plate == o.truth]
    wrong = [o for o in outcomes if o.plate is not None and o.plate != o.truth]
    unreadable = [o for o in outcomes if o.plate is None]
    top1 = [o for o in outcomes if o.candidates[:1] == (o.truth,)]
    top3 = [o for o in outcomes if o.truth in o.candidates[:3]]
    if show:
        for o in outcomes:
            verdict = "ok" if o in exact else "WRONG" if o in wrong else "null"
            print(
                f"{verdict:5} {o.file} truth {o.truth} read {o.plate} ({o.confidence:.3f}) "
                f"{o.reason} [{o.path} pass, {o.wall_s * 1000:.0f} ms] "
                f"candidates {','.join(o.candidates) or '-'} state {o.state} box {o.box}"
            )
    print(f"photos: {count}")
    print(f"read exactly (auto): {len(exact)} ({len(exact) / count:.1%})")
    print(f"true plate first candidate: {len(top1)} ({len(top1) / count:.1%})")
    print(f"true plate in top 3 candidates: {len(top3)} ({len(top3) / count:.1%})")
    print(f"wrong plates accepted: {len(wrong)}")
    for o in wrong:
        print(f"  {o.file}: truth {o.truth}, accepted {o.plate} at {o.confidence:.3f}")
    print(f"unreadable (null with a reason): {len(unreadable)} ({len(unreadable) / count:.1%})")
    for kind, n in Counter(kind_of_reason(o.reason) for o in unreadable).most_common():
        print(f"  {n:4} {kind}")
    boxed = [o for o in outcomes if o.box_found is not None]
    if boxed:
        found = sum(1 for o in boxed if o.box_found)
        print(f"plate box found (centre in the labelled box): {found} of {len(boxed)}")
    detected = [o for o in outcomes if o.detector_found is not None]
    if detected:
        found = sum(1 for o in detected if o.detector_found)
        print(f"plate detector's best box, IoU >= 0.3: {found} of {len(detected)}")
    print("time per photo, " + describe("wall", [o.wall_s for o in outcomes]))
    print("time per photo, " + describe("CPU", [o.cpu_s for o in outcomes]))
    print(
        "targets (us): 0 wrong accepted; >= 60% read exactly; true plate in the top 3 >= 85%; "
        "median <= 300 ms on one core"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_photo_set_arguments(parser)
    parser.add_argument(
        "--plate-detector",
        type=Path,
        help="a one-class YOLOv8 plate detector (ONNX) to run before the recogniser",
    )
    args = parser.parse_args()
    labels = labels_from_arguments(args, "plates_real")
    if labels is None:
        return
    cv2.setNumThreads(1)
    started = time.perf_counter()
    detector = None
    if args.plate_detector is not None:
        detector = PlateDetector(args.plate_detector.read_bytes(), threads=1)
    reader = EmbeddedPlateReader(args.gate, threads=1, plate_detector=detector)
    loaded = time.perf_counter() - started
    print(
        f"reader {reader.name}: loaded in {loaded:.1f} s, 1 thread, gate {reader.min_confidence}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"plate detector: {args.plate_detector or 'none (text detector only)'}")
    outcomes = run(reader, labels, load_boxes(args.folder))
    report(outcomes, args.show)
    print(f"passes used: {dict(reader.path_counts)}")


if __name__ == "__main__":
    main()
