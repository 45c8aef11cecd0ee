"""The warehouse client's failure classification and the sink's retry/split logic.

BigQuery answers bad rows per row (insertErrors); the emulator refuses the whole batch.
A fake client stands in for the first, which the emulator cannot show; an outage is a
fake warehouse that does not answer, with a fake clock that its sleeps advance.
"""

import http.server
import json
import threading

import pytest
from google.api_core import exceptions as api_exceptions
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from section_speed.clients.warehouse import (
    BatchRefused,
    RejectedRow,
    TransientWarehouseError,
    Warehouse,
    WarehouseNotGranted,
)
from section_speed.domain.schemas import FINES
from transforms.warehouse import InsertRowsFn, WarehouseRow, WarehouseUnavailable
from transforms.worker_clients import ClientHandler


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
    fn = InsertRowsFn(ClientHandler(FakeWarehouse))  # one client per process
    fn.setup()
    fn.sleep = sleeps.append
    rows = [WarehouseRow("fines", i, {"fine_id": i}) for i in ("a", "bad", "c")]
    failures = list(fn.process(rows))
    assert fn.warehouse.inserted == ["a", "c"]
    (failure,) = [tagged.value for tagged in failures]
    assert failure.stage.name == "bigquery" and failure.attributes["insert_id"] == "bad"
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


class Clock:
    """time.monotonic and time.sleep for the sink: sleeping advances the clock.

    Refuses to sleep past `cap` seconds in all, so code that would hold its thread for
    minutes fails at once rather than spinning on the real clock.
    """

    def __init__(self, cap: float = 120.0) -> None:
        self.now, self.cap, self.sleeps = 0.0, cap, []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        assert self.now <= self.cap, f"slept {self.now:.0f} s inside process"


def sink(warehouse: type, clock: Clock) -> InsertRowsFn:
    fn = InsertRowsFn(ClientHandler(warehouse))
    fn.setup()
    fn.sleep, fn.monotonic = clock.sleep, clock.monotonic
    return fn


def test_a_short_outage_is_waited_out_instead_of_the_dead_letter():
    clock = Clock()
    fn = sink(WarehouseDown, clock)
    rows = [WarehouseRow("fines", i, {"fine_id": i}) for i in ("a", "b")]
    assert list(fn.process(rows)) == []
    assert fn.warehouse.inserted == ["a", "b"]
    # 5 attempts, then polls every 2 s until it answers (call 13), then the batch again.
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0] + [InsertRowsFn.OUTAGE_POLL_S] * 7


class WarehouseGone(WarehouseDown):
    """Does not answer until `back` is set; then takes every row."""

    back = False

    def _up(self):
        self.calls += 1
        return self.back


def test_a_long_outage_fails_the_bundle_within_a_bounded_wait_and_a_retry_writes_the_rows():
    """Holding a harness thread asleep for the length of an outage starves the worker:
    after a bounded wait the bundle fails, for the runner to retry (Dataflow retries a
    streaming bundle until it succeeds); no row is dead-lettered for an outage."""
    clock = Clock()
    fn = sink(WarehouseGone, clock)
    rows = [WarehouseRow("fines", i, {"fine_id": i}) for i in ("a", "b")]
    with pytest.raises(WarehouseUnavailable, match=r"has not answered for 30 s .*2 rows are kept"):
        list(fn.process(rows))
    backoff = [0.5, 1.0, 2.0, 4.0]
    assert clock.sleeps[:4] == backoff
    assert set(clock.sleeps[4:]) == {InsertRowsFn.OUTAGE_POLL_S}
    assert max(clock.sleeps) <= 4.0
    assert sum(backoff) + InsertRowsFn.OUTAGE_WAIT_S <= clock.now <= sum(backoff) + 32.0
    assert fn.warehouse.inserted == []
    # The runner retries the bundle once the warehouse is back: every row, no failure.
    fn.warehouse.back = True
    assert list(fn.process(rows)) == []
    assert fn.warehouse.inserted == ["a", "b"]


