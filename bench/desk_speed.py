"""The verification desk's speed: time to the next fine after a decision, and decisions per
minute for a scripted officer in the browser.

    .venv/bin/python bench/desk_speed.py [--vehicles 100] [--browser_fines 12]

Fines: `make desk`'s own (local_stack.desk_demo.seed_demo_fines: the demo's traffic, here
with more vehicles, through the bounded pipeline with the cars API, embedded OCR, the
storage and BigQuery emulators). The desk runs in this process under uvicorn.

(a) An officer over HTTP (requests, no browser): each decision is the POST of the
decision form, answered 303 to the next fine (claimed), and the GET of that fine's page;
"time to the next fine" is from sending the POST to having the next page's body. The
desk's store calls are timed too, to show where the time goes.
(b) A scripted officer in Chromium (Playwright, Debian's /usr/bin/chromium): Enter on
each fine as soon as its keys are live, until the queue is empty; decisions per minute
over the whole run. A person needs more than the page's time to look at a photo: this is
the desk's ceiling, not an officer's pace. Last, the analyst report's verification line.

A benchmark, not a test: it prints figures and asserts nothing.
"""

import argparse
import re
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import requests
from lib.harness import load_note, percentile, stop_on_sigterm

from analyst_report.contents import build_report, verification_line
from desk.app import DeskConfig, create_app
from desk.services import Services, cloud_services
from local_stack.browser import CHROMIUM, CHROMIUM_ARGS, served
from local_stack.desk_demo import seed_demo_fines
from local_stack.services import LocalStack
from section_speed.clients.warehouse import Warehouse

DATASET, BUCKET, TOPIC = "bench_desk", "bench-desk-evidence", "bench-desk-notices"
TOKEN, OFFICER = "bench-desk-token", "bench-officer"
HIDDEN = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)">')
PLATE = re.compile(r'<input id="plate" name="plate" value="([^"]*)"')
FINE_PAGE = re.compile(r"/fines/([0-9a-f]{32})")


class TimedStore:
    """The desk's store with each call's duration kept per method name."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.calls: dict[str, list[float]] = defaultdict(list)

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if not callable(attribute):
            return attribute

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                self.calls[name].append(time.perf_counter() - started)

        return timed


def desk_app(stack: LocalStack, timed: list[TimedStore]) -> Any:
    """The desk on this stack, its store calls timed."""
    real = cloud_services(stack.project_id, DATASET, BUCKET, TOPIC)

    def store() -> TimedStore:
        timed.append(TimedStore(real.store()))
        return timed[-1]

    services = Services(store=store, photos=real.photos, notices=real.notices)
    config = DeskConfig(
        project=stack.project_id,
        bq_dataset=DATASET,
        bucket=BUCKET,
        notices_topic=TOPIC,
        token=TOKEN,
        reviewer=OFFICER,
    )
    return create_app(config, services)


def decide_over_http(base: str, decisions: int, store: TimedStore) -> list[float]:
    """Confirm `decisions` fines as a browser would post them; the seconds to each next."""
    session = requests.Session()
    session.headers.update({"Origin": base, "Sec-Fetch-Site": "same-origin"})
    queue = session.get(f"{base}/login?token={TOKEN}", timeout=30)
    csrf = dict(HIDDEN.findall(queue.text))["csrf"]
    page = session.post(f"{base}/next", data={"csrf": csrf}, timeout=30)
    times: list[float] = []
    store.calls.clear()
    for _ in range(decisions):
        found = FINE_PAGE.search(page.url)
        if found is None:
            break  # the queue is empty
        form = dict(HIDDEN.findall(page.text.split('id="decision"', 1)[1]))
        plate = PLATE.search(page.text)
        data = {**form, "action": "plate", "plate": plate[1] if plate else ""}
        started = time.perf_counter()
        page = session.post(f"{base}/fines/{found[1]}/decision", data=data, timeout=30)
        times.append(time.perf_counter() - started)
        if page.status_code != 200:
            raise RuntimeError(f"decision refused: {page.status_code} {page.text[:300]}")
    return times


def decide_in_browser(base: str) -> tuple[int, float]:
    """Enter on every fine of the queue in Chromium; (decisions, seconds)."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = chromium.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{base}/login?token={TOKEN}")
        count = page.locator("#count").inner_text()
        fines = int(count.split()[0])
        expect(page.locator("html")).to_have_attribute("data-keys", "ready")
        started = time.perf_counter()
        page.keyboard.press("Enter")
        for decided in range(fines):
            page.wait_for_selector("#decision")
            expect(page.locator("html")).to_have_attribute("data-keys", "ready")
            page.keyboard.press("Enter")
            if decided < fines - 1:
                page.wait_for_url(re.compile(r"/fines/"), wait_until="commit")
        expect(page.locator("#count")).to_have_text("0 fines awaiting")
        elapsed = time.perf_counter() - started
        chromium.close()
    return fines, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vehicles", type=int, default=100, help="demo traffic's vehicles")
    parser.add_argument("--browser_fines", type=int, default=12, help="left for the browser")
    args = parser.parse_args()
    stop_on_sigterm()
    print(load_note(), flush=True)
    with tempfile.TemporaryDirectory() as work, LocalStack() as stack:
        stack.apply_env()
        seeded = time.perf_counter()
        fines = seed_demo_fines(stack, Path(work), DATASET, BUCKET, vehicles=args.vehicles)
        stack.create_topics([TOPIC])
        print(f"{len(fines)} fines seeded in {time.perf_counter() - seeded:.0f} s", flush=True)
        timed: list[TimedStore] = []
        with served(desk_app(stack, timed)) as base:
            http_decisions = max(1, len(fines) - args.browser_fines)
            times = decide_over_http(base, http_decisions, timed[0])
            ms = [1000 * t for t in times]
            print(
                f"(a) time to the next fine after a decision, {len(ms)} decisions over HTTP: "
                f"p50 {percentile(ms, 50):.0f} ms, p95 {percentile(ms, 95):.0f} ms, "
                f"max {max(ms):.0f} ms (target p95 < 200 ms)"
            )
            print("    store calls per decision (mean ms each, calls per decision):")
            for name, spent in sorted(timed[0].calls.items(), key=lambda kv: -sum(kv[1])):
                print(
                    f"      {name:<24} {1000 * statistics.mean(spent):6.0f} ms "
                    f"x {len(spent) / len(ms):.1f}"
                )
            decided, seconds = decide_in_browser(base)
            print(
                f"(b) scripted officer in Chromium: {decided} decisions in {seconds:.1f} s: "
                f"{60 * decided / seconds:.0f} decisions/min ({1000 * seconds / decided:.0f} ms "
                "per fine, Enter to the next fine's keys live)"
            )
            built = build_report(Warehouse(stack.project_id, DATASET), photos=lambda _: None)
            if built.verification is not None:
                print(f"report: {verification_line(built.verification)}")


if __name__ == "__main__":
    main()
