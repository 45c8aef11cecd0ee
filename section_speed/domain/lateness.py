"""When a detection is too late for its traversal, judged the way the runner drops data.

Beam drops an element once the watermark has passed its session's end (at least one gap
after the detection) plus the allowed lateness. What the watermark follows depends on
the runner, so the reference instant is a choice made per deployment:

- `publish_time` (Dataflow): the Pub/Sub watermark follows the oldest unacknowledged
  publish time, so it never passes a message's own publish time before the message is
  read. A detection published within gap + lateness of its event time is never dropped,
  however far the job lags (a backlog after an outage, an update, a relaunch).
- `wall_clock` (the local direct runner): its watermark is the clock, so a detection read
  later than gap + lateness after its event time would be dropped silently.

Either way a detection the runner would drop for its lateness on arrival is caught first and
dead-lettered. Not so a subscription sought back under a running Dataflow job: the job's
watermark does not go back, so the replayed detections are already behind it and the runner
drops them before any user code sees them, this rule included. Replays therefore go into a
new job: snapshot, drain, seek, launch (docs/deploy.md, Replay).
"""

from dataclasses import dataclass
from typing import Final

from section_speed.domain import defaults

PUBLISH_TIME: Final = "publish_time"
WALL_CLOCK: Final = "wall_clock"
LATENESS_CLOCKS: Final = (PUBLISH_TIME, WALL_CLOCK)


@dataclass(frozen=True, slots=True)
class LatenessRule:
    """How late a detection may be, and against which clock it is judged."""

    gap_seconds: int
    allowed_lateness_seconds: int
    clock: str = PUBLISH_TIME
    # Kept short of the deadline: the detection still has to reach its session.
    margin_seconds: int = defaults.LATE_MARGIN_SECONDS

    def __post_init__(self) -> None:
        if self.clock not in LATENESS_CLOCKS:
            raise ValueError(f"lateness clock {self.clock!r}: one of {', '.join(LATENESS_CLOCKS)}")

    def lateness_reason(self, event_time_ms: int, publish_time_ms: int, now_ms: int) -> str | None:
        """Why the detection is too late, or None when its traversal can still take it."""
        reference_ms = publish_time_ms if self.clock == PUBLISH_TIME else now_ms
        budget_ms = (self.gap_seconds + self.allowed_lateness_seconds) * 1000
        late_ms = reference_ms - event_time_ms
        if late_ms + self.margin_seconds * 1000 <= budget_ms:
            return None
        beyond = (
            f"beyond the session gap ({self.gap_seconds} s) plus allowed lateness "
            f"({self.allowed_lateness_seconds} s) less a {self.margin_seconds} s margin"
        )
        if self.clock == PUBLISH_TIME:
            return f"published {late_ms / 1000:.1f} s after its event time: {beyond}"
        # Which clock made it late: the camera's publishing, or the pipeline's reading.
        published_s = (publish_time_ms - event_time_ms) / 1000
        waited_s = (now_ms - publish_time_ms) / 1000
        if waited_s >= published_s:
            cause = f"{waited_s:.1f} s waiting to be read: the pipeline is behind"
        else:
            cause = f"published {published_s:.1f} s after it, read {waited_s:.1f} s later"
        return f"read {late_ms / 1000:.1f} s after its event time ({cause}): {beyond}"
