"""The verification desk's speed at city scale, beside the previous desk in the same run.

    .venv/bin/python bench/desk_speed.py [--fines 100000] [--samples 200]
        [--old_commit 98eee0a] [--old_fines 1000] [--old_samples 40]

(1) This desk: `python -m desk` on a local PostgreSQL server (fsync and synchronous
commit on, as a real server runs) holding `--fines` pending
fines (100,000: loaded with one INSERT ... SELECT generate_series into `fines` and
`fine_heads`, the rows ingest writes), photos in the storage emulator for the fines the
run decides, notices to the Pub/Sub emulator.
(2) The previous desk: `--old_commit` (the BigQuery store) checked out with `git worktree
add` into a temporary folder and started as `python -m desk` from there, on the BigQuery
emulator holding `--old_fines` fines (what it can serve: its queue is a query over every
fine), photos in the storage emulator.

On each, over HTTP with requests (the officer's session from the login form):
- next fine: POST /next by an officer holding nothing, to its 303 (the claim of the
  oldest fine nobody holds, in front of it the fines others hold: each sample is another
  officer, so claims pile up ahead);
- decision: one officer confirming fine after fine, the POST of the decision form to its
  303 (the decision, its notice and outbox rows, and the claim of the next fine); the
  fine's page is fetched between decisions, untimed.

(3) `--browser N`: this desk in Chromium (Playwright, /usr/bin/chromium), an officer
confirming N fines by key: from the Enter key press to the next fine's page with its photo
decoded and painted (desk.js sets `data-photo="shown"` after two animation frames), read
from the page's own clocks (`performance.timeOrigin + performance.now()` on both pages).
Each fine waits for its keys to be ready (the minimum look, 500 ms) before Enter: untimed.

A benchmark, not a test: it prints figures and asserts nothing.
"""

import argparse
import hashlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
import sqlalchemy as sa
from lib.harness import load_note, percentile, stop_on_sigterm

from desk import db, migrate
from desk.login_link import mint_for
from desk.workflow import MIN_LOOK_MS
from local_stack.postgres import PostgresServer
from local_stack.processes import ManagedProcess, free_port, wait_until
from local_stack.services import LocalStack
from pipeline.provision import PROVISIONED_TABLES
from section_speed.clients.evidence_store import EvidenceStore
from section_speed.clients.warehouse import Warehouse
from section_speed.domain.schemas import FINES
from section_speed.domain.verification import HEX32

REPO = Path(__file__).resolve().parents[1]
BUCKET, TOPIC, DATASET = "bench-desk-evidence", "bench-desk-notices", "bench_desk"
HIDDEN = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)">')
PLATE = re.compile(r'<input id="plate" name="plate" value="([^"]*)"')
FINE_PAGE = re.compile(rf"/fines/({HEX32})")
T0 = "2026-11-18T06:00:00+00:00"
PHOTO = b""  # set in main: one small JPEG, stored under every decided fine's name


def jpeg() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 30, 30)).save(out, "JPEG")
    return out.getvalue()


def fine_id(i: int) -> str:
    return hashlib.md5(f"fine-{i}".encode()).hexdigest()


def photo_name(i: int) -> str:
    """The object name the pipeline gives fine i's photo (section_speed/domain/evidence)."""
    return f"fines/radar-{i % 20}/2026-11-18/{fine_id(i)}.jpg"


# Fine i: section radar-(i mod 20), entering 2 s after fine i-1 (so queue order is i order).
BULK_FINES = f"""
INSERT INTO fines (fine_id, revision, radar_id, vehicle_id, license_plate, plate_confidence,
    plate_reader, plate_box, avg_speed_kmh, avg_speed_mph, speed_limit_mph, tolerance_mph,
    distance_m, duration_s, entry_time, exit_time, entry_location, exit_location,
    speed_method, image_url, image_sha256, is_ticketed, processed_at)
SELECT md5('fine-' || i), 0, 'radar-' || mod(i, 20), 'veh-' || i,
    'ABC' || lpad(mod(i, 10000)::text, 4, '0'), 0.5 + mod(i, 50) / 100.0, 'embedded',
    '200,300,440,360', 130.0, 80.78, 60.0, 2.0, 1000.0, 27.7,
    TIMESTAMPTZ '{T0}' + i * INTERVAL '2 seconds',
    TIMESTAMPTZ '{T0}' + i * INTERVAL '2 seconds' + INTERVAL '28 seconds',
    '51.5,-0.1', '51.51,-0.1', 'section_average',
    'gs://{BUCKET}/fines/radar-' || mod(i, 20) || '/2026-11-18/' || md5('fine-' || i) || '.jpg',
    :sha, true, now()
FROM generate_series(0, :n - 1) AS i
"""
BULK_HEADS = """
INSERT INTO fine_heads (fine_id, revision, exit_time, radar_id, plate_confidence, live)
SELECT fine_id, revision, exit_time, radar_id, plate_confidence, true FROM fines
"""


