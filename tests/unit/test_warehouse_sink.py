"""The warehouse client's failure classification and the sink's retry/split logic.

BigQuery answers bad rows per row (insertErrors); the emulator refuses the whole batch.
A fake client stands in for the first, which the emulator cannot show.
"""

import json

import pytest
from google.api_core import exceptions as api_exceptions

from pipeline.clients.warehouse import BatchRefused, RejectedRow, TransientWarehouseError, Warehouse
from pipeline.domain.schemas import FINES
from pipeline.transforms.warehouse import InsertRowsFn, WarehouseRow


class FakeClient:
    def __init__(self, answers):
        self.answers = list(answers)
        self.calls = []

    def insert_rows_json(self, table, rows, row_ids, retry, timeout):
        self.calls.append(list(row_ids))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def warehouse(*answers):
    return Warehouse("p", "d", client=FakeClient(answers))


def test_per_row_errors_reject_bad_rows_and_resend_the_stopped_ones():
    w = warehouse(
        [
            {"index": 1, "errors": [{"reason": "invalid", "message": "no such field: x"}]},
            {"index": 0, "errors": [{"reason": "stopped", "message": ""}]},
        ],
        [],  # the stopped row, alone, goes in
    )
    rejected = w.insert(FINES, [{"a": 1}, {"x": 2}], ["id-0", "id-1"])
    assert rejected == [RejectedRow(1, "invalid: no such field: x ()")]
    assert w.client.calls == [["id-0", "id-1"], ["id-0"]]


def test_server_errors_are_transient_and_client_errors_refuse_the_batch():
    with pytest.raises(TransientWarehouseError):
        warehouse(api_exceptions.InternalServerError("boom")).insert(FINES, [{}], ["a"])
    with pytest.raises(BatchRefused):
        warehouse(api_exceptions.BadRequest("bad")).insert(FINES, [{}, {}], ["a", "b"])
    (alone,) = warehouse(api_exceptions.BadRequest("bad")).insert(FINES, [{}], ["a"])
    assert alone == RejectedRow(0, "400 bad")


class FakeWarehouse:
    """Refuses any batch holding the row with id "bad" (as the emulator does, with a 500)."""

    def __init__(self):
        self.inserted = []

    def insert(self, table, rows, row_ids):
        if "bad" in row_ids:
            raise TransientWarehouseError("fines: 500 An internal error occurred")
        self.inserted.extend(row_ids)
        return []

    def answers(self):
        return True  # up, and refusing the batch


def test_a_failing_batch_is_split_to_isolate_the_bad_row():
    sleeps = []
    fn = InsertRowsFn(FakeWarehouse)  # the injected factory: one client per process
    fn.setup()
    fn.sleep = sleeps.append
    rows = [WarehouseRow("fines", i, {"fine_id": i}) for i in ("a", "bad", "c")]
    failures = list(fn.process(rows))
    assert fn.warehouse.inserted == ["a", "c"]
    (failure,) = [tagged.value for tagged in failures]
    assert failure.stage == "bigquery" and failure.attributes["insert_id"] == "bad"
    assert json.loads(failure.payload) == {"fine_id": "bad"}
    assert failure.reason == (
        "fines: failed after 3 attempts: fines: 500 An internal error occurred"
    )
    # Backoff between attempts only: 4 for the batch of 3, then 2 for the bad row alone.
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 0.5, 1.0]


class WarehouseDown:
    """Does not answer for its first `down_for` calls of any kind, then takes every row."""

    def __init__(self, down_for=12):
        self.calls, self.down_for, self.inserted = 0, down_for, []

    def _up(self):
        self.calls += 1
        return self.calls > self.down_for

    def insert(self, table, rows, row_ids):
        if not self._up():
            raise TransientWarehouseError("fines: connection reset by peer")
        self.inserted.extend(row_ids)
        return []

    def answers(self):
        return self._up()


def test_rows_wait_out_a_warehouse_outage_instead_of_the_dead_letter():
    sleeps = []
    fn = InsertRowsFn(WarehouseDown)
    fn.setup()
    fn.sleep = sleeps.append
    rows = [WarehouseRow("fines", i, {"fine_id": i}) for i in ("a", "b")]
    assert list(fn.process(rows)) == []
    assert fn.warehouse.inserted == ["a", "b"]
    # 5 attempts, then polls every 2 s until it answers (call 13), then the batch again.
    assert sleeps == [0.5, 1.0, 2.0, 4.0] + [InsertRowsFn.OUTAGE_POLL_S] * 7
