"""The analyst report without a warehouse: its SQL files, charts, photos and HTML escaping."""

import re
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path

import pytest
from google.api_core.exceptions import NotFound

from analyst_report import report
from pipeline.domain import defaults

REPO = Path(__file__).resolve().parents[2]
QUERIES = {
    "fines_per_hour",
    "fines_per_radar",
    "speed_distribution",
    "plate_read_share",
    "latest_fines",
}
AGGREGATE = re.compile(
    r"\b(COUNT|COUNTIF|SUM|AVG|MIN|MAX|SAFE_DIVIDE|APPROX_QUANTILES|ARRAY_AGG|ANY_VALUE)\s*\(",
    re.IGNORECASE,
)
DEDUP = re.compile(
    r"QUALIFY ROW_NUMBER\(\) OVER \(PARTITION BY (fine_id|traversal_id) "
    r"ORDER BY processed_at DESC\) = 1"
)
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
    assert set(report.sql_names()) == QUERIES


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_each_query_formats_with_project_and_dataset_only(name):
    sql = report.load_sql(name, "my-project", "it_report")
    assert "`my-project.it_report." in sql
    assert "{" not in sql and "}" not in sql


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_each_query_aliases_every_aggregate(name):
    # The emulator names an un-aliased COUNT(*) `count_star()`, BigQuery `f0_`.
    assert unaliased_aggregates(report.load_sql(name, "p-1", "d")) == []


def test_the_aggregate_check_catches_an_unaliased_count():
    assert unaliased_aggregates("SELECT radar_id, COUNT(*) FROM t GROUP BY radar_id") == [
        "COUNT(*)"
    ]
    assert unaliased_aggregates("SELECT COUNTIF(x IS NULL) AS n, a FROM (SELECT a FROM t)") == []


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_each_query_keeps_the_latest_row_of_a_corrected_fine(name):
    """A late correction is a second row with the same id and a later processed_at."""
    code = " ".join(without_comments(report.load_sql(name, "p-1", "d")).split())
    assert DEDUP.search(code), name


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_comments_name_no_query_parameter(name):
    # The BigQuery emulator counts an @name in a comment as a parameter and then fails.
    comments = [line for line in report.load_sql(name, "p-1", "d").splitlines() if "--" in line]
    assert not any("@" in line.split("--", 1)[1] for line in comments)


@pytest.mark.parametrize(
    ("project", "dataset"),
    [("p-1", "d`; DROP TABLE x; --"), ("p-1", "a.b"), ("p`1", "d"), ("", "d"), ("p-1", "")],
)
def test_identifiers_that_are_not_names_are_refused(project, dataset):
    with pytest.raises(ValueError):
        report.load_sql("latest_fines", project, dataset)


def test_a_domain_scoped_project_is_accepted():
    sql = report.load_sql("fines_per_hour", "example.com:my-project", "d")
    assert "`example.com:my-project.d.fines`" in sql


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
    limits = report.speed_limits(SPEED_ROWS)
    assert limits.most_common_mph == 25.0  # 2 radars, though 30 mph has more traversals
    assert limits.radars_by_limit == {25.0: {"r1", "r2"}, 30.0: {"r3"}}
    assert limits.from_data


def test_without_data_the_limit_is_the_default():
    limits = report.speed_limits([])
    assert (limits.most_common_mph, limits.from_data) == (defaults.SPEED_LIMIT_MPH, False)


@pytest.mark.parametrize(
    ("draw", "rows"),
    [
        (report.fines_per_hour_section, [{"hour": hour(9), "fines": 3}]),
        (report.fines_per_radar_section, [{"radar_id": "r1", "fines": 3, "mean_speed_mph": 40}]),
        (report.speed_distribution_section, SPEED_ROWS),
        (report.plate_read_section, {"fines": 3, "plates_read": 0, "plate_read_share": 0.0}),
    ],
)
def test_each_chart_is_a_png_with_data_and_without(draw, rows):
    for data in (rows, [] if isinstance(rows, list) else None):
        section = draw(data)
        assert section.png.startswith(PNG_MAGIC)
        assert section.title and section.explanation


