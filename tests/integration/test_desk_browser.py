"""The verification desk in a real browser: Playwright driving Debian's Chromium against
the desk served by uvicorn on PostgreSQL and the local stack's emulators (BigQuery, Cloud
Storage, Pub/Sub).

Fines are seeded as the pipeline publishes them: measured traversals, `output_record`
records with the cars API's rendered photos stored in the storage emulator, published to
the fines topic the desk pulls. Two officers clear the queue by keyboard only (confirm,
correct, two rejections, a script payload, a missing photo), one fine is revised after its
decision, its notice recalled once and the fine back marked, and a wrong or absent token is
refused. At the end BigQuery's notices table and the topic hold exactly the confirmed and
corrected fine revisions, once each, each verifiable.
"""

import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from desk.app import create_app
from desk.db import DatabaseConfig
from desk.login_link import mint_for
from desk.services import cloud_services
from generator.car_images import render_car_photo
from local_stack.browser import CHROMIUM, CHROMIUM_ARGS, served
from local_stack.desk_demo import desk_config, publish_fines, wait_for_queue
from local_stack.processes import wait_until
from local_stack.services import LocalStack, pubsub_clients
from pipeline.provision import PROVISIONED_TABLES
from section_speed.clients.evidence_store import EvidenceStore
from section_speed.clients.warehouse import Warehouse, as_record
from section_speed.domain import verification
from section_speed.domain.evidence import photo_object_name
from section_speed.domain.plate_formats import plate_for_vehicle
from section_speed.domain.rules import SectionRule
from section_speed.domain.schemas import FINE_COLUMNS, Table, output_record
from section_speed.domain.traversal import Traversal
from section_speed.domain.verification import FINE_REVIEWS, NOTICES, verify_notice
from tests.helpers import ENTRY, EXIT, T0_MS, measured, track
from tests.pg import fresh_database

pytestmark = pytest.mark.integration

DATASET, BUCKET = "it_desk", "desk-evidence"
TOPIC, SUBSCRIPTION = "desk-notices", "desk-notices-sub"
FINES_TOPIC, FINES_SUBSCRIPTION = "desk-fines", "desk-fines-sub"
TOKEN = "browser-test-token"
EVIL = "<script>document.title='owned'</script>"
RULE = SectionRule(entry=ENTRY, exit=EXIT)
TIMEOUT_MS = 15_000
# The reader's plate region, when the fines table has the column (the photo is 640x480).
HAS_PLATE_BOX = "plate_box" in {column.name for column in FINE_COLUMNS}


@dataclass(frozen=True)
class Seeded:
    confirm: dict  # the reader read it right: Enter
    correct: dict  # the reader's plate is one character off: typed
    reject: dict  # wrong vehicle: 2
    evil: dict  # a script payload in the vehicle id: 4 with a note
    missing: dict  # its photo is not in the bucket: 1
    revise: dict  # confirmed, then revised: back to the queue, marked


def traversal(vehicle: str, minute: int, radar: str = "radar-1") -> Traversal:
    found = measured(track(vehicle, 80.0, start_ms=T0_MS + minute * 60_000, radar_id=radar), RULE)
    assert found.is_speeding, vehicle
    return found


def write_fines(stack: LocalStack, rows: list[dict]) -> None:
    """The records on the fines topic, as the streaming pipeline publishes them."""
    publish_fines(stack, FINES_TOPIC, [json.dumps(row).encode("utf-8") for row in rows])


def warehouse_rows(warehouse: Warehouse, table: Table) -> list[dict]:
    return warehouse.query(f"SELECT * FROM `{warehouse.table_id(table)}`")