def test_an_outage_met_after_a_split_is_no_reason_to_dead_letter_a_row():
    """The warehouse refuses a batch while up, then goes silent while its rows go one by one."""

    class RefusesThenGone(FakeWarehouse):
        gone = False

        def insert(self, table, rows, row_ids):
            if len(rows) == 1 and row_ids != ["a"]:
                self.gone = True
            if self.gone:
                raise TransientWarehouseError("fines: connection reset by peer")
            return super().insert(table, rows, row_ids)

        def answers(self):
            return not self.gone

    clock = Clock()
    fn = sink(RefusesThenGone, clock)
    rows = [WarehouseRow("fines", i, {"fine_id": i}) for i in ("a", "bad", "c")]
    with pytest.raises(WarehouseUnavailable):
        list(fn.process(rows))
    assert fn.warehouse.inserted == ["a"]


# --- The warehouse refusing the workers themselves (docs/warehouse.md, An outage) -------


# BigQuery's answers to an account without the grant, or for a table that is not there.
BIGQUERY_REFUSALS: dict[int, tuple[str, str, str]] = {
    403: (
        "PERMISSION_DENIED",
        "accessDenied",
        "Access Denied: Table p:d.fines: Permission bigquery.tables.updateData denied "
        "on table p:d.fines (or it may not exist).",
    ),
    404: ("NOT_FOUND", "notFound", "Not found: Table p:d.fines"),
}


class RefusingBigQuery:
    """A loopback HTTP server speaking BigQuery's REST API as BigQuery does to a service
    account without the grant: every call answered `status` with BigQuery's error body.
    Records the requests, so a test sees what the real client library sent."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.requests: list[tuple[str, str]] = []
        refusing = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _refuse(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                refusing.requests.append((self.command, self.path.partition("?")[0]))
                state, reason, message = BIGQUERY_REFUSALS[refusing.status]
                body = json.dumps({
                    "error": {
                        "code": refusing.status, "message": message, "status": state,
                        "errors": [{"message": message, "domain": "global", "reason": reason}],
                    }
                }).encode()  # fmt: skip
                self.send_response(refusing.status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _refuse

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "RefusingBigQuery":
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def client(self) -> bigquery.Client:
        """The real client library, pointed at this server."""
        endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        return bigquery.Client(
            project="p",
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=endpoint),
        )


@pytest.mark.parametrize("status", [403, 404])
def test_a_warehouse_refusing_the_workers_is_an_outage_the_rows_are_kept(status, caplog):
    with RefusingBigQuery(status) as bigquery_server:
        client = bigquery_server.client()
        fn = InsertRowsFn(ClientHandler(lambda: Warehouse("p", "d", client=client)))
        fn.setup()
        clock = Clock()
        fn.sleep, fn.monotonic = clock.sleep, clock.monotonic
        rows = [WarehouseRow("fines", i, {"fine_id": i}) for i in ("a", "b", "c")]
        for _ in range(2):  # the runner retries the bundle: the same rows again
            with pytest.raises(WarehouseNotGranted, match=f"{status} .*3 rows are kept") as raised:
                list(fn.process(rows))  # nothing dead-lettered: no row is at fault
        fn.teardown()
        client.close()
    inserts = [path for method, path in bigquery_server.requests if path.endswith("/insertAll")]
    assert inserts == ["/bigquery/v2/projects/p/datasets/d/tables/fines/insertAll"] * 2
    assert clock.sleeps == []  # no retry can help: raised at once
    told = [r for r in caplog.records if "roles/bigquery.dataEditor" in r.getMessage()]
    assert len(told) == 1, "what to grant is logged once per process"
    assert "python -m pipeline.provision" in str(raised.value)


def test_an_unauthenticated_worker_is_not_granted_either():
    # A 401 (over the wire, google-auth refreshes the token and asks again first).
    refused = warehouse(api_exceptions.Unauthorized("Request had invalid credentials"))
    with pytest.raises(WarehouseNotGranted, match="401 Request had invalid credentials"):
        refused.insert(FINES, [{}, {}], ["a", "b"])
