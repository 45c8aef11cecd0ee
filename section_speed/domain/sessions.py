"""Sessions of one vehicle's detections, as Beam's `Sessions(gap)` window forms them.

Each detection opens a window [t, t + gap); overlapping windows merge. So a session ends
where the next detection comes a gap or more after the latest one before it. Used where
all detections are at hand (a bounded run, the benchmark's plain loop): the same grouping
as the streaming window, without a runner's merging machinery.
"""

from collections.abc import Iterable

from section_speed.domain.events import CameraEvent


def split_sessions(events: Iterable[CameraEvent], gap_seconds: float) -> list[list[CameraEvent]]:
    ordered = sorted(events, key=lambda event: event.event_time_ms)
    sessions: list[list[CameraEvent]] = []
    gap_ms = gap_seconds * 1000
    for event in ordered:
        if sessions and event.event_time_ms < sessions[-1][-1].event_time_ms + gap_ms:
            sessions[-1].append(event)
        else:
            sessions.append([event])
    return sessions
