"""The analyst report on the BigQuery emulator, rendered by headless Chromium.

Seeds a dataset through Warehouse.insert (several radars, hours and speeds, a late
correction of one fine, a fine corrected under the limit, a traversal split in two and
merged again, a fine whose evidence row is not written, two fines with a photo URL) and
checks that every query counts each traversal once, and that rows processed after the
report's as_of change no section. Then runs `python -m analyst_report.report`'s
main, checks the page's charts and fine rows against the warehouse, then opens it in
Debian's `chromium`: a screenshot that must not be blank and shows the charts' and the
photo's colours, and the rendered DOM with the same rows. Chromium is installed with
apt-get when missing and the test runs as root; otherwise the test fails saying how.

Photos are served by a minimal stand-in for Cloud Storage's JSON API (bucket metadata
and media download, found through STORAGE_EMULATOR_HOST): one exists, one is missing.
"""

import base64
import dataclasses
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from analyst_report import report
from analyst_report.charts import BAR_COLOUR, LIMIT_COLOUR
from analyst_report.contents import build_report
from analyst_report.queries import SectionRows, Totals, read_snapshot
from local_stack import demo
from section_speed.clients.warehouse import Warehouse
from section_speed.domain.schemas import (
    FINES,
    VEHICLE_SPEEDS,
    insert_id,
    output_record,
    vehicle_speed_record,
)
from section_speed.domain.traversal import Traversal
from tests.helpers import T0_MS, measured, section, track

pytestmark = pytest.mark.integration

DATASET = "it_report"
HOUR_MS, MINUTE_MS = 3_600_000, 60_000
RULES = {"radar-1": section(), "radar-2": section(), "radar-3": section(30.0)}
EVIL_VEHICLE = "<script>document.title='owned'</script>"
# (vehicle, km/h, radar, hour, minute): speeders, drivers under the limit, and radar-3's
# 30 mph (48.3 km/h) limit, which lets 45 km/h pass there.
TRAFFIC = [
    ("v01", 72.0, "radar-1", 0, 5),
    ("v02", 35.0, "radar-1", 0, 9),
    ("v03", 55.0, "radar-2", 0, 20),
    ("v04", 88.0, "radar-1", 1, 2),
    ("v05", 61.0, "radar-2", 1, 30),
    ("v06", 45.0, "radar-3", 1, 40),
    ("v07", 64.0, "radar-3", 2, 10),
    ("v08", 30.0, "radar-2", 2, 15),
    (EVIL_VEHICLE, 77.0, "radar-2", 3, 1),
    ("v10", 52.0, "radar-1", 3, 50),
]
CORRECTED = ("v11", 70.0, 93.0, "radar-1", 2, 30)  # first measured at 70, corrected to 93 km/h
CORRECTED_UNDER = ("v13", 60.0, 30.0, "radar-1", 3, 20)  # fined at 60, corrected to 30: no fine
# Two sessions of one vehicle (minutes 41 and 43), merged by a late detection at minute 40
# into a third traversal that supersedes both: one fine, not three.
SPLIT = ("v12", 80.0, "radar-2", 2, (41, 43), 40)
WITHOUT_EVIDENCE = ("v14", 66.0, "radar-3", 3, 30)  # fined; its fines row not written yet
# 7 speeders in TRAFFIC, v11, v12's merged traversal and v14; v13 was corrected under.
EXPECTED_FINES, EXPECTED_TRAVERSALS = 10, 14  # traversals: TRAFFIC's 10, v11, v12, v13, v14
EXPECTED_FINE_ROWS, EXPECTED_SPEED_ROWS = (
    13,
    18,
)  # every row written, corrections and merged parts included
SEEDED_SUMMARY = (
    "10 fines, 14 measured traversals, plates read on 0 % of fines (1 without evidence yet)."
)
SEEDED_UNTIL = datetime.fromtimestamp((T0_MS + 5 * HOUR_MS) / 1000, UTC)  # after every row
BUCKET = "it-report-evidence"
PHOTO_RGB = (200, 0, 200)  # a colour no chart uses, to find the thumbnail on the screenshot
WITH_PHOTO, PHOTO_MISSING = "v01", "v04"  # fines whose image_url is set
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
]
WINDOW = (1280, 3300)  # tall enough for the last (oldest) fine, which has the photo
CHROMIUM_TIMEOUT_S = 120
INSTALL_HINT = "apt-get install chromium  (Debian's package; as root: apt-get update first)"


