"""The analyst report without a warehouse: its SQL files, one snapshot, charts, photos, HTML."""

import re
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path

import pytest
from google.api_core.exceptions import NotFound

from analyst_report import report
from analyst_report.charts import (
    fines_per_hour_section,
    fines_per_radar_section,
    plate_read_section,
    speed_distribution_section,
    speed_limits,
)
from analyst_report.contents import LatestFine, Report, build_report, latest_fines, summary_line
from analyst_report.page import render_html
from analyst_report.photos import THUMBNAIL_PX, fetch_photo, make_thumbnail
from analyst_report.queries import SNAPSHOT_READINGS, SnapshotMoved, Totals, load_sql, sql_names
from section_speed.clients.warehouse import Warehouse
from section_speed.domain import defaults

REPO = Path(__file__).resolve().parents[2]
QUERIES = {
    "fines_per_hour",
    "fines_per_radar",
    "speed_distribution",
    "summary",
    "latest_fines",
    "fines_per_limit_source",
}
AGGREGATE = re.compile(
    r"\b(COUNT|COUNTIF|SUM|AVG|MIN|MAX|SAFE_DIVIDE|APPROX_QUANTILES|ARRAY_AGG|ANY_VALUE)\s*\(",
    re.IGNORECASE,
)
# The shared CTEs, from the first WITH to the query's own SELECT (the last one at line start).
PRELUDE = re.compile(r"^WITH .*?\n\)\n(?=SELECT\n(?:(?!^SELECT\n).)*\Z)", re.DOTALL | re.MULTILINE)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def without_comments(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())


def select_items(sql: str) -> list[str]:
    """Every item of every SELECT list (split at commas outside parentheses)."""
    items, code = [], " ".join(without_comments(sql).split())
    for start in (m.end() for m in re.finditer(r"\bSELECT\b", code, re.IGNORECASE)):
        depth, item = 0, ""
        for position in range(start, len(code)):
            char = code[position]
            depth += {"(": 1, ")": -1}.get(char, 0)
            at_end = depth == 0 and re.match(r"\s+FROM\b", code[position:], re.IGNORECASE)
            if depth < 0 or at_end or (depth == 0 and char == ","):
                items.append((item + (char if at_end else "")).strip())
                item = ""
                if depth < 0 or at_end:
                    break
            else:
                item += char
        else:
            items.append(item.strip())
    return items


def unaliased_aggregates(sql: str) -> list[str]:
    return [
        item
        for item in select_items(sql)
        if AGGREGATE.search(item) and not re.search(r"\bAS\s+\w+$", item, re.IGNORECASE)
    ]


# -- the SQL files -----------------------------------------------------------------------
def test_the_package_ships_the_five_queries():
    assert set(sql_names()) == QUERIES


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_each_query_formats_with_project_and_dataset_only(name):
    sql = load_sql(name, "my-project", "it_report")
    assert "`my-project.it_report." in sql
    assert "{" not in sql and "}" not in sql


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_each_query_aliases_every_aggregate(name):
    # The emulator names an un-aliased COUNT(*) `count_star()`, BigQuery `f0_`.
    assert unaliased_aggregates(load_sql(name, "p-1", "d")) == []


def test_the_aggregate_check_catches_an_unaliased_count():
    assert unaliased_aggregates("SELECT radar_id, COUNT(*) FROM t GROUP BY radar_id") == [
        "COUNT(*)"
    ]
    assert unaliased_aggregates("SELECT COUNTIF(x IS NULL) AS n, a FROM (SELECT a FROM t)") == []


def prelude(name: str) -> str:
    found = PRELUDE.search(load_sql(name, "p-1", "d"))
    assert found, f"{name}.sql does not start with the shared WITH ... CTEs"
    return found.group(0)


