"""`python -m analyst_report.report`: the analyst report, one self-contained HTML page.

    python -m analyst_report.report --project_id PROJECT --bq_dataset DATASET --out report/

Runs the SQL in `analyst_report/sql/` (plain files an analyst can reuse in the BigQuery
console once `{project}.{dataset}` is replaced), draws one PNG chart per section with
matplotlib's Agg canvas (no display needed) and writes OUT/index.html: fines per hour,
fines per radar, the distribution of average speeds with the speed limit marked, the
share of plates read, and the latest fines with a thumbnail of each photo. Charts and
thumbnails are embedded as data: URIs, so the page is one file to open or send.
When the dataset has the verification desk's tables (docs/desk.md), the page also shows
the fines pending, issued and rejected, how fast officers decide and the plate readers'
accuracy as officers measured it (`analyst_report/sql/verification/`).

Every query counts each traversal once (the latest row per id, without the ids a merged
session supersedes) and reads the warehouse as of one moment, `--as_of` (default: when
the report starts): rows processed after it are left out, so the summary, the charts and
the table describe the same rows. docs/report.md explains both.
"""

import argparse
import base64
import html
import io
import logging
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import matplotlib.dates as mdates
from google.api_core.exceptions import GoogleAPIError, NotFound
from google.auth.exceptions import GoogleAuthError
from google.cloud import bigquery, storage
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from section_speed.clients.warehouse import Warehouse
from section_speed.domain import defaults
from section_speed.domain.traversal import kmh_to_mph, mph_to_kmh

_log = logging.getLogger(__name__)

Row = dict[str, Any]
PhotoSource = Callable[[str], bytes | None]  # gs:// URL -> JPEG thumbnail, or None

DEFAULT_LATEST = 50
# Reading the sections again when rows processed before as_of arrived meanwhile: a row
# is in flight for one insert batch, so a second reading nearly always agrees.
SNAPSHOT_READINGS = 4
MAX_RADARS_CHARTED = 20
THUMBNAIL_PX = (160, 120)
SQL_PACKAGE, SQL_DIR = "analyst_report", "sql"
# The desk's queries: their own folder and shared CTEs, over the desk's tables.
VERIFICATION_SQL_DIR = "sql/verification"
# Identifiers only are put into the SQL text (str.format); values go in as query parameters.
_PROJECT_RE = re.compile(r"^[a-z][a-z0-9.:-]{0,127}[a-z0-9]$")  # also example.com:project
_DATASET_RE = re.compile(r"^[A-Za-z0-9_]{1,1024}$")

BAR_COLOUR, OVER_COLOUR = "#3b6ea8", "#e08a2c"
LIMIT_COLOUR, OTHER_LIMIT_COLOUR = "#c0392b", "#7f7f7f"
READ_COLOUR, UNREAD_COLOUR, PENDING_COLOUR = "#2e8b57", "#c8c8c8", "#f2d16b"
COUNTED_ONCE = (
    "Each traversal counts once: a late correction replaces its earlier row and a merged "
    "session the traversals it supersedes."
)


# -- SQL -------------------------------------------------------------------------------
def sql_names() -> list[str]:
    """Names (without .sql) of the queries shipped in the package."""
    folder = resources.files(SQL_PACKAGE).joinpath(SQL_DIR)
    return sorted(f.name.removesuffix(".sql") for f in folder.iterdir() if f.name.endswith(".sql"))


def _with_names(sql: str, project: str, dataset: str) -> str:
    """`sql` with its `{project}.{dataset}` filled in, once both are checked to be names."""
    if not _PROJECT_RE.match(project):
        raise ValueError(f"not a Google Cloud project id: {project!r}")
    if not _DATASET_RE.match(dataset):
        raise ValueError(f"not a BigQuery dataset name (letters, digits, _): {dataset!r}")
    return sql.format(project=project, dataset=dataset)


def load_sql(name: str, project: str, dataset: str, folder: str = SQL_DIR) -> str:
    """The query `name` with its `{project}.{dataset}` filled in (identifiers, checked)."""
    text = resources.files(SQL_PACKAGE).joinpath(*folder.split("/"), f"{name}.sql").read_text()
    return _with_names(text, project, dataset)


def verification_sql_names() -> list[str]:
    """Names (without .sql) of the desk's queries (analyst_report/sql/verification/)."""
    folder = resources.files(SQL_PACKAGE).joinpath(*VERIFICATION_SQL_DIR.split("/"))
    return sorted(f.name.removesuffix(".sql") for f in folder.iterdir() if f.name.endswith(".sql"))


