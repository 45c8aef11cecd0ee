"""Candidate plates for the person who verifies a fine: ranked, never accepted.

A reading offers up to `MAX_CANDIDATES` plates with their characters' confidences
(`rank_candidates`, `with_candidates`); the state printed on the plate ranks them and may
refuse an accepted plate that does not fit it (`state_doubt`). Ranking never makes a plate
accepted: only `plate_gates.choose_plate` does (docs/plates.md).
"""

from collections.abc import Iterable, Sequence
from dataclasses import replace

from section_speed.domain.plate_formats import (
    DIGITS,
    LOOKALIKE_TWINS,
    MIN_PLATE_CHARACTERS,
    STATE_FORMATS,
    fits_state,
    is_plate_character,
    normalise_plate,
    plate_format,
    plate_like,
)
from section_speed.domain.plate_reading import PlateCandidate, PlateReading, TextLine

# Candidates for a person: at most this many, best first.
MAX_CANDIDATES = 3
# A candidate swaps in the recogniser's second choice at up to this many characters, and
# only where that choice has at least this probability (else it is no real doubt)...
MAX_SWAPS, MIN_RUNNER_UP = 3, 0.02
# ...or, failing that, a look-alike's twin (`LOOKALIKE_TWINS`), at this probability.
TWIN_PROBABILITY = 0.05
# A candidate fitting the state outranks (or refuses) the others only when its score is at
# least this share of the best: one look-alike swapped against a sure reading (0.05) is,
# two (0.0025, R107555's RIO7555 on a New York plate) are not.
STATE_PROMOTION = 0.02


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
        if is_plate_character(char)
    ]
    plate = "".join(char for char, _, _ in kept)
    if plate_like(view.text) is None or len(plate) < MIN_PLATE_CHARACTERS:
        return []
    base = tuple(confidence for _, confidence, _ in kept)
    swaps: list[tuple[float, int, str, float]] = []
    for position, (char, confidence, (other, other_p)) in enumerate(kept):
        if not (is_plate_character(other) and other_p >= MIN_RUNNER_UP):
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
