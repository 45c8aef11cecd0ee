"""SectionSpeed: one traversal per vehicle session, measured and judged against the limit."""

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration

from pipeline.domain.events import CameraEvent
from pipeline.domain.speed import SectionRules, distinct_detections, measure_traversal

FINED = "fined"
NOT_FINED = "not_fined"

VehicleKey = tuple[str, str]


class WindowIntoTraversals(beam.PTransform):
    """Event-time sessions per vehicle; late detections re-fire the whole traversal.

    Accumulating panes make a late firing carry every detection of the session, so
    it is a complete, corrected measurement with the same fine_id, not a fragment.
    """

    def __init__(self, gap_seconds: int, allowed_lateness_seconds: int) -> None:
        super().__init__()
        self.gap_seconds = gap_seconds
        self.allowed_lateness_seconds = allowed_lateness_seconds

    def expand(self, keyed_events: beam.PCollection) -> beam.PCollection:
        return keyed_events | "Sessions" >> beam.WindowInto(
            window.Sessions(self.gap_seconds),
            trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
            accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
            allowed_lateness=Duration(seconds=self.allowed_lateness_seconds),
        )


class MeasureTraversalFn(beam.DoFn):
    """A session's detections -> a Traversal, to `fined` or `not_fined`."""

    def __init__(self, rules: SectionRules) -> None:
        self.rules = rules
        self.traversals = Metrics.counter(self.__class__, "traversals")
        self.fines = Metrics.counter(self.__class__, "fines")
        self.duplicate_events = Metrics.counter(self.__class__, "duplicate_events")
        self.unmeasurable_sessions = Metrics.counter(self.__class__, "unmeasurable_sessions")

    def process(
        self, element: tuple[VehicleKey, Iterable[CameraEvent]]
    ) -> Iterator[Any]:  # TaggedOutput(FINED | NOT_FINED, Traversal)
        (radar_id, _vehicle_id), events = element
        events = list(events)
        detections = distinct_detections(events)
        self.duplicate_events.inc(len(events) - len(detections))
        traversal = measure_traversal(detections, self.rules.for_radar(radar_id))
        if traversal is None:  # one detection, or all at one instant: no speed to judge
            self.unmeasurable_sessions.inc()
            return
        self.traversals.inc()
        if traversal.is_speeding:
            self.fines.inc()
            yield beam.pvalue.TaggedOutput(FINED, traversal)
        else:
            yield beam.pvalue.TaggedOutput(NOT_FINED, traversal)


class SectionSpeed(beam.PTransform):
    """CameraEvents -> Traversals, tagged `fined` and `not_fined`."""

    def __init__(
        self, rules: SectionRules, gap_seconds: int, allowed_lateness_seconds: int
    ) -> None:
        super().__init__()
        self.rules = rules
        self.gap_seconds = gap_seconds
        self.allowed_lateness_seconds = allowed_lateness_seconds

    def expand(
        self, events: beam.PCollection
    ) -> Any:  # DoOutputsTuple (Beam warns on that annotation)
        return (
            events
            | "KeyByVehicle" >> beam.Map(lambda event: ((event.radar_id, event.vehicle_id), event))
            | "WindowIntoTraversals"
            >> WindowIntoTraversals(self.gap_seconds, self.allowed_lateness_seconds)
            | "GroupDetections" >> beam.GroupByKey()
            | "MeasureTraversal"
            >> beam.ParDo(MeasureTraversalFn(self.rules)).with_outputs(FINED, NOT_FINED)
        )