def _query(warehouse: Warehouse, sql: str, as_of: datetime, **parameters: int) -> list[Row]:
    config = bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ScalarQueryParameter("as_of", "TIMESTAMP", as_of),
            *(
                bigquery.ScalarQueryParameter(key, "INT64", value)
                for key, value in parameters.items()
            ),
        ]
    )  # Warehouse.query takes no parameters: its client runs the job.
    return [dict(row.items()) for row in warehouse.client.query(sql, job_config=config).result()]


def run_query(
    warehouse: Warehouse, name: str, as_of: datetime, folder: str = SQL_DIR, **parameters: int
) -> list[Row]:
    """Rows of analyst_report/FOLDER/NAME.sql as of `as_of` (@as_of); `parameters` are INT64."""
    sql = load_sql(name, warehouse.project, warehouse.dataset, folder)
    return _query(warehouse, sql, as_of, **parameters)


@dataclass(frozen=True)
class Totals:
    """summary.sql's row: the page's first line, the plates chart and the table's count."""

    traversals: int
    fines: int
    fines_without_evidence: int  # fined traversals whose fines row (plate, photo) is not in yet
    plates_read: int
    plate_read_share: float | None  # None without fines

    @classmethod
    def from_row(cls, row: Row) -> "Totals":
        return cls(**{field.name: row[field.name] for field in fields(cls)})


def warehouse_totals(warehouse: Warehouse, as_of: datetime | None = None) -> Totals:
    """Traversals and fines, each once, as of `as_of` (default now): what the report shows."""
    (row,) = run_query(warehouse, "summary", as_of or datetime.now(UTC))
    return Totals.from_row(row)


# Rows per table processed up to as_of, every row counted: the tables only grow (streaming
# inserts), so the same counts before and after the sections' queries mean they all read
# the same rows. Not an analyst's query, so not in sql/.
_ROWS_AS_OF = """SELECT
  (SELECT COUNT(*) FROM `{project}.{dataset}.fines` WHERE processed_at <= @as_of) AS fine_rows,
  (SELECT COUNT(*) FROM `{project}.{dataset}.vehicle_speeds` WHERE processed_at <= @as_of)
    AS speed_rows"""


def rows_as_of(warehouse: Warehouse, as_of: datetime) -> tuple[int, int]:
    """(fines rows, vehicle_speeds rows) processed up to `as_of`, corrections included."""
    sql = _with_names(_ROWS_AS_OF, warehouse.project, warehouse.dataset)
    (row,) = _query(warehouse, sql, as_of)
    return int(row["fine_rows"]), int(row["speed_rows"])


class SnapshotMoved(RuntimeError):
    """Rows processed before as_of kept arriving while the sections were read."""


# -- verification (the desk's decisions) -------------------------------------------------
@dataclass(frozen=True)
class ReaderAccuracy:
    """reader_accuracy.sql's row: one plate reader's reads as officers judged them."""

    plate_reader: str
    reads_confirmed: int
    reads_corrected: int  # the reader read a plate; the officer typed another
    unread_typed: int  # the reader read none; the officer typed it
    rejected_unreadable: int
    rejected_other: int
    read_accuracy: float | None  # confirmed / (confirmed + corrected); None without either

    @classmethod
    def from_row(cls, row: Row) -> "ReaderAccuracy":
        return cls(**{field.name: row[field.name] for field in fields(cls)})


@dataclass(frozen=True)
class Verification:
    """The desk's totals (verification/summary.sql) and the readers' accuracy."""

    fines_pending: int  # awaiting a decision on their current revision
    fines_changed: int  # of those, decided on an earlier revision
    fines_issued: int  # confirmed or corrected: a notice
    fines_rejected: int
    notices: int  # rows of the notices table, one per fine revision issued
    decisions: int  # decisions on a plate (confirm, correct, reject)
    decision_ms_median: int | None  # from opening a fine (its claim) to the decision
    decision_ms_p90: int | None
    readers: tuple[ReaderAccuracy, ...] = ()

    @classmethod
    def from_rows(cls, summary: Row, readers: Sequence[Row]) -> "Verification":
        values = {f.name: summary[f.name] for f in fields(cls) if f.name != "readers"}
        return cls(**values, readers=tuple(ReaderAccuracy.from_row(row) for row in readers))


