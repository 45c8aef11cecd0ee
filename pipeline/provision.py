"""`python -m pipeline.provision`: create the BigQuery dataset and tables at deploy time.

    python -m pipeline.provision --project PROJECT --bq_dataset DATASET \\
        [--location REGION] [--worker_service_account SA_EMAIL]

Run once by whoever deploys (docs/deploy.md), before the pipeline starts: it creates the
dataset and the fines, vehicle_speeds and dead_letter tables from the schema definition
(`Warehouse.ensure_tables`) if they are missing, and with --worker_service_account grants
that account BigQuery Data Editor on this dataset alone. The workers then only read the
tables' definitions (`Warehouse.check_tables`) and insert rows: no project-level
BigQuery permission on the workers. Safe to run again: nothing that exists is changed,
except that a nullable column an older table lacks is added (rows untouched).
"""

import argparse
import logging
import sys

from google.cloud import bigquery

from pipeline.clients.warehouse import SETUP_RETRY, Warehouse
from pipeline.domain.schemas import TABLES

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


def provision(
    warehouse: Warehouse, location: str | None = None, worker_service_account: str | None = None
) -> None:
    warehouse.ensure_tables(TABLES, location=location)
    warehouse.check_tables(TABLES)  # what the workers will check: fail here, not there
    names = ", ".join(table.name for table in TABLES)
    _log.info("dataset %s.%s holds %s", warehouse.project, warehouse.dataset, names)
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    provision(Warehouse(args.project, args.bq_dataset), args.location, args.worker_service_account)
    return 0


if __name__ == "__main__":
    sys.exit(main())