def seed(stack: LocalStack) -> Seeded:
    warehouse = Warehouse(stack.project_id, DATASET)
    warehouse.ensure_tables(PROVISIONED_TABLES)  # what python -m pipeline.provision creates
    store = EvidenceStore(BUCKET, stack.project_id)
    store.ensure_bucket()

    def fine(
        vehicle: str, minute: int, radar: str = "radar-1", photo: bool = True, **overrides
    ) -> dict:
        found = traversal(vehicle, minute, radar)
        name = photo_object_name(found.radar_id, found.entry_time_ms, found.traversal_id)
        if photo:
            stored = store.store(name, render_car_photo(vehicle), "image/jpeg")
            url, sha256 = stored.url, stored.sha256
        else:  # the row names its photo, which the bucket does not hold
            url, sha256 = f"gs://{BUCKET}/{name}", None
        evidence = {
            "license_plate": plate_for_vehicle(vehicle),
            "plate_confidence": 0.97,
            "plate_reader": "embedded-rapidocr",
            "image_url": url,
            "image_sha256": sha256,
            **overrides,
        }
        return output_record(found, found.exit_time_ms + 2_000, evidence)

    wrong = plate_for_vehicle("veh-correct")
    wrong = wrong[:-1] + ("7" if wrong[-1] != "7" else "8")
    seeded = Seeded(
        confirm=fine(
            "veh-confirm", 1, **({"plate_box": "200,300,440,360"} if HAS_PLATE_BOX else {})
        ),
        correct=fine("veh-correct", 2, "radar-2", license_plate=wrong, plate_confidence=0.83),
        reject=fine("veh-reject", 3),
        evil=fine(EVIL, 4),
        missing=fine("veh-missing", 5, photo=False),
        revise=fine("veh-revise", 6),
    )
    write_fines(stack, list(dataclasses.asdict(seeded).values()))
    return seeded


@pytest.fixture(scope="module")
def desk(stack: LocalStack) -> Iterator[tuple[str, Seeded]]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/bootstrap.sh)")
    stack.create_topics(
        [TOPIC, FINES_TOPIC], {SUBSCRIPTION: TOPIC, FINES_SUBSCRIPTION: FINES_TOPIC}
    )
    seeded = seed(stack)
    database = fresh_database()
    config = desk_config(stack, database.url, DATASET, BUCKET, TOPIC, FINES_SUBSCRIPTION,
                         claim_seconds=300, token=TOKEN)  # fmt: skip
    app = create_app(config, cloud_services(stack.project_id, DATASET, BUCKET, TOPIC))
    with served(app) as base:
        DATABASES[base] = database
        wait_for_queue(database.url, len(dataclasses.asdict(seeded)))
        yield base, seeded


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


DATABASES: dict[str, DatabaseConfig] = {}  # each desk's, to mint its login links


def sign_in(browser, base: str, name: str):
    """A new context signed in as `name` with a login link of its own (each signs in once)."""
    from playwright.sync_api import expect

    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{base}/login?token={mint_for(DATABASES[base])}")
    page.locator("#name").fill(name)
    page.keyboard.press("Enter")
    expect(page.locator("#reviewer")).to_have_text(name)
    keys_ready(page)
    return context, page


def on_fine(page, fine: dict) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#fine")).to_have_attribute("data-fine-id", fine["fine_id"])
    keys_ready(page)


def keys_ready(page) -> None:
    """The page's keyboard script has run (keys pressed before it would be lost)."""
    from playwright.sync_api import expect

    expect(page.locator("html")).to_have_attribute("data-keys", "ready")