# The desk's rows up to as_of, every row counted: as _ROWS_AS_OF, unchanged before and
# after the queries means they read the same rows.
_DECISIONS_AS_OF = """SELECT
  (SELECT COUNT(*) FROM `{project}.{dataset}.fine_reviews` WHERE decided_at <= @as_of)
    AS review_rows,
  (SELECT COUNT(*) FROM `{project}.{dataset}.notices` WHERE decided_at <= @as_of)
    AS notice_rows"""
DESK_TABLES = ("fine_reviews", "notices")


def has_desk_tables(warehouse: Warehouse) -> bool:
    """Whether the dataset holds the desk's tables (python -m pipeline.provision makes them)."""
    try:
        for name in DESK_TABLES:
            warehouse.client.get_table(f"{warehouse.project}.{warehouse.dataset}.{name}")
    except NotFound:
        return False
    return True


def read_verification(warehouse: Warehouse, as_of: datetime) -> Verification:
    """The desk's queries, all of the same decisions: read again while rows up to as_of
    still arrive (a decision is stamped before its row is inserted)."""
    counts = _with_names(_DECISIONS_AS_OF, warehouse.project, warehouse.dataset)
    before = _query(warehouse, counts, as_of)
    for _ in range(SNAPSHOT_READINGS):
        (summary,) = run_query(warehouse, "summary", as_of, VERIFICATION_SQL_DIR)
        readers = run_query(warehouse, "reader_accuracy", as_of, VERIFICATION_SQL_DIR)
        after = _query(warehouse, counts, as_of)
        if after == before:
            return Verification.from_rows(summary, readers)
        before = after
    raise SnapshotMoved(
        f"decisions before {as_of.isoformat()} kept arriving over {SNAPSHOT_READINGS} "
        "readings; give an earlier --as_of"
    )


def _seconds(ms: int | None) -> str:
    return "-" if ms is None else f"{ms / 1000:.1f} s"


def verification_line(verification: Verification) -> str:
    """The desk's totals in one sentence."""
    v = verification
    text = (
        f"Verified: {v.fines_issued} issued ({v.notices} notices), {v.fines_rejected} "
        f"rejected, {v.fines_pending} pending"
    )
    if v.fines_changed:
        text += f" ({v.fines_changed} changed since a decision)"
    if v.decisions:
        text += (
            f"; officers decide in {_seconds(v.decision_ms_median)} (median), "
            f"{_seconds(v.decision_ms_p90)} (90th percentile) over "
            f"{_count(v.decisions, 'decision')}"
        )
    return text + "."


# -- charts ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Section:
    """One chart of the page: its title, a sentence or two to read it, and the PNG."""

    key: str
    title: str
    explanation: str
    png: bytes


def _figure(height_in: float = 3.6) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(9.0, height_in), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # the non-interactive Agg canvas: no display, no pyplot state
    axes = figure.add_subplot()
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _no_data(axes: Axes, text: str, keep_x_ticks: bool = False) -> None:
    axes.text(0.5, 0.6, text, transform=axes.transAxes, ha="center", va="center", fontsize=13,
              color=OTHER_LIMIT_COLOUR, backgroundcolor="white")  # fmt: skip
    axes.set_yticks([])
    if not keep_x_ticks:
        axes.set_xticks([])


