"""`python -m pipeline.replay`: send dead letters through the pipeline again, each once.

    python -m pipeline.replay --project_id PROJECT --bq_dataset DATASET \\
        --topic camera-events --stage partial --since 2026-11-23T10:00:00Z \\
        [--until 2026-11-23T11:00:00Z] [--operator NAME] [--dry_run]

Reads the dead letters of the replayable stages (`replayable` in transforms/failures.py)
from the `dead_letter` table, with the stages and the time range given, and publishes each
one's input to `--topic` as the camera published it: a message's own bytes and attributes
(`parse`, `too_late`), or one message per detection, with its `event_id` and `ts`
attributes, for a traversal (`unmeasurable`, `implausible`, `partial`). Every message also
carries `replay_of`, the dead letter's id. What was sent, by whom, when and to where is
written to the `replays` table (docs/deploy.md, Replay dead letters).

Each dead letter is sent once. Its id is a digest of the whole dead_letter row, so a copy
of the row (a retried insert) is the same dead letter. Before publishing, the command
writes a `sending` row for it to `replays`; after Pub/Sub has accepted every message, a
`sent` row. A run skips every dead letter with a `sent` row. A run that crashed between the
two rows leaves a dead letter `sending` only: the next run sends it again (what Pub/Sub got
before the crash cannot be asked), and the copies carry the same `event_id`s, which the
pipeline takes as the detections' identity: a detection it already has adds nothing to its
traversal, and the traversal's `fine_id`, revision and insert ids are the same, so the
outcome is as if it was sent once (docs/deploy.md states the argument). So at most the
dead letters in flight at a crash, one at a time here, are ever published twice.

A detection is judged against the pipeline's lateness rule when it is read again: one
published more than the session gap plus the allowed lateness after its event time is
dead-lettered `too_late` at once. Such dead letters are not sent; the command lists them
as expired (docs/deploy.md says how to judge them again: a bounded run over files).
"""

import argparse
import base64
import getpass
import hashlib
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from google.cloud import bigquery

from section_speed.clients.warehouse import Warehouse
from section_speed.domain import defaults
from section_speed.domain.events import (
    EVENT_ID_ATTRIBUTE,
    TIMESTAMP_ATTRIBUTE,
    format_rfc3339_ms,
    parse_rfc3339_ms,
)
from section_speed.domain.lateness import PUBLISH_TIME, LatenessRule
from section_speed.domain.schemas import DEAD_LETTER, REPLAYS
from transforms.failures import (
    IMPLAUSIBLE_STAGE,
    PARSE_STAGE,
    PARTIAL_STAGE,
    TOO_LATE_STAGE,
    UNMEASURABLE_STAGE,
)

_log = logging.getLogger(__name__)

REPLAY_ATTRIBUTE = "replay_of"  # the dead letter's id, on every message sent for it
SENDING, SENT = "sending", "sent"
# The pipeline's defaults; a job run with others is replayed with its own (command line).
DEFAULT_LATENESS = LatenessRule(
    defaults.SESSION_GAP_SECONDS, defaults.ALLOWED_LATENESS_SECONDS, PUBLISH_TIME
)
# How each replayable stage's payload becomes messages: as it arrived, or a traversal's
# detections (one camera-event JSON per line). tests/unit/test_replay.py checks that every
# stage marked replayable has a form here.
MESSAGE_STAGES = frozenset({PARSE_STAGE.name, TOO_LATE_STAGE.name})
DETECTION_STAGES = frozenset({UNMEASURABLE_STAGE.name, IMPLAUSIBLE_STAGE.name, PARTIAL_STAGE.name})
REPLAY_FORMS = MESSAGE_STAGES | DETECTION_STAGES

Message = tuple[bytes, dict[str, str]]


