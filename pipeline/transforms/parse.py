"""ParseEvents: Pub/Sub messages to timestamped CameraEvents, failures to a dead letter."""

import logging
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from pipeline.domain.events import InvalidEvent, parse_camera_event
from pipeline.domain.schemas import dead_letter_record

DEAD_LETTER = "dead_letter"
PARSE_STAGE = "parse"

_log = logging.getLogger(__name__)


class ParseEventFn(beam.DoFn):
    """Validates one message; a bad one goes to the dead letter with its reason and bytes."""

    def __init__(self, default_radar_id: str) -> None:
        self.default_radar_id = default_radar_id
        self.events_read = Metrics.counter(self.__class__, "events_read")
        self.events_parsed = Metrics.counter(self.__class__, "events_parsed")
        self.events_dead_lettered = Metrics.counter(self.__class__, "events_dead_lettered")
        self.parser_errors = Metrics.counter(self.__class__, "parser_errors")

    def process(
        self, message: PubsubMessage, timestamp: Timestamp = beam.DoFn.TimestampParam
    ) -> Iterator[Any]:  # events (main) or TaggedOutput
        self.events_read.inc()
        attributes = dict(message.attributes or {})
        now_ms = int(time.time() * 1000)
        try:
            event = parse_camera_event(
                message.data or b"",
                attributes,
                message_id=message.message_id,
                # Without a `ts` attribute the read stamped the element with the publish time.
                publish_time_ms=timestamp.micros // 1000,
                default_radar_id=self.default_radar_id,
                now_ms=now_ms,
            )
        except InvalidEvent as error:
            reason = str(error)
        except Exception as error:
            # A parser bug must not fail the bundle: a streaming runner would retry the same
            # message forever. Dead-letter it (replayable) and count it so that it is seen.
            _log.exception("parser error on message %s", message.message_id)
            self.parser_errors.inc()
            reason = f"parser error: {type(error).__name__}: {str(error)[:200]}"
        else:
            self.events_parsed.inc()
            # The body's timestamp is the event time; it equals `ts` when the camera set both.
            # Exact micros: Timestamp.of(ms / 1000) truncates 1 us off about 1% of times.
            yield TimestampedValue(event, Timestamp(micros=event.event_time_ms * 1000))
            return
        self.events_dead_lettered.inc()
        yield beam.pvalue.TaggedOutput(
            DEAD_LETTER,
            dead_letter_record(
                stage=PARSE_STAGE,
                error=reason,
                payload=message.data,
                attributes=attributes,
                timestamp_ms=now_ms,
            ),
        )


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
