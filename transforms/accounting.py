"""CountJudgedDetections: how many parsed detections are in sessions already judged.

What a running or stopped pipeline still holds in open sessions is the detections parsed
(`events_parsed`) less those in judged sessions (`detections_judged`); the stop report
(pipeline/stop_report.py) says both. Accumulating panes carry a session's every detection
each time it fires, so each firing counts only what it adds to the panes of that vehicle it
overlaps (the session's earlier firings, or the sessions a late detection merges), kept per
vehicle until no late pane can come (docs/architecture.md, Runners).
"""

import json
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import StrUtf8Coder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from section_speed.domain.events import VehicleKey
from section_speed.domain.lag import LagMonitor
from transforms.worker_clients import ClientHandler

# (session start ms, session end ms, detections in the pane), per vehicle.
PaneSize = tuple[int, int, int]


def added_by(pane: PaneSize, earlier: list[PaneSize]) -> tuple[int, list[PaneSize]]:
    """What `pane` adds to the vehicle's `earlier` panes, and the panes kept after it.

    The panes it overlaps are earlier firings of the same session or sessions it merges:
    its count replaces theirs.
    """
    start, end, count = pane
    overlapped = [p for p in earlier if p[0] < end and start < p[1]]
    kept = [p for p in earlier if p not in overlapped]
    return count - sum(p[2] for p in overlapped), [*kept, pane]


class CountJudgedDetectionsFn(beam.DoFn):
    """Per vehicle: counts the detections each judged pane adds (`detections_judged`)."""

    PANES = ReadModifyWriteStateSpec("judged_panes", StrUtf8Coder())
    EXPIRY = TimerSpec("judged_panes_expiry", TimeDomain.WATERMARK)

    def __init__(
        self, allowed_lateness_seconds: int, monitor: ClientHandler[LagMonitor] | None = None
    ) -> None:
        self.allowed_lateness_seconds = allowed_lateness_seconds
        self.detections_judged = Metrics.counter(self.__class__, "detections_judged")
        # The stop report's tally, beside the counter: Beam 2.77's local runner reports a
        # streaming job's counters incompletely (pipeline/stop_report.py).
        self.monitors = monitor
        self.monitor: LagMonitor | None = None

    def setup(self) -> None:
        if self.monitors is not None:
            self.monitor = self.monitors.acquire()

    def teardown(self) -> None:
        if self.monitors is not None and self.monitor is not None:
            self.monitors.release(self.monitor)
            self.monitor = None

    def process(
        self,
        element: tuple[VehicleKey, PaneSize],
        panes_state: Any = beam.DoFn.StateParam(PANES),
        expiry: Any = beam.DoFn.TimerParam(EXPIRY),
    ) -> Iterator[Any]:
        _, pane = element
        earlier = [tuple(p) for p in json.loads(panes_state.read() or "[]")]
        added, panes = added_by(tuple(pane), earlier)  # type: ignore[arg-type]
        self.detections_judged.inc(added)
        if self.monitor is not None:
            self.monitor.record("judged", added)
        panes_state.write(json.dumps(panes))
        # No pane of these sessions can come once the watermark passes end + lateness.
        last_end_ms = max(p[1] for p in panes)
        expiry.set(Timestamp(micros=(last_end_ms + self.allowed_lateness_seconds * 1000) * 1000))
        return iter(())

    @on_timer(EXPIRY)
    def expire(self, panes_state: Any = beam.DoFn.StateParam(PANES)) -> None:
        panes_state.clear()