def test_officers_clear_the_queue_by_keyboard(desk, browser, stack):
    from playwright.sync_api import expect

    base, fines = desk
    alice_context, alice = sign_in(browser, base, "alice")
    bob_context, bob = sign_in(browser, base, "bob")

    # Both start at once: Alice gets the oldest fine, Bob the next one; Alice's is taken.
    alice.keyboard.press("Enter")
    on_fine(alice, fines.confirm)
    bob.keyboard.press("Enter")
    on_fine(bob, fines.correct)
    # Bob looks at Alice's fine in another tab: leaving his own fine's page would release
    # his claim on it (docs/desk.md, Claims).
    peek = bob_context.new_page()
    peek.goto(f"{base}/fines/{fines.confirm['fine_id']}")
    expect(peek.locator("#taken")).to_contain_text("Taken by alice")
    expect(peek.locator("#decision")).to_have_count(0)
    keys_ready(peek)
    peek.close()

    # Alice: the photo shows, the plate is right: Enter confirms. Bob's fine is skipped.
    expect(alice.locator("#reader-plate")).to_have_text(fines.confirm["license_plate"])
    alice.wait_for_function("() => document.getElementById('photo').naturalWidth === 640")
    if HAS_PLATE_BOX:  # enlarged on the server to 480 pixels wide
        alice.wait_for_function("() => document.getElementById('plate-crop').naturalWidth === 480")
    alice.keyboard.press("Enter")
    on_fine(alice, fines.reject)

    # Bob narrows to his section, then types the true plate over the reader's: a correction.
    bob.goto(f"{base}/fines/{fines.correct['fine_id']}?radar_id=radar-2")
    keys_ready(bob)
    true_plate = plate_for_vehicle("veh-correct")
    bob.keyboard.type(true_plate.lower())
    expect(bob.locator("#plate")).to_have_value(true_plate.upper()[0] + true_plate.lower()[1:])
    bob.keyboard.press("Enter")
    expect(bob.locator("#count")).to_have_text("0 fines awaiting")  # nothing left on radar-2

    # Alice: 2 rejects (wrong vehicle); the script payload shows as text; 4 needs a note.
    alice.keyboard.press("2")
    on_fine(alice, fines.evil)
    expect(alice.locator("#vehicle")).to_have_text(EVIL)
    assert alice.title() != "owned"
    alice.keyboard.press("4")
    expect(alice.locator("#note")).to_be_focused()
    alice.keyboard.type("plate covered by a bike rack")
    alice.keyboard.press("Enter")

    # A missing photo is said, and 1 (plate unreadable) rejects the fine.
    on_fine(alice, fines.missing)
    expect(alice.locator("#photo-missing")).to_have_text("photo missing")
    expect(alice.locator("#photo")).to_have_count(0)
    alice.keyboard.press("1")
    on_fine(alice, fines.revise)
    alice.keyboard.press("Enter")
    expect(alice.locator("#count")).to_have_text("0 fines awaiting")

    # The last fine is revised after its decision: it comes back marked, and is decided again.
    revised = {**fines.revise, "revision": 1, "avg_speed_mph": fines.revise["avg_speed_mph"] + 3}
    write_fines(stack, [revised])

    def back_marked() -> bool:
        alice.reload()
        return alice.locator("#queue .state").all_text_contents() == ["changed since your decision"]

    wait_until(back_marked, timeout_s=30, what="the revised fine back in the queue")
    keys_ready(alice)
    alice.keyboard.press("Enter")
    on_fine(alice, fines.revise)
    expect(alice.locator("#state")).to_contain_text("Changed since your decision")
    expect(alice.locator("#history tbody tr")).to_have_count(2)
    alice.keyboard.press("Enter")
    expect(alice.locator("#count")).to_have_text("0 fines awaiting")
    alice_context.close()
    bob_context.close()

    # The audit trail, and exactly one notice per confirmed or corrected fine revision.
    warehouse = Warehouse(stack.project_id, DATASET)
    # The outbox exports decisions and notices to BigQuery just after they commit.
    wait_until(lambda: len(warehouse_rows(warehouse, FINE_REVIEWS)) == 7
               and len(warehouse_rows(warehouse, NOTICES)) == 4, timeout_s=30,
               what="7 decisions and 4 notices in BigQuery")  # fmt: skip
    reviews = {(r["fine_id"], r["revision"]): r for r in warehouse_rows(warehouse, FINE_REVIEWS)}
    assert {key: (r["decision"], r["reason"], r["reviewer"]) for key, r in reviews.items()} == {
        (fines.confirm["fine_id"], 0): ("confirmed", None, "alice"),
        (fines.correct["fine_id"], 0): ("corrected", None, "bob"),
        (fines.reject["fine_id"], 0): ("rejected", "wrong_vehicle", "alice"),
        (fines.evil["fine_id"], 0): ("rejected", "other", "alice"),
        (fines.missing["fine_id"], 0): ("rejected", "plate_unreadable", "alice"),
        (fines.revise["fine_id"], 0): ("confirmed", None, "alice"),
        (fines.revise["fine_id"], 1): ("confirmed", None, "alice"),
    }
    assert reviews[(fines.correct["fine_id"], 0)]["license_plate"] == true_plate
    assert reviews[(fines.evil["fine_id"], 0)]["note"] == "plate covered by a bike rack"
    issuing = {k for k, r in reviews.items() if r["decision"] in ("confirmed", "corrected")}

    rows = [as_record(NOTICES, row) for row in warehouse_rows(warehouse, NOTICES)]
    assert sorted((r["fine_id"], r["revision"]) for r in rows) == sorted(issuing)
    assert all(verify_notice(row) for row in rows)
    by_fine = {(r["fine_id"], r["revision"]): r for r in rows}
    corrected = by_fine[(fines.correct["fine_id"], 0)]
    assert (corrected["license_plate"], corrected["reader_plate"]) == (
        true_plate,
        fines.correct["license_plate"],
    )
    assert corrected["image_sha256"] == fines.correct["image_sha256"]

    messages, recalls = pull_notices(stack, len(issuing), recalls=1)
    assert sorted(m["notice_id"] for m in messages) == sorted(r["notice_id"] for r in rows)
    for message in messages:
        assert (
            verify_notice(message) and message == by_fine[(message["fine_id"], message["revision"])]
        )
    # The first notice of the revised fine is recalled, once, naming the new revision.
    (recall,) = recalls
    first = verification.notice_id(fines.revise["fine_id"], 0)
    assert (recall["notice_id"], recall["new_revision"], recall["reason"]) == (first, 1, "revised")


