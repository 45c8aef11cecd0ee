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
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from google.api_core.exceptions import GoogleAPIError, NotFound
from google.auth.exceptions import GoogleAuthError

from analyst_report.contents import DEFAULT_LATEST, Report, build_report, verification_line
from analyst_report.page import write_html
from analyst_report.queries import SnapshotMoved, load_sql, sql_names
from section_speed.clients.warehouse import Warehouse
from section_speed.domain import defaults


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
    except NotFound as error:  # no dataset, or one provisioned before its views
        print(
            f"report: the warehouse query failed: {error}; the report reads the views "
            f"python -m pipeline.provision --project {args.project_id} --bq_dataset "
            f"{args.bq_dataset} creates (docs/warehouse.md, Views)",
            file=sys.stderr,
        )
        return 1
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
