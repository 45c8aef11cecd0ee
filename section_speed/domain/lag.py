"""The warning that the pipeline is behind: it reads messages long after they were published.

A pipeline's read lag is the time between a message's publish time and the moment it is
parsed. On Dataflow the watermark holds back behind a backlog; on the local runner it
follows the clock, so a lag near the session gap closes sessions before all of a vehicle's
detections are read (docs/architecture.md, Runners). `LagMonitor` turns the lags it is shown
into a warning at most once per interval, with how far behind, and says when the pipeline
has caught up. It keeps no detection: the worst lag since it last spoke and over the run, and
how many messages were read and what parsing made of them, for the stop report
(pipeline/stop_report.py).
"""

import threading
from collections import Counter

from section_speed.domain import defaults


class LagMonitor:
    """Says, rate-limited, that reads lag more than `threshold_s` behind their publish times."""

    def __init__(
        self,
        gap_seconds: float,
        threshold_s: float = defaults.LAG_WARNING_SECONDS,
        interval_s: float = defaults.LAG_WARNING_INTERVAL_SECONDS,
        watermark_is_clock: bool = True,
    ) -> None:
        if threshold_s <= 0 or interval_s < 0 or gap_seconds <= 0:
            raise ValueError("gap_seconds and threshold_s must be > 0, interval_s >= 0")
        self.gap_seconds = gap_seconds
        # Half the gap, when shorter: from there on a vehicle's detections can be read on
        # both sides of its session's end.
        self.threshold_s = min(threshold_s, gap_seconds / 2)
        self.interval_s = interval_s
        self.watermark_is_clock = watermark_is_clock  # the local runner's; not Dataflow's
        self._lock = threading.Lock()  # Dataflow's worker threads share one monitor
        self._spoke_at_s: float | None = None
        self._was_behind = False  # what it said last
        self._worst_s = 0.0  # since it last spoke
        self._behind_reads = 0
        self._reads = 0
        self._outcomes: Counter[str] = Counter()
        self._worst_ever_s = 0.0

    def record(self, outcome: str, n: int = 1) -> None:
        """`n` more of an outcome: at parse (parsed, invalid, too_late, parser_errors), or
        detections newly in judged sessions (judged)."""
        with self._lock:
            self._outcomes[outcome] += n

    def tally(self) -> dict[str, float]:
        """Messages read, each outcome's count, and the slowest read's lag in seconds."""
        with self._lock:
            return {"read": self._outcomes["read"], **self._outcomes,
                    "max_read_lag_s": self._worst_ever_s}  # fmt: skip

    def observe(self, lag_s: float, now_s: float) -> str | None:
        """One message read `lag_s` after it was published, at `now_s`: a warning or None."""
        with self._lock:
            self._reads += 1
            self._outcomes["read"] += 1
            self._worst_ever_s = max(self._worst_ever_s, lag_s)
            if lag_s > self.threshold_s:
                self._behind_reads += 1
                self._worst_s = max(self._worst_s, lag_s)
            if self._spoke_at_s is not None and now_s - self._spoke_at_s < self.interval_s:
                return None
            if self._behind_reads:
                message = (
                    f"the pipeline is behind: a message was read {self._worst_s:.1f} s after "
                    f"it was published ({self._behind_reads} of {self._reads} reads more than "
                    f"{self.threshold_s:g} s late since the last such warning). "
                    + (
                        "The local runner's watermark is the clock: as this nears the session "
                        f"gap ({self.gap_seconds:g} s), sessions close before all of a "
                        "vehicle's detections are read, and are dead-lettered, not judged. "
                        "Free a core or slow the traffic (README, Capacity)"
                        if self.watermark_is_clock
                        else "The watermark waits for the backlog: verdicts come later. Add "
                        "workers if it grows"
                    )
                )
            elif self._was_behind:
                message = f"the pipeline has caught up: every read within {self.threshold_s:g} s"
            else:
                return None
            self._was_behind = bool(self._behind_reads)
            self._spoke_at_s = now_s
            self._behind_reads = self._reads = 0
            self._worst_s = 0.0
            return message
