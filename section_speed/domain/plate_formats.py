"""Licence plates' characters and formats: the plate a vehicle carries, and plate-like text.

Pure functions, no OCR engine: the cars API's renderer, the generator's truth file, both
plate readers and the tests use these, so "the true plate" and "plate-like text" are
defined once. Which text a reader accepts as a plate is `plate_gates.py` (docs/plates.md).
"""

import hashlib
import re

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
DIGITS = "0123456789"
SERIAL_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"  # the simulated plates' series: no I, O, Q
# Fewer than 5 is a car's badge (A4, X5, G1, RS6, C300) as often as a vanity plate.
MIN_PLATE_CHARACTERS, MAX_PLATE_CHARACTERS = 5, 8
# Separators a plate prints between its groups, and the marks an engine reads for an emblem
# there; any other non-alphanumeric character means the text is not a plate as read.
SEPARATORS = frozenset(" -.·•:=+")
MAX_SEPARATOR_RUNS = 2  # "AB-123-CD"; more is a date, a phone number or a sentence
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
# Plate fonts draw O and 0, I and 1 almost alike, and a recogniser picks between them by
# the text around them: each is the other's twin.
LOOKALIKE_TWINS = {"O": "0", "0": "O", "I": "1", "1": "I"}
# The series formats of states whose current plates keep one format, as printed on the plate
# (the state name above or below the characters). A candidate that fits its state's format
# ranks first; one accepted plate that does not, beside a candidate that does, is refused.
STATE_PREFIX = 4  # letters of a state's name that identify it on a plate
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
    if any(not is_plate_character(char) and char not in SEPARATORS for char in text):
        return None
    plate = "".join(char for char in text if is_plate_character(char))
    return plate if 2 <= len(plate) <= MAX_PLATE_CHARACTERS else None


def is_plate_character(char: str) -> bool:
    """A letter A-Z or a digit: what a plate is made of (separators are not)."""
    return char in LETTERS or char in DIGITS


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
