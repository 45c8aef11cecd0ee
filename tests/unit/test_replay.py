"""The replay command's pure parts: a dead letter's id, and the messages that send it again."""

import json

import pytest

from pipeline.replay import REPLAY_ATTRIBUTE, REPLAY_FORMS, DeadLetter, replay_messages
from section_speed.domain.schemas import dead_letter_record
from tests.helpers import T0_MS, track
from transforms.failures import (
    DEAD_LETTER_STAGES,
    PARSE_STAGE,
    PARTIAL_STAGE,
    TOO_LATE_STAGE,
    Failure,
    to_dead_letter_record,
)


def letter(failure: Failure) -> DeadLetter:
    return DeadLetter(**to_dead_letter_record(failure))


def test_every_stage_marked_replayable_has_a_way_to_be_sent_again():
    """A stage marked replayable in transforms/failures.py and not known to the command
    fails here, so `replayable` stays a promise the command keeps."""
    replayable = {stage.name for stage in DEAD_LETTER_STAGES if stage.replayable}
    assert replayable == REPLAY_FORMS


def test_a_copy_of_a_row_is_the_same_dead_letter_and_any_other_field_is_another():
    failure = Failure(PARSE_STAGE, "not JSON", b"{", {"event_id": "e1"}, T0_MS)
    assert letter(failure).id == letter(failure).id
    for changed in (
        Failure(PARSE_STAGE, "not JSON", b"{", {"event_id": "e1"}, T0_MS + 1),
        Failure(PARSE_STAGE, "not JSON", b"[", {"event_id": "e1"}, T0_MS),
        Failure(PARSE_STAGE, "other", b"{", {"event_id": "e1"}, T0_MS),
        Failure(TOO_LATE_STAGE, "not JSON", b"{", {"event_id": "e1"}, T0_MS),
    ):
        assert letter(changed).id != letter(failure).id


def test_a_message_goes_again_as_it_arrived_bytes_and_attributes():
    raw = b"\xff\x00 not text"
    # One dead letter: a Failure without a time takes the clock's, so build it once.
    dead = letter(Failure(PARSE_STAGE, "bad", raw, {"event_id": "e", "ts": "1"}))
    (sent,) = replay_messages(dead)
    data, attributes = sent
    assert data == raw  # stored base64: in the table, sent as the bytes
    assert attributes == {"event_id": "e", "ts": "1", REPLAY_ATTRIBUTE: dead.id}


def test_a_traversal_goes_again_as_its_detections_each_with_its_camera_attributes():
    events = track("v", 70.0)
    failure = Failure.of_detections(PARTIAL_STAGE, "left", events, radar_id="radar-1")
    messages = replay_messages(letter(failure))
    assert [json.loads(data) for data, _ in messages] == [e.to_json() for e in events]
    assert [a["event_id"] for _, a in messages] == [e.event_id for e in events]
    assert [a["ts"] for _, a in messages] == [str(e.event_time_ms) for e in events]


def test_a_stage_that_is_not_replayable_has_no_messages():
    row = dead_letter_record(
        stage="enrich_fine/read_plate", error="e", payload="{}", attributes=None, timestamp_ms=1
    )
    with pytest.raises(ValueError, match="not replayable"):
        replay_messages(DeadLetter(**row))


def test_the_procedure_subscribes_to_the_dead_letter_topic_before_the_job_starts(tmp_path):
    """Pub/Sub delivers only to subscriptions that exist at publish time: without one the
    dead-letter topic's messages are gone (docs/deploy.md, Replay dead letters)."""
    from tests.unit.test_smoke_script import DEPLOY_DOC, dry_run, parse

    commands = parse(dry_run(tmp_path))
    creates = [
        i
        for i, argv in enumerate(commands)
        if argv[:4] == ["gcloud", "pubsub", "subscriptions", "create"]
        and argv[argv.index("--topic") + 1] == "dead-letter"
    ]
    run = ["gcloud", "dataflow", "flex-template", "run"]
    (launch,) = [i for i, argv in enumerate(commands) if argv[:4] == run]
    assert creates and creates[0] < launch
    assert "python -m pipeline.replay" in DEPLOY_DOC.read_text()