# -- the warehouse -------------------------------------------------------------------------
def traversal(vehicle: str, kmh: float, radar: str, hour: int, minute: int):
    start = T0_MS + hour * HOUR_MS + minute * MINUTE_MS
    return measured(track(vehicle, kmh, start_ms=start, radar_id=radar), RULES[radar])


def photo_url(vehicle: str) -> str:
    return f"gs://{BUCKET}/fines/{vehicle}.jpg"


@dataclasses.dataclass(frozen=True)
class Seeded:
    """The ids the assertions need."""

    corrected: str
    corrected_under: str
    merged: str
    merged_parts: tuple[str, str]
    without_evidence: str


def write_rows(
    warehouse: Warehouse, written: list[tuple[Traversal, int, bool, dict | None]]
) -> None:
    """(traversal, processed_at ms, with a fines row, evidence) -> both tables, as the
    pipeline writes them: every traversal to vehicle_speeds, fines (enriched) to fines."""
    fines = [output_record(t, at_ms, evidence) for t, at_ms, fined, evidence in written if fined]
    speeds = [vehicle_speed_record(t, at_ms) for t, at_ms, _fined, _evidence in written]
    for table, rows in ((FINES, fines), (VEHICLE_SPEEDS, speeds)):
        assert warehouse.insert(table, rows, [insert_id(table, row) for row in rows]) == []


def seed(warehouse: Warehouse) -> Seeded:
    """Writes the traffic, corrections and merge; returns the ids of the special cases."""
    written = []
    for vehicle, kmh, radar, hour, minute in TRAFFIC:
        measured = traversal(vehicle, kmh, radar, hour, minute)
        photo = (
            {"image_url": photo_url(vehicle)} if vehicle in (WITH_PHOTO, PHOTO_MISSING) else None
        )
        written.append((measured, measured.exit_time_ms + MINUTE_MS, measured.is_speeding, photo))
    ids = {}
    for case in (CORRECTED, CORRECTED_UNDER):  # same entry: same id, a later processed_at
        vehicle, first_kmh, corrected_kmh, radar, hour, minute = case
        for kmh, delay_ms in ((first_kmh, MINUTE_MS), (corrected_kmh, 5 * MINUTE_MS)):
            measured = traversal(vehicle, kmh, radar, hour, minute)
            # The pipeline writes a fines row for a fined measurement only.
            written.append((measured, measured.exit_time_ms + delay_ms, measured.is_speeding, None))
        ids[case] = measured.traversal_id
    vehicle, kmh, radar, hour, (first, second), merged_at = SPLIT
    parts = [traversal(vehicle, kmh, radar, hour, minute) for minute in (first, second)]
    written += [(part, part.exit_time_ms + MINUTE_MS, True, None) for part in parts]
    merged = dataclasses.replace(
        traversal(vehicle, kmh, radar, hour, merged_at),
        supersedes=tuple(part.traversal_id for part in parts),
    )
    written.append((merged, parts[1].exit_time_ms + 2 * MINUTE_MS, True, None))
    pending = traversal(*WITHOUT_EVIDENCE)
    written.append((pending, pending.exit_time_ms + MINUTE_MS, False, None))
    assert all(t.is_speeding for t in (*parts, merged, pending))
    assert all(at_ms < SEEDED_UNTIL.timestamp() * 1000 for _t, at_ms, _f, _e in written)
    warehouse.ensure_tables()
    write_rows(warehouse, written)
    return Seeded(
        corrected=ids[CORRECTED],
        corrected_under=ids[CORRECTED_UNDER],
        merged=merged.traversal_id,
        merged_parts=(parts[0].traversal_id, parts[1].traversal_id),
        without_evidence=pending.traversal_id,
    )


# -- Cloud Storage stand-in ---------------------------------------------------------------
def jpeg_photo() -> bytes:
    from PIL import Image  # Pillow comes with matplotlib, a runtime requirement

    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), PHOTO_RGB).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


