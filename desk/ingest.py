"""Fines reach the desk from the pipeline's output topic (docs/desk.md, Ingest).

The topic carries every traversal, fines and passes (docs/course.md). The desk keeps what
it needs: every fine, and every later revision of a traversal (a fine withdrawn or fallen
under the limit is a revision that is no longer ticketed). A first publication that is a
pass is dropped. `DeskStore.ingest` is idempotent on (fine_id, revision) and accepts
revisions in any order, so redeliveries and reordering are harmless.

Locally a pull subscription (`FinesSubscriber`, in the desk process); on Cloud Run a push
subscription to `POST /push/fines` (desk/routes/push.py), authenticated by
desk/security.py's `PushTokenVerifier`.
"""

import json
import logging
from typing import Any

from desk.store import DeskStore, Fine, Ingested

_log = logging.getLogger(__name__)
MAX_OUTSTANDING = 50  # messages the subscriber holds at once
# Each lease is extended by at most this: the messages a crashed desk held come again to
# another within seconds (the client's default, 60 s, would hold them a minute).
LEASE_EXTENSION_S = 10


class NotAFine(ValueError):
    """A message that is no traversal record: acknowledged and logged, never retried."""


def fine_from_message(data: bytes) -> Fine | None:
    """The fine a topic message carries; None when the desk has no use for it (a pass at
    its first revision); NotAFine when it is no traversal record."""
    try:
        record = json.loads(data)
        if not isinstance(record, dict):
            raise TypeError("not a JSON object")
        if not record.get("is_ticketed") and not int(record.get("revision") or 0):
            if not record.get("withdrawn_reason"):
                return None
        return Fine.from_record(record)
    except (ValueError, TypeError, KeyError) as error:
        raise NotAFine(f"{type(error).__name__}: {error}") from error


def ingest_message(store: DeskStore, data: bytes) -> Ingested | None:
    """Store the message's fine (None: nothing for the desk). NotAFine for a bad message;
    a database failure raises, so the message is redelivered."""
    fine = fine_from_message(data)
    if fine is None:
        return None
    done = store.ingest(fine)
    if done.recalls:
        _log.info("fine %s revision %d recalls %s", fine.fine_id, fine.revision, done.recalls)
    return done


class FinesSubscriber:
    """A streaming pull on the fines subscription: each message stored, then acked."""

    def __init__(self, store: DeskStore, subscription_path: str) -> None:
        self.store = store
        self.subscription_path = subscription_path
        self._future: Any = None
        self._client: Any = None

    def start(self) -> None:
        from google.cloud import pubsub_v1

        self._client = pubsub_v1.SubscriberClient()
        self._future = self._client.subscribe(
            self.subscription_path,
            self._receive,
            flow_control=pubsub_v1.types.FlowControl(
                max_messages=MAX_OUTSTANDING, max_duration_per_lease_extension=LEASE_EXTENSION_S
            ),
        )
        _log.info("ingesting fines from %s", self.subscription_path)

    def _receive(self, message: Any) -> None:
        try:
            ingest_message(self.store, message.data)
        except NotAFine as error:
            _log.error("dropped message %s: %s", message.message_id, error)
        except Exception:
            _log.exception("could not store message %s; it will come again", message.message_id)
            message.nack()
            return
        message.ack()

    def stop(self) -> None:
        if self._future is not None:
            self._future.cancel()
            try:
                self._future.result(timeout=10)
            except Exception:
                pass
        if self._client is not None:
            self._client.close()
