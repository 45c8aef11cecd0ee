"""The plate cascade: the embedded reader first, Cloud Vision only for what it cannot accept.

Cloud Vision is paid per photo; the embedded reader costs a fraction of a core-second. Both
readers decide which text is a plate with the same gates (`plate_gates.choose_plate`,
`plate_candidates.with_candidates`) at the same `--plate_min_confidence`, so a plate the
embedded reader accepts is one Cloud Vision's reading would have had to pass the same rules
for. The cascade therefore (docs/plates.md, The cascade):

- reads every photo of a batch with the first reader (embedded);
- sends only the photos it gave no plate for (refused by a gate, or failed) to the
  fallback (Cloud Vision), in one call, so Cloud Vision still batches them;
- takes the fallback's reading as it is: a plate it accepted passed the gates in that
  reader; a plate it refused stays null. Nothing is chosen between two readers' plates: a
  plate the first reader accepted is never sent on, so the two never both accept;
- keeps a failure a failure: when the fallback could not read a photo (`error`), the
  reading carries the error and the read-plate step tries it again or dead-letters it
  (transforms/evidence_steps.py), as it does for Cloud Vision alone. An exception from a
  reader goes up unchanged, and a fallback that cannot be opened is
  `PlateReaderUnavailable`: the step waits for it, as for an outage.

`PlateReading.reader` names the reader whose reading it is: the embedded engine's name for a
plate it accepted, `cloud-vision` for everything Cloud Vision was asked about.
"""

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from section_speed.domain.plate_candidates import MAX_CANDIDATES
from section_speed.domain.plate_reading import (
    CASCADE_READER,
    CLOUD_VISION_READER,
    PlateCandidate,
    PlateReaderUnavailable,
    PlateReading,
)

if TYPE_CHECKING:  # plate_readers builds the cascade: importing it here would be a cycle
    from section_speed.clients.plate_readers import PlateReader


class CascadePlateReader:
    """`first` for every photo; `fallback`, opened on first need, for the photos `first`
    gave no plate for. One per worker process, shared by its threads: `first` is a pool or
    serialises its own calls, the fallback (Cloud Vision) is thread-safe."""

    name: str = CASCADE_READER

    def __init__(
        self,
        first: "PlateReader",
        open_fallback: Callable[[], "PlateReader"],
        fallback_name: str = CLOUD_VISION_READER,
    ) -> None:
        """`open_fallback` builds the fallback reader when a photo first needs it: a process
        whose photos the first reader all accepts never opens a Cloud Vision client. When
        it cannot be opened (no credentials), the read raises `PlateReaderUnavailable` and the
        next read tries again."""
        self._first = first
        self._open_fallback = open_fallback
        self._fallback_name = fallback_name
        self._fallback: PlateReader | None = None
        self._lock = threading.Lock()
        self.first_accepted = 0  # photos the fallback was not asked about
        self.fallback_asked = 0

    def read(self, images: Sequence[bytes]) -> list[PlateReading]:
        """One reading per image, in order (the PlateReader contract)."""
        if not images:
            return []
        firsts = _one_each(self._first, images)
        pending = [index for index, reading in enumerate(firsts) if reading.license_plate is None]
        readings = list(firsts)
        if pending:
            seconds = self._read_on_fallback([images[index] for index in pending])
            for index, second in zip(pending, seconds, strict=True):
                readings[index] = combined(firsts[index], second)
        with self._lock:
            self.first_accepted += len(images) - len(pending)
            self.fallback_asked += len(pending)
        return readings

    def close(self) -> None:
        """Close both readers (those that have a `close`)."""
        for reader in (self._first, self._fallback):
            close = getattr(reader, "close", None)
            if callable(close):
                close()

    def _read_on_fallback(self, images: list[bytes]) -> list[PlateReading]:
        try:
            fallback = self._fallback_reader()
        except Exception as error:
            # No photo is to blame for a client that cannot be opened (no credentials, the
            # library missing): the batch waits as for an outage, and none is dead-lettered.
            raise PlateReaderUnavailable(
                f"could not open {self._fallback_name}: {type(error).__name__}: {error}"
            ) from error
        return _one_each(fallback, images)

    def _fallback_reader(self) -> "PlateReader":
        with self._lock:
            if self._fallback is None:
                self._fallback = self._open_fallback()
            return self._fallback


def _one_each(reader: "PlateReader", images: Sequence[bytes]) -> list[PlateReading]:
    readings = list(reader.read(images))
    if len(readings) != len(images):
        raise RuntimeError(
            f"plate reader {reader.name} gave {len(readings)} readings for {len(images)} photos"
        )
    return readings


def combined(first: PlateReading, second: PlateReading) -> PlateReading:
    """The cascade's reading of one photo the first reader gave no plate for.

    It is the second reader's reading: its plate (accepted under the gates) or none, its
    error if it failed. For the person at the desk it keeps what the first reader saw: its
    candidates after the second's (at most `MAX_CANDIDATES`), and its plate box and state
    where the second gives none and they are of the same plate (or no plate was accepted),
    and its raw text where the second read none. Why no plate, when none: both readers'
    reasons; a failure: both errors where both failed.
    """
    candidates = _merged(second.candidates, first.candidates)
    plate = second.license_plate
    same_plate = plate is None or (bool(first.candidates) and first.candidates[0].plate == plate)
    box = second.plate_box or (first.plate_box if same_plate else None)
    state = second.state or (first.state if same_plate else None)
    raw_text = second.raw_text or first.raw_text  # a failed call read no text of its own
    reading = replace(second, raw_text=raw_text, candidates=candidates, plate_box=box, state=state)
    if second.error is not None:
        if first.error is not None:
            error = f"{first.reader}: {first.error}; {second.reader}: {second.error}"
            return replace(reading, error=error)
        return reading
    if plate is None:
        why_first = first.reason or first.error or "no plate"
        reason = f"{first.reader}: {why_first}; {second.reader}: {second.reason or 'no plate'}"
        return replace(reading, reason=reason)
    return reading


def _merged(
    ahead: Sequence[PlateCandidate], after: Sequence[PlateCandidate]
) -> tuple[PlateCandidate, ...]:
    seen: set[str] = set()
    merged = []
    for candidate in (*ahead, *after):
        if candidate.plate not in seen:
            seen.add(candidate.plate)
            merged.append(candidate)
    return tuple(merged[:MAX_CANDIDATES])