def old_fine(i: int, sha: str) -> dict:
    """Fine i as a `fines` row for the previous desk's BigQuery table."""
    from datetime import datetime, timedelta

    from section_speed.domain.events import format_rfc3339_ms

    entry = datetime.fromisoformat(T0) + timedelta(seconds=2 * i)

    def text(moment: datetime) -> str:
        return format_rfc3339_ms(round(moment.timestamp() * 1000))

    values = {
        "fine_id": fine_id(i), "revision": 0, "radar_id": f"radar-{i % 20}",
        "vehicle_id": f"veh-{i}", "license_plate": f"ABC{i % 10000:04d}",
        "plate_confidence": 0.5 + (i % 50) / 100, "plate_reader": "embedded",
        "plate_box": "200,300,440,360", "avg_speed_kmh": 130.0, "avg_speed_mph": 80.78,
        "speed_limit_mph": 60.0, "tolerance_mph": 2.0, "distance_m": 1000.0,
        "duration_s": 27.7, "entry_time": text(entry),
        "exit_time": text(entry + timedelta(seconds=28)), "entry_location": "51.5,-0.1",
        "exit_location": "51.51,-0.1", "speed_method": "section_average",
        "image_url": f"gs://{BUCKET}/{photo_name(i)}", "image_sha256": sha,
        "is_ticketed": True, "processed_at": text(entry + timedelta(seconds=30)),
    }  # fmt: skip
    return {c.name: values.get(c.name, [] if c.mode == "REPEATED" else None) for c in FINES.columns}


def store_photos(stack: LocalStack, count: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    store = EvidenceStore(BUCKET, stack.project_id)
    store.ensure_bucket()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: store.store(photo_name(i), PHOTO, "image/jpeg"), range(count)))


@contextmanager
def desk_process(name: str, argv: list[str], env: dict[str, str], work: Path) -> Iterator[str]:
    """`python -P -m desk ...` on a free port; yields its base URL once it answers. (-P: the
    desk's code comes from PYTHONPATH, this checkout's or the old commit's, not the cwd.)"""
    port = free_port()
    process = ManagedProcess(name, [*argv, "--port", str(port)], work / f"{name}.log", env)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{base}/queue", timeout=5).status_code == 401
        except requests.RequestException:
            if not process.running():
                raise RuntimeError(f"{name} stopped:\n{process.log_tail()}") from None
            return False

    try:
        wait_until(up, timeout_s=180, what=f"{name} to answer")
        yield base
    finally:
        process.stop()


def officer(
    base: str, log: Path, name: str, database: db.DatabaseConfig | None = None
) -> tuple[requests.Session, str]:
    """A signed-in officer (the login form) and the session's CSRF token. A desk with a
    database gets a login link of its own per officer (each signs in once); the old desk
    took the printed one again."""
    token = re.findall(r"login\?token=(\S+)", log.read_text())[-1]
    if database is not None:
        token = mint_for(database)
    session = requests.Session()
    session.headers.update({"Origin": base, "Sec-Fetch-Site": "same-origin"})
    answer = session.post(f"{base}/login", data={"token": token, "reviewer": name}, timeout=60)
    if answer.status_code != 200 or "/queue" not in answer.url:
        raise RuntimeError(f"login failed: {answer.status_code} {answer.text[:200]}")
    return session, dict(HIDDEN.findall(answer.text))["csrf"]