@dataclass(frozen=True)
class DeadLetter:
    """One dead_letter row, as written (timestamp in RFC 3339 milliseconds)."""

    timestamp: str
    stage: str
    error: str
    payload: str | None
    attributes: str | None  # JSON object, as stored
    stacktrace: str | None = None  # where it failed; not part of what is sent again

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "DeadLetter":
        moment = row["timestamp"]
        if isinstance(moment, datetime):
            moment = format_rfc3339_ms(round(moment.timestamp() * 1000))
        return cls(
            moment,
            row["stage"],
            row["error"],
            row["payload"],
            row["attributes"],
            row.get("stacktrace"),
        )

    @property
    def id(self) -> str:
        """Digest of the row's five fields that say what failed and with which input: the
        same for a copy of the row."""
        canonical = json.dumps(
            [self.timestamp, self.stage, self.error, self.payload, self.attributes],
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def timestamp_ms(self) -> int:
        return parse_rfc3339_ms(self.timestamp)

    def payload_bytes(self) -> bytes:
        """The payload as it arrived (dead_letter_record marks non-UTF-8 bytes base64:)."""
        text = self.payload or ""
        if text.startswith("base64:"):
            return base64.b64decode(text.removeprefix("base64:"))
        return text.encode("utf-8")


def replay_messages(letter: DeadLetter) -> list[Message]:
    """The messages that send `letter`'s input again, each marked with its id."""
    mark = {REPLAY_ATTRIBUTE: letter.id}
    if letter.stage in MESSAGE_STAGES:
        attributes = json.loads(letter.attributes) if letter.attributes else {}
        return [(letter.payload_bytes(), {**attributes, **mark})]
    if letter.stage in DETECTION_STAGES:
        messages = []
        for line in letter.payload_bytes().decode("utf-8").splitlines():
            if not line.strip():
                continue
            body = json.loads(line)
            attributes = dict(mark)
            if "event_id" in body:  # a timed detection: the attributes its camera sent
                attributes[EVENT_ID_ATTRIBUTE] = str(body["event_id"])
                attributes[TIMESTAMP_ATTRIBUTE] = str(parse_rfc3339_ms(body["timestamp"]))
            messages.append((line.encode("utf-8"), attributes))
        return messages
    raise ValueError(f"stage {letter.stage!r} is not replayable")


def event_times_ms(messages: Sequence[Message]) -> list[int]:
    """Event times of the messages that carry one (a `ts` attribute)."""
    return [int(a[TIMESTAMP_ATTRIBUTE]) for _data, a in messages if TIMESTAMP_ATTRIBUTE in a]


class Publisher(Protocol):
    def publish(self, topic: str, data: bytes, **attributes: str) -> Any: ...


@dataclass
class ReplayReport:
    """What one run did: dead letters sent, skipped (sent before) and expired."""

    replay_id: str
    dry_run: bool = False  # then `sent` lists what a run would send
    sent: list[str] = field(default_factory=list)  # dead letter ids
    already_sent: list[str] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)
    messages: int = 0

    def summary(self) -> str:
        verb = "would be sent (dry run)" if self.dry_run else "sent"
        return (
            f"replay {self.replay_id}: {len(self.sent)} dead letters {verb} "
            f"({self.messages} messages), {len(self.already_sent)} sent before, "
            f"{len(self.expired)} expired (too late for the pipeline: judge them in a "
            "bounded run, docs/deploy.md)"
        )


def select_dead_letters(
    warehouse: Warehouse, stages: Sequence[str], since: datetime, until: datetime
) -> list[DeadLetter]:
    """The dead letters of `stages` with since <= timestamp < until, each row once."""
    sql = (
        f"SELECT timestamp, stage, error, payload, attributes "
        f"FROM `{warehouse.table_id(DEAD_LETTER)}` "
        "WHERE stage IN UNNEST(@stages) AND timestamp >= @since AND timestamp < @until "
        "ORDER BY timestamp"
    )
    config = bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ArrayQueryParameter("stages", "STRING", list(stages)),
            bigquery.ScalarQueryParameter("since", "TIMESTAMP", since),
            bigquery.ScalarQueryParameter("until", "TIMESTAMP", until),
        ]
    )
    rows = warehouse.client.query(sql, job_config=config).result()
    letters = {}
    for row in rows:
        letter = DeadLetter.from_row(dict(row.items()))
        letters.setdefault(letter.id, letter)  # a retried insert's copy: the same one
    return list(letters.values())


def replay_states(warehouse: Warehouse, ids: Iterable[str]) -> dict[str, set[str]]:
    """The states recorded in `replays` for each of these dead letter ids."""
    wanted = sorted(set(ids))
    if not wanted:
        return {}
    sql = (
        f"SELECT dead_letter_id, state FROM `{warehouse.table_id(REPLAYS)}` "
        "WHERE dead_letter_id IN UNNEST(@ids)"
    )
    config = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ArrayQueryParameter("ids", "STRING", wanted)]
    )
    states: dict[str, set[str]] = {}
    for row in warehouse.client.query(sql, job_config=config).result():
        states.setdefault(row["dead_letter_id"], set()).add(row["state"])
    return states


