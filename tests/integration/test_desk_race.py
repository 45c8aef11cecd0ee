"""The desk under concurrency, on a real PostgreSQL server and the Pub/Sub emulator.

Eight officers over two `python -m desk` processes decide 500 fines as fast as they can,
some POSTs sent twice at once and some confirms racing a reject; meanwhile a desk process
is killed with SIGKILL at random moments (and started again), and some fines are
withdrawn or revised through the fines topic. Afterwards:

- every fine revision has at most one decision, and exactly one issuing decision per
  issued revision;
- exactly one notice per issued revision in the table, and on the topic exactly one
  distinct notice_id per issued revision (a re-send after a crash carries the same id);
- none is lost: the queue is empty, every notice row reached the topic;
- every notice of a fine withdrawn or revised later is recalled exactly once.
"""

import json
import os
import random
import re
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import requests
import sqlalchemy as sa

from desk import db
from desk.db import DatabaseConfig
from desk.login_link import mint_for
from desk.workflow import MIN_LOOK_MS
from local_stack.desk_demo import publish_fines, wait_for_queue
from local_stack.processes import ManagedProcess, free_port, wait_until
from local_stack.services import LocalStack, pubsub_clients
from section_speed.clients.evidence_store import EvidenceStore
from section_speed.domain.events import parse_rfc3339_ms
from section_speed.domain.evidence import photo_object_name
from tests.pg import fresh_database
from tests.unit.desk_fakes import fine_row, jpeg

pytestmark = pytest.mark.integration

FINES, OFFICERS, DESKS = 500, 8, 2
WITHDRAWN, REVISED = 30, 20  # fines changed through the topic while officers decide
KILLS = 3
BUCKET = "race-evidence"
NOTICES_TOPIC, NOTICES_SUB = "race-notices", "race-notices-sub"
FINES_TOPIC, FINES_SUB = "race-fines", "race-fines-sub"
SESSION_KEY = "race-test-shared-session-key"  # DESK_SECRET, shared by both desks
PHOTO = jpeg(size=(64, 48))
_FIELD = r'name="{}" value="([^"]*)"'