def _count(n: int, noun: str) -> str:
    """`1 hour`, `3 hours`: explanations read as sentences."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def fines_per_hour_section(rows: Sequence[Row]) -> Section:
    """Bars of fines per hour of entry into the section (fines_per_hour.sql)."""
    figure, axes = _figure()
    axes.set_xlabel("hour the vehicle entered the section (UTC)")
    axes.set_ylabel("fines (count)")
    if not rows:
        _no_data(axes, "no fines in the warehouse yet")
        explanation = "No fines in the warehouse yet."
    else:
        hours = [row["hour"] for row in rows]
        counts = [row["fines"] for row in rows]
        axes.bar(mdates.date2num(hours), counts, width=0.9 / 24, align="edge", color=BAR_COLOUR)
        axes.set_xlim(
            mdates.date2num(min(hours) - timedelta(hours=1)),
            mdates.date2num(max(hours) + timedelta(hours=2)),
        )
        locator = mdates.AutoDateLocator(tz=UTC)
        axes.xaxis.set_major_locator(locator)
        axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        peak = max(rows, key=lambda row: row["fines"])
        explanation = (
            f"{_count(sum(counts), 'fine')} over {_count(len(rows), 'hour')} with fines, "
            "by the hour the vehicle "
            f"entered the section (UTC). Busiest hour: {_utc(peak['hour'])} with "
            f"{peak['fines']} fines. {COUNTED_ONCE}"
        )
    return Section("fines-per-hour", "Fines per hour", explanation, _png(figure))


def fines_per_radar_section(rows: Sequence[Row]) -> Section:
    """Horizontal bars of fines per radar, most fined on top (fines_per_radar.sql)."""
    shown = list(rows[:MAX_RADARS_CHARTED])
    figure, axes = _figure(max(2.4, 0.45 * len(shown) + 1.3))
    axes.set_xlabel("fines (count)")
    axes.set_ylabel("radar (section)")
    if not shown:
        _no_data(axes, "no fines in the warehouse yet")
        explanation = "No fines in the warehouse yet."
    else:
        shown.reverse()  # barh draws bottom-up: the most fined radar ends on top
        names = [str(row["radar_id"]) for row in shown]
        counts = [row["fines"] for row in shown]
        bars = axes.barh(names, counts, color=BAR_COLOUR)
        labels = [f"{row['fines']}  (mean {row['mean_speed_mph']:.1f} mph)" for row in shown]
        axes.bar_label(bars, labels=labels, padding=4, fontsize=9)
        axes.set_xlim(0, max(counts) * 1.35)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        top = rows[0]
        explanation = (
            f"Fines per radar (a radar is one section), most fined first; each bar's label "
            f"gives the mean average speed of its fines. "
            f"{_count(len(rows), 'radar')} issued fines; the most: {top['radar_id']} "
            f"with {top['fines']}."
        )
        if len(rows) > len(shown):
            explanation += f" The chart shows the top {len(shown)}."
    return Section("fines-per-radar", "Fines per radar", explanation, _png(figure))


@dataclass(frozen=True)
class SpeedLimits:
    """The limits in force according to the data: the most common one is marked."""

    most_common_mph: float
    radars_by_limit: dict[float, set[str]]
    from_data: bool


def speed_limits(rows: Sequence[Row]) -> SpeedLimits:
    """Limits per radar from speed_distribution.sql; the default limit when there is none."""
    radars: dict[float, set[str]] = {}
    traversals: Counter[float] = Counter()
    for row in rows:
        if row["speed_limit_mph"] is None:
            continue
        limit = float(row["speed_limit_mph"])
        radars.setdefault(limit, set()).add(str(row["radar_id"]))
        traversals[limit] += row["traversals"]
    if not radars:
        return SpeedLimits(defaults.SPEED_LIMIT_MPH, {}, from_data=False)
    # Most radars first, then most traversals, then the lower limit: deterministic.
    most_common = max(radars, key=lambda limit: (len(radars[limit]), traversals[limit], -limit))
    return SpeedLimits(most_common, radars, from_data=True)


def speed_distribution_section(rows: Sequence[Row]) -> Section:
    """Histogram of average speeds in 1 mph bins, limit(s) marked (speed_distribution.sql).

    Traversals are coloured by the pipeline's own verdict (`is_ticketed`), not by their
    bin: a vehicle at exactly the limit shares a bin with fined ones but was not fined.
    """
    limits = speed_limits(rows)
    under: Counter[int] = Counter()
    over: Counter[int] = Counter()
    for row in rows:
        side = over if row["is_ticketed"] else under
        side[int(row["speed_bin_mph"])] += row["traversals"]
    figure, axes = _figure(4.2)
    axes.set_xlabel("average speed over the section (mph), 1 mph bins")
    axes.set_ylabel("traversals (count)")
    kmh_axis = axes.secondary_xaxis("top", functions=(mph_to_kmh, kmh_to_mph))
    kmh_axis.set_xlabel("average speed (km/h)")
    limit = limits.most_common_mph
    if limits.from_data:
        radar_count = sum(len(radars) for radars in limits.radars_by_limit.values())
        where = f"on {len(limits.radars_by_limit[limit])} of {radar_count} radars"
        label = f"speed limit {limit:g} mph ({where})"
    else:
        where, label = "no data, the default", f"default speed limit {limit:g} mph (no data)"
    axes.axvline(limit, color=LIMIT_COLOUR, linewidth=2.5, label=label)
    axes.annotate(f"limit {limit:g} mph", (limit, 1.0), xycoords=("data", "axes fraction"),
                  xytext=(4, -2), textcoords="offset points", va="top", color=LIMIT_COLOUR,
                  fontweight="bold")  # fmt: skip
    others = sorted(set(limits.radars_by_limit) - {limit})
    for other in others:
        radars = ", ".join(sorted(limits.radars_by_limit[other]))
        axes.axvline(other, color=OTHER_LIMIT_COLOUR, linestyle="--", linewidth=1.5,
                     label=f"limit {other:g} mph ({radars})")  # fmt: skip
    total = sum(under.values()) + sum(over.values())
    if not total:
        _no_data(axes, "no traversals in the warehouse yet", keep_x_ticks=True)
        axes.set_xlim(0, limit * 2)
        explanation = "No measured traversals in the warehouse yet."
    else:
        sides = ((under, BAR_COLOUR, "not fined"), (over, OVER_COLOUR, "fined (over the limit)"))
        for counts, colour, name in sides:
            bins = sorted(counts)
            below = [under[b] if counts is over else 0 for b in bins]  # stack over on under
            axes.bar(bins, [counts[b] for b in bins], bottom=below, width=0.9, align="edge",
                     color=colour, label=f"traversals {name}")  # fmt: skip
        edges = [*under, *over, *limits.radars_by_limit]
        axes.set_xlim(min(edges) - 2, max(edges) + 3)
        tallest = max(under[b] + over[b] for b in {*under, *over})
        axes.set_ylim(0, tallest * 1.15)  # headroom for the limit's label above the bars
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        explanation = (
            f"Section average speed (distance over the time between the first and the last "
            f"camera) of all {total} measured traversals, fined or not; "
            f"{sum(over.values())} were fined (over their section's limit plus tolerance). "
            f"The red line is "
            f"the speed limit of {limit:g} mph ({mph_to_kmh(limit):.1f} km/h), {where}."
        )
        if others:
            explanation += " Dashed lines mark the other sections' limits."
    figure.legend(loc="outside lower center", ncol=2, frameon=False, fontsize=9)
    return Section("speed-distribution", "Average speeds", explanation, _png(figure))


def plate_read_section(totals: Totals) -> Section:
    """One 100 % bar: fines with a plate read, not read, evidence not in yet (summary.sql)."""
    figure, axes = _figure(1.9)
    axes.spines["left"].set_visible(False)
    axes.set_xlabel("share of fines (%)")
    axes.set_xlim(0, 100)
    axes.xaxis.set_major_formatter(PercentFormatter())
    axes.set_yticks([])
    fines, read, pending = totals.fines, totals.plates_read, totals.fines_without_evidence
    if not fines:
        _no_data(axes, "no fines in the warehouse yet", keep_x_ticks=True)
        explanation = "No fines in the warehouse yet."
    else:
        left = 0.0
        for count, colour, what in (
            (read, READ_COLOUR, "plate read"),
            (fines - read - pending, UNREAD_COLOUR, "plate not read"),
            (pending, PENDING_COLOUR, "evidence not in yet"),
        ):
            if count or colour != PENDING_COLOUR:  # the pending part only when there is one
                width = 100.0 * count / fines
                axes.barh([0], [width], left=[left], color=colour,
                          label=f"{what}: {count} of {fines} ({width:.0f} %)")  # fmt: skip
                left += width
        figure.legend(loc="outside lower center", ncol=3, frameon=False, fontsize=9)
        share = 100.0 * read / fines
        explanation = (
            f"{read} of {fines} fines have a licence plate read ({share:.0f} %). "
            "A fine without a plate cannot be sent to the vehicle's owner."
        )
        if pending:
            explanation += (
                f" {_count(pending, 'fine')} still without evidence (plate and photo) in the "
                "warehouse: the fine is measured, its evidence row not yet written."
            )
        if not read:
            explanation += " No plate has been read yet."
    return Section("plates-read", "Share of plates read", explanation, _png(figure))


# -- photos ----------------------------------------------------------------------------
def fetch_photo(image_url: str, client: Any) -> bytes | None:
    """The object at gs://BUCKET/NAME, or None when it can't be fetched (logged).

    `client` is a google.cloud.storage.Client (it honours STORAGE_EMULATOR_HOST).
    """
    if not image_url.startswith("gs://"):
        return None
    bucket, _, name = image_url.removeprefix("gs://").partition("/")
    if not bucket or not name:
        return None
    try:
        return client.bucket(bucket).blob(name).download_as_bytes(timeout=10, retry=None)
    except (GoogleAPIError, GoogleAuthError, InvalidResponse, DataCorruption, OSError) as error:
        _log.warning("photo %s not fetched: %s", image_url, error)
        return None


def make_thumbnail(image: bytes) -> bytes | None:
    """A JPEG at most THUMBNAIL_PX, or None when the bytes are not an image."""
    from PIL import Image, UnidentifiedImageError  # Pillow comes with matplotlib

    try:
        with Image.open(io.BytesIO(image)) as picture:
            picture.thumbnail(THUMBNAIL_PX)
            buffer = io.BytesIO()
            picture.convert("RGB").save(buffer, format="JPEG", quality=80)
    except (UnidentifiedImageError, OSError, ValueError) as error:
        _log.warning("photo is not an image: %s", error)
        return None
    return buffer.getvalue()


class StoragePhotos:
    """Thumbnails of gs:// photos; one storage client, made on the first photo."""

    def __init__(self, project: str) -> None:
        self.project = project
        self._client: Any = None
        self._unavailable = False

    def __call__(self, image_url: str) -> bytes | None:
        if self._unavailable:
            return None
        if self._client is None:
            try:
                self._client = storage.Client(project=self.project)
            except (GoogleAuthError, GoogleAPIError, OSError) as error:
                _log.warning("no Cloud Storage client, photos left out: %s", error)
                self._unavailable = True
                return None
        image = fetch_photo(image_url, self._client)
        return make_thumbnail(image) if image is not None else None


