"""The sections file as a slowly updating side input (docs/enforcement.md, Changing limits
on a running job).

    ticks (PeriodicImpulse, one per --rules_refresh_seconds interval)
      -> ReadSectionsFile -> RulesSnapshot per interval (FixedWindows of the interval)
      -> AsRulesInForce: each session reads the snapshot of the interval it began in

Beam's windowed pattern ("Slowly updating side input using windowing", Beam's side input
patterns): snapshots in fixed windows, matched to the main input by window. A session is
mapped by its start, not Beam's default, its end: the interval of the first detection has
closed by the time a session fires (its last detection + the gap) whenever the interval is
no longer than the gap, so the side input adds no wait. A session whose interval has no
snapshot (before the job started) is judged under the rules read at start.

Beam 2.77's BundleBasedDirectRunner (the local streaming runner) cannot run
PeriodicImpulse: in streaming its overrides leave the splittable DoFn's GroupByKey
unreplaced, and its splittable DoFn support does not resume a deferred remainder. There,
`TicksAtEventTime` makes the ticks from the detections themselves: one per interval that has
a detection, at the detection's event time, so that every session's first interval has one.
"""

import logging
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.metrics import Metrics
from apache_beam.transforms import window
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.utils.timestamp import Duration, Timestamp

from section_speed.domain.events import InvalidEvent, parse_camera_event
from section_speed.domain.rules import RulesSnapshot, SectionCatalog, SectionRule

_log = logging.getLogger(__name__)


def read_sections_file(path: str, default: SectionRule) -> SectionCatalog:
    """The sections file (local path or gs://) under the default rule; ValueError if wrong."""
    with FileSystems.open(path) as sections:
        return SectionCatalog.from_json(sections.read().decode("utf-8"), default)


class AsRulesInForce(beam.pvalue.AsList):
    """The snapshots of the interval a session began in (all of them, in a global window).

    A list rather than a singleton: a late tick can give an interval a second snapshot;
    `newest_rules` picks the one read last.
    """

    def __init__(self, snapshots: beam.PCollection) -> None:
        super().__init__(snapshots)
        windowfn = snapshots.windowing.windowfn
        if isinstance(windowfn, window.FixedWindows):
            self._window_mapping_fn = _by_start(windowfn)


def _by_start(windowfn: window.FixedWindows) -> Any:
    def interval_of_start(main_window: window.BoundedWindow) -> window.BoundedWindow:
        start = getattr(main_window, "start", main_window.max_timestamp())
        return windowfn.assign(window.WindowFn.AssignContext(start))[0]

    return interval_of_start


class ReadSectionsFileFn(beam.DoFn):
    """A tick -> the sections file as read now, or nothing when it is wrong.

    A wrong file is not applied: this worker re-emits the last good version it read, or
    nothing (the interval then uses the rules read at start); the error is logged and
    counted (`rules_file_errors`).
    """

    def __init__(self, path: str, default: SectionRule) -> None:
        self.path = path
        self.default = default
        self.reads = Metrics.counter(self.__class__, "rules_file_reads")
        self.errors = Metrics.counter(self.__class__, "rules_file_errors")

    def setup(self) -> None:
        self.last_good: SectionCatalog | None = None

    def process(self, _tick: object) -> Iterator[RulesSnapshot]:
        self.reads.inc()
        now_ms = int(time.time() * 1000)
        try:
            catalog = read_sections_file(self.path, self.default)
        except (OSError, ValueError) as error:  # a file being replaced, a wrong edit
            self.errors.inc()
            kept = self.last_good.version if self.last_good else "the rules read at start"
            _log.error("sections file %s not applied, keeping %s: %s", self.path, kept, error)
            if self.last_good is not None:
                yield RulesSnapshot(now_ms, self.last_good)
            return
        if self.last_good is None or self.last_good.version != catalog.version:
            _log.info("sections file %s read: rules version %s", self.path, catalog.version)
        self.last_good = catalog
        yield RulesSnapshot(now_ms, catalog)


class TicksAtEventTime(beam.DoFn):
    """A message -> a tick at its detection's event time (its publish time if it has none or
    is no detection), for runners without PeriodicImpulse."""

    def __init__(self, default_radar_id: str) -> None:
        self.default_radar_id = default_radar_id

    def process(
        self, message: PubsubMessage, timestamp: Timestamp = beam.DoFn.TimestampParam
    ) -> Iterator[window.TimestampedValue]:
        publish_time_ms = timestamp.micros // 1000
        try:
            event = parse_camera_event(
                message.data or b"",
                dict(message.attributes or {}),
                message_id=message.message_id,
                publish_time_ms=publish_time_ms,
                default_radar_id=self.default_radar_id,
            )
            at_ms = event.event_time_ms
        except InvalidEvent:
            at_ms = publish_time_ms
        yield window.TimestampedValue(None, Timestamp(micros=at_ms * 1000))


class SectionsFileUpdates(beam.PTransform):
    """Root (or messages, with `ticks_from_messages`) -> RulesSnapshots in FixedWindows of
    `refresh_seconds`: the sections file read again every interval."""

    def __init__(
        self,
        path: str,
        default: SectionRule,
        refresh_seconds: int,
        *,
        default_radar_id: str = "",
        allowed_lateness_seconds: int = 0,
    ) -> None:
        super().__init__()
        self.path = path
        self.default = default
        self.refresh_seconds = refresh_seconds
        self.default_radar_id = default_radar_id
        self.allowed_lateness_seconds = allowed_lateness_seconds

    def expand(self, source: Any) -> beam.PCollection:
        if isinstance(source, beam.pvalue.PBegin):
            ticks = source | "Ticks" >> PeriodicImpulse(
                start_timestamp=time.time(),
                fire_interval=self.refresh_seconds,
                apply_windowing=True,
            )
        else:  # messages: the local runner's stand-in (module docstring)
            ticks = (
                source
                | "TicksAtEventTime" >> beam.ParDo(TicksAtEventTime(self.default_radar_id))
                | "Intervals"
                >> beam.WindowInto(
                    window.FixedWindows(self.refresh_seconds),
                    allowed_lateness=Duration(seconds=self.allowed_lateness_seconds),
                )
                | "OnePerInterval" >> beam.CombineGlobally(lambda ticks: None).without_defaults()
            )
        return ticks | "ReadSectionsFile" >> beam.ParDo(ReadSectionsFileFn(self.path, self.default))