@dataclass
class Desks:
    """The desk processes, each on its own port; `kill` SIGKILLs one and starts it again."""

    stack: LocalStack
    database_url: str
    work_dir: str
    ports: list[int] = field(default_factory=list)
    processes: list[ManagedProcess] = field(default_factory=list)
    kills: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def argv(self, port: int) -> list[str]:
        return [
            sys.executable, "-m", "desk", "--project", self.stack.project_id,
            "--bucket", BUCKET, "--notices_topic", NOTICES_TOPIC,
            "--database_url", self.database_url, "--fines_subscription", FINES_SUB,
            "--port", str(port), "--claim_seconds", "60",
        ]  # fmt: skip

    def start(self, index: int) -> None:
        port = self.ports[index]
        env = self.stack.child_env({"DESK_SECRET": SESSION_KEY})
        from pathlib import Path

        process = ManagedProcess(f"desk-{index}", self.argv(port), Path(self.work_dir) /
                                 f"desk-{index}.log", env)  # fmt: skip
        if index < len(self.processes):
            self.processes[index] = process
        else:
            self.processes.append(process)
        wait_until(lambda: self.up(port), timeout_s=60, what=f"desk {index} on port {port}")

    def up(self, port: int) -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/queue", timeout=2).status_code == 401
        except requests.RequestException:
            return False

    def kill(self, index: int) -> None:
        with self.lock:
            os.killpg(self.processes[index].pid, signal.SIGKILL)
            self.processes[index].process.wait(10)
            self.kills += 1
            self.start(index)

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture(scope="module")
def race(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    stack.create_topics([NOTICES_TOPIC, FINES_TOPIC], {NOTICES_SUB: NOTICES_TOPIC})
    # A short ack deadline: fines a killed desk had pulled come again within seconds.
    _, subscriber = pubsub_clients(stack.env["PUBSUB_EMULATOR_HOST"])
    with subscriber:
        subscriber.create_subscription(name=stack.subscription_path(FINES_SUB),
                                       topic=stack.topic_path(FINES_TOPIC),
                                       ack_deadline_seconds=10)  # fmt: skip
    photos = EvidenceStore(BUCKET, stack.project_id)
    photos.ensure_bucket()
    rows = [fine_row(f"race-{n}", minute=n) for n in range(FINES)]

    def with_photo(row: dict) -> dict:
        name = photo_object_name(row["radar_id"], parse_rfc3339_ms(row["entry_time"]),
                                 row["fine_id"])  # fmt: skip
        stored = photos.store(name, PHOTO, "image/jpeg")
        return {**row, "image_url": stored.url, "image_sha256": stored.sha256}

    with ThreadPoolExecutor(8) as pool:
        rows = list(pool.map(with_photo, rows))
    database = fresh_database()
    desks = Desks(stack, database.url, str(tmp_path_factory.mktemp("race")))
    desks.ports = [free_port() for _ in range(DESKS)]
    try:
        for index in range(DESKS):
            desks.start(index)
        publish_fines(stack, FINES_TOPIC, [json.dumps(r).encode() for r in rows])
        wait_for_queue(database.url, FINES)
        yield desks, rows, database
    finally:
        desks.stop()


class Officer:
    """One officer: next fine, decide, as fast as the desk answers; another desk when one
    is down. Some decisions are POSTed twice at once, some raced by a reject."""

    def __init__(self, name: str, desks: Desks, home: int, seed: int) -> None:
        self.name, self.desks, self.home = name, desks, home
        self.random = random.Random(seed)
        self.http = requests.Session()
        self.csrf = ""
        self.decided = 0

    def base(self, attempt: int) -> str:
        return f"http://127.0.0.1:{self.desks.ports[(self.home + attempt) % DESKS]}"

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        for attempt in range(200):
            try:
                return self.http.request(method, self.base(attempt) + path, timeout=30,
                                         allow_redirects=False, **kwargs)  # fmt: skip
            except requests.RequestException:
                wait_until(lambda: any(self.desks.up(p) for p in self.desks.ports),
                           timeout_s=60, what="a desk")  # fmt: skip
        raise AssertionError("no desk answered")

    def sign_in(self) -> None:
        token = mint_for(DatabaseConfig(self.desks.database_url))  # each link signs in once
        answer = self.request("POST", "/login", data={"token": token, "reviewer": self.name})
        assert answer.status_code == 303, answer.text
        self.csrf = re.search(_FIELD.format("csrf"), self.request("GET", "/queue").text)[1]

    def post(self, path: str, data: dict) -> requests.Response:
        return self.request("POST", path, data={**data, "csrf": self.csrf})

    def run(self, done: threading.Event, errors: list[BaseException]) -> None:
        try:
            self._run(done)
        except BaseException as error:
            errors.append(error)

    def _run(self, done: threading.Event) -> None:
        self.sign_in()
        location = self.post("/next", {}).headers["location"]
        while not done.is_set():
            if not location.startswith("/fines/"):
                location = self.post("/next", {}).headers["location"]
                if not location.startswith("/fines/"):
                    done.wait(0.05)  # the queue is momentarily empty: ask again
                continue
            location = self.decide(location)

    def decide(self, location: str) -> str:
        page = self.request("GET", location).text
        form = re.search(r'id="decision" data-state="([a-z]+)"', page)
        if form is None:  # not (or no longer) ours to decide
            return "/queue"
        state = form[1]
        data = {
            "revision": re.search(_FIELD.format("revision"), page)[1],
            "claim_id": re.search(_FIELD.format("claim_id"), page)[1],
            "photo_sha256": re.search(_FIELD.format("photo_sha256"), page)[1],
        }
        # The officer looks: the desk refuses a decision sooner than MIN_LOOK_MS after it
        # served the fine (not synchronisation: the rule under test allows nothing faster).
        time.sleep(MIN_LOOK_MS / 1000)
        if state == "withdrawn":
            data["action"] = "acknowledge"
        elif self.random.random() < 0.1:
            data["action"] = "wrong_vehicle"
        else:
            plate = re.search(r'id="reader-plate">([^<]*)<', page)[1]
            data |= {"action": "plate", "plate": plate}
        url = location.split("?")[0] + "/decision"
        roll = self.random.random()
        if roll < 0.15:  # the same POST twice at once (a double Enter, a retry)
            answers = self.at_once([(url, data), (url, data)])
        elif roll < 0.2 and data["action"] == "plate":  # a confirm racing a reject
            answers = self.at_once([(url, data), (url, {**data, "action": "plate_unreadable"})])
        else:
            answers = [self.post(url, data)]
        self.decided += 1
        for answer in answers:
            assert answer.status_code in (303, 409), (answer.status_code, answer.text[:300])
        moved = [a.headers["location"] for a in answers if a.status_code == 303]
        return moved[0] if moved else "/queue"

    def at_once(self, posts: list[tuple[str, dict]]) -> list[requests.Response]:
        with ThreadPoolExecutor(len(posts)) as pool:
            return list(pool.map(lambda p: self.post(*p), posts))


def pull_all(stack: LocalStack, expected: set[str]) -> list[tuple[dict, dict]]:
    """Every message on the notices topic, acknowledged: pulled until every id in
    `expected` (notice and recall ids) came, then once more for any re-send behind them.
    The outbox was drained first, so everything sent is already on the subscription."""
    _, subscriber = pubsub_clients(stack.env["PUBSUB_EMULATOR_HOST"])
    path = stack.subscription_path(NOTICES_SUB)
    messages: list[tuple[dict, dict]] = []

    def pull(timeout: float) -> int:
        response = subscriber.pull(subscription=path, max_messages=500, timeout=timeout)
        received = response.received_messages
        for item in received:
            messages.append((json.loads(item.message.data), dict(item.message.attributes)))
        if received:
            subscriber.acknowledge(subscription=path, ack_ids=[m.ack_id for m in received])
        return len(received)

    def seen() -> set[str]:
        return {a.get("recall_id") or a["notice_id"] for _, a in messages}

    with subscriber:
        try:
            wait_until(lambda: pull(10) >= 0 and expected <= seen(), timeout_s=60,
                       what=f"{len(expected)} notices and recalls on the topic")  # fmt: skip
        except TimeoutError as error:
            missing = sorted(expected - seen())
            raise AssertionError(f"{len(missing)} never on the topic: {missing[:5]}") from error
        while pull(2):
            pass
    return messages


def test_officers_racing_over_killed_desks_issue_each_notice_once(race, stack):
    desks, rows, database = race
    chooser = random.Random(25)
    # A third of the withdrawals among the oldest fines, decided (most with a notice) before
    # any change is published: their notices must be recalled.
    early = chooser.sample(rows[:60], WITHDRAWN // 3)
    later = chooser.sample(rows[60:], WITHDRAWN - len(early) + REVISED)
    withdrawn, revised = early + later[: WITHDRAWN - len(early)], later[WITHDRAWN - len(early) :]
    engine = db.engine(database, role=None)

    def count(sql: str) -> int:
        with engine.connect() as connection:
            return int(connection.execute(sa.text(sql)).scalar())

    done = threading.Event()
    officers = [Officer(f"officer-{n}", desks, n % DESKS, n) for n in range(OFFICERS)]
    errors: list[BaseException] = []
    threads = [threading.Thread(target=o.run, args=(done, errors), daemon=True) for o in officers]
    started = time.monotonic()
    for thread in threads:
        thread.start()

    # Meanwhile: changes arrive through the fines topic, and desks die at random moments.
    killer = random.Random(7)
    changes = [
        {**row, "revision": 1, "is_ticketed": False, "withdrawn_reason": "implausible: race"}
        for row in withdrawn
    ] + [{**row, "revision": 1, "avg_speed_mph": row["avg_speed_mph"] + 1} for row in revised]
    chooser.shuffle(changes)
    for step in range(KILLS):
        at = (step + 1) * FINES // (KILLS + 2)
        wait_until(lambda at=at: count("SELECT count(*) FROM decisions") >= at,
                   timeout_s=60, what=f"{at} decisions")  # fmt: skip
        batch = changes[step * len(changes) // KILLS : (step + 1) * len(changes) // KILLS]
        publish_fines(stack, FINES_TOPIC, [json.dumps(c).encode() for c in batch])
        desks.kill(killer.randrange(DESKS))

    # Every change ingested, then every fine decided: nothing awaits. A killed desk's pulled
    # messages come again after their lease (10 s); a loaded machine may take far longer.
    ingested = "SELECT count(*) FROM fines WHERE revision = 1"
    try:
        wait_until(lambda: count(ingested) == len(changes), timeout_s=120,
                   what="every change ingested")  # fmt: skip
    except TimeoutError as error:
        logs = "\n".join(f"desk-{n}:\n{p.log_tail(15)}" for n, p in enumerate(desks.processes))
        raise AssertionError(
            f"{count(ingested)} of {len(changes)} changes ingested\n{logs}"
        ) from error
    wait_until(lambda: count("SELECT count(*) FROM queue") == 0, timeout_s=90,
               what="an empty queue")  # fmt: skip
    done.set()
    for thread in threads:
        thread.join(30)
    wait_until(lambda: count("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0,
               timeout_s=30, what="the outbox sent")  # fmt: skip
    took = time.monotonic() - started
    with engine.connect() as connection:
        sent = {r[0] for r in connection.execute(sa.text(
            "SELECT notice_id FROM notices UNION SELECT recall_id FROM recalls"))}  # fmt: skip
    messages = pull_all(stack, sent)

    with engine.connect() as connection:

        def query(sql: str) -> list[dict]:
            return [dict(r) for r in connection.execute(sa.text(sql)).mappings()]

        decisions = query("SELECT fine_id, revision, decision FROM decisions")
        notices = query("SELECT notice_id, fine_id, revision FROM notices")
        recalls = query("SELECT recall_id, notice_id, fine_id FROM recalls")
        heads = query("SELECT fine_id, revision, decided_revision, state, live FROM fine_heads")
    engine.dispose()

    assert errors == []  # every answer a 303 or a 409
    assert desks.kills == KILLS and sum(o.decided for o in officers) >= FINES - WITHDRAWN
    # One decision per fine revision; one issuing decision per issued revision.
    per_revision = defaultdict(list)
    for row in decisions:
        per_revision[(row["fine_id"], row["revision"])].append(row["decision"])
    assert all(len(found) == 1 for found in per_revision.values())
    issued = {k for k, (d,) in per_revision.items() if d in ("confirmed", "corrected")}
    assert len(issued) > FINES // 2
    # Exactly one notice per issued revision in the table.
    assert sorted((n["fine_id"], n["revision"]) for n in notices) == sorted(issued)
    # On the topic: every notice, under one distinct notice_id per issued revision.
    on_topic = defaultdict(set)
    for body, attributes in messages:
        if attributes["kind"] == "notice":
            assert attributes["notice_id"] == body["notice_id"]
            on_topic[(body["fine_id"], body["revision"])].add(attributes["notice_id"])
    assert set(on_topic) == issued
    assert all(len(ids) == 1 for ids in on_topic.values())
    assert {i for ids in on_topic.values() for i in ids} == {n["notice_id"] for n in notices}
    # None lost: nothing awaits a decision, every live fine decided at its latest revision.
    assert all(h["state"] is None for h in heads)
    assert all(h["decided_revision"] == h["revision"] for h in heads if h["live"])
    # Every notice of a withdrawn or revised fine recalled exactly once, table and topic.
    changed_ids = {row["fine_id"] for row in changes}
    recallable = {n["notice_id"] for n in notices if n["fine_id"] in changed_ids
                  and n["revision"] == 0}  # fmt: skip
    withdrawn_ids = {row["fine_id"] for row in withdrawn}
    assert any(n["fine_id"] in withdrawn_ids for n in notices if n["revision"] == 0)
    assert sorted(r["notice_id"] for r in recalls) == sorted(recallable)
    recalled_on_topic = defaultdict(set)
    for _body, attributes in messages:
        if attributes["kind"] == "recall":
            recalled_on_topic[attributes["notice_id"]].add(attributes["recall_id"])
    assert set(recalled_on_topic) == recallable
    assert all(len(ids) == 1 for ids in recalled_on_topic.values())
    print(f"race: {len(decisions)} decisions, {len(notices)} notices, {len(recalls)} recalls, "
          f"{len(messages)} messages, {desks.kills} kills in {took:.0f} s")  # fmt: skip