def measure(
    base: str, log: Path, samples: int, database: db.DatabaseConfig | None = None
) -> dict[str, list[float]]:
    """Milliseconds of `samples` next-fine claims (each a new officer) and decisions."""
    times: dict[str, list[float]] = {"next": [], "decision": []}
    for n in range(samples):
        session, csrf = officer(base, log, f"claimer-{n}", database)
        started = time.perf_counter()
        answer = session.post(f"{base}/next", data={"csrf": csrf}, allow_redirects=False,
                              timeout=60)  # fmt: skip
        times["next"].append(1000 * (time.perf_counter() - started))
        if answer.status_code != 303 or "/fines/" not in answer.headers["location"]:
            raise RuntimeError(f"no fine for claimer-{n}: {answer.status_code}")
    session, csrf = officer(base, log, "decider", database)
    page = session.post(f"{base}/next", data={"csrf": csrf}, timeout=60)
    for _ in range(samples):
        found = FINE_PAGE.search(page.url)
        if found is None:
            break
        form = dict(HIDDEN.findall(page.text.split('id="decision"', 1)[1]))
        data = {**form, "action": "plate", "plate": PLATE.search(page.text)[1]}
        time.sleep(MIN_LOOK_MS / 1000)  # the officer looks: a sooner decision is refused
        started = time.perf_counter()
        answer = session.post(f"{base}/fines/{found[1]}/decision", data=data,
                              allow_redirects=False, timeout=60)  # fmt: skip
        times["decision"].append(1000 * (time.perf_counter() - started))
        if answer.status_code != 303:
            raise RuntimeError(f"decision refused: {answer.status_code} {answer.text[:300]}")
        page = session.get(base + answer.headers["location"], timeout=60)
    return times


def report(what: str, times: dict[str, list[float]], targets: dict[str, int]) -> None:
    for kind, ms in times.items():
        if not ms:
            print(f"{what}: {kind}: no samples", flush=True)
            continue
        print(f"{what}: {kind:<8} n={len(ms):<4} p50 {percentile(ms, 50):7.1f} ms  "
              f"p95 {percentile(ms, 95):7.1f} ms  max {max(ms):7.1f} ms  "
              f"(target p95 < {targets[kind]} ms)", flush=True)  # fmt: skip


def run_new(stack: LocalStack, work: Path, fines: int, samples: int) -> None:
    # Durable (fsync and synchronous commit on), as a real server; its own folder, which
    # PostgreSQL's user can reach.
    with PostgresServer(durable=True) as postgres:
        config = db.DatabaseConfig(postgres.url)
        login = db.engine(config, role=None)
        migrate.upgrade(login)
        started = time.perf_counter()
        sha = hashlib.sha256(PHOTO).hexdigest()
        with login.begin() as connection:
            connection.execute(sa.text(BULK_FINES), {"n": fines, "sha": sha})
            connection.execute(sa.text(BULK_HEADS))
        with login.begin() as connection:
            connection.execute(sa.text("ANALYZE"))
        login.dispose()
        print(f"new: {fines} fines loaded in {time.perf_counter() - started:.0f} s", flush=True)
        store_photos(stack, 2 * samples + 10)
        argv = [sys.executable, "-P", "-m", "desk", "--project", stack.project_id,
                "--bucket", BUCKET, "--notices_topic", TOPIC,
                "--database_url", postgres.url]  # fmt: skip
        env = stack.child_env({"PYTHONPATH": str(REPO)})
        with desk_process("desk-new", argv, env, work) as base:
            times = measure(base, work / "desk-new.log", samples, config)
        report(f"new desk, PostgreSQL, {fines} pending", times, {"next": 50, "decision": 100})


# Recorded on every page before its scripts: the Enter key press (kept across the
# navigation in sessionStorage) and the moment desk.js says the photo is on screen.
BROWSER_PROBE = """
(() => {
  const now = () => performance.timeOrigin + performance.now();
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.repeat) { sessionStorage.setItem("pressed", String(now())); }
  }, true);
  new MutationObserver(() => {
    const html = document.documentElement;
    if (html && html.dataset.photo === "shown" && !window.__shownAt) {
      window.__shownAt = now();
    }
  }).observe(document, { attributes: true, subtree: true, attributeFilter: ["data-photo"] });
})();
"""