@pytest.fixture
def storage_photos(monkeypatch) -> Iterator[dict[str, bytes]]:
    """Objects by "bucket/name", served as google-cloud-storage downloads them."""
    objects: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            path = urlsplit(self.path).path
            if path.startswith("/download/storage/v1/b/"):  # media: /b/BUCKET/o/NAME
                bucket, _, name = path.removeprefix("/download/storage/v1/b/").partition("/o/")
                body = objects.get(f"{bucket}/{unquote(name)}")
                if body is not None:
                    return self.reply(200, body, "image/jpeg")
            elif path.startswith("/storage/v1/b/"):  # bucket metadata
                bucket = path.removeprefix("/storage/v1/b/")
                return self.reply(200, json.dumps({"name": bucket}).encode(), "application/json")
            error = {"error": {"code": 404, "message": f"{path} not found"}}
            self.reply(404, json.dumps(error).encode(), "application/json")

        def reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{server.server_port}")
    try:
        yield objects
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -- the page ------------------------------------------------------------------------------
class Page(HTMLParser):
    """The <img> sources and the fine rows (their id and cell texts) of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.images: list[str] = []
        self.rows: dict[str, list[str]] = {}
        self.scripts = 0
        self._row: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes.get("src") or "")
        elif tag == "script":
            self.scripts += 1
        elif tag == "tr" and attributes.get("class") == "fine":
            self._row = self.rows.setdefault(attributes["data-fine-id"], [])
        elif tag == "td" and self._row is not None:
            self._row.append("")

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._row:
            self._row[-1] += data

    def charts(self) -> list[bytes]:
        prefix = "data:image/png;base64,"
        return [base64.b64decode(s[len(prefix) :]) for s in self.images if s.startswith(prefix)]


# -- Chromium ------------------------------------------------------------------------------
def _installed_chromium() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def chromium_binary() -> str:
    """Debian's chromium; installed with apt-get as root when missing, else the test fails."""
    found = _installed_chromium()
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"Chromium is needed to render the report and is missing: {INSTALL_HINT}")
    started = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.fail(f"`{' '.join(argv)}` failed:\n{done.stderr[-2000:]}\n{INSTALL_HINT}")
    print(f"chromium installed with apt-get in {time.monotonic() - started:.0f} s")
    found = _installed_chromium()
    if not found:
        pytest.fail(f"apt-get installed no chromium binary: {INSTALL_HINT}")
    return found


@pytest.fixture(scope="module")
def chromium() -> str:
    return chromium_binary()


def run_chromium(binary: str, profile: Path, *args: str) -> str:
    """Runs headless Chromium in its own process group, bounded; returns its stdout."""
    profile.mkdir(parents=True, exist_ok=True)
    argv = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    env = {**os.environ, "HOME": str(profile)}
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        out, err = process.communicate(timeout=CHROMIUM_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"chromium did not finish in {CHROMIUM_TIMEOUT_S} s: {argv}")
    finally:
        try:  # helpers it started (crashpad) share its process group
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert process.returncode == 0, err[-2000:]
    return out


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the PNG's IHDR chunk, without an imaging library."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", header[16:24])


def assert_not_blank_and_shows_the_charts(path: Path) -> None:
    assert png_size(path) == WINDOW
    assert path.stat().st_size > 50_000, "screenshot too small to hold the page"
    try:
        from PIL import Image  # Pillow comes with matplotlib, a runtime requirement
    except ImportError:
        return  # the IHDR and the size above are all that can be checked without it
    with Image.open(path) as shot:
        pixels = shot.convert("RGB")
        colours = pixels.getcolors(maxcolors=1 << 20) or []
    drawn = sum(count for count, rgb in colours if rgb != (255, 255, 255))
    assert drawn > 0.02 * WINDOW[0] * WINDOW[1], "screenshot is (almost) blank"

    def close(rgb: tuple[int, int, int], hex_colour: str) -> bool:
        want = bytes.fromhex(hex_colour.lstrip("#"))
        return all(abs(a - b) <= 12 for a, b in zip(rgb, want, strict=True))

    photo = "#" + bytes(PHOTO_RGB).hex()
    for name, colour, least in (
        ("charts' bars", BAR_COLOUR, 10_000),
        ("speed limit line", LIMIT_COLOUR, 200),
        ("photo thumbnail", photo, 5_000),
    ):
        painted = sum(count for count, rgb in colours if close(rgb, colour))
        assert painted > least, f"the {name} ({colour}) are not on the screenshot: {painted}"


