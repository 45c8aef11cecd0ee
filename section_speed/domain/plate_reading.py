"""What a plate reader made of a photo: `PlateReading`, its candidates and the text lines.

The value types the readers (section_speed/clients/) produce and the fine, the evidence
and the desk carry; `plate_gates.py` decides which text is a plate, `plate_candidates.py`
which plates a person may choose from.
"""

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

# The plate readers `--plate_reader` chooses (section_speed/clients/plate_readers.py); the
# cascade is the embedded reader, then Cloud Vision for the photos it cannot accept.
EMBEDDED_READER = "embedded"
CLOUD_VISION_READER = "cloud-vision"
CASCADE_READER = "cascade"
PLATE_READERS = (EMBEDDED_READER, CLOUD_VISION_READER, CASCADE_READER)


class PlateReaderUnavailable(RuntimeError):
    """The reader could not read this time, for every photo alike; later it may."""


@dataclass(frozen=True, slots=True)
class PlateCandidate:
    """A plate the officer may pick: its characters, each one's confidence, its rank's score.

    `char_confidences` has one value per character of `plate` (a character under the gate is
    a doubtful one for the desk to mark); `score` is the reader's estimate that this is the
    plate, 0..1, the key candidates are ranked by; `fits_format` names the known format it
    fits (the state's, where the plate shows its state), or None.
    """

    plate: str
    char_confidences: tuple[float, ...]
    score: float = 0.0
    fits_format: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "char_confidences", tuple(self.char_confidences))
        if len(self.char_confidences) != len(self.plate):
            raise ValueError("one confidence per character of the candidate plate")

    def confidences_text(self) -> str:
        """The confidences as the fines table stores them: "0.99,0.87,..."."""
        return ",".join(f"{value:.2f}" for value in self.char_confidences)


def parse_confidences_text(text: object) -> list[float]:
    """`PlateCandidate.confidences_text` read back; [] for anything else."""
    if not isinstance(text, str) or not text:
        return []
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        return []


def parse_plate_box_text(text: object) -> tuple[float, float, float, float] | None:
    """`PlateReading.plate_box_text` read back: (x0, y0, x1, y1), None unless a real box."""
    if not isinstance(text, str):
        return None
    try:
        x0, y0, x1, y1 = (float(part) for part in text.split(","))
    except ValueError:
        return None
    return (x0, y0, x1, y1) if x1 > x0 >= 0 and y1 > y0 >= 0 else None


@dataclass(frozen=True, slots=True)
class PlateReading:
    """What a plate reader made of one image.

    `license_plate` is the plate, or None when the image is unreadable: `reason` says why
    no text was accepted, or `error` says what failed (decode, service); `confidence` is the
    least sure character's of the best plate-like text, accepted or not. `candidates` are
    up to `MAX_CANDIDATES` plates for a person to choose from, best first (the accepted
    plate first when there is one); `plate_box` is where the reader found the plate, (x0,
    y0, x1, y1) pixels of the photo; `state` the state name read on the plate, if any.

    `to_json`/`from_json` (or `PlateReading(**dataclasses.asdict(reading))`) round-trip it.
    """

    license_plate: str | None
    confidence: float
    raw_text: str
    reader: str
    error: str | None = None
    reason: str | None = None
    candidates: tuple[PlateCandidate, ...] = ()
    plate_box: tuple[int, int, int, int] | None = None
    state: str | None = None

    def __post_init__(self) -> None:
        # JSON gives lists and dicts back: rebuild the tuples and nested candidates.
        candidates = tuple(
            item if isinstance(item, PlateCandidate) else PlateCandidate(**item)
            for item in self.candidates
        )
        object.__setattr__(self, "candidates", candidates)
        if self.plate_box is not None:
            box = tuple(int(value) for value in self.plate_box)
            if len(box) != 4:
                raise ValueError("plate_box is (x0, y0, x1, y1)")
            object.__setattr__(self, "plate_box", box)

    def as_json(self) -> dict[str, object]:
        return {
            "license_plate": self.license_plate,
            "plate_confidence": round(self.confidence, 4),
            "plate_reader": self.reader,
            "raw_text": self.raw_text,
            "plate_candidates": [candidate.plate for candidate in self.candidates],
            "plate_box": self.plate_box_text(),
        }

    def plate_box_text(self) -> str | None:
        """The plate's box as the fines table stores it: "x0,y0,x1,y1", or None."""
        return None if self.plate_box is None else ",".join(map(str, self.plate_box))

    def to_json(self) -> str:
        """Every field as one JSON object (nested candidates included)."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, data: str | Mapping[str, object]) -> "PlateReading":
        """The reading `to_json` (or `asdict`) gave: a JSON string or its parsed object."""
        fields = json.loads(data) if isinstance(data, str) else dict(data)
        return cls(**fields)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class TextLine:
    """One piece of text an engine read: its characters, each one's confidence, its box.

    `width` and `height` are the text box's in pixels (None when the engine gives no box);
    `doubt` says why the reading is unsure whatever its confidences (crops disagree).
    """

    text: str
    confidences: tuple[float, ...]
    width: float | None = None
    height: float | None = None
    doubt: str = ""
    # Per character, the recogniser's second choice and its probability ("" and 0.0 when
    # it has none): the look-alike a candidate may swap in, for a person, never for a plate.
    runner_ups: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if len(self.confidences) != len(self.text):
            raise ValueError("one confidence per character of the text")
        if self.runner_ups and len(self.runner_ups) != len(self.text):
            raise ValueError("one runner-up per character of the text")

    @classmethod
    def uniform(cls, text: str, confidence: float) -> "TextLine":
        """A line whose engine gives one confidence for the whole text."""
        return cls(text, (confidence,) * len(text))


def unreadable(reader: str, error: str, raw_text: str = "") -> PlateReading:
    """A reading for an image that could not be read at all (decode failure, service error)."""
    return PlateReading(None, 0.0, raw_text, reader, error)