def pull_notices(
    stack: LocalStack, expected: int, subscription: str = SUBSCRIPTION, recalls: int = 0
) -> tuple[list[dict], list[dict]]:
    """Every message on the notices topic, acknowledged: the notices, each notice_id
    exactly once, and the recalls, each recall_id exactly once."""
    _, subscriber = pubsub_clients(stack.env["PUBSUB_EMULATOR_HOST"])
    path = stack.subscription_path(subscription)
    seen: dict[str, list[tuple[str, dict]]] = {"notice": [], "recall": []}

    def pulled_all() -> bool:
        response = subscriber.pull(subscription=path, max_messages=50, timeout=5)
        for received in response.received_messages:
            body, attributes = json.loads(received.message.data), received.message.attributes
            kind = attributes["kind"]
            assert attributes["notice_id"] == body["notice_id"]
            key = body["notice_id"] if kind == "notice" else attributes["recall_id"]
            seen[kind].append((key, body))
        if response.received_messages:
            subscriber.acknowledge(
                subscription=path, ack_ids=[m.ack_id for m in response.received_messages]
            )
        return len(seen["notice"]) >= expected and len(seen["recall"]) >= recalls

    with subscriber:
        wait_until(pulled_all, timeout_s=30, what=f"{expected} notices on the topic")
    for kind, count in (("notice", expected), ("recall", recalls)):
        keys = [key for key, _ in seen[kind]]
        assert len(keys) == len(set(keys)) == count, (kind, keys)  # each once
    return [body for _, body in seen["notice"]], [body for _, body in seen["recall"]]


def test_a_wrong_or_absent_token_gets_no_desk(desk, browser):
    from playwright.sync_api import expect

    base, _ = desk
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    for url in (f"{base}/queue", f"{base}/login", f"{base}/login?token=wrong"):
        response = page.goto(url)
        assert response is not None and response.status == 401, url
        expect(page.locator("#message")).to_contain_text("link the desk printed")
    assert context.cookies() == []
    context.close()