# -- the test ------------------------------------------------------------------------------
def test_report_shows_the_charts_and_every_fine_of_the_warehouse(
    stack, chromium, storage_photos, tmp_path
):
    warehouse = Warehouse(stack.project_id, DATASET)
    seeded = seed(warehouse)
    storage_photos[photo_url(WITH_PHOTO).removeprefix("gs://")] = jpeg_photo()
    assert (warehouse.count(FINES), warehouse.count(VEHICLE_SPEEDS)) == (
        EXPECTED_FINE_ROWS,
        EXPECTED_SPEED_ROWS,
    )

    out = tmp_path / "report"
    started = time.monotonic()
    assert report.main(["--project_id", stack.project_id, "--bq_dataset", DATASET,
                        "--out", str(out)]) == 0  # fmt: skip
    print(f"report written in {time.monotonic() - started:.1f} s")
    index = out / "index.html"
    page = Page(index.read_text(encoding="utf-8"))

    charts = page.charts()
    assert len(charts) == 5
    # Rows written without a limit source (as before issue 28) count as the default's.
    assert f"default: {EXPECTED_FINES}." in index.read_text(encoding="utf-8")
    assert all(chart.startswith(b"\x89PNG\r\n\x1a\n") for chart in charts)
    summary = re.search(r'<p class="summary">(.*?)</p>', index.read_text(encoding="utf-8"))
    assert summary and summary.group(1) == SEEDED_SUMMARY
    assert len(page.rows) == EXPECTED_FINES  # one row per fine, each traversal once
    assert "93.0 km/h" in page.rows[seeded.corrected][3]
    assert seeded.merged in page.rows
    assert seeded.corrected_under not in page.rows
    assert not set(seeded.merged_parts) & page.rows.keys()
    photos = {cells[2]: (cells[6], cells[7]) for cells in page.rows.values()}
    assert photos.pop(WITH_PHOTO) == ("", photo_url(WITH_PHOTO))  # the thumbnail: an <img>
    assert photos.pop(PHOTO_MISSING) == ("photo unavailable", photo_url(PHOTO_MISSING))
    assert photos.pop(WITHOUT_EVIDENCE[0]) == ("evidence not in yet", "\N{EM DASH}")
    assert set(photos.values()) == {("no photo yet", "\N{EM DASH}")}
    assert sum(src.startswith("data:image/jpeg;base64,") for src in page.images) == 1
    assert page.scripts == 0  # the vehicle id <script>... is text, not markup
    assert any(EVIL_VEHICLE in cells[2] for cells in page.rows.values())
    entries = [cells[0] for cells in page.rows.values()]
    assert entries == sorted(entries, reverse=True)  # newest first

    profile = tmp_path / "chromium-profile"
    screenshot = out / "screenshot.png"
    run_chromium(chromium, profile, f"--screenshot={screenshot}",
                 f"--window-size={WINDOW[0]},{WINDOW[1]}", index.as_uri())  # fmt: skip
    print(f"screenshot: {screenshot}")
    assert_not_blank_and_shows_the_charts(screenshot)

    dom = Page(run_chromium(chromium, profile, "--dump-dom", index.as_uri()))
    assert len(dom.charts()) == 5
    assert sum(src.startswith("data:image/jpeg;base64,") for src in dom.images) == 1
    assert dom.rows.keys() == page.rows.keys()
    assert dom.scripts == 0


def fine_ids(rows: SectionRows) -> set[str]:
    return {row["fine_id"] for row in rows.latest}


def assert_sections_agree(rows: SectionRows) -> None:
    """The summary, every chart and the table count the same fines and traversals."""
    fines = rows.totals.fines
    assert sum(row["fines"] for row in rows.per_hour) == fines
    assert sum(row["fines"] for row in rows.per_radar) == fines
    assert sum(row["traversals"] for row in rows.speeds if row["is_ticketed"]) == fines
    assert sum(row["traversals"] for row in rows.speeds) == rows.totals.traversals
    assert len(rows.latest) == len(fine_ids(rows)) == fines  # the table holds them all


