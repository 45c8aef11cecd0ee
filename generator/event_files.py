"""Recorded camera events: JSON-lines files read and written, and moved in time for a replay.

One event a line, as the event contract reads it; a course message (no event time) keeps
the time it was published beside its body, so that a replay derives the same event ids.
"""

import dataclasses
import json
from collections.abc import Iterable
from os import PathLike
from pathlib import Path

from section_speed.domain import defaults
from section_speed.domain.events import (
    TIMED_FORMAT_KEYS,
    CameraEvent,
    InvalidEvent,
    format_rfc3339_ms,
    parse_camera_event,
    parse_rfc3339_ms,
)

# A recorded course message keeps its publish time under this key (not part of the body).
PUBLISH_TIME_KEY = "publish_time"

PathArg = str | PathLike[str]


def read_events_jsonl(
    path: PathArg, default_radar_id: str = defaults.RADAR_ID
) -> list[CameraEvent]:
    """Camera events, one JSON object a line, validated by the event contract.

    A course message (no event time) is recorded with its publish time under
    `publish_time`; it takes `default_radar_id`, as the pipeline's --radar_id gives it.
    """
    events = []
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                event = _read_line(line, default_radar_id)
            except InvalidEvent as error:
                raise ValueError(f"{path}:{number}: {error}") from error
            events.append(event)
    return events


def write_events_jsonl(path: PathArg, events: Iterable[CameraEvent]) -> int:
    """Write one event a line: its body, and a course message's publish time beside it."""
    return write_jsonl(path, (_recorded(event) for event in events))


def write_jsonl(path: PathArg, rows: Iterable[dict[str, object]]) -> int:
    count = 0
    with Path(path).open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
            count += 1
    return count


def rebase(events: Iterable[CameraEvent], new_start_ms: int) -> list[CameraEvent]:
    """Shift every event time so the earliest is new_start_ms; ids and gaps unchanged."""
    events = list(events)
    if not events:
        return []
    shift = new_start_ms - min(event.event_time_ms for event in events)
    return [
        dataclasses.replace(event, event_time_ms=event.event_time_ms + shift) for event in events
    ]


def _recorded(event: CameraEvent) -> dict[str, object]:
    if event.timed:
        return event.to_json()
    return event.to_json() | {PUBLISH_TIME_KEY: format_rfc3339_ms(event.event_time_ms)}


def _read_line(line: str, default_radar_id: str) -> CameraEvent:
    try:
        body = json.loads(line)
    except ValueError:
        body = None  # the parser below gives the reason
    if not isinstance(body, dict) or any(key in body for key in TIMED_FORMAT_KEYS):
        return parse_camera_event(
            line.encode("utf-8"), {}, message_id=None, publish_time_ms=0, default_radar_id=""
        )
    published = body.pop(PUBLISH_TIME_KEY, None)
    if not isinstance(published, str):
        raise InvalidEvent(
            f"a course message (no timestamp) needs its {PUBLISH_TIME_KEY} in a recording"
        )
    publish_time_ms = parse_rfc3339_ms(published)
    # The bytes the course would publish: the id is what the pipeline derives from them.
    data = json.dumps(body).encode("utf-8")
    return parse_camera_event(
        data, {}, message_id=None, publish_time_ms=publish_time_ms,
        default_radar_id=default_radar_id,
    )  # fmt: skip
