"""The desk served on the local stack for browser tests, and officers in Chromium.

One place builds it, so the key and accessibility tests (test_desk_keys.py,
test_desk_a11y.py) switch stores together: `serve_desk` and `DeskSite.seed` /
`DeskSite.reviews` are all that know where the desk keeps its rows. Fines are seeded as the
pipeline writes them (measured traversals, the cars API's photos in the storage emulator,
`output_record` records published to the fines topic the desk pulls), each test on its own
section so its queue holds only its own fines.
"""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from desk import db
from desk.app import create_app
from desk.login_link import mint_for
from desk.services import cloud_services
from generator.car_images import render_car_photo
from local_stack.browser import CHROMIUM, served
from local_stack.desk_demo import desk_config, publish_fines
from local_stack.processes import wait_until
from local_stack.services import LocalStack
from pipeline.provision import PROVISIONED_TABLES
from section_speed.clients.evidence_store import EvidenceStore
from section_speed.clients.warehouse import Warehouse
from section_speed.domain.evidence import photo_object_name
from section_speed.domain.plate_formats import plate_for_vehicle
from section_speed.domain.rules import SectionRule
from section_speed.domain.schemas import FINE_COLUMNS, output_record
from tests.helpers import ENTRY, EXIT, T0_MS, measured, track
from tests.pg import fresh_database

TOKEN = "desk-site-token"
BUCKET = "desk-site-evidence"
TOPIC = "desk-site-notices"
TIMEOUT_MS = 15_000
RULE = SectionRule(entry=ENTRY, exit=EXIT)
HAS_PLATE_BOX = "plate_box" in {column.name for column in FINE_COLUMNS}
AXE = Path(__file__).resolve().parents[1] / "browser" / "node_modules" / "axe-core" / "axe.min.js"


@dataclass
class DeskSite:
    base: str
    stack: LocalStack
    dataset: str
    database: db.DatabaseConfig  # the desk's PostgreSQL database
    fines_topic: str  # the pipeline's output topic, as the desk pulls it

    def _rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        made = db.engine(self.database, role=None)
        try:
            with made.connect() as connection:
                return [dict(row) for row in connection.execute(sa.text(sql), params).mappings()]
        finally:
            made.dispose()

    def login_url(self) -> str:
        """A login link of its own: each signs in once (docs/desk.md, Sessions)."""
        return f"{self.base}/login?token={mint_for(self.database)}"

    def seed(self, radar: str, vehicles: list[str], photo: bool = True) -> list[dict[str, Any]]:
        """One fine per vehicle on section `radar`, a minute apart, oldest first."""
        store = EvidenceStore(BUCKET, self.stack.project_id)
        rows = []
        for minute, vehicle in enumerate(vehicles, start=1):
            events = track(vehicle, 80.0, start_ms=T0_MS + minute * 60_000, radar_id=radar)
            found = measured(events, RULE)
            assert found.is_speeding, vehicle
            name = photo_object_name(found.radar_id, found.entry_time_ms, found.traversal_id)
            evidence: dict[str, Any] = {
                "license_plate": plate_for_vehicle(vehicle),
                "plate_confidence": 0.97,
                "plate_reader": "embedded-rapidocr",
                "image_url": f"gs://{BUCKET}/{name}",
                "image_sha256": None,
            }
            if photo:
                stored = store.store(name, render_car_photo(vehicle), "image/jpeg")
                evidence |= {"image_url": stored.url, "image_sha256": stored.sha256}
            if HAS_PLATE_BOX:
                evidence["plate_box"] = "200,300,440,360"
            rows.append(output_record(found, found.exit_time_ms + 2_000, evidence))
        publish_fines(self.stack, self.fines_topic, [json.dumps(row).encode() for row in rows])
        ids = [row["fine_id"] for row in rows]

        def ingested() -> bool:
            found = self._rows("SELECT fine_id FROM queue WHERE fine_id = ANY(:ids)", ids=ids)
            return len(found) == len(ids)

        wait_until(ingested, timeout_s=60, what=f"{len(ids)} fines in the desk's queue")
        return rows

    def claims(self, fines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Who holds these fines until when, and whether the lease is still running."""
        ids = [fine["fine_id"] for fine in fines]
        return self._rows(
            "SELECT fine_id, reviewer, expires_at, expires_at > now() AS held FROM claims "
            "WHERE fine_id = ANY(:ids) ORDER BY fine_id",
            ids=ids,
        )

    def reviews(self, fines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The decisions recorded on these fines, oldest first."""
        ids = [fine["fine_id"] for fine in fines]
        return self._rows(
            "SELECT * FROM decisions WHERE fine_id = ANY(:ids) ORDER BY decided_at, review_id",
            ids=ids,
        )


@contextmanager
def serve_desk(stack: LocalStack, dataset: str, claim_seconds: float = 300) -> Iterator[DeskSite]:
    """The desk on the local stack's emulators, its tables provisioned, on a free port;
    `claim_seconds` is its claims' lease."""
    if not os.access(CHROMIUM, os.X_OK):
        raise AssertionError(f"{CHROMIUM} is missing: apt-get install chromium (bootstrap.sh)")
    Warehouse(stack.project_id, dataset).ensure_tables(PROVISIONED_TABLES)
    EvidenceStore(BUCKET, stack.project_id).ensure_bucket()
    notices, fines = f"{TOPIC}-{dataset}", f"desk-site-fines-{dataset}"
    stack.create_topics([notices, fines], {f"{fines}-sub": fines})
    database = fresh_database()
    config = desk_config(stack, database.url, dataset, BUCKET, notices, f"{fines}-sub",
                         claim_seconds=claim_seconds, token=TOKEN)  # fmt: skip
    services = cloud_services(stack.project_id, dataset, BUCKET, notices)
    with served(create_app(config, services)) as base:
        yield DeskSite(base, stack, dataset, database, fines)


def sign_in(browser: Any, site: DeskSite, name: str, **options: Any) -> tuple[Any, Any]:
    """A new browser context signed in as `name`, 1366x900 (an office screen), on /queue;
    `options` go to `new_context`."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1366, "height": 900}, **options)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(site.login_url())
    page.locator("#name").fill(name)
    page.keyboard.press("Enter")
    expect(page.locator("#reviewer")).to_have_text(name)
    return context, page


def keys_ready(page: Any) -> None:
    """The page's keys are live: on a fine, its photo has been on screen long enough."""
    from playwright.sync_api import expect

    expect(page.locator("html")).to_have_attribute("data-keys", "ready")


def on_fine(page: Any, fine: dict[str, Any]) -> None:
    from playwright.sync_api import expect

    expect(page.locator("#fine")).to_have_attribute("data-fine-id", fine["fine_id"])
