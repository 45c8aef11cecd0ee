"""Publish camera events to Pub/Sub, paced like cameras that publish as vehicles pass.

The client honours PUBSUB_EMULATOR_HOST by itself, so the same code feeds the local
emulator and the cloud topic.
"""

import logging
import sys
import time
from collections.abc import Callable, Iterable
from concurrent import futures as concurrent_futures
from typing import Protocol

from google.api_core import exceptions as api_exceptions
from tqdm import tqdm

from section_speed.domain.events import CameraEvent

logger = logging.getLogger(__name__)

RESULT_TIMEOUT_S = 60.0
# Checking already-finished publishes now and then surfaces a missing topic early
# instead of after the whole run.
CHECK_EVERY_EVENTS = 1000


class PublishError(RuntimeError):
    """Publishing to the topic failed; the message names the topic and what to do."""


class PublishFuture(Protocol):
    def done(self) -> bool: ...

    def result(self, timeout: float | None = None) -> object: ...


class Publisher(Protocol):
    def publish(self, topic: str, data: bytes, **attrs: str) -> PublishFuture: ...


def publish_events(
    events: Iterable[CameraEvent],
    topic_path: str,
    *,
    speedup: float = 1.0,
    realtime: bool = True,
    progress: bool | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    publisher: Publisher | None = None,
) -> int:
    """Publish events in event-time order; returns how many were published.

    When realtime, each event goes out (event_time - first_event_time) / speedup seconds
    after the first. Event times themselves are not changed: rebase them first.
    """
    if not speedup > 0:
        raise ValueError(f"speedup must be positive, got {speedup}")
    ordered = sorted(events, key=lambda event: event.event_time_ms)  # stable: ties keep order
    if not ordered:
        return 0
    client = publisher if publisher is not None else _new_client()
    show = sys.stderr.isatty() if progress is None else progress
    pending: list[PublishFuture] = []
    first_ms = ordered[0].event_time_ms
    started = clock()
    elapsed = 0.0  # a lower bound of the wall time since `started`
    with tqdm(total=len(ordered), unit="event", file=sys.stderr, disable=not show) as bar:
        for count, event in enumerate(ordered, start=1):
            due = (event.event_time_ms - first_ms) / 1000 / speedup
            # Only look at the clock when the event may be early: a fast run stays cheap.
            if realtime and due > elapsed:
                elapsed = clock() - started
                if due > elapsed:
                    _check_finished(pending, topic_path)
                    sleep(due - elapsed)
                    elapsed = due
            data, attributes = event.to_pubsub()
            pending.append(client.publish(topic_path, data, **attributes))
            bar.update()
            if count % CHECK_EVERY_EVENTS == 0:
                _check_finished(pending, topic_path)
    for future in pending:
        _result(future, topic_path)
    return len(ordered)


def _new_client() -> Publisher:
    from google.cloud import pubsub_v1  # imported here so tests with a fake need no client

    settings = pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.05)
    return pubsub_v1.PublisherClient(batch_settings=settings)


def _check_finished(pending: list[PublishFuture], topic_path: str) -> None:
    """Raise for any finished publish that failed, and forget the finished ones."""
    still_pending = []
    for future in pending:
        if future.done():
            _result(future, topic_path)
        else:
            still_pending.append(future)
    pending[:] = still_pending


def _result(future: PublishFuture, topic_path: str) -> None:
    try:
        future.result(timeout=RESULT_TIMEOUT_S)
    except api_exceptions.NotFound as error:
        raise PublishError(
            f"topic {topic_path} not found: create it first "
            f"(gcloud pubsub topics create {topic_path.rsplit('/', 1)[-1]}, or start the "
            f"local stack), then run again ({error.message})"
        ) from error
    except (TimeoutError, concurrent_futures.TimeoutError) as error:
        raise PublishError(
            f"publishing to {topic_path} got no answer within {RESULT_TIMEOUT_S:g} s; "
            "is Pub/Sub (or PUBSUB_EMULATOR_HOST) reachable?"
        ) from error
    except Exception as error:  # whatever the client raised, the run cannot go on
        raise PublishError(f"publishing to {topic_path} failed: {error}") from error
