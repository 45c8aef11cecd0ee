"""`python -m analyst_report.report`: the analyst report, one self-contained HTML page.

    python -m analyst_report.report --project_id PROJECT --bq_dataset DATASET --out report/

Runs the SQL in `analyst_report/sql/` (plain files an analyst can reuse in the BigQuery
console once `{project}.{dataset}` is replaced), draws one PNG chart per section with
matplotlib's Agg canvas (no display needed) and writes OUT/index.html: fines per hour,
fines per radar, the distribution of average speeds with the speed limit marked, the
share of plates read, and the latest fines with a thumbnail of each photo. Charts and
thumbnails are embedded as data: URIs, so the page is one file to open or send.
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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib.dates as mdates
from google.api_core.exceptions import GoogleAPIError
from google.auth.exceptions import GoogleAuthError
from google.cloud import bigquery, storage
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from pipeline.clients.warehouse import Warehouse
from pipeline.domain import defaults
from pipeline.domain.speed import kmh_to_mph, mph_to_kmh

if TYPE_CHECKING:
    from local_stack.services import LocalStack

_log = logging.getLogger(__name__)

Row = dict[str, Any]
PhotoSource = Callable[[str], bytes | None]  # gs:// URL -> JPEG thumbnail, or None

DEFAULT_LATEST = 50
MAX_RADARS_CHARTED = 20
THUMBNAIL_PX = (160, 120)
SQL_PACKAGE, SQL_DIR = "analyst_report", "sql"
# Identifiers only are put into the SQL text (str.format); values go in as query parameters.
_PROJECT_RE = re.compile(r"^[a-z][a-z0-9.:-]{0,127}[a-z0-9]$")  # also example.com:project
_DATASET_RE = re.compile(r"^[A-Za-z0-9_]{1,1024}$")

BAR_COLOUR, OVER_COLOUR = "#3b6ea8", "#e08a2c"
LIMIT_COLOUR, OTHER_LIMIT_COLOUR = "#c0392b", "#7f7f7f"
READ_COLOUR, UNREAD_COLOUR = "#2e8b57", "#c8c8c8"


# -- SQL -------------------------------------------------------------------------------
def sql_names() -> list[str]:
    """Names (without .sql) of the queries shipped in the package."""
    folder = resources.files(SQL_PACKAGE).joinpath(SQL_DIR)
    return sorted(f.name.removesuffix(".sql") for f in folder.iterdir() if f.name.endswith(".sql"))


def load_sql(name: str, project: str, dataset: str) -> str:
    """The query `name` with its `{project}.{dataset}` filled in (identifiers, checked)."""
    if not _PROJECT_RE.match(project):
        raise ValueError(f"not a Google Cloud project id: {project!r}")
    if not _DATASET_RE.match(dataset):
        raise ValueError(f"not a BigQuery dataset name (letters, digits, _): {dataset!r}")
    text = resources.files(SQL_PACKAGE).joinpath(SQL_DIR, f"{name}.sql").read_text()
    return text.format(project=project, dataset=dataset)


def run_query(warehouse: Warehouse, name: str, **parameters: int) -> list[Row]:
    """Rows of analyst_report/sql/NAME.sql; `parameters` become INT64 query parameters (@name)."""
    sql = load_sql(name, warehouse.project, warehouse.dataset)
    if not parameters:
        return warehouse.query(sql)
    config = bigquery.QueryJobConfig(
        query_parameters=[
            bigquery.ScalarQueryParameter(key, "INT64", value) for key, value in parameters.items()
        ]
    )  # Warehouse.query takes no parameters: its client runs the job.
    return [dict(row.items()) for row in warehouse.client.query(sql, job_config=config).result()]


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
            f"{peak['fines']} fines. A corrected fine counts once."
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


def plate_read_section(row: Row | None) -> Section:
    """One 100 % bar: fines with a plate read vs not (plate_read_share.sql)."""
    figure, axes = _figure(1.9)
    axes.spines["left"].set_visible(False)
    axes.set_xlabel("share of fines (%)")
    axes.set_xlim(0, 100)
    axes.xaxis.set_major_formatter(PercentFormatter())
    axes.set_yticks([])
    if row is None or not row["fines"] or row["plate_read_share"] is None:
        _no_data(axes, "no fines in the warehouse yet", keep_x_ticks=True)
        explanation = "No fines in the warehouse yet."
    else:
        fines, read = int(row["fines"]), int(row["plates_read"])
        share = 100.0 * float(row["plate_read_share"])
        for left, width, colour, text in (
            (0.0, share, READ_COLOUR, f"plate read: {read} of {fines} ({share:.0f} %)"),
            (share, 100.0 - share, UNREAD_COLOUR,
             f"plate not read: {fines - read} of {fines} ({100 - share:.0f} %)"),
        ):  # fmt: skip
            axes.barh([0], [width], left=[left], color=colour, label=text)
        figure.legend(loc="outside lower center", ncol=2, frameon=False, fontsize=9)
        explanation = (
            f"{read} of {fines} fines have a licence plate read ({share:.0f} %). "
            "A fine without a plate cannot be sent to the vehicle's owner."
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
    generated_at: datetime
    summary: str
    total_fines: int
    sections: tuple[Section, ...]
    latest: tuple[LatestFine, ...]


def latest_fines(rows: Sequence[Row], photos: PhotoSource) -> tuple[LatestFine, ...]:
    """The table's rows with their thumbnails (photos are fetched only for image_url set)."""
    return tuple(
        LatestFine(row, photos(row["image_url"]) if row.get("image_url") else None) for row in rows
    )


