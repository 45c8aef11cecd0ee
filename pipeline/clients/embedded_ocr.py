"""The embedded plate reader: RapidOCR's bundled ONNX models, run inside the worker.

Text detection over a whole 640x480 photo costs about 0.2 s of one core, so the plate is
found first with plain OpenCV: a plate is a bright field framed by a dark border, with the
shape of a 2:1 rectangle and a row of tall dark characters across its middle. Only that row
is cropped, straightened and handed to the recogniser (about a tenth of the cost). When no
row reads as a plate at all, the whole photo goes through detection + recognition.

A plate's confidence is the product of its characters' probabilities, pooling those that
`normalise_plate` treats alike (O/0, I/1, case); the engine's own line score is their mean,
which stays high when one character is a guess. `best_plate` then applies the gate as for
any reader. RapidOCR keeps call settings on the engine, so calls are serialised and one
reader may be shared between threads.
"""

import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import cv2
import numpy as np

from pipeline.clients.images import InvalidImage, decode_rgb
from pipeline.clients.plate_readers import DEFAULT_MIN_CONFIDENCE
from pipeline.domain.plates import PlateReading, best_plate, normalise_plate, unreadable

READER_NAME = "embedded-rapidocr"
CROP_PATH, FULL_PATH = "crop", "full"

# Plate candidates: a bright region whose rotated bounding box has a plate's proportions.
MIN_PLATE_AREA, MAX_PLATE_AREA = 0.004, 0.15  # fractions of the photo
MIN_ASPECT, MAX_ASPECT = 1.5, 2.7  # width / height; a NY plate is 2.0 before tilt/skew
MIN_FILL = 0.8  # region area / its rotated box: a rectangle, not a blob
MAX_CANDIDATES = 2  # crops tried before falling back to the full photo
THRESHOLD_LEVELS = 3  # brightness levels from Otsu's up to the brightest pixels
# The character row within the plate, as fractions of its width and height: below the
# state name, above the slogan.
ROW_X = (0.03, 0.97)
ROW_Y = (0.25, 0.80)
ROW_HEIGHT = 64  # pixels of the straightened row given to the recogniser
PLATE_CHARACTERS = 8  # `ABC-1234`: seven characters and the hyphen
# Recogniser input width: RapidOCR pads every line to at least this; a plate row is ~3.5:1.
REC_SHAPE = [3, 48, 192]
DET_MAX_SIDE = 960
BLANK = 0  # the CTC blank's index in the recogniser's characters
_POOLED = {"0": "O", "1": "I"}  # plate characters that normalise_plate fixes by position


@dataclass(frozen=True, slots=True)
class PlateQuad:
    """A located plate: its centre, unit axes along its width and height, and its size."""

    centre: np.ndarray
    across: np.ndarray
    down: np.ndarray
    width: float
    height: float

    def point(self, x: float, y: float) -> np.ndarray:
        """The photo point at fraction (x, y) of the plate, (0, 0) being its top-left."""
        return (
            self.centre + self.across * (x - 0.5) * self.width + self.down * (y - 0.5) * self.height
        )