# -- the page --------------------------------------------------------------------------
@dataclass(frozen=True)
class LatestFine:
    row: Row
    thumbnail: bytes | None  # JPEG; None without a photo or when it could not be fetched


@dataclass(frozen=True)
class Report:
    source: str  # project.dataset
    as_of: datetime  # every section reads the rows processed up to this moment
    summary: str
    totals: Totals
    sections: tuple[Section, ...]
    latest: tuple[LatestFine, ...]
    verification: Verification | None = None  # None when the dataset has no desk tables


def latest_fines(rows: Sequence[Row], photos: PhotoSource) -> tuple[LatestFine, ...]:
    """The table's rows with their thumbnails (photos are fetched only for image_url set)."""
    return tuple(
        LatestFine(row, photos(row["image_url"]) if row.get("image_url") else None) for row in rows
    )


def summary_line(totals: Totals) -> str:
    """The page's first line: fines, traversals and, when there are fines, plates read."""
    text = f"{totals.fines} fines, {totals.traversals} measured traversals"
    if totals.plate_read_share is not None:
        text += f", plates read on {100 * totals.plate_read_share:.0f} % of fines"
    if totals.fines_without_evidence:
        text += f" ({totals.fines_without_evidence} without evidence yet)"
    return text + "."


@dataclass(frozen=True)
class SectionRows:
    """What every query returned, read as of one moment."""

    totals: Totals
    per_hour: list[Row]
    per_radar: list[Row]
    speeds: list[Row]
    latest: list[Row]


