"""Licence plates: the plate a vehicle carries, and which text an OCR engine read is a plate.

Pure functions, no Beam and no OCR engine: the cars API's renderer, the generator's truth
file, both plate readers and the tests all use these, so "the true plate" and "a plate we
accept" are defined once.

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
plates with their characters' confidences (`rank_candidates`, `with_candidates`): ranking
never makes a plate accepted.
"""

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"
SERIAL_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"  # the simulated plates' series: no I, O, Q
# Fewer than 5 is a car's badge (A4, X5, G1, RS6, C300) as often as a vanity plate.
MIN_PLATE_CHARACTERS, MAX_PLATE_CHARACTERS = 5, 8
# Separators a plate prints between its groups, and the marks an engine reads for an emblem
# there; any other non-alphanumeric character means the text is not a plate as read.
SEPARATORS = frozenset(" -.·•:=+")
MAX_SEPARATOR_RUNS = 2  # "AB-123-CD"; more is a date, a phone number or a sentence
# Characters that a plate font draws almost alike: each needs LOOKALIKE_WEIGHT times the
# certainty of an ordinary character (confidence ** weight >= gate).
# The plate readers `--plate_reader` chooses (section_speed/clients/plate_readers.py).
EMBEDDED_READER = "embedded"
CLOUD_VISION_READER = "cloud-vision"
PLATE_READERS = (EMBEDDED_READER, CLOUD_VISION_READER)

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

# Known formats: reported, never required. A plate that fits none of them while one
# look-alike's twin (O/0, I/1) in its place would fit one is refused (`format_doubt`).
KNOWN_FORMATS = {
    "LLLDDDD": re.compile(r"^[A-Z]{3}[0-9]{4}$"),  # New York, Texas, Arizona, Ohio, ...
    "DLLLDDD": re.compile(r"^[0-9][A-Z]{3}[0-9]{3}$"),  # California
    "LLDLDL": re.compile(r"^[A-Z]{2}[0-9][A-Z][0-9][A-Z]$"),  # Missouri
    "LLLDDD": re.compile(r"^[A-Z]{3}[0-9]{3}$"),  # many states' older series
    "LLDDDLL": re.compile(r"^[A-Z]{2}[0-9]{3}[A-Z]{2}$"),  # Slovakia, Italy, France
}
# Formats known only where the plate names its state: on their own they would make the
# twin rule refuse right plates (R107555 is one twin from Illinois' RI07555).
STATE_ONLY_FORMATS = {
    "DLLDDDD": re.compile(r"^[0-9][A-Z]{2}[0-9]{4}$"),  # Maryland
    "LLDDDDD": re.compile(r"^[A-Z]{2}[0-9]{5}$"),  # Illinois
    "DDDDDLD": re.compile(r"^[0-9]{5}[A-Z][0-9]$"),  # California's commercial series
}
NEW_YORK_PLATE = KNOWN_FORMATS["LLLDDDD"]

# Candidates for a person: at most this many, best first.
MAX_CANDIDATES = 3
# A candidate swaps in the recogniser's second choice at up to this many characters, and
# only where that choice has at least this probability (else it is no real doubt)...
MAX_SWAPS, MIN_RUNNER_UP = 3, 0.02
# ...or, failing that, a look-alike's twin, at this probability: plate fonts draw O and 0,
# I and 1 almost alike, and the recogniser picks between them by the text around them.
LOOKALIKE_TWINS = {"O": "0", "0": "O", "I": "1", "1": "I"}
TWIN_PROBABILITY = 0.05
# The series formats of states whose current plates keep one format, as printed on the plate
# (the state name above or below the characters). A candidate that fits its state's format
# ranks first; one accepted plate that does not, beside a candidate that does, is refused.
STATE_PREFIX = 4  # letters of a state's name that identify it on a plate
# A candidate fitting the state outranks (or refuses) the others only when its score is at
# least this share of the best: one look-alike swapped against a sure reading (0.05) is,
# two (0.0025, R107555's RIO7555 on a New York plate) are not.
STATE_PROMOTION = 0.02
STATE_FORMATS: dict[str, tuple[str, ...]] = {
    "NEW YORK": ("LLLDDDD",),
    "CALIFORNIA": ("DLLLDDD", "DDDDDLD"),
    "TEXAS": ("LLLDDDD",),
    "PENNSYLVANIA": ("LLLDDDD",),
    "OHIO": ("LLLDDDD",),
    "ARIZONA": ("LLLDDDD",),
    "GEORGIA": ("LLLDDDD",),
    "MICHIGAN": ("LLLDDDD",),
    "VIRGINIA": ("LLLDDDD",),
    "NORTH CAROLINA": ("LLLDDDD",),
    "MARYLAND": ("DLLDDDD",),
    "ILLINOIS": ("LLDDDDD",),
    "MISSOURI": ("LLDLDL",),
}


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