class EmbeddedPlateReader:
    """RapidOCR with its default bundled models, loaded once per worker."""

    name: str = READER_NAME

    def __init__(
        self, min_confidence: float = DEFAULT_MIN_CONFIDENCE, threads: int | None = None
    ) -> None:
        from rapidocr import RapidOCR  # heavy import: only a worker that reads plates pays it

        self.name = READER_NAME
        self.min_confidence = min_confidence
        self.path_counts: Counter[str] = Counter()
        self.last_path = ""
        self._lock = threading.Lock()
        self._engine = RapidOCR(params=_engine_params(threads))
        self._characters: list[str] = []
        self._groups: dict[str, np.ndarray] = {}
        self._load_models()

    def read(self, images: Sequence[bytes]) -> list[PlateReading]:
        """One reading per photo, in order; a photo that fails becomes an unreadable reading."""
        return [self._read_one(data) for data in images]

    def read_array(self, rgb: np.ndarray, locate: bool = True) -> PlateReading:
        """Read an RGB photo; `locate=False` skips the plate finder (full-photo OCR only)."""
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        with self._lock:
            if locate:
                reading = self._read_located(bgr)
                if reading is not None:
                    return self._used(CROP_PATH, reading)
            return self._used(FULL_PATH, self._read_full(bgr))

    def _read_one(self, data: bytes) -> PlateReading:
        try:
            rgb = decode_rgb(data)
        except InvalidImage as error:
            return unreadable(self.name, str(error))
        try:
            return self.read_array(rgb)
        except Exception as error:  # one photo's failure must not fail the whole batch
            return unreadable(self.name, f"OCR failed: {type(error).__name__}: {error}")

    def _used(self, path: str, reading: PlateReading) -> PlateReading:
        self.last_path = path
        self.path_counts[path] += 1
        return reading

    def _read_located(self, bgr: np.ndarray) -> PlateReading | None:
        """The plate read from a located character row; None sends the photo to full OCR.

        A row that reads as a plate under the gate is final: the plate was found and the
        engine is unsure of it, and reading the same pixels again in the full photo adds a
        second draw at a wrong plate far more often than a right one.
        """
        unsure = None
        for row in plate_rows(bgr):
            reading = best_plate([self._recognise(row)], self.name, self.min_confidence)
            if reading.license_plate is not None:
                return reading
            if unsure is None and normalise_plate(reading.raw_text) is not None:
                unsure = reading
        return unsure

    def _read_full(self, bgr: np.ndarray) -> PlateReading:
        """Detection over the whole photo, then each line read; neighbours also tried joined."""
        detected = self._engine(bgr, use_det=True, use_cls=False, use_rec=False)
        boxes = [] if detected.boxes is None else list(detected.boxes)
        lines = [self._recognise(crop_box(bgr, box)) for box in boxes]
        joined = [
            (first + second, first_confidence * second_confidence)
            for (first, first_confidence), (second, second_confidence) in pairwise(lines)
        ]
        return best_plate([*lines, *joined], self.name, self.min_confidence)

    def _recognise(self, line: np.ndarray) -> tuple[str, float]:
        """One text line and the chance that its plate characters are all right."""
        return decode_line(self._frame_probabilities(line), self._characters, self._groups)

    def _frame_probabilities(self, line: np.ndarray) -> np.ndarray:
        """The recogniser's character probabilities per output frame (frames x characters).

        RapidOCR's public result keeps only the mean of the chosen characters' probabilities,
        so the line goes through its loaded recogniser directly (rapidocr is pinned).
        """
        recogniser = self._engine.text_rec
        height, width = line.shape[:2]
        _, input_height, input_width = recogniser.rec_image_shape
        ratio = max(width / height, input_width / input_height)
        batch = recogniser.resize_norm_img(line, ratio)[np.newaxis].astype(np.float32)
        return recogniser.session(batch)[0]

    def _load_models(self) -> None:
        """Load both models now (RapidOCR loads lazily) so no reading pays for it."""
        sample = np.full((96, 192, 3), 255, np.uint8)
        cv2.putText(sample, "AB 12", (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (0, 0, 0), 3)
        self._engine(sample, use_det=True, use_cls=False, use_rec=False)
        self._engine(sample, use_det=False, use_cls=False, use_rec=True)
        recogniser = getattr(self._engine, "text_rec", None)
        if recogniser is None or not hasattr(recogniser, "postprocess_op"):
            raise RuntimeError("rapidocr's recogniser moved; clients/embedded_ocr.py needs 3.10")
        self._characters = list(recogniser.postprocess_op.character)
        self._groups = character_groups(self._characters)


def character_groups(characters: Sequence[str]) -> dict[str, np.ndarray]:
    """Indices of the recogniser's characters that normalise to the same plate character.

    `normalise_plate` upper-cases and fixes O/0 and I/1 by position, so 'o', 'O' and '0'
    are one plate character and the confidence pools their probabilities.
    """
    groups: dict[str, list[int]] = {}
    for index, char in enumerate(characters):
        if len(char) == 1 and char.isascii() and char.isalnum():
            groups.setdefault(_plate_character(char), []).append(index)
    return {char: np.array(indices) for char, indices in groups.items()}


def _plate_character(char: str) -> str:
    upper = char.upper()
    return _POOLED.get(upper, upper)


def decode_line(
    probabilities: np.ndarray, characters: Sequence[str], groups: dict[str, np.ndarray]
) -> tuple[str, float]:
    """Greedy CTC decoding of one line, and the product of its alphanumerics' confidences.

    A plate is right only if every character is, so the product, not the engine's mean;
    each character counts with the probability of everything that normalises like it.
    """
    best = probabilities.argmax(axis=1)
    emitted = (best != BLANK) & np.r_[True, best[1:] != best[:-1]]
    text, confidence = [], 1.0
    for frame in np.flatnonzero(emitted):
        char = characters[best[frame]]
        text.append(char)
        if char.isalnum():
            pooled = groups.get(_plate_character(char), best[frame])
            confidence *= float(np.sum(probabilities[frame, pooled]))
    return "".join(text), min(confidence, 1.0)


def crop_box(bgr: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A detected text box (4 corners, clockwise from top-left) cut out and levelled."""
    corners = np.asarray(box, dtype=np.float32)
    width = round(max(_norm(corners[1] - corners[0]), _norm(corners[2] - corners[3])))
    height = round(max(_norm(corners[3] - corners[0]), _norm(corners[2] - corners[1])))
    width, height = max(width, 1), max(height, 1)
    target = np.float32([(0, 0), (width, 0), (width, height), (0, height)])
    matrix = cv2.getPerspectiveTransform(corners, target)
    return cv2.warpPerspective(bgr, matrix, (width, height), flags=cv2.INTER_CUBIC)


def _engine_params(threads: int | None) -> dict[str, Any]:
    """RapidOCR settings: default bundled models (anything else downloads), quiet logs.

    `threads` bounds onnxruntime's intra-op pool; None leaves it one thread per core.
    """
    params: dict[str, Any] = {
        "Global.log_level": "error",
        "Rec.rec_img_shape": REC_SHAPE,
        # Detect at the photo's own size (shrinking only beyond DET_MAX_SIDE): RapidOCR's
        # default upscales the short side to 736, 2.5x slower and no better on plates.
        "Det.limit_type": "max",
        "Det.limit_side_len": DET_MAX_SIDE,
    }
    if threads is not None:
        params["EngineConfig.onnxruntime.intra_op_num_threads"] = threads
        params["EngineConfig.onnxruntime.inter_op_num_threads"] = 1
    return params


def plate_rows(bgr: np.ndarray) -> Iterator[np.ndarray]:
    """Straightened character rows of the likeliest plates, best first, at most a few."""
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    scored = []
    for quad in locate_plates(gray):
        row = straighten_row(bgr, quad)
        score = _row_score(cv2.cvtColor(row, cv2.COLOR_BGR2GRAY))
        if score is not None:
            scored.append((score, -quad.width, row))
    scored.sort(key=lambda item: item[:2])
    for _, _, row in scored[:MAX_CANDIDATES]:
        yield row


def locate_plates(gray: np.ndarray) -> list[PlateQuad]:
    """Bright rectangles of plate proportions, at a few brightness levels.

    Nested regions count (a plate inside a darker recess of a white car), and the higher
    levels split a plate from a bright car body that a thin, blurred border fails to.
    """
    blurred = cv2.GaussianBlur(gray, (5, 5), 0)
    otsu, _ = cv2.threshold(blurred, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    top = float(np.percentile(blurred, 99))
    quads = []
    for level in np.linspace(otsu, top, THRESHOLD_LEVELS + 1)[:-1]:
        quads.extend(_bright_rectangles(blurred > level))
    return _distinct(quads)


def _bright_rectangles(mask: np.ndarray) -> Iterator[PlateQuad]:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    image_area = mask.shape[0] * mask.shape[1]
    for contour in contours:
        area = cv2.contourArea(contour)
        if not MIN_PLATE_AREA * image_area <= area <= MAX_PLATE_AREA * image_area:
            continue
        quad = _quad(cv2.minAreaRect(contour))
        aspect = quad.width / max(quad.height, 1.0)
        if MIN_ASPECT <= aspect <= MAX_ASPECT and area >= MIN_FILL * quad.width * quad.height:
            yield quad


def _quad(rect: tuple[Any, Any, float]) -> PlateQuad:
    """A rotated rectangle as a PlateQuad whose width axis points right and height axis down."""
    corners = cv2.boxPoints(rect)
    first, second = corners[1] - corners[0], corners[2] - corners[1]
    long_edge, short_edge = (first, second) if _norm(first) >= _norm(second) else (second, first)
    across = long_edge / _norm(long_edge)
    if across[0] < 0:
        across = -across
    down = np.array([-across[1], across[0]])  # across turned 90 degrees clockwise on screen
    return PlateQuad(
        np.array(rect[0], dtype=np.float64), across, down, _norm(long_edge), _norm(short_edge)
    )


def _norm(vector: np.ndarray) -> float:
    return float(np.hypot(vector[0], vector[1]))


def _distinct(quads: list[PlateQuad]) -> list[PlateQuad]:
    """Drop a quad that repeats one already kept (the same plate found at two levels)."""
    kept: list[PlateQuad] = []
    for quad in quads:
        if not any(_same_place(quad, other) for other in kept):
            kept.append(quad)
    return kept


def _same_place(quad: PlateQuad, other: PlateQuad) -> bool:
    near = _norm(quad.centre - other.centre) < other.height / 4
    return near and abs(quad.width - other.width) < 0.1 * other.width


def straighten_row(bgr: np.ndarray, quad: PlateQuad) -> np.ndarray:
    """The plate's character row, rotated level and scaled to ROW_HEIGHT pixels."""
    (x0, x1), (y0, y1) = ROW_X, ROW_Y
    source = np.float32([quad.point(x0, y0), quad.point(x1, y0), quad.point(x1, y1)])
    width = round(ROW_HEIGHT * (x1 - x0) * quad.width / ((y1 - y0) * quad.height))
    target = np.float32([(0, 0), (width, 0), (width, ROW_HEIGHT)])
    matrix = cv2.getAffineTransform(source, target)
    return cv2.warpAffine(bgr, matrix, (width, ROW_HEIGHT), flags=cv2.INTER_LINEAR)


def _row_score(row_gray: np.ndarray) -> int | None:
    """How far the row is from a plate's 7 tall dark characters; None when it has no ink."""
    _, ink = cv2.threshold(row_gray, 0, 255, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    count, _, stats, _ = cv2.connectedComponentsWithStats(ink)
    heights = stats[1:, cv2.CC_STAT_HEIGHT]
    tall = int(np.count_nonzero((heights >= 0.4 * ROW_HEIGHT) & (heights < 0.98 * ROW_HEIGHT)))
    if count <= 1:
        return None
    return abs(tall - (PLATE_CHARACTERS - 1))  # the hyphen is short