def read_sections(warehouse: Warehouse, as_of: datetime, latest: int) -> SectionRows:
    """Every query of the page, each filtered to the rows processed up to `as_of`."""
    (summary,) = run_query(warehouse, "summary", as_of)
    return SectionRows(
        totals=Totals.from_row(summary),
        per_hour=run_query(warehouse, "fines_per_hour", as_of),
        per_radar=run_query(warehouse, "fines_per_radar", as_of),
        speeds=run_query(warehouse, "speed_distribution", as_of),
        latest=run_query(warehouse, "latest_fines", as_of, latest=latest),
    )


def read_snapshot(warehouse: Warehouse, as_of: datetime, latest: int) -> SectionRows:
    """The sections, all of the same rows: read again while rows up to as_of still arrive.

    A row is stamped with processed_at before it is inserted, so one processed just
    before `as_of` can land between two of the queries; the row counts up to `as_of`,
    unchanged from before the first query to after the last, prove it did not.
    """
    before = rows_as_of(warehouse, as_of)
    for _ in range(SNAPSHOT_READINGS):
        rows = read_sections(warehouse, as_of, latest)
        after = rows_as_of(warehouse, as_of)
        if after == before:
            return rows
        _log.info("rows up to %s arrived while reading (%s -> %s): reading again",
                  as_of, before, after)  # fmt: skip
        before = after
    raise SnapshotMoved(
        f"rows processed before {as_of.isoformat()} kept arriving over {SNAPSHOT_READINGS} "
        "readings; give an earlier --as_of"
    )