def plate_for_vehicle(vehicle_id: str) -> str:
    """The plate registered to `vehicle_id`: deterministic, so tests know the truth.

    A New York LLLDDDD serial whose letters, as in many states' series, leave out I, O and
    Q, which a camera cannot tell from 1 and 0.
    """
    digest = hashlib.sha256(f"plate:{vehicle_id}".encode()).digest()
    letters = "".join(SERIAL_LETTERS[byte % len(SERIAL_LETTERS)] for byte in digest[:3])
    digits = "".join(DIGITS[byte % len(DIGITS)] for byte in digest[3:7])
    return letters + digits


def display_plate(plate: str) -> str:
    """`ABC1234` as printed on a New York plate: `ABC-1234`."""
    return f"{plate[:3]}-{plate[3:]}"


def plate_format(plate: str) -> str | None:
    """The known format `plate` fits (e.g. "LLLDDDD"), or None: a report, never a rule."""
    return next((name for name, pattern in KNOWN_FORMATS.items() if pattern.match(plate)), None)


def format_doubt(plate: str) -> str:
    """Why `plate` is in doubt for its format, or "" when it is not.

    Plate fonts draw O and 0, I and 1 alike (Slovakia's BA 302OZ was read BA3020Z at 0.991
    in every crop). A plate that fits no known format, while swapping one look-alike for
    its twin makes one that does, is a misread as likely as an odd plate: refused, the twin
    is a candidate. A plate of no known format with no such twin is read as it is.
    """
    if plate_format(plate) is not None:
        return ""
    for index, char in enumerate(plate):
        twin = LOOKALIKE_TWINS.get(char)
        if twin and plate_format(other := plate[:index] + twin + plate[index + 1 :]):
            return f"{plate} fits no known format; {other}, one look-alike away, does"
    return ""


def normalise_plate(raw_text: str) -> str | None:
    """The plate in `raw_text` (A-Z, 0-9, separators dropped), or None when it is no plate.

    Nothing is changed but the separators: no case folding, no look-alike swapped.
    """
    plate = plate_like(raw_text)
    if plate is None or len(plate) < MIN_PLATE_CHARACTERS:
        return None
    if len([run for run in re.split(r"[A-Z0-9]+", raw_text.strip()) if run]) > MAX_SEPARATOR_RUNS:
        return None
    if not any(char in DIGITS for char in plate) or not any(char in LETTERS for char in plate):
        return None
    return plate


def plate_like(raw_text: str) -> str | None:
    """Text that could be some car's plate (2-8 letters or digits, separators dropped).

    Wider than `normalise_plate`: short, all-letter and all-digit plates exist (vanity
    plates, some states'). Never accepted as a plate, but a rival to one: beside a nearer
    plate-like text, the plate read may be a neighbour's.
    """
    text = raw_text.strip()
    if any(not _plate_character(char) and char not in SEPARATORS for char in text):
        return None
    plate = "".join(char for char in text if _plate_character(char))
    return plate if 2 <= len(plate) <= MAX_PLATE_CHARACTERS else None


def _plate_character(char: str) -> bool:
    return char in LETTERS or char in DIGITS


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
        if _plate_character(char)
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
        if not _plate_character(char):
            continue
        needed = character_gate(char, min_confidence)
        if confidence < needed:
            return f"{char!r} read at {confidence:.2f}, under the gate {needed:.3f}"
    return ""


