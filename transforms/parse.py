"""ParseEvents: Pub/Sub messages to CameraEvents keyed by vehicle, stamped with their event time.

A message that is not a camera event, or that arrives too late for its traversal
(section_speed.domain.lateness), becomes a `Failure` with the bytes and attributes that arrived.
Streaming, each message's read lag (parsed minus published) is measured (`read_lag_ms`), and
the process's `LagMonitor` warns while the pipeline is behind (section_speed.domain.lag).
"""

import functools
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from section_speed.domain.events import (
    CameraEvent,
    InvalidEvent,
    VehicleKey,
    parse_camera_event,
    vehicle_key,
)
from section_speed.domain.lag import LagMonitor
from section_speed.domain.lateness import WALL_CLOCK, LatenessRule
from transforms.failures import (
    FAILURES,
    PARSE_STAGE,
    TOO_LATE_STAGE,
    Failure,
    failed,
    stack_trace,
)
from transforms.worker_clients import ClientHandler

_log = logging.getLogger(__name__)


def read_monitor(lateness: LatenessRule) -> ClientHandler[LagMonitor]:
    """The process's LagMonitor, kept for the job's life: the local runner sets a DoFn up for
    every bundle, and the warning's rate limit and the stop report's tally outlive them."""
    monitor = functools.partial(
        LagMonitor, lateness.gap_seconds, watermark_is_clock=lateness.clock == WALL_CLOCK
    )
    return ClientHandler(monitor, keep_idle_s=math.inf)


class ParseEventFn(beam.DoFn):
    """Validates one message; a bad or too-late one becomes a Failure with its reason."""

    def __init__(
        self,
        default_radar_id: str,
        lateness: LatenessRule | None,
        clock: Callable[[], float] = time.time,
        monitor: ClientHandler[LagMonitor] | None = None,
    ) -> None:
        self.default_radar_id = default_radar_id
        self.lateness = lateness
        self.clock = clock
        self.events_read = Metrics.counter(self.__class__, "events_read")
        self.events_parsed = Metrics.counter(self.__class__, "events_parsed")
        self.events_invalid = Metrics.counter(self.__class__, "events_invalid")
        self.events_too_late = Metrics.counter(self.__class__, "too_late_events")
        self.parser_errors = Metrics.counter(self.__class__, "parser_errors")
        self.read_lag_ms = Metrics.distribution(self.__class__, "read_lag_ms")
        # Files have no publish time, hence no lag.
        self.lag_monitors = monitor or (lateness and read_monitor(lateness))
        self.lag_monitor: LagMonitor | None = None

    def setup(self) -> None:
        if self.lag_monitors is not None:
            self.lag_monitor = self.lag_monitors.acquire()

    def teardown(self) -> None:
        if self.lag_monitors is not None and self.lag_monitor is not None:
            self.lag_monitors.release(self.lag_monitor)
            self.lag_monitor = None

    def process(
        self, message: PubsubMessage, timestamp: Timestamp = beam.DoFn.TimestampParam
    ) -> Iterator[Any]:  # timestamped CameraEvents, or tagged Failures
        self.events_read.inc()
        attributes = dict(message.attributes or {})
        data = message.data or b""
        now_ms = int(self.clock() * 1000)
        # The read stamps each message with its publish time (no timestamp_attribute).
        publish_time_ms = timestamp.micros // 1000
        if self.lag_monitor is not None:
            self.read_lag_ms.update(now_ms - publish_time_ms)
            warning = self.lag_monitor.observe((now_ms - publish_time_ms) / 1000, now_ms / 1000)
            if warning:
                _log.warning(warning)
        try:
            event = parse_camera_event(
                data,
                attributes,
                message_id=message.message_id,
                publish_time_ms=publish_time_ms,
                default_radar_id=self.default_radar_id,
                now_ms=now_ms,
            )
        except InvalidEvent as error:
            self._count("invalid")
            self.events_invalid.inc()
            yield failed(Failure(PARSE_STAGE, str(error), data, attributes, now_ms))
            return
        except Exception as error:
            # A parser bug must not fail the bundle: a streaming runner would retry the same
            # message forever. Dead-letter it (replayable) and count it so that it is seen.
            _log.exception("parser error on message %s", message.message_id)
            self.parser_errors.inc()
            self._count("parser_errors")
            reason = f"parser error: {type(error).__name__}: {str(error)[:200]}"
            yield failed(Failure(PARSE_STAGE, reason, data, attributes, now_ms, stack_trace(error)))
            return
        late = self.lateness and self.lateness.lateness_reason(
            event.event_time_ms, publish_time_ms, now_ms
        )
        if late:
            self.events_too_late.inc()
            self._count("too_late")
            yield failed(Failure(TOO_LATE_STAGE, late, data, attributes, now_ms))
            return
        self.events_parsed.inc()
        self._count("parsed")
        # Keyed here, not in a step of its own (docs/architecture.md, Runners).
        # Exact micros: Timestamp.of(ms / 1000) truncates 1 us off about 1% of times.
        timestamp = Timestamp(micros=event.event_time_ms * 1000)
        yield TimestampedValue((vehicle_key(event), event), timestamp)

    def _count(self, outcome: str) -> None:
        # Beside the counters: Beam 2.77's local runner reports a streaming job's counters
        # incompletely, and the stop report needs every message (pipeline/stop_report.py).
        if self.lag_monitor is not None:
            self.lag_monitor.record(outcome)


class ParsedEvents(NamedTuple):
    events: beam.PCollection  # (VehicleKey, CameraEvent), stamped with the event's time
    failures: beam.PCollection  # Failures: parse, too_late


class ParseEvents(beam.PTransform):
    """PubsubMessage -> ParsedEvents(events, failures).

    `lateness=None` for bounded input: archived detections are judged, never late.
    """

    def __init__(
        self,
        default_radar_id: str,
        lateness: LatenessRule | None,
        clock: Callable[[], float] = time.time,
        monitor: ClientHandler[LagMonitor] | None = None,
    ) -> None:
        super().__init__()
        self.fn = ParseEventFn(default_radar_id, lateness, clock, monitor)

    def expand(self, messages: beam.PCollection) -> Any:
        # Typed, so that the key gets the deterministic coder the sessions' grouping needs.
        parsed = messages | "ParseEventFn" >> beam.ParDo(self.fn).with_output_types(
            tuple[VehicleKey, CameraEvent]
        ).with_outputs(FAILURES, main="events")
        return ParsedEvents(parsed.events, parsed[FAILURES])
