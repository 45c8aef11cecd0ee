"""Which text an OCR engine read is a plate: the gates a reading passes to be accepted.

Pure functions, no OCR engine: both plate readers call `choose_plate`, so "a plate we
accept" is defined once.

A wrong plate is a fine sent to the wrong person, so a reading is accepted only when nothing
in it is a guess; otherwise the plate is null and `PlateReading.reason` says why:

- Nothing is substituted. "R10 7555" is R107555 or nothing: O/0, I/1 and the other
  look-alikes are never swapped by position or format, because a swap can turn one valid
  plate into another.
- Any Latin-alphabet plate: 5-8 letters and digits, at least one of each, once separators
  are dropped (space, dash, dot, middle dot, and the ':', '=', '+' an engine reads for a
  plate's emblem). New York's LLLDDDD is one known format among several, never forced.
  Words (state names, slogans, dealer names), dates, times, phone numbers and web addresses
  fail that pattern; lower-case or non-Latin letters are not plate characters. Shorter
  text is a car's badge (A4, X5, G1, C300) as often as a vanity plate, so it is no plate.
- Every character is read at or above the confidence gate; O, 0, Q, D, I and 1, which plate
  fonts draw almost alike and engines choose between by context, need it twenty times over.
- Readings of the same text from several crops must agree, and only plate-shaped text
  counts when the engine says where the text is.
- A character the reader is not nearly sure of needs a second opinion: a second,
  independently trained recogniser must read the same plate, that character at the gate,
  in most of its crops (`second_opinion_doubt`).
- Two different plates in view, neither clearly the nearest (taller), give no plate.
- A plate that fits no known format while one look-alike's twin would is refused, and so
  is one that does not fit the state printed on it while another candidate does.

For the person who verifies every fine, a reading also offers up to three ranked candidate
plates with their characters' confidences (`plate_candidates.py`): ranking never makes a
plate accepted.
"""

from collections.abc import Iterable, Sequence

from section_speed.domain.plate_candidates import with_candidates
from section_speed.domain.plate_formats import (
    format_doubt,
    is_plate_character,
    normalise_plate,
    plate_like,
)
from section_speed.domain.plate_reading import PlateCandidate, PlateReading, TextLine

# Characters that a plate font draws almost alike: each needs LOOKALIKE_WEIGHT times the
# certainty of an ordinary character (confidence ** weight >= gate).
LOOKALIKES = frozenset("O0QDI1")
LOOKALIKE_WEIGHT = 20
# A character read at under this needs a second recogniser's confirmation: two recognisers
# trained apart rarely make the same unsure guess (California's open 4 read as L at 0.89).
SECOND_OPINION_BELOW = 0.95
# Plate-shaped text, where the engine gives a box: a single line of characters...
MIN_ASPECT, MAX_ASPECT = 1.0, 6.5  # box width / height; a plate's line is 1.3-5.3
MIN_TEXT_PIXELS = 8.0  # characters shorter than this are not read reliably
MIN_RELATIVE_HEIGHT, MAX_RELATIVE_HEIGHT = 0.008, 0.5  # of the photo's height
# ...and a plate counts as the nearest, rather than one of two in view, when its text is
# this much taller than any other plate-like text.
NEAREST_PLATE_RATIO = 1.25


