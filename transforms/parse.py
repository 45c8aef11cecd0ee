"""ParseEvents: Pub/Sub messages to timestamped CameraEvents, failures to a dead letter."""

import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from domain.events import InvalidEvent, parse_camera_event
from domain.schemas import dead_letter_record

DEAD_LETTER = "dead_letter"
PARSE_STAGE = "parse"


class ParseEventFn(beam.DoFn):
    """Validates one message; a bad one goes to the dead letter with its reason and bytes."""

    def __init__(self, default_radar_id: str) -> None:
        self.default_radar_id = default_radar_id
        self.events_read = Metrics.counter(self.__class__, "events_read")
        self.events_parsed = Metrics.counter(self.__class__, "events_parsed")
        self.events_dead_lettered = Metrics.counter(self.__class__, "events_dead_lettered")

    def process(
        self, message: PubsubMessage, timestamp: Timestamp = beam.DoFn.TimestampParam
    ) -> Iterator[Any]:  # events (main) or TaggedOutput
        self.events_read.inc()
        attributes = dict(message.attributes or {})
        try:
            event = parse_camera_event(
                message.data or b"",
                attributes,
                message_id=message.message_id,
                # Without a `ts` attribute the read stamped the element with the publish time.
                publish_time_ms=timestamp.micros // 1000,
                default_radar_id=self.default_radar_id,
            )
        except InvalidEvent as error:
            self.events_dead_lettered.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER,
                dead_letter_record(
                    stage=PARSE_STAGE,
                    error=str(error),
                    payload=message.data,
                    attributes=attributes,
                    timestamp_ms=int(time.time() * 1000),
                ),
            )
            return
        self.events_parsed.inc()
        # The body's timestamp is the event time; it equals `ts` when the camera set both.
        yield TimestampedValue(event, event.event_time_ms / 1000)


class ParseEvents(beam.PTransform):
    """PubsubMessage -> CameraEvent (main output) and dead-letter records (`dead_letter`)."""

    def __init__(self, default_radar_id: str) -> None:
        super().__init__()
        self.default_radar_id = default_radar_id

    def expand(
        self, messages: beam.PCollection
    ) -> Any:  # DoOutputsTuple (Beam warns on that annotation)
        return messages | "ParseEventFn" >> beam.ParDo(
            ParseEventFn(self.default_radar_id)
        ).with_outputs(DEAD_LETTER, main="events")