def test_every_query_shares_one_prelude_that_counts_each_traversal_once():
    """The same CTEs, word for word, in every file, reading the views alone: the rule of
    what counts is the views' (section_speed/domain/schemas.py), never the files'."""
    shared = {prelude(name) for name in QUERIES}
    assert len(shared) == 1
    code = " ".join(without_comments(shared.pop()).split())
    for clause in (
        # one moment, read through the views that hold the rules (docs/warehouse.md, Views)
        "FROM `p-1.d.counted_traversals` "
        "WHERE valid_from <= @as_of AND (valid_until IS NULL OR @as_of < valid_until)",
        "FROM `p-1.d.fine_revisions` "
        "WHERE valid_from <= @as_of AND (valid_until IS NULL OR @as_of < valid_until)",
        # a fine is a counted traversal over the limit, its evidence joined on
        "LEFT JOIN evidence ON evidence.fine_id = traversals.traversal_id "
        "WHERE traversals.is_ticketed",
    ):
        assert clause in code
    assert "ROW_NUMBER" not in code and "supersedes" not in code


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_each_query_reads_the_tables_only_through_the_prelude(name):
    """After the CTEs a query counts `traversals` or `fines`, never a table's raw rows."""
    sql = load_sql(name, "p-1", "d")
    own = without_comments(sql[len(sql.split(prelude(name))[0]) + len(prelude(name)) :])
    assert "`" not in own
    assert re.search(r"\bFROM (traversals|fines)\b", own)


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_comments_name_no_query_parameter(name):
    # The BigQuery emulator counts an @name in a comment as a parameter and then fails.
    comments = [line for line in load_sql(name, "p-1", "d").splitlines() if "--" in line]
    assert not any("@" in line.split("--", 1)[1] for line in comments)


@pytest.mark.parametrize(
    ("project", "dataset"),
    [("p-1", "d`; DROP TABLE x; --"), ("p-1", "a.b"), ("p`1", "d"), ("", "d"), ("p-1", "")],
)
def test_identifiers_that_are_not_names_are_refused(project, dataset):
    with pytest.raises(ValueError):
        load_sql("latest_fines", project, dataset)


def test_a_domain_scoped_project_is_accepted():
    sql = load_sql("fines_per_hour", "example.com:my-project", "d")
    assert "`example.com:my-project.d.fine_revisions`" in sql


# -- charts ------------------------------------------------------------------------------
def hour(h: int) -> datetime:
    return datetime(2026, 11, 18, h, tzinfo=UTC)


SPEED_ROWS = [
    {"radar_id": "r1", "speed_limit_mph": 25.0, "speed_bin_mph": 20, "is_ticketed": False,
     "traversals": 4},
    {"radar_id": "r1", "speed_limit_mph": 25.0, "speed_bin_mph": 31, "is_ticketed": True,
     "traversals": 2},
    {"radar_id": "r2", "speed_limit_mph": 25.0, "speed_bin_mph": 27, "is_ticketed": True,
     "traversals": 1},
    {"radar_id": "r3", "speed_limit_mph": 30.0, "speed_bin_mph": 27, "is_ticketed": False,
     "traversals": 9},
]  # fmt: skip


def test_the_most_common_limit_is_the_one_of_most_radars():
    limits = speed_limits(SPEED_ROWS)
    assert limits.most_common_mph == 25.0  # 2 radars, though 30 mph has more traversals
    assert limits.radars_by_limit == {25.0: {"r1", "r2"}, 30.0: {"r3"}}
    assert limits.from_data


def test_without_data_the_limit_is_the_default():
    limits = speed_limits([])
    assert (limits.most_common_mph, limits.from_data) == (defaults.SPEED_LIMIT_MPH, False)


@pytest.mark.parametrize(
    ("draw", "rows"),
    [
        (fines_per_hour_section, [{"hour": hour(9), "fines": 3}]),
        (fines_per_radar_section, [{"radar_id": "r1", "fines": 3, "mean_speed_mph": 40}]),
        (speed_distribution_section, SPEED_ROWS),
        (plate_read_section, Totals(5, 3, 1, 1, 1 / 3)),
    ],
)
def test_each_chart_is_a_png_with_data_and_without(draw, rows):
    for data in (rows, [] if isinstance(rows, list) else Totals(0, 0, 0, 0, None)):
        section = draw(data)
        assert section.png.startswith(PNG_MAGIC)
        assert section.title and section.explanation


