"""What the report shows: its sentences, charts and latest fines, built from one reading."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from analyst_report.charts import (
    Section,
    count_phrase,
    fines_per_hour_section,
    fines_per_limit_source_section,
    fines_per_radar_section,
    plate_read_section,
    speed_distribution_section,
)
from analyst_report.photos import PhotoSource, StoragePhotos
from analyst_report.queries import (
    Row,
    Totals,
    Verification,
    has_desk_tables,
    read_snapshot,
    read_verification,
)
from section_speed.clients.warehouse import Warehouse

DEFAULT_LATEST = 50


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
            f"{count_phrase(v.decisions, 'decision')}"
        )
    return text + "."


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
            fines_per_limit_source_section(rows.per_limit_source),
            speed_distribution_section(rows.speeds),
            plate_read_section(rows.totals),
        ),
        latest=latest_fines(rows.latest, photos or StoragePhotos(warehouse.project)),
        verification=verification,
    )