def unreadable(reader: str, error: str, raw_text: str = "") -> PlateReading:
    """A reading for an image that could not be read at all (decode failure, service error)."""
    return PlateReading(None, 0.0, raw_text, reader, error)


def state_named(text: str) -> str | None:
    """The state whose name `text` holds ("New York" -> "NEW YORK"), among `STATE_FORMATS`.

    Letters only, case folded, spaces dropped: plates print their state in many fonts
    (California's in a script the recogniser reads as "Caligotn"), so a name's first
    `STATE_PREFIX` letters are enough. The longest name matched wins (WEST VIRGINIA holds
    VIRGINIA). For ranking candidates and refusing, never for accepting, a plate.
    """
    letters = "".join(char for char in text.upper() if "A" <= char <= "Z")
    named = [
        name
        for name in STATE_FORMATS
        if name.replace(" ", "")[:STATE_PREFIX] in letters
        and len(letters) >= min(STATE_PREFIX + 1, len(name.replace(" ", "")))
    ]
    return max(named, key=len, default=None)


def fits_state(plate: str, state: str | None) -> str | None:
    """The format of `state` that `plate` fits, or None (no state, or it fits none)."""
    for name in STATE_FORMATS.get(state or "", ()):
        if {**KNOWN_FORMATS, **STATE_ONLY_FORMATS}[name].match(plate):
            return name
    return None


def rank_candidates(
    boxes: Sequence[Sequence[TextLine]], state: str | None = None
) -> list[tuple[PlateCandidate, int]]:
    """Up to `MAX_CANDIDATES` plates from the readings of each box, best first, with the index
    of the box each comes from.

    Each reading of a box (one crop) gives its plate and, where a character is in doubt, the
    plates that swap in the recogniser's second choice there, or a look-alike's twin (at
    most `MAX_SWAPS` swaps, the least sure characters first):
    a plate's probability in that reading is the product of its characters'. A candidate's
    score is its mean probability over the box's readings, so crops that disagree share it;
    its confidences are each character's mean probability. Where the plate shows `state`,
    the candidates that fit its formats rank first (those scoring at least
    `STATE_PROMOTION` of the best); plates of letters and digits rank
    before plates of digits only. For a person to choose from: nothing here makes a plate
    acceptable.
    """
    scored: dict[str, tuple[float, tuple[float, ...], int]] = {}
    mixed: set[str] = set()  # candidates from a reading of letters and digits
    for index, views in enumerate(boxes):
        totals: dict[str, list[float]] = {}
        sums: dict[str, list[float]] = {}
        for view in views:
            variants = _view_plates(view)
            if normalise_plate(view.text) is not None:
                mixed.update(plate for plate, _ in variants)
            for plate, probabilities in variants:
                totals.setdefault(plate, [0.0])[0] += float(_product(probabilities))
                column = sums.setdefault(plate, [0.0] * len(plate))
                for position, value in enumerate(probabilities):
                    column[position] += value
        count = max(1, len(views))
        for plate, (total,) in totals.items():
            score = total / count
            confidences = tuple(round(value / count, 4) for value in sums[plate])
            if plate not in scored or scored[plate][0] < score:
                scored[plate] = (score, confidences, index)
    candidates = [
        (PlateCandidate(plate, confidences, round(score, 4), _fits(plate, state)), index)
        for plate, (score, confidences, index) in scored.items()
    ]
    best = max((score for score, _, _ in scored.values()), default=0.0)
    # Within each rank, what a reading of letters and digits gave before what one of digits
    # only gave (a date stamp or a phone number as often as a plate), look-alikes swapped or not.
    candidates.sort(
        key=lambda item: (
            fits_state(item[0].plate, state) is None or item[0].score < STATE_PROMOTION * best,
            item[0].plate not in mixed,
            -item[0].score,
        )
    )
    return candidates[:MAX_CANDIDATES]