def test_the_speed_chart_names_its_limit_and_the_plate_share_is_honest():
    speeds = speed_distribution_section(SPEED_ROWS)
    assert "speed limit of 25 mph (40.2 km/h), on 2 of 3 radars" in speeds.explanation
    # r1's 31 and r2's 27 are over their 25 mph; r3's 27 is under its 30 mph.
    assert "16 measured traversals, fined or not; 3 were fined" in speeds.explanation
    plates = plate_read_section(Totals(5, 3, 0, 0, 0.0))
    assert plates.explanation.startswith("0 of 3 fines have a licence plate read (0 %).")
    pending = plate_read_section(Totals(5, 4, 1, 3, 0.75))
    assert pending.explanation == (
        "3 of 4 fines have a licence plate read (75 %). A fine without a plate cannot be sent "
        "to the vehicle's owner. 1 fine still without evidence (plate and photo) in the "
        "warehouse: the fine is measured, its evidence row not yet written."
    )


# -- photos ------------------------------------------------------------------------------
class FakeBlob:
    def __init__(self, store: dict, bucket: str, name: str) -> None:
        self.store, self.key = store, (bucket, name)

    def download_as_bytes(self, **_kwargs) -> bytes:
        if self.key not in self.store:
            raise NotFound(f"{self.key} not found")
        return self.store[self.key]


class FakeClient:
    def __init__(self, store: dict) -> None:
        self.store, self.asked = store, []

    def bucket(self, bucket: str):
        client = self

        class Bucket:
            def blob(self, name: str) -> FakeBlob:
                client.asked.append((bucket, name))
                return FakeBlob(client.store, bucket, name)

        return Bucket()


def jpeg(size: tuple[int, int]) -> bytes:
    from PIL import Image

    buffer = BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_a_photo_is_fetched_by_its_gs_url_and_none_when_missing_or_not_gs():
    client = FakeClient({("evidence", "fines/r1/2026-11-18/f1.jpg"): b"bytes"})
    assert fetch_photo("gs://evidence/fines/r1/2026-11-18/f1.jpg", client) == b"bytes"
    assert fetch_photo("gs://evidence/fines/missing.jpg", client) is None
    assert fetch_photo("https://example.com/f1.jpg", client) is None
    assert fetch_photo("gs://evidence", client) is None
    assert len(client.asked) == 2


def test_a_thumbnail_is_a_small_jpeg_and_none_for_bytes_that_are_no_image():
    from PIL import Image

    thumb = make_thumbnail(jpeg((1600, 1200)))
    assert thumb is not None
    with Image.open(BytesIO(thumb)) as picture:
        assert picture.format == "JPEG"
        assert picture.size == THUMBNAIL_PX
    assert make_thumbnail(b"not an image") is None


# -- the page ----------------------------------------------------------------------------
def fine_row(fine_id: str, vehicle_id: str, image_url: str | None = None) -> dict:
    return {
        "fine_id": fine_id,
        "radar_id": "radar-1",
        "vehicle_id": vehicle_id,
        "license_plate": None,
        "plate_confidence": None,
        "avg_speed_kmh": 72.0,
        "avg_speed_mph": 44.74,
        "speed_limit_mph": 25.0,
        "distance_m": 305.0,
        "duration_s": 15.25,
        "entry_time": hour(9),
        "exit_time": hour(9),
        "image_url": image_url,
        "processed_at": hour(10),
    }


def page(latest: tuple, radar: str = "radar-1") -> str:
    radars = [{"radar_id": radar, "fines": 1, "mean_speed_mph": 44.7}]
    sections = (fines_per_radar_section(radars),)
    return render_html(
        Report(
            source="p.d",
            as_of=hour(12),
            summary="1 fine",
            totals=Totals(len(latest), len(latest), 0, 0, 0.0),
            sections=sections,
            latest=latest,
        )
    )