def test_the_speed_chart_names_its_limit_and_the_plate_share_is_honest():
    speeds = report.speed_distribution_section(SPEED_ROWS)
    assert "speed limit of 25 mph (40.2 km/h), on 2 of 3 radars" in speeds.explanation
    # r1's 31 and r2's 27 are over their 25 mph; r3's 27 is under its 30 mph.
    assert "16 measured traversals, fined or not; 3 were fined" in speeds.explanation
    plates = report.plate_read_section({"fines": 3, "plates_read": 0, "plate_read_share": 0.0})
    assert plates.explanation.startswith("0 of 3 fines have a licence plate read (0 %).")


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
    assert report.fetch_photo("gs://evidence/fines/r1/2026-11-18/f1.jpg", client) == b"bytes"
    assert report.fetch_photo("gs://evidence/fines/missing.jpg", client) is None
    assert report.fetch_photo("https://example.com/f1.jpg", client) is None
    assert report.fetch_photo("gs://evidence", client) is None
    assert len(client.asked) == 2


def test_a_thumbnail_is_a_small_jpeg_and_none_for_bytes_that_are_no_image():
    from PIL import Image

    thumb = report.make_thumbnail(jpeg((1600, 1200)))
    assert thumb is not None
    with Image.open(BytesIO(thumb)) as picture:
        assert picture.format == "JPEG"
        assert picture.size == report.THUMBNAIL_PX
    assert report.make_thumbnail(b"not an image") is None


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
    sections = (report.fines_per_radar_section(radars),)
    return report.render_html(
        report.Report(
            source="p.d",
            generated_at=hour(12),
            summary="1 fine",
            total_fines=len(latest),
            sections=sections,
            latest=latest,
        )
    )


def test_the_page_escapes_what_comes_from_the_warehouse():
    evil = "<script>alert('x')</script>"
    text = page(
        (report.LatestFine(fine_row('f"1', evil, image_url=f"gs://b/{evil}.jpg"), None),),
        radar=evil,
    )
    assert "<script>" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in text
    assert 'data-fine-id="f&quot;1"' in text


def test_each_fine_is_one_row_with_its_photo_or_why_there_is_none():
    photos = {"gs://b/f2.jpg": report.make_thumbnail(jpeg((640, 480)))}
    rows = [fine_row("f1", "v1"), fine_row("f2", "v2", "gs://b/f2.jpg"),
            fine_row("f3", "v3", "gs://b/gone.jpg")]  # fmt: skip
    text = page(report.latest_fines(rows, photos.get))
    assert text.count('<tr class="fine"') == 3
    assert text.count("no photo yet") == 1
    assert text.count("photo unavailable") == 1
    assert text.count('src="data:image/jpeg;base64,') == 1
    assert ">gs://b/f2.jpg</code>" in text
    assert text.count('src="data:image/png;base64,') == 1  # the one chart given


def test_photos_are_fetched_only_for_fines_with_an_image_url():
    asked = []
    report.latest_fines(
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


def test_the_summary_gives_the_plate_share_only_when_there_are_fines():
    plates = {"fines": 8, "plates_read": 0, "plate_read_share": 0.0}
    assert report.summary_line(plates, 11) == (
        "8 fines, 11 measured traversals, plates read on 0 % of fines."
    )
    empty = {"fines": 0, "plates_read": 0, "plate_read_share": None}
    assert report.summary_line(empty, 0) == "0 fines, 0 measured traversals."


def test_explanations_count_in_words_that_agree():
    hourly = report.fines_per_hour_section([{"hour": hour(9), "fines": 1}])
    assert hourly.explanation.startswith("1 fine over 1 hour with fines")
    radars = report.fines_per_radar_section([{"radar_id": "r1", "fines": 2, "mean_speed_mph": 40}])
    assert "1 radar issued fines; the most: r1 with 2." in radars.explanation