def state_matters(candidates: Sequence[PlateCandidate]) -> bool:
    """Whether some state's formats would tell these candidates apart (rank or refuse one):
    only then is the state worth reading."""
    return any(
        len({fits_state(candidate.plate, state) is None for candidate in candidates}) > 1
        for state in STATE_FORMATS
    )


def state_doubt(plate: str, state: str | None, candidates: Sequence[PlateCandidate]) -> str:
    """Why `plate` is in doubt given the state printed on it, or "" when it is not.

    A plate that does not fit its state's formats while another candidate does, at no less
    than `STATE_PROMOTION` of the best score, is a misread as likely as an odd plate:
    refused for the automatic read, the candidates stay.
    """
    if state is None or fits_state(plate, state) is not None:
        return ""
    best = max((c.score for c in candidates), default=0.0)
    fitting = [
        c.plate
        for c in candidates
        if c.plate != plate and fits_state(c.plate, state) and c.score >= STATE_PROMOTION * best
    ]
    if not fitting:
        return ""
    return f"{plate} does not fit {state}'s plates; {fitting[0]} does"


def _fits(plate: str, state: str | None) -> str | None:
    """The state's format the plate fits where the state is known, else any known format."""
    return fits_state(plate, state) if state in STATE_FORMATS else plate_format(plate)


def _view_plates(view: TextLine) -> list[tuple[str, tuple[float, ...]]]:
    """A reading's plate and its swaps (each with its characters' probabilities), or []."""
    kept = [
        (char, confidence, view.runner_ups[position] if view.runner_ups else ("", 0.0))
        for position, (char, confidence) in enumerate(zip(view.text, view.confidences, strict=True))
        if _plate_character(char)
    ]
    plate = "".join(char for char, _, _ in kept)
    if plate_like(view.text) is None or len(plate) < MIN_PLATE_CHARACTERS:
        return []
    base = tuple(confidence for _, confidence, _ in kept)
    swaps: list[tuple[float, int, str, float]] = []
    for position, (char, confidence, (other, other_p)) in enumerate(kept):
        if not (_plate_character(other) and other_p >= MIN_RUNNER_UP):
            other, other_p = LOOKALIKE_TWINS.get(char, ""), TWIN_PROBABILITY
        if other:
            swaps.append((confidence, position, other, other_p))
    variants = [(plate, base)]
    for _, position, other, other_p in sorted(swaps)[:MAX_SWAPS]:
        variants += [
            (
                text[:position] + other + text[position + 1 :],
                (*p[:position], other_p, *p[position + 1 :]),
            )
            for text, p in variants
        ]
    # A plate of digits only is offered; one of letters only is far more often a word (a
    # state's name, a slogan) than a vanity plate, unless a look-alike's twin is a digit.
    return [(text, p) for text, p in variants if any(char in DIGITS for char in text)]


def _product(values: Iterable[float]) -> float:
    result = 1.0
    for value in values:
        result *= value
    return result


def with_candidates(
    reading: PlateReading,
    candidates: Sequence[PlateCandidate],
    plate_box: tuple[int, int, int, int] | None = None,
    state: str | None = None,
) -> PlateReading:
    """`reading` with its candidates (at most `MAX_CANDIDATES`), box and state.

    The accepted plate ranks first. It is refused (the candidates stay) when the plate shows
    a state whose formats it does not fit while another candidate does (`state_doubt`).
    Nothing here accepts a plate: only `choose_plate` does.
    """
    ranked = list(candidates)
    plate = reading.license_plate
    if plate is not None:
        doubt = state_doubt(plate, state, ranked)
        if doubt:
            reading = replace(reading, license_plate=None, reason=doubt)
        else:
            accepted = next((c for c in ranked if c.plate == plate), None)
            if accepted is None:
                confidences = (reading.confidence,) * len(plate)
                accepted = PlateCandidate(
                    plate, confidences, reading.confidence, _fits(plate, state)
                )
            ranked = [accepted, *(c for c in ranked if c.plate != plate)]
    return replace(
        reading, candidates=tuple(ranked[:MAX_CANDIDATES]), plate_box=plate_box, state=state
    )