def test_the_page_escapes_what_comes_from_the_warehouse():
    evil = "<script>alert('x')</script>"
    text = page(
        (LatestFine(fine_row('f"1', evil, image_url=f"gs://b/{evil}.jpg"), None),),
        radar=evil,
    )
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert 'data-fine-id="f&quot;1"' in text


def test_each_fine_is_one_row_with_its_photo_or_why_there_is_none():
    photos = {"gs://b/f2.jpg": make_thumbnail(jpeg((640, 480)))}
    rows = [fine_row("f1", "v1"), fine_row("f2", "v2", "gs://b/f2.jpg"),
            fine_row("f3", "v3", "gs://b/gone.jpg"),
            {**fine_row("f4", "v4"), "has_evidence": False}]  # fmt: skip
    text = page(latest_fines(rows, photos.get))
    assert text.count('<tr class="fine"') == 4
    assert text.count("no photo yet") == 1
    assert text.count("evidence not in yet") == 1 and text.count(">pending<") == 1
    assert text.count("photo unavailable") == 1
    assert text.count('src="data:image/jpeg;base64,') == 1
    assert ">gs://b/f2.jpg</code>" in text
    assert text.count('src="data:image/png;base64,') == 1  # the one chart given


def test_photos_are_fetched_only_for_fines_with_an_image_url():
    asked = []
    latest_fines(
        [fine_row("f1", "v1"), fine_row("f2", "v2", "gs://b/f2.jpg")],
        lambda url: asked.append(url),
    )
    assert asked == ["gs://b/f2.jpg"]


def test_main_requires_a_dataset_and_refuses_one_that_is_no_name(capsys):
    with pytest.raises(SystemExit) as missing:
        report.main([])
    assert missing.value.code == 2
    with pytest.raises(SystemExit) as bad:
        report.main(["--bq_dataset", "x`y"])
    assert bad.value.code == 2
    assert "not a BigQuery dataset name" in capsys.readouterr().err
    with pytest.raises(SystemExit) as naive:
        report.main(["--bq_dataset", "d", "--as_of", "2026-11-18T12:00:00"])
    assert naive.value.code == 2
    assert "give the time zone" in capsys.readouterr().err


def test_as_of_is_read_in_utc():
    moment = report._moment("2026-11-18T13:00:00+01:00")
    assert moment == datetime(2026, 11, 18, 12, tzinfo=UTC) and moment.tzinfo == UTC


def test_the_summary_gives_the_plate_share_only_when_there_are_fines():
    assert summary_line(Totals(11, 8, 0, 0, 0.0)) == (
        "8 fines, 11 measured traversals, plates read on 0 % of fines."
    )
    assert summary_line(Totals(11, 8, 2, 6, 0.75)) == (
        "8 fines, 11 measured traversals, plates read on 75 % of fines (2 without evidence yet)."
    )
    assert summary_line(Totals(0, 0, 0, 0, None)) == "0 fines, 0 measured traversals."


def test_explanations_count_in_words_that_agree():
    hourly = fines_per_hour_section([{"hour": hour(9), "fines": 1}])
    assert hourly.explanation.startswith("1 fine over 1 hour with fines")
    radars = fines_per_radar_section([{"radar_id": "r1", "fines": 2, "mean_speed_mph": 40}])
    assert "1 radar with fines; the most: r1 with 2." in radars.explanation


