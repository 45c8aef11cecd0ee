"""`make desk`'s fines, every one reviewed by keyboard in Chromium (docs/desk.md).

The fines are the demo's: `local_stack.desk_demo.seed_demo_fines`, the function `make
desk` runs, records the demo's traffic and runs the real pipeline over it (bounded, with
the cars API, the evidence bucket and the warehouse on the emulators). One officer then
clears the whole queue: Enter confirms, one fine is corrected by typing, one rejected
with a key. Afterwards the notices table and topic hold exactly the confirmed and
corrected fines, each once and each verifiable, and the analyst report counts them
(pending, issued, rejected, decision times, the reader's accuracy as the officer judged it).

The demo's reader reads its easy photos right, so the correction is an officer's own
call on one fine (a plate one character off the reader's): it takes the path a misread
would, and the notice then carries both plates.
"""

import os
from collections.abc import Iterator

import pytest

from analyst_report.contents import build_report
from analyst_report.page import render_html
from desk.app import create_app
from desk.services import cloud_services
from local_stack.browser import CHROMIUM, CHROMIUM_ARGS, served
from local_stack.desk_demo import (
    desk_config,
    output_records,
    publish_fines,
    seed_demo_fines,
    wait_for_queue,
)
from local_stack.processes import wait_until
from local_stack.services import LocalStack
from section_speed.clients.warehouse import Warehouse, as_record
from section_speed.domain.verification import FINE_REVIEWS, NOTICES, verify_notice
from tests.integration.test_desk_browser import (
    TIMEOUT_MS,
    keys_ready,
    on_fine,
    pull_notices,
    warehouse_rows,
)
from tests.pg import fresh_database

pytestmark = pytest.mark.integration

DATASET, BUCKET = "it_desk_demo", "desk-demo-evidence"
TOPIC, SUBSCRIPTION = "desk-demo-notices", "desk-demo-notices-sub"
FINES_TOPIC, FINES_SUBSCRIPTION = "desk-demo-fines", "desk-demo-fines-sub"
TOKEN = "desk-demo-token"
OFFICER = "dana"


@pytest.fixture(scope="module")
def demo_desk(
    stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, list[dict]]]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (scripts/bootstrap.sh)")
    out_dir = tmp_path_factory.mktemp("desk-demo")
    fines = seed_demo_fines(stack, out_dir, DATASET, BUCKET)
    stack.create_topics(
        [TOPIC, FINES_TOPIC], {SUBSCRIPTION: TOPIC, FINES_SUBSCRIPTION: FINES_TOPIC}
    )
    publish_fines(stack, FINES_TOPIC, output_records(out_dir))  # as make desk does
    database = fresh_database()
    config = desk_config(stack, database.url, DATASET, BUCKET, TOPIC, FINES_SUBSCRIPTION,
                         token=TOKEN, reviewer=OFFICER)  # fmt: skip
    app = create_app(config, cloud_services(stack.project_id, DATASET, BUCKET, TOPIC))
    with served(app) as base:
        wait_for_queue(database.url, len(fines))
        yield base, fines


def one_off(plate: str) -> str:
    """The plate with its last character changed: what the officer types instead."""
    return plate[:-1] + ("7" if plate[-1] != "7" else "8")


def test_an_officer_reviews_every_demo_fine(demo_desk, stack):
    from playwright.sync_api import expect, sync_playwright

    base, fines = demo_desk
    assert len(fines) >= 4, "the demo fines too few vehicles for this review"
    corrected, rejected = fines[1], fines[2]
    typed = one_off(corrected["license_plate"])
    assert typed[0].isalpha(), typed  # a first key 1-4 would reject instead of typing

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = chromium.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"{base}/login?token={TOKEN}")
        expect(page.locator("#reviewer")).to_have_text(OFFICER)
        expect(page.locator("#count")).to_have_text(f"{len(fines)} fines awaiting")
        keys_ready(page)
        page.keyboard.press("Enter")
        for fine in fines:  # the queue's order: oldest exit first
            on_fine(page, fine)
            expect(page.locator("#reader-plate")).to_have_text(fine["license_plate"] or "unread")
            if fine is corrected:
                page.keyboard.type(typed)
                page.keyboard.press("Enter")
            elif fine is rejected:
                page.keyboard.press("2")  # wrong vehicle in the photo
            else:
                page.keyboard.press("Enter")
        expect(page.locator("#count")).to_have_text("0 fines awaiting")
        chromium.close()

    warehouse = Warehouse(stack.project_id, DATASET)
    issued = len(fines) - 1
    # The outbox exports decisions and notices to BigQuery just after they commit.
    wait_until(
        lambda: (
            len(warehouse_rows(warehouse, NOTICES)) == issued
            and len(warehouse_rows(warehouse, FINE_REVIEWS)) == len(fines)
        ),
        timeout_s=30,
        what="the decisions and notices in BigQuery",
    )
    reviews = warehouse_rows(warehouse, FINE_REVIEWS)
    decided = {r["fine_id"]: (r["decision"], r["license_plate"], r["reason"]) for r in reviews}
    assert len(reviews) == len(fines)
    expected = {
        f["fine_id"]: ("confirmed", f["license_plate"], None)
        for f in fines
        if f is not corrected and f is not rejected
    }
    expected[corrected["fine_id"]] = ("corrected", typed, None)
    expected[rejected["fine_id"]] = ("rejected", None, "wrong_vehicle")
    assert decided == expected

    issued = {fine_id for fine_id, (decision, _, _) in expected.items() if decision != "rejected"}
    rows = [as_record(NOTICES, row) for row in warehouse_rows(warehouse, NOTICES)]
    assert sorted(r["fine_id"] for r in rows) == sorted(issued)  # each once
    assert all(verify_notice(row) for row in rows)
    by_fine = {r["fine_id"]: r for r in rows}
    notice = by_fine[corrected["fine_id"]]
    assert (notice["license_plate"], notice["reader_plate"]) == (typed, corrected["license_plate"])
    assert notice["image_sha256"] == corrected["image_sha256"]

    messages, recalls = pull_notices(stack, len(issued), SUBSCRIPTION)
    assert recalls == []
    assert sorted(m["fine_id"] for m in messages) == sorted(issued)
    assert all(verify_notice(m) and m == by_fine[m["fine_id"]] for m in messages)

    # The analyst report counts the decisions and measures the reader as the officer did.
    built = build_report(warehouse, photos=lambda _url: None)
    assert built.totals.fines == len(fines)
    verification = built.verification
    assert verification is not None
    assert (
        verification.fines_pending,
        verification.fines_issued,
        verification.fines_rejected,
        verification.notices,
        verification.decisions,
    ) == (0, len(issued), 1, len(issued), len(fines))
    assert 0 < verification.decision_ms_median <= verification.decision_ms_p90
    (reader,) = verification.readers
    assert (
        reader.reads_confirmed,
        reader.reads_corrected,
        reader.rejected_wrong_vehicle,  # its own heading, not "other"
        reader.rejected_other,
    ) == (len(fines) - 2, 1, 1, 0)
    assert reader.read_accuracy == pytest.approx((len(fines) - 2) / (len(fines) - 1))
    page = render_html(built)
    assert f"Verified: {len(issued)} issued ({len(issued)} notices), 1 rejected, 0 pending" in page
