"""Late detections and repeated traversals: counted and routed, never silently dropped."""

import time
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.transforms.deduplicate import DeduplicatePerKey
from apache_beam.transforms.window import GlobalWindows
from apache_beam.utils.timestamp import Duration

from pipeline.domain.events import CameraEvent, format_rfc3339_ms
from pipeline.domain.schemas import dead_letter_record
from pipeline.domain.speed import measurement_key, too_late

DEAD_LETTER = "dead_letter"
LATE_STAGE = "too_late"


class RejectTooLateFn(beam.DoFn):
    """A detection past its traversal's allowed lateness -> the dead letter, with why."""

    def __init__(
        self,
        gap_seconds: int,
        allowed_lateness_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.gap_seconds = gap_seconds
        self.allowed_lateness_seconds = allowed_lateness_seconds
        self.clock = clock
        self.too_late = Metrics.counter(self.__class__, "too_late_events")

    def process(self, event: CameraEvent) -> Iterator[Any]:
        now_ms = int(self.clock() * 1000)
        if not too_late(
            event.event_time_ms, now_ms, self.gap_seconds, self.allowed_lateness_seconds
        ):
            yield event
            return
        self.too_late.inc()
        payload, attributes = event.to_pubsub()
        yield beam.pvalue.TaggedOutput(
            DEAD_LETTER,
            dead_letter_record(
                stage=LATE_STAGE,
                error=(
                    f"event time {format_rfc3339_ms(event.event_time_ms)} is beyond the "
                    f"allowed lateness ({self.allowed_lateness_seconds} s after a "
                    f"{self.gap_seconds} s session gap) at {format_rfc3339_ms(now_ms)}"
                ),
                payload=payload,
                attributes=attributes,
                timestamp_ms=now_ms,
            ),
        )


class RejectTooLate(beam.PTransform):
    """CameraEvents -> on-time events (main) and dead-letter records (`dead_letter`)."""

    def __init__(
        self,
        gap_seconds: int,
        allowed_lateness_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.fn = RejectTooLateFn(gap_seconds, allowed_lateness_seconds, clock)

    def expand(self, events: beam.PCollection) -> Any:  # DoOutputsTuple
        return events | "RejectTooLate" >> beam.ParDo(self.fn).with_outputs(
            DEAD_LETTER, main="events"
        )


class DropRepeats(beam.PTransform):
    """Elements whose `key` was seen in the last `seconds` (processing time) are dropped.

    Per-key state needs a non-merging window, so the elements leave their windows first
    (they come from sessions); nothing downstream windows them again.
    """

    def __init__(self, key: Callable[[Any], str], seconds: int) -> None:
        super().__init__()
        self.key = key
        self.seconds = seconds

    def expand(self, elements: beam.PCollection) -> beam.PCollection:
        key = self.key
        return (
            elements
            | "LeaveWindows" >> beam.WindowInto(GlobalWindows())
            | "Key" >> beam.Map(lambda e: (key(e), e)).with_output_types(tuple[str, Any])
            | "DropRepeats"
            >> DeduplicatePerKey(processing_time_duration=Duration(seconds=self.seconds))
            | "DropKeys" >> beam.Values()
        )


class DropRepeatedTraversals(beam.PTransform):
    """Traversals seen before (same id, same measurement) within `seconds` are dropped.

    A redelivered detection re-fires its session with the same measurement: without this,
    the output topic would carry the fine twice and the photo would be fetched again.
    A late detection that changes the measurement passes: it is a correction.
    """

    def __init__(self, seconds: int) -> None:
        super().__init__()
        self.seconds = seconds

    def expand(self, traversals: beam.PCollection) -> beam.PCollection:
        return traversals | "DropRepeatedMeasurements" >> DropRepeats(measurement_key, self.seconds)
