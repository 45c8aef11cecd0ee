"""Screenshots of the desk for docs/desk.md, at an office screen's 1366x900.

    .venv/bin/python -m local_stack.desk_screenshots [--out docs/images]

Starts the local stack, seeds `make desk`'s demo fines (the bounded pipeline over the
demo's traffic), serves the desk and drives Debian's Chromium as an officer: the queue,
a fine, the moment after a decision (Enter: the next fine), and the empty queue once every
fine is decided. Writes desk-queue.png, desk-fine.png, desk-after-decision.png and
desk-all-done.png, each reduced to a palette so it stays small enough to commit. Ctrl-C
stops everything it started.
"""

import argparse
import io
import sys
import tempfile
from pathlib import Path

from PIL import Image

from desk.app import create_app
from desk.services import cloud_services
from local_stack.browser import CHROMIUM, CHROMIUM_ARGS, served
from local_stack.demo import DEMO_DATASET
from local_stack.desk_demo import (
    FINES_SUBSCRIPTION,
    FINES_TOPIC,
    NOTICES_SUBSCRIPTION,
    NOTICES_TOPIC,
    desk_config,
    output_records,
    publish_fines,
    seed_demo_fines,
    wait_for_queue,
)
from local_stack.desk_hints import reading_notices
from local_stack.postgres import PostgresServer
from local_stack.services import LocalStack
from section_speed.domain import defaults

VIEWPORT = {"width": 1366, "height": 900}
TOKEN = "screenshots"
TIMEOUT_MS = 30_000
COLOURS = 128  # a palette this size keeps photos readable at a fraction of the bytes
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def save_small(png: bytes, path: Path) -> int:
    """The screenshot reduced to a COLOURS palette; returns its size in bytes."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(COLOURS, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path.stat().st_size


def shoot(base: str, out: Path) -> list[tuple[Path, int]]:
    from playwright.sync_api import expect, sync_playwright

    taken = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.set_default_timeout(TIMEOUT_MS)
        ready = page.locator("html[data-keys=ready]")

        def snap(name: str) -> None:
            path = out / f"{name}.png"
            taken.append((path, save_small(page.screenshot(), path)))

        page.goto(f"{base}/login?token={TOKEN}")
        page.locator("#name").fill("ana")
        page.keyboard.press("Enter")
        expect(ready).to_have_count(1)
        snap("desk-queue")

        page.keyboard.press("Enter")  # the oldest fine
        expect(page.locator("#decision")).to_have_count(1)
        expect(ready).to_have_count(1)
        snap("desk-fine")
        first = page.locator("#fine").get_attribute("data-fine-id")

        page.keyboard.press("Enter")  # confirmed: the next fine is shown
        expect(page.locator("#fine")).not_to_have_attribute("data-fine-id", first or "")
        expect(ready).to_have_count(1)
        expect(page.locator("#last-decision")).to_contain_text("Ctrl+Z to undo")
        snap("desk-after-decision")

        while page.locator("#decision").count():  # the rest: plate unreadable
            shown = page.locator("#fine").get_attribute("data-fine-id")
            page.keyboard.press("1")
            expect(page.locator(f'#fine[data-fine-id="{shown}"]')).to_have_count(0)
            expect(ready).to_have_count(1)
        expect(page.locator("#all-done")).to_be_visible()
        snap("desk-all-done")
        browser.close()
    return taken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the PNGs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as work,
        LocalStack(work_dir=Path(work) / "logs") as stack,
        PostgresServer() as postgres,
    ):
        fines = seed_demo_fines(stack, Path(work))
        stack.create_topics(
            [NOTICES_TOPIC, FINES_TOPIC],
            {NOTICES_SUBSCRIPTION: NOTICES_TOPIC, FINES_SUBSCRIPTION: FINES_TOPIC},
        )
        publish_fines(stack, FINES_TOPIC, output_records(Path(work)))
        bucket = defaults.EVIDENCE_BUCKET
        config = desk_config(stack, postgres.url, DEMO_DATASET, bucket, NOTICES_TOPIC,
                             FINES_SUBSCRIPTION, token=TOKEN)  # fmt: skip
        services = cloud_services(stack.project_id, DEMO_DATASET, bucket, NOTICES_TOPIC)
        with served(create_app(config, services)) as base:
            wait_for_queue(postgres.url, len(fines))
            taken = shoot(base, args.out)
        for line in reading_notices(
            stack.env, stack.project_id, DEMO_DATASET, NOTICES_SUBSCRIPTION
        ):
            print(line)
    for path, size in taken:
        print(f"desk_screenshots: {path} ({size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