def summary_line(plates: Row | None, traversals: int) -> str:
    """The page's first line: fines, traversals and, when there are fines, plates read."""
    text = f"{plates['fines'] if plates else 0} fines, {traversals} measured traversals"
    if plates and plates["plate_read_share"] is not None:
        text += f", plates read on {100 * plates['plate_read_share']:.0f} % of fines"
    return text + "."


def build_report(
    warehouse: Warehouse, latest: int = DEFAULT_LATEST, photos: PhotoSource | None = None
) -> Report:
    """Runs every query and draws every chart."""
    plate_rows = run_query(warehouse, "plate_read_share")
    speed_rows = run_query(warehouse, "speed_distribution")
    plates = plate_rows[0] if plate_rows else None
    return Report(
        source=f"{warehouse.project}.{warehouse.dataset}",
        generated_at=datetime.now(UTC),
        summary=summary_line(plates, sum(row["traversals"] for row in speed_rows)),
        total_fines=int(plates["fines"]) if plates else 0,
        sections=(
            fines_per_hour_section(run_query(warehouse, "fines_per_hour")),
            fines_per_radar_section(run_query(warehouse, "fines_per_radar")),
            speed_distribution_section(speed_rows),
            plate_read_section(plates),
        ),
        latest=latest_fines(
            run_query(warehouse, "latest_fines", latest=latest),
            photos or StoragePhotos(warehouse.project),
        ),
    )


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _section_html(section: Section) -> str:
    return (
        f'<section id="{_e(section.key)}">\n<h2>{_e(section.title)}</h2>\n'
        f'<p class="explanation">{_e(section.explanation)}</p>\n'
        f'<img class="chart" src="{_data_uri("image/png", section.png)}" '
        f'alt="{_e(section.title)}: {_e(section.explanation)}">\n</section>'
    )


def _speed(row: Row) -> str:
    return f"{row['avg_speed_mph']:.1f} mph ({row['avg_speed_kmh']:.1f} km/h)"


def _fine_row_html(fine: LatestFine) -> str:
    row = fine.row
    if fine.thumbnail is not None:
        photo = (
            f'<img class="thumb" src="{_data_uri("image/jpeg", fine.thumbnail)}" '
            f'alt="photo of fine {_e(row["fine_id"])}">'
        )
    elif row.get("image_url"):
        photo = '<span class="muted">photo unavailable</span>'
    else:
        photo = '<span class="muted">no photo yet</span>'
    plate = row.get("license_plate")
    cells = [
        _e(row["entry_time"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")),
        _e(row["radar_id"]),
        f'<span class="wrap">{_e(row["vehicle_id"])}</span>',
        _e(_speed(row)),
        _e(f"{row['speed_limit_mph']:g} mph"),
        _e(plate) if plate else '<span class="muted">not read</span>',
        photo,
        f'<code class="wrap">{_e(row["image_url"])}</code>' if row.get("image_url") else "&mdash;",
        f'<code title="{_e(row["fine_id"])}">{_e(str(row["fine_id"])[:12])}</code>',
    ]
    cells_html = "".join(f"<td>{cell}</td>" for cell in cells)
    return f'<tr class="fine" data-fine-id="{_e(row["fine_id"])}">{cells_html}</tr>'


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
    which = "All" if shown >= report.total_fines else f"The {shown} most recent of"
    explanation = (
        f"{which} {report.total_fines} fines, newest first (by entry into the section). "
        "Photos come from the evidence bucket; a fine corrected by late data shows its "
        "latest measurement."
        if shown
        else "No fines in the warehouse yet."
    )
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "\n".join(_fine_row_html(fine) for fine in report.latest)
    return (
        f'<section id="latest-fines">\n<h2>Latest fines</h2>\n'
        f'<p class="explanation">{_e(explanation)}</p>\n'
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
<title>Section-speed enforcement report: {_e(report.source)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>Section-speed enforcement report</h1>
<p class="meta">Warehouse <code>{_e(report.source)}</code>, generated {
        _e(report.generated_at.strftime("%Y-%m-%d %H:%M:%S UTC"))
    }. Queries: <code>analyst_report/sql/*.sql</code>.</p>
<p class="summary">{_e(report.summary)}</p>
{sections}
{_fines_table_html(report)}
</body>
</html>
"""


def write_html(report: Report, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    path.write_text(render_html(report), encoding="utf-8")
    return path


def generate_report(warehouse: Warehouse, out_dir: Path, latest: int = DEFAULT_LATEST) -> Path:
    """Query, draw and write OUT_DIR/index.html; returns its path."""
    return write_html(build_report(warehouse, latest), out_dir)


def write_report(stack: "LocalStack", dataset: str, out_dir: Path) -> Path:
    """The report of a running local stack's warehouse (for `make demo`): OUT_DIR/index.html.

    Sets the stack's emulator variables in this process (as `stack.apply_env()` does), so
    that the BigQuery (and, when the stack has one, Cloud Storage) clients find them.
    """
    stack.apply_env()
    return generate_report(Warehouse(stack.project_id, dataset), Path(out_dir))


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        load_sql(sql_names()[0], args.project_id, args.bq_dataset)  # check the identifiers
    except ValueError as error:
        parser.error(str(error))
    try:
        path = generate_report(Warehouse(args.project_id, args.bq_dataset), args.out, args.latest)
    except (GoogleAPIError, GoogleAuthError) as error:
        print(f"report: the warehouse query failed: {error}", file=sys.stderr)
        return 1
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