def test_each_traversal_counts_once_in_every_query(stack):
    """A correction replaces its row, a merge the ids it supersedes, in every section."""
    warehouse = Warehouse(stack.project_id, "it_report_once")
    seeded = seed(warehouse)
    rows = read_snapshot(warehouse, SEEDED_UNTIL, latest=50)
    assert rows.totals == Totals(
        traversals=EXPECTED_TRAVERSALS,
        fines=EXPECTED_FINES,
        fines_without_evidence=1,
        plates_read=0,
        plate_read_share=0.0,
    )
    assert_sections_agree(rows)
    t0_hour = datetime.fromtimestamp(T0_MS // HOUR_MS * HOUR_MS / 1000, UTC)
    per_hour = {round((row["hour"] - t0_hour).total_seconds() / 3600): row["fines"]
                for row in rows.per_hour}  # fmt: skip
    assert per_hour == {0: 2, 1: 2, 2: 3, 3: 3}  # v11 and v12 (merged) in hour 2, v14 in 3
    assert {row["radar_id"]: row["fines"] for row in rows.per_radar} == {
        "radar-1": 4,  # v01 v04 v10 v11; v13 was corrected under the limit
        "radar-2": 4,  # v03 v05 the script vehicle, v12 once
        "radar-3": 2,  # v07 v14
    }
    latest = {row["fine_id"]: row for row in rows.latest}
    assert latest[seeded.corrected]["avg_speed_kmh"] == pytest.approx(93.0, abs=0.05)  # not 70
    assert seeded.merged in latest and not set(seeded.merged_parts) & latest.keys()
    assert seeded.corrected_under not in latest
    assert latest[seeded.without_evidence]["has_evidence"] is False
    assert sum(not row["has_evidence"] for row in rows.latest) == 1


def test_rows_processed_after_as_of_change_no_section(stack):
    warehouse = Warehouse(stack.project_id, "it_report_as_of")
    seeded = seed(warehouse)
    no_photos = lambda _url: None  # noqa: E731
    before = build_report(warehouse, photos=no_photos, as_of=SEEDED_UNTIL)

    # Processed after as_of: a new fine, v01 corrected under the limit, v03 merged into a
    # traversal that starts a minute earlier.
    later_ms = round(SEEDED_UNTIL.timestamp() * 1000) + MINUTE_MS
    v01_under = traversal("v01", 30.0, "radar-1", 0, 5)
    v03 = traversal("v03", 55.0, "radar-2", 0, 20)
    v03_merged = dataclasses.replace(
        traversal("v03", 55.0, "radar-2", 0, 19), supersedes=(v03.traversal_id,)
    )
    new_fine = traversal("v20", 90.0, "radar-1", 4, 10)
    write_rows(warehouse, [(v01_under, later_ms, False, None), (v03_merged, later_ms, True, None),
                           (new_fine, later_ms, True, None)])  # fmt: skip
    assert warehouse.count(VEHICLE_SPEEDS) == EXPECTED_SPEED_ROWS + 3

    after = build_report(warehouse, photos=no_photos, as_of=SEEDED_UNTIL)
    assert after.summary == before.summary == SEEDED_SUMMARY
    assert [(s.key, s.explanation) for s in after.sections] == [
        (s.key, s.explanation) for s in before.sections
    ]
    assert [s.png for s in after.sections] == [s.png for s in before.sections]
    assert after.latest == before.latest
    assert_sections_agree(read_snapshot(warehouse, SEEDED_UNTIL, latest=50))

    # Read now, the same warehouse shows the later rows, each traversal still once.
    now = read_snapshot(warehouse, datetime.now(UTC), latest=50)
    assert_sections_agree(now)
    assert (now.totals.traversals, now.totals.fines) == (15, 10)  # +v20 +v03 merged -v03
    assert fine_ids(now) == (
        fine_ids(read_snapshot(warehouse, SEEDED_UNTIL, latest=50))
        - {v01_under.traversal_id, v03.traversal_id}
        | {v03_merged.traversal_id, new_fine.traversal_id}
    )
    assert seeded.merged in fine_ids(now)


def test_the_demo_hook_writes_the_same_report_and_a_missing_dataset_fails_cleanly(
    stack, tmp_path, capsys
):
    Warehouse(stack.project_id, "it_report_demo").ensure_tables()
    index, written = demo.write_report(stack, "it_report_demo", tmp_path / "demo")
    assert index == tmp_path / "demo" / "index.html"
    page = Page(index.read_text(encoding="utf-8"))
    assert (len(page.charts()), len(page.rows)) == (5, 0)  # empty tables: charts say so
    assert written.summary == "0 fines, 0 measured traversals."

    missing = ["--project_id", stack.project_id, "--bq_dataset", "it_report_missing"]
    assert report.main([*missing, "--out", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert "report: the warehouse query failed" in err
    assert "python -m pipeline.provision --project" in err  # what creates the views


def test_without_chromium_nor_root_the_test_fails_saying_how_to_install_it(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    monkeypatch.setattr(os, "access", lambda *_args: False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium"):
        chromium_binary()