def merge_views(views: Sequence[TextLine], min_confidence: float, min_views: int = 2) -> TextLine:
    """One line from several readings of the same box (crops, scales).

    The plate is the one text that at least `min_views` readings give sure of every
    character (`min_confidence`, look-alikes stricter), these being more than half of the
    readings that give it; its confidences are the least among them. It is refused
    (`doubt`) when sure readings give different plates, or when readings give plates of
    different lengths: a crop that cut a character off, or read a frame's edge as one,
    cannot be told from one that did not. An unsure reading of another plate of the same
    length does not veto, and a reading that is no plate at all (noise at a crop's edge)
    counts for nothing.
    """
    plates = [(view, plate) for view in views if (plate := normalise_plate(view.text))]
    if not plates:
        return views[0]
    sure = [(view, plate) for view, plate in plates if not unsure_reason(view, min_confidence)]
    sure_plates = sorted({plate for _, plate in sure})
    lengths = {len(plate) for _, plate in plates}
    first, plate = sure[0] if sure else plates[0]
    doubt = ""
    if len(lengths) > 1 or len(sure_plates) > 1:
        doubt = f"crops read {', '.join(sorted({plate for _, plate in plates}))}"
    elif sure and (len(sure) < min_views or 2 * len(sure) <= len(plates)):
        doubt = f"{len(sure)} of {len(plates)} readings sure of {plate}"
    agreeing = [_plate_confidences(view) for view, other in (sure or plates) if other == plate]
    least = tuple(min(column) for column in zip(*agreeing, strict=True))
    return TextLine(plate, least, first.width, first.height, doubt)


def second_opinion_doubt(
    line: TextLine, second_views: Sequence[TextLine], min_confidence: float
) -> str:
    """Why a second recogniser does not confirm `line`'s plate, or "" when it does.

    `line` is a plate as merged from the first recogniser's crops; `second_views` are a
    second recogniser's readings of the same crops. Each character `line` holds at under
    `SECOND_OPINION_BELOW` must be read, in more than half of `second_views`, within the
    same plate and at `min_confidence` or more. Characters the first recogniser is nearly
    sure of need no second opinion: asking it for every character would refuse many
    right plates for the second recogniser's own doubts.
    """
    plate = normalise_plate(line.text)
    confidences = _plate_confidences(line)
    doubtful = [index for index, value in enumerate(confidences) if value < SECOND_OPINION_BELOW]
    if plate is None or not doubtful:
        return ""
    agreeing = [
        _plate_confidences(view) for view in second_views if normalise_plate(view.text) == plate
    ]
    for index in doubtful:
        sure = sum(1 for values in agreeing if values[index] >= min_confidence)
        if 2 * sure <= len(second_views):
            return (
                f"{plate[index]!r} at {confidences[index]:.2f} not confirmed by the second "
                f"recogniser ({sure} of {len(second_views)} crops)"
            )
    return ""


def _plate_confidences(line: TextLine) -> list[float]:
    return [
        confidence
        for char, confidence in zip(line.text, line.confidences, strict=True)
        if is_plate_character(char)
    ]


def choose_plate(
    lines: Iterable[TextLine],
    reader: str,
    min_confidence: float,
    image_height: float | None = None,
    raw_text: str | None = None,
) -> PlateReading:
    """The plate among an image's text lines, or None with the reason (module docstring).

    Both readers call this, so they accept and refuse the same readings. `raw_text` is
    what the engine read, for people; by default the lines' texts. Its candidates are the
    plate-like readings, the accepted plate first.
    """
    lines = list(lines)
    reading = _choose(lines, reader, min_confidence, image_height, raw_text)
    # Every plate-like reading is a candidate for a person, the accepted one first; a reader
    # that has more (the embedded one's second choices) ranks its own (`with_candidates`).
    offered: dict[str, PlateCandidate] = {}
    for line in sorted(lines, key=least_confidence, reverse=True):
        plate = normalise_plate(line.text)
        if plate is not None and plate not in offered:
            confidences = tuple(_plate_confidences(line))
            offered[plate] = PlateCandidate(plate, confidences, round(min(confidences), 4))
    return with_candidates(reading, list(offered.values()))


