"""Licence plates: the plate a vehicle carries, and reading a plate from OCR text.

Pure functions, no Beam and no OCR engine: the cars API's renderer, the generator's truth
file, both plate readers and the tests all use these, so "the true plate" and "a plate we
accept" are defined once.

Plates follow New York's passenger format, three letters then four digits (`ABC-1234`,
normalised to `ABC1234`). An OCR engine confuses O/0 and I/1; the format says which one a
position holds, so those two confusions are fixed by position and nothing else is guessed.
"""

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"
# One character class per position: L = letter, D = digit.
PLATE_FORMAT = "LLLDDDD"
PLATE_PATTERN = re.compile(r"^[A-Z]{3}[0-9]{4}$")

_AS_LETTER = {"0": "O", "1": "I"}
_AS_DIGIT = {"O": "0", "I": "1"}


@dataclass(frozen=True, slots=True)
class PlateReading:
    """What a plate reader made of one image.

    `license_plate` is the normalised plate, or None when the image is unreadable: no text
    matched the plate format, the confidence was under the gate, or `error` says what failed.
    """

    license_plate: str | None
    confidence: float
    raw_text: str
    reader: str
    error: str | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "license_plate": self.license_plate,
            "plate_confidence": round(self.confidence, 4),
            "plate_reader": self.reader,
            "raw_text": self.raw_text,
        }


def plate_for_vehicle(vehicle_id: str) -> str:
    """The plate registered to `vehicle_id`: deterministic, so tests know the truth."""
    digest = hashlib.sha256(f"plate:{vehicle_id}".encode()).digest()
    letters = "".join(LETTERS[byte % len(LETTERS)] for byte in digest[:3])
    digits = "".join(DIGITS[byte % len(DIGITS)] for byte in digest[3:7])
    return letters + digits


def display_plate(plate: str) -> str:
    """`ABC1234` as printed on the plate: `ABC-1234`."""
    return f"{plate[:3]}-{plate[3:]}"


def normalise_plate(raw_text: str) -> str | None:
    """The plate in `raw_text` (A-Z, 0-9 only), or None when it does not fit the format.

    Separators and case are dropped; O/0 and I/1 are fixed where the position says which
    is meant. Any other misfit is not guessed at.
    """
    text = re.sub(r"[^A-Z0-9]", "", raw_text.upper())
    if len(text) != len(PLATE_FORMAT):
        return None
    fixed = "".join(
        _AS_LETTER.get(char, char) if kind == "L" else _AS_DIGIT.get(char, char)
        for char, kind in zip(text, PLATE_FORMAT, strict=True)
    )
    return fixed if PLATE_PATTERN.match(fixed) else None


def best_plate(
    candidates: Iterable[tuple[str, float]], reader: str, min_confidence: float
) -> PlateReading:
    """Choose the plate among OCR text lines `(text, confidence)`.

    The most confident line that normalises to a plate wins; it is accepted only at or above
    `min_confidence`. Lines that are not plates (the state name, a slogan) are ignored, but
    kept in `raw_text` so a person can see what the engine read.
    """
    lines = list(candidates)
    raw_text = " | ".join(text for text, _ in lines)
    plates = [
        (plate, confidence)
        for text, confidence in lines
        if (plate := normalise_plate(text)) is not None
    ]
    if not plates:
        return PlateReading(None, 0.0, raw_text, reader)
    plate, confidence = max(plates, key=lambda item: item[1])
    if confidence < min_confidence:
        return PlateReading(None, confidence, raw_text, reader)
    return PlateReading(plate, confidence, raw_text, reader)


def unreadable(reader: str, error: str, raw_text: str = "") -> PlateReading:
    """A reading for an image that could not be read at all (decode failure, service error)."""
    return PlateReading(None, 0.0, raw_text, reader, error)
