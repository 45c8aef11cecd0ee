"""`python -m pipeline.replay` on the emulators: dead letters in BigQuery sent to Pub/Sub
once each, through a crash and a re-run, and what was sent recorded in `replays`."""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from google.api_core import exceptions as api_exceptions

from local_stack.services import pubsub_clients
from pipeline import replay
from pipeline.provision import PROVISIONED_TABLES
from section_speed.clients.warehouse import Warehouse
from section_speed.domain.schemas import DEAD_LETTER, REPLAYS, insert_id
from tests.helpers import track
from transforms.failures import (
    PARSE_STAGE,
    PARTIAL_STAGE,
    READ_PLATE_STAGE,
    UNMEASURABLE_STAGE,
    Failure,
    to_dead_letter_record,
)

pytestmark = pytest.mark.integration

SECOND_MS, MINUTE_MS = 1000, 60_000
NOT_JSON = b"\xff\xfe not a camera event"


class Crash(BaseException):
    """The command dying (a BaseException: nothing in the command catches it)."""


class CrashingPublisher:
    """The real publisher, until the `crash_at`-th publish: then the process 'dies',
    before the message goes out (`after=False`) or once Pub/Sub has it (`after=True`)."""

    def __init__(self, publisher, crash_at: int, after: bool) -> None:
        self.publisher, self.crash_at, self.after = publisher, crash_at, after
        self.futures = []

    def publish(self, topic, data, **attributes):
        if len(self.futures) + 1 == self.crash_at and not self.after:
            raise Crash("before publishing")
        self.futures.append(self.publisher.publish(topic, data, **attributes))
        if len(self.futures) == self.crash_at:
            for future in self.futures:  # Pub/Sub has every message published so far
                future.result(timeout=30)
            raise Crash("after publishing, before the sent row")
        return self.futures[-1]


def seed(stack, dataset: str, now_ms: int):
    """Dead letters: a fresh partial traversal (3 detections, its row written twice), a
    message that is no JSON, an unmeasurable one too old to judge again, a read_plate one
    (not replayable) and a partial one outside the time range."""
    warehouse = Warehouse(stack.project_id, dataset)
    warehouse.ensure_tables(PROVISIONED_TABLES)
    fresh = track("fresh", 70.0, start_ms=now_ms - 20 * SECOND_MS)
    old = track("old", 70.0, start_ms=now_ms - 60 * MINUTE_MS)[:1]
    failures = [
        Failure(
            PARTIAL_STAGE,
            "left the road",
            Failure.of_detections(PARTIAL_STAGE, "", fresh).payload,
            {"radar_id": "radar-1", "vehicle_id": "fresh"},
            now_ms - 10 * SECOND_MS,
        ),
        Failure(PARSE_STAGE, "not JSON", NOT_JSON, {"event_id": "e-bad"}, now_ms - 9_000),
        Failure(
            UNMEASURABLE_STAGE,
            "one detection",
            Failure.of_detections(UNMEASURABLE_STAGE, "", old).payload,
            {"radar_id": "radar-1", "vehicle_id": "old"},
            now_ms - 8_000,
        ),
        Failure(READ_PLATE_STAGE, "vision down", b"{}", {"fine_id": "f"}, now_ms - 7_000),
        Failure(PARTIAL_STAGE, "before", b"", {}, now_ms - 2 * 60 * MINUTE_MS),
    ]
    rows = [to_dead_letter_record(failure) for failure in failures]
    ids = [insert_id(DEAD_LETTER, row) for row in rows]
    assert warehouse.insert(DEAD_LETTER, rows, ids) == []
    assert warehouse.insert(DEAD_LETTER, rows[:1], ["a-retry"]) == []  # a retried copy
    return warehouse, fresh


def topic(stack, name: str) -> tuple[str, str]:
    stack.create_topics([name], {f"{name}-sub": name})
    return stack.topic_path(name), stack.subscription_path(f"{name}-sub")


def received(stack, subscription: str, expected: int, timeout_s: float = 30.0):
    """Every message on the subscription: pulled until `expected` came, then until a pull
    of a few seconds brings nothing more (a copy would show there)."""
    _publisher, subscriber = pubsub_clients(stack.env["PUBSUB_EMULATOR_HOST"])
    messages, deadline = [], time.monotonic() + timeout_s
    with subscriber:
        while True:
            try:
                answer = subscriber.pull(subscription=subscription, max_messages=100, timeout=3)
            except api_exceptions.DeadlineExceeded:
                answer = None
            got = list(answer.received_messages) if answer else []
            if got:
                subscriber.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in got])
                messages += [(m.message.data, dict(m.message.attributes)) for m in got]
            elif len(messages) >= expected or time.monotonic() > deadline:
                return messages


