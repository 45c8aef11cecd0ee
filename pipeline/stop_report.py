"""What a stopped local pipeline read, judged, dead-lettered and still held (its stop report).

The local runner acknowledges messages when it pulls them and keeps open sessions in memory
(docs/architecture.md, Runners): what it holds when it stops is gone from the process, and
only a seek of the input subscription brings it back. So at a stop it says, from its
counters, how many detections it read, how many went into sessions, how many of those are in
sessions already judged, and how many were still held in open ones, with how far behind it
read: nothing it had is lost without a word. On Dataflow a drain fires every open session
instead (partial ones are dead-lettered), and the same counters are in the job's metrics.
"""

import json
import logging
from collections.abc import Callable
from typing import Any

from apache_beam.metrics.metric import MetricsFilter

from section_speed.domain.lag import LagMonitor
from transforms.worker_clients import ClientHandler

_log = logging.getLogger(__name__)

# What parsing made of the messages read: the process's LagMonitor tally, not the counters
# `events_read` ...: Beam 2.77's local runner reports, for steps fed by its Pub/Sub read, the
# counts of one bundle only (measured: 10 of 300 messages read).
PARSE_OUTCOMES = ("read", "parsed", "invalid", "too_late", "parser_errors")
# Counter names of steps after the sessions' grouping (transforms/traversals.py,
# transforms/accounting.py), which the local runner reports whole.
COUNTERS = {
    "judged": "detections_judged",
    "traversals": "traversals",
    "fines": "fines",
    "unmeasurable_sessions": "unmeasurable_sessions",
    "implausible_sessions": "implausible_sessions",
    "partial_sessions": "partial_sessions",
}


def counts(tally: dict[str, float], query: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """The report's figures from the read monitor's `tally` and `query(name)`, a runner's
    metrics query for one name."""
    figures: dict[str, Any] = {key: int(tally.get(key, 0)) for key in PARSE_OUTCOMES}
    for key, name in COUNTERS.items():
        figures[key] = sum(_value(result) for result in query(name).get("counters", []))
    parse_letters = figures["invalid"] + figures["too_late"] + figures["parser_errors"]
    figures["dead_lettered_at_parse"] = parse_letters
    # Read but neither parsed nor dead-lettered: a bundle the runner had not finished.
    figures["in_flight"] = figures["read"] - figures["parsed"] - parse_letters
    figures["held_in_open_sessions"] = figures["parsed"] - figures["judged"]
    figures["max_read_lag_s"] = round(float(tally.get("max_read_lag_s", 0.0)), 3)
    return figures


def describe(figures: dict[str, Any]) -> str:
    """One sentence for the log, then the figures as JSON (`stop report: {...}`)."""
    rejected = sum(
        figures[f"{kind}_sessions"] for kind in ("unmeasurable", "implausible", "partial")
    )
    return (
        f"stopping: read {figures['read']} messages; {figures['dead_lettered_at_parse']} "
        f"dead-lettered at parse ({figures['too_late']} too late); {figures['parsed']} "
        f"detections into sessions, {figures['judged']} of them in judged sessions "
        f"({figures['traversals']} traversals, {figures['fines']} fined; {rejected} sessions "
        f"dead-lettered); still held, not judged nor dead-lettered: "
        f"{figures['held_in_open_sessions']} detections in open sessions and "
        f"{figures['in_flight']} in unfinished bundles; the slowest read came "
        f"{figures['max_read_lag_s']:.1f} s after its publish time. What was held, and what "
        "is still on the subscription, is not lost: seek the subscription back and start "
        "again (docs/architecture.md, Runners)\nstop report: " + json.dumps(figures)
    )


def log_stop_report(result: Any, monitor: ClientHandler[LagMonitor] | None) -> None:
    """Log the stop report of a runner's `PipelineResult` and the process's read monitor
    (the one its ParseEventFn used: same handler); never raises (it runs at a stop)."""
    try:
        tally: dict[str, float] = {}
        if monitor is not None:
            reads = monitor.acquire()
            tally = reads.tally()
            monitor.release(reads)
        metrics = result.metrics()
        figures = counts(tally, lambda name: metrics.query(MetricsFilter().with_name(name)))
    except Exception:
        _log.exception("no stop report: the runner's metrics could not be read")
        return
    _log.warning(describe(figures))


def _value(result: Any) -> Any:
    committed = getattr(result, "committed", None)
    return committed if committed is not None else result.attempted
