"""The outbox publisher: what a decision or a new revision committed, sent out after.

A background thread in the desk process (started and stopped in the app's lifespan)
takes due outbox rows, locked with SKIP LOCKED so that two desks never send one row at
the same moment, and for each:

- notice: the notices topic (JSON record, attributes kind=notice and notice_id), then
  BigQuery's `notices` table (insert id notice_id);
- recall: the notices topic (attributes kind=recall, recall_id, notice_id);
- review: BigQuery's `fine_reviews` table (insert id review_id);

then marks the row sent in the same transaction. A crash before that commit leaves the
row unsent: it goes out again with the same ids (never a new id, never lost). A failing
row is retried later with a growing delay (publish_after), the others go ahead.
"""

import logging
import threading

from desk.services import TopicPublisher
from desk.store import NOTICE, RECALL, REVIEW, DeskStore, OutboxItem
from section_speed.clients.warehouse import Warehouse
from section_speed.domain.verification import FINE_REVIEWS, NOTICES

_log = logging.getLogger(__name__)
BATCH = 50
IDLE_S = 1.0  # how often an idle publisher looks for due rows (a decision wakes it at once)


class OutboxPublisher:
    def __init__(
        self,
        store: DeskStore,
        topic: TopicPublisher,
        warehouse: Warehouse | None = None,
        idle_s: float = IDLE_S,
    ) -> None:
        self.store = store
        self.topic = topic
        self.warehouse = warehouse
        self.idle_s = idle_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="desk-outbox", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self.publish_due()
            except Exception:
                _log.exception("outbox: publishing failed; retrying")
                sent = 0
            if sent == 0:
                self._wake.wait(self.idle_s)
                self._wake.clear()

    def publish_due(self) -> int:
        """One batch of due rows; returns how many were sent."""
        with self.store.outbox_batch(BATCH) as (items, marks):
            for item in items:
                if self._stop.is_set() and not marks.sent:
                    break
                try:
                    self._send(item)
                except Exception as error:
                    _log.warning("outbox: %s %s not sent: %s", item.kind, item.key, error)
                    marks.failed[item.id] = str(error)
                else:
                    marks.sent.append(item.id)
        return len(marks.sent)

    def _send(self, item: OutboxItem) -> None:
        if item.kind in (NOTICE, RECALL):
            self.topic.publish(item.payload, item.attributes)
        if self.warehouse is None:
            return
        table = {NOTICE: NOTICES, REVIEW: FINE_REVIEWS}.get(item.kind)
        if table is not None:
            rejected = self.warehouse.insert(table, [item.payload], [item.key])
            if rejected:
                raise RuntimeError(f"{table.name} refused the row: {rejected[0].reason}")