def replay_window(now_ms: int) -> dict:
    since = datetime.fromtimestamp(now_ms / 1000, UTC) - timedelta(minutes=5)
    return {"since": since, "until": datetime.now(UTC) + timedelta(minutes=1)}


def sent_rows(warehouse: Warehouse) -> list[dict]:
    return warehouse.query(f"SELECT * FROM `{warehouse.table_id(REPLAYS)}`")


@pytest.mark.parametrize("after", [False, True], ids=["before-publish", "after-publish"])
def test_a_crash_and_a_rerun_send_each_dead_letter_once_and_record_it(stack, after):
    stack.apply_env()
    now_ms = int(time.time() * 1000)
    dataset = f"it_replay_{'after' if after else 'before'}"
    warehouse, fresh = seed(stack, dataset, now_ms)
    topic_path, subscription = topic(stack, f"replay-{'after' if after else 'before'}")
    publisher, _ = pubsub_clients(stack.env["PUBSUB_EMULATOR_HOST"])
    window = replay_window(now_ms)
    stages = [PARTIAL_STAGE.name, PARSE_STAGE.name, UNMEASURABLE_STAGE.name]

    # A dry run lists what would go, and sends and records nothing.
    dry = replay.replay(warehouse, None, topic_path, stages, operator="ops-0", dry_run=True,
                        **window)  # fmt: skip
    assert (len(dry.sent), dry.messages, len(dry.expired)) == (2, 4, 1)
    assert sent_rows(warehouse) == []

    # Run 1 dies after the partial traversal's `sending` row: before its first publish, or
    # once Pub/Sub has its first two detections.
    with pytest.raises(Crash):
        crashing = CrashingPublisher(publisher, 2 if after else 1, after)
        replay.replay(warehouse, crashing, topic_path, stages, operator="ops-1", **window)
    # Run 2, the documented command, finishes; run 3 finds nothing left to send.
    argv = ["--project_id", stack.project_id, "--bq_dataset", dataset, "--topic", topic_path,
            "--since", window["since"].isoformat(), "--until", window["until"].isoformat(),
            "--operator", "ops-2", *(f"--stage={s}" for s in stages)]  # fmt: skip
    assert replay.main(argv) == 0
    third = replay.replay(warehouse, publisher, topic_path, stages, operator="ops-3", **window)
    assert (len(third.sent), len(third.already_sent), len(third.expired)) == (0, 2, 1)

    messages = received(stack, subscription, expected=4 + (2 if after else 0))
    by_event = {}
    for data, attributes in messages:
        by_event.setdefault(attributes.get("event_id"), []).append((data, attributes))
    # Each detection of the partial traversal as its camera sent it, and the bad message's
    # own bytes and attributes: nothing else (not the old one, not read_plate's).
    assert sorted(by_event) == sorted([e.event_id for e in fresh] + ["e-bad"])
    for event in fresh:
        data, attributes = by_event[event.event_id][0]
        assert json.loads(data) == event.to_json()
        assert attributes["ts"] == str(event.event_time_ms)
    assert by_event["e-bad"][0][0] == NOT_JSON
    copies = {event_id: len(sent) for event_id, sent in by_event.items()}
    if after:
        # Crashed once Pub/Sub had the 1st and 2nd detections, before the sent row: the
        # re-run sends the whole traversal again, identical, which the pipeline takes once
        # by event_id (docs/deploy.md, Replay dead letters).
        assert copies == {fresh[0].event_id: 2, fresh[1].event_id: 2, fresh[2].event_id: 1,
                          "e-bad": 1}  # fmt: skip
        for sent in by_event.values():
            assert all(copy == sent[0] for copy in sent)
    else:
        assert set(copies.values()) == {1}  # exactly once

    rows = sent_rows(warehouse)
    sent = [row for row in rows if row["state"] == "sent"]
    assert sorted(row["stage"] for row in sent) == sorted([PARTIAL_STAGE.name, PARSE_STAGE.name])
    assert {row["operator"] for row in sent} == {"ops-2"}  # run 1 recorded none sent
    sending = [row for row in rows if row["state"] == "sending"]
    assert sorted(row["operator"] for row in sending) == ["ops-1", "ops-2", "ops-2"]
    assert all(row["topic"] == topic_path for row in rows)
    (partial,) = [row for row in sent if row["stage"] == PARTIAL_STAGE.name]
    assert (partial["messages"], len(partial["message_ids"])) == (3, 3)


def test_a_stage_that_is_not_replayable_is_refused(stack):
    stack.apply_env()
    warehouse = Warehouse(stack.project_id, "it_replay_refused")
    with pytest.raises(ValueError, match="not replayable: enrich_fine/read_plate"):
        replay.replay(warehouse, None, "projects/p/topics/t", [READ_PLATE_STAGE.name],
                      since=datetime.now(UTC), until=datetime.now(UTC), operator="ops")  # fmt: skip
