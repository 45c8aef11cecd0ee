"""What a stopped local pipeline read, judged, dead-lettered and still held (its stop report).

The local runner acknowledges messages when it pulls them and keeps open sessions in memory
(docs/architecture.md, Runners): what it holds when it stops is gone from the process, and
only a seek of the input subscription brings it back. So at a stop it says, from the tally
its read monitor keeps beside the counters, how many detections it read, how many went into
sessions, how many of those are in sessions already judged, and how many were still held in
open ones, with how far behind it read: nothing it had is lost without a word. On Dataflow a
drain fires every open session instead (partial ones are dead-lettered), and the counters
are in the job's metrics.
"""

import json
import logging
from typing import Any

from section_speed.domain.lag import LagMonitor
from transforms.worker_clients import ClientHandler

_log = logging.getLogger(__name__)

# Counted by the process's LagMonitor (transforms/parse.py, transforms/accounting.py), not
# read from the runner's counters (`events_read`, `detections_judged`, ...): Beam 2.77's
# local runner reports a streaming job's counters incompletely (measured: events_read 10 of
# 300 messages read, detections_judged 150 of 1,650 judged).
TALLIED = ("read", "parsed", "invalid", "too_late", "parser_errors", "judged")


def counts(tally: dict[str, float]) -> dict[str, Any]:
    """The report's figures from the read monitor's `tally` (LagMonitor.tally)."""
    figures: dict[str, Any] = {key: int(tally.get(key, 0)) for key in TALLIED}
    parse_letters = figures["invalid"] + figures["too_late"] + figures["parser_errors"]
    figures["dead_lettered_at_parse"] = parse_letters
    # Read but neither parsed nor dead-lettered: a bundle the runner had not finished.
    figures["in_flight"] = figures["read"] - figures["parsed"] - parse_letters
    figures["held_in_open_sessions"] = figures["parsed"] - figures["judged"]
    figures["max_read_lag_s"] = round(float(tally.get("max_read_lag_s", 0.0)), 3)
    return figures


def describe(figures: dict[str, Any]) -> str:
    """One sentence for the log, then the figures as JSON (`stop report: {...}`)."""
    return (
        f"stopping: read {figures['read']} messages; {figures['dead_lettered_at_parse']} "
        f"dead-lettered at parse ({figures['too_late']} too late); {figures['parsed']} "
        f"detections into sessions, {figures['judged']} of them in judged sessions (published "
        "or dead-lettered); still held, neither judged nor dead-lettered: "
        f"{figures['held_in_open_sessions']} detections in open sessions and "
        f"{figures['in_flight']} in unfinished bundles; the slowest read came "
        f"{figures['max_read_lag_s']:.1f} s after its publish time. Judged and dead-lettered "
        "count what the steps did; a record still on its way to a sink (a fine waiting for its "
        "evidence, a dead letter before its topic) may not be written. What was held, and what "
        "is still on the subscription, is not lost: seek the subscription back by gap + "
        "allowed lateness and start again (docs/architecture.md, Runners)\nstop report: "
        + json.dumps(figures)
    )


def log_stop_report(monitor: ClientHandler[LagMonitor]) -> None:
    """Log the stop report from the process's read monitor (the handler its steps used);
    never raises: it runs at a stop."""
    try:
        reads = monitor.acquire()
        figures = counts(reads.tally())
        monitor.release(reads)
    except Exception:
        _log.exception("no stop report: the read monitor could not be read")
        return
    _log.warning(describe(figures))