def _choose(
    lines: list[TextLine],
    reader: str,
    min_confidence: float,
    image_height: float | None,
    raw_text: str | None,
) -> PlateReading:
    if raw_text is None:
        raw_text = " | ".join(line.text for line in lines)
    candidates: list[tuple[TextLine, str]] = []
    refusals: list[tuple[float, str]] = []
    for line in lines:
        plate = normalise_plate(line.text)
        if plate is None:
            continue
        boxed = line.width is not None and line.height is not None
        if boxed and not plate_shaped(line.width, line.height, image_height):
            refusals.append((0.0, f"{plate}: not plate-shaped text"))
            continue
        candidates.append((line, plate))
    if not candidates:
        why = refusals[0][1] if refusals else f"no plate among {len(lines)} text lines"
        return PlateReading(None, 0.0, raw_text, reader, reason=why)

    accepted: list[tuple[TextLine, str, float]] = []
    for line, plate in candidates:
        confidence = least_confidence(line)
        doubt = unsure_reason(line, min_confidence) or format_doubt(plate)
        if doubt:
            refusals.append((confidence, f"{plate}: {doubt}"))
        else:
            accepted.append((line, plate, confidence))
    if not accepted:
        confidence, why = max(refusals)
        return PlateReading(None, confidence, raw_text, reader, reason=why)

    line, plate, confidence = max(accepted, key=lambda item: (item[0].height or 0.0, item[2]))
    # Every other plate-like text counts, read surely or not, and short or one-kind text
    # too: a nearer plate that could not be read (or is not a plate this reader accepts,
    # such as a vanity plate) makes the one that could a likely neighbour's.
    rivals = [(other_line, other) for other_line, other in candidates if other != plate]
    nearest = all(
        line.height is not None
        and other_line.height is not None
        and line.height >= NEAREST_PLATE_RATIO * other_line.height
        for other_line, _ in rivals
    )
    # Text this reader does not take for a plate (short, all letters or all digits: a
    # vanity plate, some states' series) is a rival too when it is at least as tall as
    # the plate read, so could be a nearer car's. Only where the engine gives boxes: Cloud
    # Vision's full-text lines have none, and a state's name would refuse every plate.
    if line.height is not None:
        taller = [
            (other_line, other)
            for other_line in lines
            if other_line.width is not None
            and other_line.height is not None
            and other_line.height >= line.height
            and normalise_plate(other_line.text) is None
            and (other := plate_like(other_line.text)) is not None
            and plate_shaped(other_line.width, other_line.height, image_height)
        ]
        nearest = nearest and not taller
        rivals += taller
    if not nearest:
        plates = sorted({plate, *(other for _, other in rivals)})
        why = f"several plates in view: {', '.join(plates)}"
        return PlateReading(None, confidence, raw_text, reader, reason=why)
    return PlateReading(plate, confidence, raw_text, reader)


def plate_shaped(width: float, height: float, image_height: float | None = None) -> bool:
    """Whether a text box of `width` x `height` pixels can hold a plate's line of characters."""
    if height < MIN_TEXT_PIXELS or not MIN_ASPECT <= width / height <= MAX_ASPECT:
        return False
    if image_height:
        return MIN_RELATIVE_HEIGHT <= height / image_height <= MAX_RELATIVE_HEIGHT
    return True


def least_confidence(line: TextLine) -> float:
    """The confidence of the line's least sure plate character (1.0 when it has none)."""
    return min(_plate_confidences(line), default=1.0)


def character_gate(char: str, min_confidence: float) -> float:
    """The confidence a plate character needs; a look-alike (O 0 Q D I 1) needs far more."""
    return min_confidence ** (1 / LOOKALIKE_WEIGHT) if char in LOOKALIKES else min_confidence


def unsure_reason(line: TextLine, min_confidence: float) -> str:
    """Why the line's reading is not sure enough to be a plate, or "" when it is."""
    if line.doubt:
        return line.doubt
    for char, confidence in zip(line.text, line.confidences, strict=True):
        if not is_plate_character(char):
            continue
        needed = character_gate(char, min_confidence)
        if confidence < needed:
            return f"{char!r} read at {confidence:.2f}, under the gate {needed:.3f}"
    return ""