# -- one snapshot ------------------------------------------------------------------------
class FakeBigQuery:
    """Answers the report's queries with fixed rows, and the row counts up to as_of from a
    script (the warehouse growing while the report reads); records each query's as_of."""

    def __init__(self, row_counts: list[tuple[int, int]]) -> None:
        self.row_counts = row_counts
        self.as_of: list[datetime] = []
        self.asked: list[str] = []
        self.answers = {
            "summary": [{"traversals": 5, "fines": 2, "fines_without_evidence": 0,
                         "plates_read": 1, "plate_read_share": 0.5}],
            "fines_per_hour": [{"hour": hour(9), "fines": 2}],
            "fines_per_radar": [{"radar_id": "radar-1", "fines": 2, "mean_speed_mph": 44.7}],
            "speed_distribution": SPEED_ROWS,
            "latest_fines": [fine_row("f1", "v1"), fine_row("f2", "v2")],
            "fines_per_limit_source": [{"limit_source": "window", "fines": 2,
                                        "mean_limit_mph": 15.0}],
        }  # fmt: skip
        self.sql = {load_sql(name, "p-1", "d"): name for name in QUERIES}

    def get_table(self, table: str):
        raise NotFound(table)  # a dataset without the desk's tables: no verification section

    def query(self, sql: str, job_config):
        (as_of,) = [p.value for p in job_config.query_parameters if p.name == "as_of"]
        self.as_of.append(as_of)
        if "AS fine_rows" in sql:
            self.asked.append("rows_as_of")
            counts = self.row_counts.pop(0) if len(self.row_counts) > 1 else self.row_counts[0]
            rows = [{"fine_rows": counts[0], "speed_rows": counts[1]}]
        else:
            self.asked.append(self.sql[sql])
            rows = self.answers[self.sql[sql]]

        class Job:
            def result(self):
                return rows

        return Job()


def fake_warehouse(row_counts: list[tuple[int, int]]) -> tuple[Warehouse, FakeBigQuery]:
    client = FakeBigQuery(row_counts)
    return Warehouse("p-1", "d", client=client), client


def test_every_query_of_the_page_reads_as_of_one_moment():
    warehouse, client = fake_warehouse([(2, 6)])
    as_of = datetime(2026, 11, 18, 12, tzinfo=UTC)
    built = build_report(warehouse, photos=lambda _url: None, as_of=as_of)
    assert client.asked == ["rows_as_of", "summary", "fines_per_hour", "fines_per_radar",
                            "speed_distribution", "latest_fines", "fines_per_limit_source",
                            "rows_as_of"]  # fmt: skip
    assert client.as_of == [as_of] * 8
    assert built.as_of == as_of
    assert built.summary == "2 fines, 5 measured traversals, plates read on 50 % of fines."
    assert "as of 2026-11-18 12:00:00 UTC" in render_html(built)
    assert "Fines per limit source" in render_html(built) and "window: 2." in render_html(built)


def test_without_as_of_the_moment_is_taken_once_when_the_report_starts():
    warehouse, client = fake_warehouse([(2, 6)])
    started = datetime.now(UTC)
    built = build_report(warehouse, photos=lambda _url: None)
    assert set(client.as_of) == {built.as_of}
    assert started <= built.as_of <= datetime.now(UTC)


def test_rows_up_to_as_of_arriving_during_the_reading_make_it_read_everything_again():
    # A fine processed just before as_of lands while the sections are read: (2, 6) -> (3, 6).
    warehouse, client = fake_warehouse([(2, 6), (3, 6), (3, 6)])
    build_report(warehouse, photos=lambda _url: None)
    assert client.asked.count("summary") == client.asked.count("latest_fines") == 2
    assert client.asked.count("rows_as_of") == 3


def test_a_warehouse_that_never_settles_gives_no_report(tmp_path, capsys, monkeypatch):
    growing = [(n, n) for n in range(SNAPSHOT_READINGS + 1)] + [(99, 99)]
    warehouse, client = fake_warehouse(growing)
    with pytest.raises(SnapshotMoved, match="kept arriving over 4 readings"):
        build_report(warehouse, photos=lambda _url: None)
    assert client.asked.count("summary") == SNAPSHOT_READINGS

    warehouse, _ = fake_warehouse([(n, n) for n in range(10)])
    monkeypatch.setattr(report, "Warehouse", lambda *_args: warehouse)
    as_of = ["--as_of", (datetime.now(UTC) - timedelta(hours=1)).isoformat()]
    assert report.main(["--bq_dataset", "d", "--out", str(tmp_path), *as_of]) == 1
    assert "report: no consistent reading" in capsys.readouterr().err
    assert not (tmp_path / "index.html").exists()
