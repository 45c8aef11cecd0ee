"""`python -m pipeline.provision`: create the BigQuery dataset and tables at deploy time.

    python -m pipeline.provision --project PROJECT --bq_dataset DATASET \\
        [--location REGION] [--worker_service_account SA_EMAIL] \\
        [--non_offender_retention_days N] [--dead_letter_retention_days N]

Run once by whoever deploys (docs/deploy.md), before the pipeline starts: it creates the
dataset and the fines, vehicle_speeds, dead_letter and vehicle_identities tables from the
schema definition (`Warehouse.ensure_tables`) if they are missing, with the views every
reader reads (`VIEWS`, docs/warehouse.md, Views: the latest revision of a traversal, what
counts, the desk's queue state; defined again when a release changes one), sets the partition
expiry of the two that hold personal data only for a while (`set_partition_expiry`;
docs/warehouse.md, Retention), and with --worker_service_account grants that account
BigQuery Data Editor on this dataset alone. The workers then only read the
tables' definitions (`Warehouse.check_tables`) and insert rows: no project-level
BigQuery permission on the workers. Safe to run again: nothing that exists is changed,
except that a nullable column an older table lacks is added (rows untouched) and the
partition expiry is set to the days given (a shorter one deletes older partitions at once).
"""

import argparse
import logging
import sys
from collections.abc import Callable

from google.cloud import bigquery

from pipeline.options import OPTION_SPECS
from section_speed.clients.warehouse import SETUP_RETRY, Warehouse
from section_speed.domain import defaults
from section_speed.domain.schemas import (
    DAY_MS,
    DEAD_LETTER,
    REPLAYS,
    TABLES,
    VEHICLE_IDENTITIES,
    VIEWS,
    Table,
)
from section_speed.domain.verification import VERIFICATION_TABLES

# The pipeline's tables, the verification desk's (docs/desk.md) and the replay command's
# record (docs/deploy.md, Replay dead letters): one provisioning step.
PROVISIONED_TABLES = (*TABLES, *VERIFICATION_TABLES, REPLAYS)

_log = logging.getLogger(__name__)

# The dataset-level role the workers need: get a table's definition and insert rows.
# Accepted in a dataset's access list.
WORKER_DATASET_ROLE = "roles/bigquery.dataEditor"
# A dataset's access list returns the legacy name of a role it was given as an IAM role.
_LEGACY_NAMES = {"roles/bigquery.dataEditor": "WRITER"}


def grant_dataset_role(warehouse: Warehouse, member_email: str, role: str) -> bool:
    """Give `member_email` `role` on the warehouse's dataset; False if it already had it."""
    client = warehouse.client
    dataset = client.get_dataset(f"{warehouse.project}.{warehouse.dataset}", retry=SETUP_RETRY)
    entries = list(dataset.access_entries)
    accepted = {role, _LEGACY_NAMES.get(role, role)}
    if any(e.entity_id == member_email and e.role in accepted for e in entries):
        return False
    # userByEmail also names service accounts (BigQuery maps it to serviceAccount:EMAIL).
    entries.append(bigquery.AccessEntry(role, "userByEmail", member_email))
    dataset.access_entries = entries
    client.update_dataset(dataset, ["access_entries"], retry=SETUP_RETRY)
    return True


def partition_expiry_days(
    non_offender_retention_days: int, dead_letter_retention_days: int
) -> dict[Table, int]:
    """Days each table that holds personal data only for a while keeps a day partition.

    vehicle_identities always expires: with no retention nothing is written to it, and a
    day's expiry clears what an earlier, longer retention wrote. fines and vehicle_speeds
    have none (docs/warehouse.md, Retention).
    """
    return {
        VEHICLE_IDENTITIES: max(non_offender_retention_days, 1),
        DEAD_LETTER: dead_letter_retention_days,
    }


def set_partition_expiry(warehouse: Warehouse, table: Table, days: int) -> bool:
    """Make `table`'s day partitions expire `days` after their day; False if they did."""
    client = warehouse.client
    found = client.get_table(warehouse.table_id(table), retry=SETUP_RETRY)
    partitioning = found.time_partitioning
    if partitioning.expiration_ms == days * DAY_MS:
        return False
    partitioning.expiration_ms = days * DAY_MS
    found.time_partitioning = partitioning  # the getter hands out a copy
    client.update_table(found, ["time_partitioning"], retry=SETUP_RETRY)
    return True


def provision(
    warehouse: Warehouse,
    location: str | None = None,
    worker_service_account: str | None = None,
    non_offender_retention_days: int = defaults.NON_OFFENDER_RETENTION_DAYS,
    dead_letter_retention_days: int = defaults.DEAD_LETTER_RETENTION_DAYS,
) -> None:
    warehouse.ensure_tables(PROVISIONED_TABLES, location=location)
    warehouse.check_tables(PROVISIONED_TABLES)  # what the workers will check: fail here
    names = ", ".join(table.name for table in PROVISIONED_TABLES)
    _log.info("dataset %s.%s holds %s", warehouse.project, warehouse.dataset, names)
    _log.info("views: %s", ", ".join(view.name for view in VIEWS))
    expiry = partition_expiry_days(non_offender_retention_days, dead_letter_retention_days)
    for table, days in expiry.items():
        changed = set_partition_expiry(warehouse, table, days)
        _log.info(
            "%s: partitions expire after %d days%s",
            warehouse.table_id(table),
            days,
            "" if changed else " (as they did)",
        )
    if worker_service_account:
        granted = grant_dataset_role(warehouse, worker_service_account, WORKER_DATASET_ROLE)
        _log.info(
            "%s %s on %s.%s",
            "granted" if granted else "already has",
            WORKER_DATASET_ROLE,
            warehouse.project,
            warehouse.dataset,
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.provision",
        description="Create the pipeline's BigQuery dataset and tables (deploy time).",
    )
    parser.add_argument("--project", required=True, help="Google Cloud project of the dataset.")
    parser.add_argument("--bq_dataset", required=True, help="Dataset, as the pipeline's option.")
    parser.add_argument(
        "--location", help="Where a new dataset lives (e.g. the job's region); else BigQuery's."
    )
    parser.add_argument(
        "--worker_service_account",
        help="Email of the workers' service account, granted BigQuery Data Editor on the dataset.",
    )
    # The pipeline's own option, so that both take the same number (its workers check it).
    retention = next(s for s in OPTION_SPECS if s.name == "non_offender_retention_days")
    parser.add_argument(
        f"--{retention.name}",
        type=_days(0),
        default=retention.default,
        help=f"{retention.help} Give the pipeline's value. Default: {retention.default}.",
    )
    parser.add_argument(
        "--dead_letter_retention_days",
        type=_days(1),
        default=defaults.DEAD_LETTER_RETENTION_DAYS,
        help="Days dead_letter keeps a day partition (raw input, vehicle ids included). "
        f"Default: {defaults.DEAD_LETTER_RETENTION_DAYS}.",
    )
    return parser.parse_args(argv)


def _days(least: int) -> Callable[[str], int]:
    """argparse type: whole days, `least` to 99999 (a partition expiry in ms fits int64)."""

    def parse(text: str) -> int:
        if not text.isdigit() or not least <= int(text) <= 99_999:
            raise argparse.ArgumentTypeError(f"{text!r}: whole days, {least} to 99999")
        return int(text)

    return parse


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    provision(
        Warehouse(args.project, args.bq_dataset),
        args.location,
        args.worker_service_account,
        non_offender_retention_days=args.non_offender_retention_days,
        dead_letter_retention_days=args.dead_letter_retention_days,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
