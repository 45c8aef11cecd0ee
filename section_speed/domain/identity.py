"""One traversal, one identity, across the panes that correct it.

A session fires when the watermark passes its end and again a few seconds after late
detections come (accumulating panes), and two sessions of a vehicle merge when a late
detection bridges them. Each firing is measured afresh; this module decides what the
outputs see:

- the first firing of a traversal keeps the id it was measured with;
- a later firing that covers it keeps that id (a correction, same fine_id, the next
  `revision`), and names in `supersedes` the ids of any other published traversal it
  absorbed (a merge);
- a firing identical to the last one published (a redelivery, a repeat) is dropped;
- a firing that is no longer a measurement, implausible or partial (a late detection that
  contradicts the others) withdraws what was published for it: the same id, the next
  `revision`, never a fine, with `withdrawn_reason` (`withdraw`). A fine is a letter to a
  person; one whose traversal no longer holds up must not stand.

The list of publications is small (one vehicle's traversals within the allowed lateness) and is
kept as JSON in Beam state: a text form survives pipeline updates that change classes.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

from section_speed.domain.rules import SectionRule
from section_speed.domain.traversal import (
    Rejection,
    Traversal,
    traversal_from_json,
    traversal_to_json,
)


class TimeSpan(Protocol):
    @property
    def entry_time_ms(self) -> int: ...

    @property
    def exit_time_ms(self) -> int: ...


@dataclass(frozen=True, slots=True)
class RejectedSession:
    """A session that was not judged (a `Rejection`), by its kind, reason and time span."""

    kind: str
    reason: str
    entry_time_ms: int
    exit_time_ms: int

    @classmethod
    def of(cls, rejection: Rejection) -> "RejectedSession":
        times = [event.event_time_ms for event in rejection.detections]
        return cls(rejection.kind, rejection.reason, min(times), max(times))


@dataclass(frozen=True, slots=True)
class SessionVerdict:
    """A judged session as the identity step takes it: a traversal, or a rejected session."""

    traversal: Traversal | None = None
    rejected: RejectedSession | None = None
    # The section's rule it was judged under, for the signals step (transforms/limit_signals.py)
    rule: SectionRule | None = None


@dataclass(frozen=True, slots=True)
class Publication:
    """What was published for one traversal: its id, time span, measurement and digest."""

    traversal_id: str
    entry_time_ms: int
    exit_time_ms: int
    digest: str
    revision: int = 0
    published: dict[str, Any] | None = None  # the traversal as published (JSON form)
    withdrawn: bool = False

    def overlaps(self, other: TimeSpan) -> bool:
        # Two sessions of one vehicle are a gap apart; overlapping spans are one traversal.
        return self.entry_time_ms <= other.exit_time_ms and other.entry_time_ms <= self.exit_time_ms


def measurement_digest(traversal: Traversal) -> str:
    """A digest of what was measured, whatever id the traversal carries."""
    content = asdict(traversal)
    del content["traversal_id"], content["supersedes"], content["revision"]
    if content["withdrawn_reason"] is None:  # as digested before withdrawals existed
        del content["withdrawn_reason"]
    # A pane judged again under a new rules version with the same limit is a repeat; the
    # limit's fields at their former values digest as before they existed (state kept by a
    # running job across an update).
    del content["rules_version"]
    for key, former in (("limit_source", "default"), ("limit_reference", None),
                        ("vehicle_class", None)):  # fmt: skip
        if content[key] == former:
            del content[key]
    text = json.dumps(content, sort_keys=True, default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def identify(
    traversal: Traversal, publications: list[Publication]
) -> tuple[Traversal | None, list[Publication]]:
    """(what to publish, or None for a repeat; the vehicle's publications afterwards)."""
    digest = measurement_digest(traversal)
    covered = _covered(traversal, publications)
    if not covered:
        record = Publication(
            traversal.traversal_id,
            traversal.entry_time_ms,
            traversal.exit_time_ms,
            digest,
            published=_json_form(traversal),
        )
        return traversal, [*publications, record]
    kept, absorbed = covered[0], covered[1:]  # the oldest published id stays
    if not absorbed and kept.digest == digest:
        return None, publications
    corrected = replace(
        traversal,
        traversal_id=kept.traversal_id,
        supersedes=tuple(record.traversal_id for record in absorbed),
        revision=kept.revision + 1,
    )
    return corrected, _replaced(publications, kept, absorbed, corrected, digest, traversal)


@dataclass(frozen=True, slots=True)
class Withdrawal:
    """A published traversal taken back, and whether what it takes back was a fine."""

    traversal: Traversal
    of_fine: bool


def withdraw(
    rejected: RejectedSession, publications: list[Publication]
) -> tuple[Withdrawal | None, list[Publication]]:
    """(the withdrawal to publish, or None; the vehicle's publications afterwards).

    The withdrawal is what was published for the traversal the rejected session covers,
    under its id and the next revision, not a fine, with the reason; other published
    traversals the session absorbed are named in `supersedes`. Nothing is published when
    the session covers nothing published, or only what is withdrawn already (its span
    still grows, so that its state lasts as long as the session's late panes can come).
    """
    covered = _covered(rejected, publications)
    if not covered:
        return None, publications
    kept, absorbed = covered[0], covered[1:]
    if kept.published is None or (kept.withdrawn and not absorbed):
        entry_ms, exit_ms = _covering(rejected, [kept])
        grown = replace(kept, entry_time_ms=entry_ms, exit_time_ms=exit_ms)
        return None, [grown if record is kept else record for record in publications]
    published = traversal_from_json(kept.published)
    withdrawal = replace(
        published,
        traversal_id=kept.traversal_id,
        is_speeding=False,
        supersedes=tuple(record.traversal_id for record in absorbed),
        revision=kept.revision + 1,
        withdrawn_reason=f"{rejected.kind}: {rejected.reason}",
    )
    of_fine = published.is_speeding or any(_was_fine(record) for record in absorbed)
    digest = measurement_digest(withdrawal)
    return Withdrawal(withdrawal, of_fine), _replaced(
        publications, kept, absorbed, withdrawal, digest, rejected
    )


def unseen_publication(rejected: RejectedSession, publications: list[Publication]) -> str | None:
    """The id of a published traversal `rejected` covers whose published form is not known.

    State saved before withdrawals existed keeps no copy of what it published: such a
    traversal cannot be withdrawn, only reported (a person checks it).
    """
    covered = _covered(rejected, publications)
    if covered and covered[0].published is None and not covered[0].withdrawn:
        return covered[0].traversal_id
    return None


def _covered(span: TimeSpan, publications: list[Publication]) -> list[Publication]:
    """The publications `span` overlaps, oldest published first (the list's order)."""
    return [record for record in publications if record.overlaps(span)]


def _was_fine(record: Publication) -> bool:
    return bool(record.published and record.published["is_speeding"])


def _replaced(
    publications: list[Publication],
    kept: Publication,
    absorbed: list[Publication],
    published: Traversal,
    digest: str,
    span: TimeSpan,
) -> list[Publication]:
    """The publications once `published` (covering `span`, digested) takes `kept`'s place.

    The list stays in publication order, so the first covered record is always the
    oldest published; the absorbed records leave it (their ids are superseded).
    """
    record = Publication(
        kept.traversal_id,
        *_covering(span, [kept, *absorbed]),
        digest,
        published.revision,
        _json_form(published),
        withdrawn=published.withdrawn_reason is not None,
    )
    absorbed_ids = {other.traversal_id for other in absorbed}
    return [
        record if other is kept else other
        for other in publications
        if other.traversal_id not in absorbed_ids
    ]


def _covering(span: TimeSpan, records: list[Publication]) -> tuple[int, int]:
    """(entry, exit) of the span that covers `span` and every record."""
    return (
        min(span.entry_time_ms, *(record.entry_time_ms for record in records)),
        max(span.exit_time_ms, *(record.exit_time_ms for record in records)),
    )


def _json_form(traversal: Traversal) -> dict[str, Any]:
    """The traversal as it reads back from the JSON state (tuples become lists)."""
    return json.loads(json.dumps(traversal_to_json(traversal)))


def dumps_publications(publications: list[Publication]) -> str:
    return json.dumps([asdict(record) for record in publications], separators=(",", ":"))


def loads_publications(text: str | None) -> list[Publication]:
    return [Publication(**record) for record in json.loads(text)] if text else []
