"""The warning that sessions of one detection pile up: the session gap is too short.

A session that saw its vehicle at one place only gives no speed; many of them mean the
gap that closes a session is shorter than the time between cameras (docs/enforcement.md,
gates 4 and 5).
"""

from collections import deque

from section_speed.domain.traversal import UNMEASURABLE, Rejection, Traversal


def is_single_detection(outcome: Traversal | Rejection) -> bool:
    """A session that saw its vehicle at one place only: the symptom of a too-short gap."""
    return (
        isinstance(outcome, Rejection)
        and outcome.kind == UNMEASURABLE
        and len({event.location for event in outcome.detections}) == 1
    )


class SingleDetectionMonitor:
    """Says once when sessions of one detection pile up (the session gap is too short).

    Feed it every session's outcome; it returns the warning text the first time at least
    `threshold` of the last `window` sessions (and at least `min_sessions` of them) had
    one detection, then stays quiet until the share falls below half the threshold.
    """

    def __init__(
        self,
        gap_seconds: float,
        window: int = 200,
        threshold: float = 0.5,
        min_sessions: int = 20,
    ) -> None:
        if window < 1 or not 0 < threshold <= 1 or min_sessions < 1:
            raise ValueError("window and min_sessions must be >= 1, threshold in (0, 1]")
        self.gap_seconds = gap_seconds
        self.threshold = threshold
        self.min_sessions = min_sessions
        self._recent: deque[bool] = deque(maxlen=window)
        self._singles = 0
        self._warned = False

    def observe(self, outcome: Traversal | Rejection) -> str | None:
        single = is_single_detection(outcome)
        if len(self._recent) == self._recent.maxlen and self._recent[0]:
            self._singles -= 1  # the oldest falls out of the window
        self._recent.append(single)
        self._singles += single
        share = self._singles / len(self._recent)
        if self._warned:
            if share < self.threshold / 2:
                self._warned = False
            return None
        if len(self._recent) < self.min_sessions or share < self.threshold:
            return None
        self._warned = True
        return (
            f"{self._singles} of the last {len(self._recent)} sessions had one detection: "
            f"the session gap ({self.gap_seconds:g} s) is probably shorter than the time "
            "between cameras, unless the pipeline is behind (a warning says so) and closes "
            "sessions before their detections are read"
        )
