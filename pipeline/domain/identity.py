"""One traversal, one identity, across the panes that correct it.

A session fires when the watermark passes its end and again for each late detection
(accumulating panes), and two sessions of a vehicle merge when a late detection bridges
them. Each firing is measured afresh; this module decides what the outputs see:

- the first firing of a traversal keeps the id it was measured with;
- a later firing that covers it keeps that id (a correction, same fine_id, the next
  `revision`), and names in `supersedes` the ids of any other published traversal it
  absorbed (a merge);
- a firing identical to the last one published (a redelivery, a repeat) is dropped.

The issued list is small (one vehicle's traversals within the allowed lateness) and is
kept as JSON in Beam state: a text form survives pipeline updates that change classes.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, replace

from pipeline.domain.speed import Traversal


@dataclass(frozen=True, slots=True)
class IssuedTraversal:
    """What was published for one traversal: its id, time span and measurement digest."""

    traversal_id: str
    entry_time_ms: int
    exit_time_ms: int
    digest: str
    revision: int = 0

    def overlaps(self, traversal: Traversal) -> bool:
        # Two sessions of one vehicle are a gap apart; overlapping spans are one traversal.
        return (
            self.entry_time_ms <= traversal.exit_time_ms
            and traversal.entry_time_ms <= self.exit_time_ms
        )


def measurement_digest(traversal: Traversal) -> str:
    """A digest of what was measured, whatever id the traversal carries."""
    content = asdict(traversal)
    del content["traversal_id"], content["supersedes"], content["revision"]
    text = json.dumps(content, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def identify(
    traversal: Traversal, issued: list[IssuedTraversal]
) -> tuple[Traversal | None, list[IssuedTraversal]]:
    """(what to publish, or None for a repeat; the vehicle's issued list afterwards)."""
    digest = measurement_digest(traversal)
    covered = [record for record in issued if record.overlaps(traversal)]
    if not covered:
        record = IssuedTraversal(
            traversal.traversal_id, traversal.entry_time_ms, traversal.exit_time_ms, digest
        )
        return traversal, [*issued, record]
    kept, absorbed = covered[0], covered[1:]  # the oldest published id stays
    if not absorbed and kept.digest == digest:
        return None, issued
    corrected = replace(
        traversal,
        traversal_id=kept.traversal_id,
        supersedes=tuple(record.traversal_id for record in absorbed),
        revision=kept.revision + 1,
    )
    record = IssuedTraversal(
        kept.traversal_id,
        traversal.entry_time_ms,
        traversal.exit_time_ms,
        digest,
        corrected.revision,
    )
    # The corrected record takes its id's place: the list stays in publication order, so
    # the first covered record is always the oldest published.
    absorbed_ids = {other.traversal_id for other in absorbed}
    kept_list = [
        record if other is kept else other
        for other in issued
        if other.traversal_id not in absorbed_ids
    ]
    return corrected, kept_list


def dumps_issued(issued: list[IssuedTraversal]) -> str:
    return json.dumps([asdict(record) for record in issued], separators=(",", ":"))


def loads_issued(text: str | None) -> list[IssuedTraversal]:
    return [IssuedTraversal(**record) for record in json.loads(text)] if text else []
