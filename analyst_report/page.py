"""The report as one self-contained HTML page: charts and thumbnails as data: URIs."""

import base64
import html
from datetime import UTC
from pathlib import Path
from typing import Any

from analyst_report.charts import Section
from analyst_report.contents import LatestFine, Report, verification_line
from analyst_report.queries import Row, Verification


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
        "rejected: wrong vehicle",
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
            reader.rejected_wrong_vehicle,
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