def build_report(
    warehouse: Warehouse,
    latest: int = DEFAULT_LATEST,
    photos: PhotoSource | None = None,
    as_of: datetime | None = None,
) -> Report:
    """Runs every query as of `as_of` (default: now) and draws every chart."""
    as_of = (as_of or datetime.now(UTC)).astimezone(UTC)
    rows = read_snapshot(warehouse, as_of, latest)
    verification = read_verification(warehouse, as_of) if has_desk_tables(warehouse) else None
    return Report(
        source=f"{warehouse.project}.{warehouse.dataset}",
        as_of=as_of,
        summary=summary_line(rows.totals),
        totals=rows.totals,
        sections=(
            fines_per_hour_section(rows.per_hour),
            fines_per_radar_section(rows.per_radar),
            speed_distribution_section(rows.speeds),
            plate_read_section(rows.totals),
        ),
        latest=latest_fines(rows.latest, photos or StoragePhotos(warehouse.project)),
        verification=verification,
    )


def _escaped(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _section_html(section: Section) -> str:
    return (
        f'<section id="{_escaped(section.key)}">\n<h2>{_escaped(section.title)}</h2>\n'
        f'<p class="explanation">{_escaped(section.explanation)}</p>\n'
        f'<img class="chart" src="{_data_uri("image/png", section.png)}" '
        f'alt="{_escaped(section.title)}: {_escaped(section.explanation)}">\n</section>'
    )


def _speed(row: Row) -> str:
    return f"{row['avg_speed_mph']:.1f} mph ({row['avg_speed_kmh']:.1f} km/h)"


def _fine_row_html(fine: LatestFine) -> str:
    row = fine.row
    pending = row.get("has_evidence") is False  # measured, its fines row not written yet
    if fine.thumbnail is not None:
        photo = (
            f'<img class="thumb" src="{_data_uri("image/jpeg", fine.thumbnail)}" '
            f'alt="photo of fine {_escaped(row["fine_id"])}">'
        )
    elif row.get("image_url"):
        photo = '<span class="muted">photo unavailable</span>'
    elif pending:
        photo = '<span class="muted">evidence not in yet</span>'
    else:
        photo = '<span class="muted">no photo yet</span>'
    plate = row.get("license_plate")
    no_plate = "pending" if pending else "not read"
    cells = [
        _escaped(row["entry_time"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")),
        _escaped(row["radar_id"]),
        f'<span class="wrap">{_escaped(row["vehicle_id"])}</span>',
        _escaped(_speed(row)),
        _escaped(f"{row['speed_limit_mph']:g} mph"),
        _escaped(plate) if plate else f'<span class="muted">{no_plate}</span>',
        photo,
        f'<code class="wrap">{_escaped(row["image_url"])}</code>'
        if row.get("image_url")
        else "&mdash;",
        f'<code title="{_escaped(row["fine_id"])}">{_escaped(str(row["fine_id"])[:12])}</code>',
    ]
    cells_html = "".join(f"<td>{cell}</td>" for cell in cells)
    return f'<tr class="fine" data-fine-id="{_escaped(row["fine_id"])}">{cells_html}</tr>'


def _verification_html(verification: Verification) -> str:
    """The desk's totals and, per plate reader, its reads as officers judged them."""
    headers = (
        "plate reader",
        "reads confirmed",
        "reads corrected",
        "unread, typed",
        "rejected: unreadable",
        "rejected: other",
        "accuracy",
    )
    rows = []
    for reader in verification.readers:
        accuracy = reader.read_accuracy
        cells = (
            reader.plate_reader,
            reader.reads_confirmed,
            reader.reads_corrected,
            reader.unread_typed,
            reader.rejected_unreadable,
            reader.rejected_other,
            "-" if accuracy is None else f"{100 * accuracy:.0f} %",
        )
        cells_html = "".join(f"<td>{_escaped(cell)}</td>" for cell in cells)
        rows.append(
            f'<tr class="reader" data-reader="{_escaped(reader.plate_reader)}">{cells_html}</tr>'
        )
    explanation = (
        "A fine is issued when an officer confirms or corrects its plate (one notice per fine "
        "revision), rejected with a reason, pending until decided; a fine revised after its "
        "decision is pending again. Decision time runs from opening the fine to deciding. "
        "Accuracy is the reads officers confirmed over those they confirmed or corrected: "
        "the plate reader's accuracy in production."
    )
    head = "".join(f"<th>{_escaped(h)}</th>" for h in headers)
    body = "\n".join(rows)
    return (
        '<section id="verification">\n<h2>Verification</h2>\n'
        f'<p class="verification-summary">{_escaped(verification_line(verification))}</p>\n'
        f'<p class="explanation">{_escaped(explanation)}</p>\n'
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n"
        "</section>"
    )


def _fines_table_html(report: Report) -> str:
    headers = (
        "entry (UTC)",
        "radar",
        "vehicle",
        "average speed",
        "limit",
        "plate",
        "photo",
        "evidence (gs://)",
        "fine id",
    )
    shown = len(report.latest)
    which = "All" if shown >= report.totals.fines else f"The {shown} most recent of"
    explanation = (
        f"{which} {report.totals.fines} fines, newest first (by entry into the section). "
        "Photos come from the evidence bucket; a fine corrected by late data shows its "
        "latest measurement, and a fine merged into a later traversal shows only that one."
        if shown
        else "No fines in the warehouse yet."
    )
    head = "".join(f"<th>{_escaped(h)}</th>" for h in headers)
    body = "\n".join(_fine_row_html(fine) for fine in report.latest)
    return (
        f'<section id="latest-fines">\n<h2>Latest fines</h2>\n'
        f'<p class="explanation">{_escaped(explanation)}</p>\n'
        f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>\n"
        "</section>"
    )


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1180px;
       color: #222; padding: 0 16px; }
h1 { margin-bottom: 4px; }
.meta, .muted { color: #6b6b6b; }
.summary { font-size: 1.1em; }
section { margin: 28px 0; }
.explanation { max-width: 900px; }
img.chart { max-width: 100%; border: 1px solid #e3e3e3; }
table { border-collapse: collapse; font-size: 0.9em; width: 100%; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 6px 8px; text-align: left;
         vertical-align: middle; white-space: nowrap; }
td .wrap { white-space: normal; word-break: break-all; }
th { background: #f4f4f4; }
img.thumb { width: 120px; border-radius: 3px; }
code { font-size: 0.9em; }
"""


def render_html(report: Report) -> str:
    """The whole page; every value from the warehouse is HTML-escaped."""
    sections = "\n".join(_section_html(section) for section in report.sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Section-speed enforcement report: {_escaped(report.source)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>Section-speed enforcement report</h1>
<p class="meta">Warehouse <code>{_escaped(report.source)}</code> as of {
        _escaped(report.as_of.strftime("%Y-%m-%d %H:%M:%S UTC"))
    }: every section reads the rows processed up to then, each traversal once. Queries:
<code>analyst_report/sql/*.sql</code>.</p>
<p class="summary">{_escaped(report.summary)}</p>
{sections}
{_verification_html(report.verification) if report.verification else ""}
{_fines_table_html(report)}
</body>
</html>
"""


def write_html(report: Report, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    path.write_text(render_html(report), encoding="utf-8")
    return path


def generate_report(
    warehouse: Warehouse,
    out_dir: Path,
    latest: int = DEFAULT_LATEST,
    as_of: datetime | None = None,
) -> tuple[Path, Report]:
    """Query, draw and write OUT_DIR/index.html; returns its path and what it shows."""
    report = build_report(warehouse, latest, as_of=as_of)
    return write_html(report, out_dir), report


def _moment(text: str) -> datetime:
    """An RFC 3339 time with its offset, e.g. 2026-11-18T12:00:00Z."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"not a time: {text}") from error
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the time zone, e.g. {text}Z: {text}")
    return moment.astimezone(UTC)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analyst_report.report", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--project_id",
        default=defaults.PROJECT_ID,
        help="project of the warehouse (default: %(default)s)",
    )
    parser.add_argument("--bq_dataset", required=True, help="dataset of the fines tables")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("report"),
        help="folder for index.html (default: %(default)s)",
    )
    parser.add_argument(
        "--latest",
        type=_positive_int,
        default=DEFAULT_LATEST,
        help="fines in the table of latest fines (default: %(default)s)",
    )
    parser.add_argument(
        "--as_of",
        type=_moment,
        default=None,
        help="read the rows processed up to this time, e.g. 2026-11-18T00:00:00Z "
        "(default: when the report starts)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        load_sql(sql_names()[0], args.project_id, args.bq_dataset)  # check the identifiers
    except ValueError as error:
        parser.error(str(error))
    warehouse = Warehouse(args.project_id, args.bq_dataset)
    try:
        path, report = generate_report(warehouse, args.out, args.latest, args.as_of)
    except (GoogleAPIError, GoogleAuthError) as error:
        print(f"report: the warehouse query failed: {error}", file=sys.stderr)
        return 1
    except SnapshotMoved as error:
        print(f"report: no consistent reading: {error}", file=sys.stderr)
        return 1
    print(f"report: {path} as of {report.as_of.isoformat()}: {report.summary}")
    if report.verification is not None:
        print(f"report: {verification_line(report.verification)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