def _record(
    warehouse: Warehouse,
    letter: DeadLetter,
    replay_id: str,
    state: str,
    topic: str,
    messages: int,
    operator: str,
    message_ids: Sequence[str] = (),
) -> None:
    row = {
        "dead_letter_id": letter.id,
        "replay_id": replay_id,
        "state": state,
        "stage": letter.stage,
        "dead_letter_time": letter.timestamp,
        "topic": topic,
        "messages": messages,
        "message_ids": list(message_ids),
        "operator": operator,
        "replayed_at": format_rfc3339_ms(int(time.time() * 1000)),
    }
    # One insert id per dead letter, run and state: a retried insert is dropped by
    # BigQuery's best-effort deduplication, and a copy that lands anyway changes nothing
    # (states are read as a set).
    rejected = warehouse.insert(REPLAYS, [row], [f"{letter.id}:{replay_id}:{state}"])
    if rejected:
        raise RuntimeError(f"replays refused the row of {letter.id}: {rejected[0].reason}")


def replay(
    warehouse: Warehouse,
    publisher: Publisher,
    topic: str,
    stages: Sequence[str],
    since: datetime,
    until: datetime,
    operator: str,
    lateness: LatenessRule | None = DEFAULT_LATENESS,
    dry_run: bool = False,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    publish_timeout_s: float = 60.0,
) -> ReplayReport:
    """Send every selected dead letter not sent before; see the module docstring."""
    refused = [s for s in stages if s not in REPLAY_FORMS]
    if refused:
        raise ValueError(
            f"not replayable: {', '.join(refused)}; replayable stages: "
            f"{', '.join(sorted(REPLAY_FORMS))} (docs/reference.md, dead-letter stages)"
        )
    report = ReplayReport(replay_id=uuid.uuid4().hex, dry_run=dry_run)
    letters = select_dead_letters(warehouse, stages, since, until)
    states = replay_states(warehouse, (letter.id for letter in letters))
    for letter in letters:
        if SENT in states.get(letter.id, set()):
            report.already_sent.append(letter.id)
            continue
        messages = replay_messages(letter)
        times = event_times_ms(messages)
        if lateness and times and lateness.lateness_reason(min(times), now_ms(), now_ms()):
            report.expired.append(letter.id)
            continue
        if dry_run:
            report.sent.append(letter.id)
            report.messages += len(messages)
            continue
        _record(warehouse, letter, report.replay_id, SENDING, topic, len(messages), operator)
        futures = [publisher.publish(topic, data, **attrs) for data, attrs in messages]
        message_ids = [future.result(timeout=publish_timeout_s) for future in futures]
        _record(
            warehouse, letter, report.replay_id, SENT, topic, len(messages), operator, message_ids
        )
        report.sent.append(letter.id)
        report.messages += len(messages)
    return report


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a time: {text}") from error
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the time zone, e.g. {text}Z")
    return moment.astimezone(UTC)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.replay", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--project_id", default=defaults.PROJECT_ID, help="%(default)s")
    parser.add_argument("--bq_dataset", required=True, help="the pipeline's dataset")
    parser.add_argument(
        "--topic", required=True, help="where to send them: the input topic (short name or path)"
    )
    parser.add_argument(
        "--stage",
        action="append",
        choices=sorted(REPLAY_FORMS),
        required=True,
        help="a replayable stage; give it again for more",
    )
    parser.add_argument("--since", type=_moment, required=True, help="from (RFC 3339, zone)")
    parser.add_argument("--until", type=_moment, help="up to, excluded (default: now)")
    parser.add_argument("--operator", default=None, help="who replays (default: login name)")
    parser.add_argument(
        "--session_gap_seconds", type=int, default=defaults.SESSION_GAP_SECONDS,
        help="the pipeline's, to leave out what it would take as too late (%(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--allowed_lateness_seconds", type=int, default=defaults.ALLOWED_LATENESS_SECONDS,
        help="the pipeline's (%(default)s)",
    )  # fmt: skip
    parser.add_argument("--dry_run", action="store_true", help="list, send nothing")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    from google.cloud import pubsub_v1  # finds PUBSUB_EMULATOR_HOST by itself

    topic = args.topic if "/" in args.topic else f"projects/{args.project_id}/topics/{args.topic}"
    warehouse = Warehouse(args.project_id, args.bq_dataset)
    publisher = pubsub_v1.PublisherClient()
    try:
        report = replay(
            warehouse,
            publisher,
            topic,
            args.stage,
            args.since,
            args.until or datetime.now(UTC),
            args.operator or getpass.getuser(),
            LatenessRule(args.session_gap_seconds, args.allowed_lateness_seconds, PUBLISH_TIME),
            dry_run=args.dry_run,
        )
    finally:
        publisher.transport.close()
        warehouse.close()
    print(report.summary())
    for letter_id in report.expired:
        print(f"expired: {letter_id}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