def measure_browser(base: str, database: db.DatabaseConfig, samples: int) -> list[float]:
    """Milliseconds from Enter to the next fine's photo on screen, `samples` times."""
    from playwright.sync_api import sync_playwright

    from local_stack.browser import CHROMIUM, CHROMIUM_ARGS

    times: list[float] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1366, "height": 900})
        context.set_default_timeout(30_000)
        context.add_init_script(BROWSER_PROBE)
        page = context.new_page()
        page.goto(f"{base}/login?token={mint_for(database)}")
        page.locator("#name").fill("bench")
        page.keyboard.press("Enter")
        page.locator("#start-button").click()
        for n in range(samples + 1):
            page.wait_for_selector("html[data-keys=ready][data-photo=shown]")
            fine = page.locator("#fine").get_attribute("data-fine-id")
            if n:  # the first fine came from the Start button, not from a key
                pressed = float(page.evaluate("sessionStorage.getItem('pressed')"))
                times.append(page.evaluate("window.__shownAt") - pressed)
            page.keyboard.press("Enter")
            page.wait_for_function(
                "f => document.getElementById('fine') === null || "
                "document.getElementById('fine').dataset.fineId !== f", arg=fine
            )  # fmt: skip
            if page.locator("#fine").count() == 0:
                break
        browser.close()
    return times[:samples]


def run_browser(stack: LocalStack, work: Path, fines: int, samples: int) -> None:
    with PostgresServer(durable=True) as postgres:
        config = db.DatabaseConfig(postgres.url)
        login = db.engine(config, role=None)
        migrate.upgrade(login)
        sha = hashlib.sha256(PHOTO).hexdigest()
        with login.begin() as connection:
            connection.execute(sa.text(BULK_FINES), {"n": fines, "sha": sha})
            connection.execute(sa.text(BULK_HEADS))
        with login.begin() as connection:
            connection.execute(sa.text("ANALYZE"))
        login.dispose()
        store_photos(stack, samples + 10)
        argv = [sys.executable, "-P", "-m", "desk", "--project", stack.project_id,
                "--bucket", BUCKET, "--notices_topic", TOPIC,
                "--database_url", postgres.url]  # fmt: skip
        env = stack.child_env({"PYTHONPATH": str(REPO)})
        with desk_process("desk-browser", argv, env, work) as base:
            times = measure_browser(base, config, samples)
        report(f"browser, {fines} pending, {load_note()}", {"key_to_photo": times},
               {"key_to_photo": 150})  # fmt: skip


def run_old(stack: LocalStack, work: Path, commit: str, fines: int, samples: int) -> None:
    tree = work / "old-desk"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), commit],
                   check=True, capture_output=True)  # fmt: skip
    try:
        warehouse = Warehouse(stack.project_id, DATASET)
        warehouse.ensure_tables(PROVISIONED_TABLES)
        sha = hashlib.sha256(PHOTO).hexdigest()
        rows = [old_fine(i, sha) for i in range(fines)]
        for start in range(0, fines, 500):
            batch = rows[start : start + 500]
            assert warehouse.insert(FINES, batch, [r["fine_id"] for r in batch]) == []
        store_photos(stack, 2 * samples + 10)
        argv = [sys.executable, "-P", "-m", "desk", "--project", stack.project_id,
                "--bq_dataset", DATASET, "--bucket", BUCKET, "--notices_topic", TOPIC]  # fmt: skip
        env = stack.child_env({"PYTHONPATH": str(tree)})
        with desk_process("desk-old", argv, env, work) as base:
            times = measure(base, work / "desk-old.log", samples)
        report(f"old desk ({commit}), BigQuery emulator, {fines} pending", times,
               {"next": 50, "decision": 100})  # fmt: skip
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)],
                       check=False, capture_output=True)  # fmt: skip


def main() -> None:
    global PHOTO
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fines", type=int, default=100_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--old_commit", default="98eee0a")
    parser.add_argument("--old_fines", type=int, default=1000)
    parser.add_argument("--old_samples", type=int, default=40)
    parser.add_argument("--skip_old", action="store_true")
    parser.add_argument(
        "--browser", type=int, default=0, help="N: key press to next photo in Chromium, N times"
    )
    args = parser.parse_args()
    stop_on_sigterm()
    print(load_note(), flush=True)
    PHOTO = jpeg()
    work = Path(tempfile.mkdtemp(prefix="desk-speed-"))
    try:
        with LocalStack(
            work_dir=work / "stack", services=("pubsub", "bigquery", "storage")
        ) as stack:
            stack.apply_env()
            stack.create_topics([TOPIC])
            if args.browser:
                run_browser(stack, work, args.fines, args.browser)
                return
            run_new(stack, work, args.fines, args.samples)
            if not args.skip_old:
                run_old(stack, work, args.old_commit, args.old_fines, args.old_samples)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
