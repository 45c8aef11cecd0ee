"""Who a non-offender was is kept apart, for a retention only (docs/warehouse.md, Retention).

`vehicle_speeds` holds every traversal's speeds but a vehicle_id only for a fine; with
--non_offender_retention_days N > 0 the ids of the others go to `vehicle_identities`,
whose day partitions `python -m pipeline.provision` makes expire after N days, and
workers refuse to write before it has. Provision is checked against the strict fake of
test_permissions.py (no test runs provision on the emulator).
"""

import functools
import json
from pathlib import Path

import apache_beam as beam
import pytest
from google.cloud import bigquery

import pipeline.graph
from pipeline import provision
from pipeline.graph import build_pipeline
from pipeline.options import SectionSpeedOptions, pipeline_options
from section_speed.clients.warehouse import Warehouse
from section_speed.domain.rules import SectionCatalog, SectionRule
from section_speed.domain.schemas import (
    DAY_MS,
    DEAD_LETTER,
    VEHICLE_IDENTITIES,
    VEHICLE_IDENTITY_COLUMNS,
    VEHICLE_SPEED_COLUMNS,
    VEHICLE_SPEEDS,
    Table,
    vehicle_identity_record,
    vehicle_speed_record,
)
from section_speed.domain.traversal import Traversal
from tests import helpers
from tests.helpers import ENTRY, EXIT, T0_MS, track
from tests.unit.test_permissions import StrictFakeBigQuery
from transforms.sinks import RetentionMismatch, retention_checked, retention_problems

RULE = SectionRule(25.0, entry=ENTRY, exit=EXIT)  # the section's ends known: fines possible


def measured(vehicle_id: str, speed_kmh: float) -> Traversal:
    return helpers.measured(track(vehicle_id, speed_kmh), RULE)


# --- the records ----------------------------------------------------------------------------


def test_a_speed_row_names_a_fined_vehicle_and_no_other():
    fast, slow = measured("fast", 72.0), measured("slow", 30.0)
    assert (fast.is_speeding, slow.is_speeding) == (True, False)
    fined = vehicle_speed_record(fast, processed_at_ms=T0_MS)
    passed = vehicle_speed_record(slow, processed_at_ms=T0_MS)
    assert (fined["vehicle_id"], fined["is_ticketed"]) == ("fast", True)
    assert (passed["vehicle_id"], passed["is_ticketed"]) == (None, False)
    # The speeds stay for the analysts, under the traversal's id.
    assert passed["traversal_id"] == slow.traversal_id
    assert passed["avg_speed_kmh"] == pytest.approx(30.0, abs=0.1)
    (column,) = [c for c in VEHICLE_SPEED_COLUMNS if c.name == "vehicle_id"]
    assert column.mode == "NULLABLE" and "vehicle_identities" in column.description


def test_an_identity_row_is_made_for_a_non_offender_only():
    slow = measured("slow", 30.0)
    row = vehicle_identity_record(slow, processed_at_ms=T0_MS + 5)
    assert row == {
        "traversal_id": slow.traversal_id,
        "radar_id": "radar-1",
        "vehicle_id": "slow",
        "entry_time": vehicle_speed_record(slow, T0_MS)["entry_time"],
        "processed_at": "2026-11-18T11:06:40.005Z",
    }
    assert list(row) == [c.name for c in VEHICLE_IDENTITY_COLUMNS]
    assert vehicle_identity_record(measured("fast", 72.0), processed_at_ms=T0_MS) is None


# --- the graph, where the rows are made -----------------------------------------------------


class FakeTables:
    """What `retention_problems` reads: vehicle_speeds' columns, the identities' expiry."""

    def __init__(self, vehicle_id_mode: str, identity_expiry_ms: int | None) -> None:
        self.vehicle_id_mode = vehicle_id_mode
        self.identity_expiry_ms = identity_expiry_ms

    def get_table(self, table_id: str, retry: object = None) -> bigquery.Table:
        table = bigquery.Table(table_id)
        table.schema = [bigquery.SchemaField("vehicle_id", "STRING", mode=self.vehicle_id_mode)]
        table.time_partitioning = bigquery.TimePartitioning(
            field="entry_time", expiration_ms=self.identity_expiry_ms
        )
        return table


class RecordingWarehouse(Warehouse):
    """The sink's client: rows appended to a file (the factory is unpickled by the runner)."""

    def __init__(self, path: str, identity_expiry_ms: int | None) -> None:
        super().__init__("p", "d", client=FakeTables("NULLABLE", identity_expiry_ms))
        self.path = Path(path)

    def insert(self, table: Table, rows: list, row_ids: list) -> list:
        with self.path.open("a") as out:
            for row in rows:
                out.write(json.dumps([table.name, row]) + "\n")
        return []


def warehouse_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *options: str) -> dict:
    """A bounded run of the whole graph with --bq_dataset: the rows it writes, by table."""
    events = [*track("fast", 72.0), *track("slow", 30.0, start_ms=T0_MS + 100)]
    archive = tmp_path / "archive.jsonl"
    archive.write_text("".join(json.dumps(e.to_json()) + "\n" for e in events))
    sections = tmp_path / "sections.json"
    sections.write_text(SectionCatalog(SectionRule(25.0), {"radar-1": RULE}).to_json())
    written = tmp_path / "rows.jsonl"
    written.touch()
    factory = functools.partial(RecordingWarehouse, str(written), 7 * DAY_MS)
    monkeypatch.setattr(pipeline.graph, "warehouse_factory", lambda project, dataset: factory)
    argv = [
        f"--input_file={archive}",
        f"--output_path={tmp_path / 'out'}",
        f"--sections_file={sections}",
        "--bq_dataset=d",
        "--runner=DirectRunner",
        "--direct_num_workers=1",
        *options,
    ]
    beam_options = pipeline_options(argv, save_main_session=False)
    with beam.Pipeline(options=beam_options) as graph:
        build_pipeline(graph, beam_options.view_as(SectionSpeedOptions))
    by_table: dict[str, list[dict]] = {}
    for line in written.read_text().splitlines():
        table, row = json.loads(line)
        by_table.setdefault(table, []).append(row)
    return by_table


def test_by_default_the_warehouse_never_learns_who_a_non_offender_was(tmp_path, monkeypatch):
    rows = warehouse_rows(tmp_path, monkeypatch)
    speeds = sorted((r["is_ticketed"], r["vehicle_id"]) for r in rows["vehicle_speeds"])
    assert speeds == [(False, None), (True, "fast")]
    assert [r["vehicle_id"] for r in rows["fines"]] == ["fast"]
    assert "vehicle_identities" not in rows
    assert "slow" not in json.dumps(rows)


def test_with_a_retention_a_non_offenders_id_goes_to_vehicle_identities(tmp_path, monkeypatch):
    rows = warehouse_rows(tmp_path, monkeypatch, "--non_offender_retention_days=7")
    (passed,) = [r for r in rows["vehicle_speeds"] if not r["is_ticketed"]]
    assert passed["vehicle_id"] is None
    (identity,) = rows["vehicle_identities"]
    assert (identity["traversal_id"], identity["vehicle_id"]) == (passed["traversal_id"], "slow")
    assert identity["entry_time"] == passed["entry_time"]


# --- workers check the dataset first ------------------------------------------------------


def checked(vehicle_id_mode: str, identity_expiry_ms: int | None, days: int) -> Warehouse:
    client = FakeTables(vehicle_id_mode, identity_expiry_ms)
    return retention_checked(lambda: Warehouse("p", "d", client=client), days)()


def test_workers_refuse_identities_a_table_would_keep_longer_or_forever():
    assert checked("NULLABLE", 7 * DAY_MS, 7).dataset == "d"
    assert checked("NULLABLE", None, 0).dataset == "d"  # nothing written: nothing to expire
    with pytest.raises(RetentionMismatch, match="expire never, not after") as never:
        checked("NULLABLE", None, 7)
    assert (
        "python -m pipeline.provision --project p --bq_dataset d --non_offender_retention_days 7"
        in str(never.value)
    )
    with pytest.raises(RetentionMismatch, match="expire after 30 days, not after"):
        checked("NULLABLE", 30 * DAY_MS, 7)


def test_workers_refuse_a_vehicle_speeds_table_that_requires_an_id():
    problems = retention_problems(Warehouse("p", "d", client=FakeTables("REQUIRED", None)), 0)
    assert problems == [
        "p.d.vehicle_speeds.vehicle_id is REQUIRED, so the rows of vehicles not fined, which "
        "carry none, would be refused"
    ]


# --- provision sets the partition expiry ----------------------------------------------------


def expiry_days(client: StrictFakeBigQuery, table: Table) -> float | None:
    expiration_ms = client.partitioning[f"p.d.{table.name}"].expiration_ms
    return None if expiration_ms is None else expiration_ms / DAY_MS


def test_provision_makes_identities_and_dead_letters_expire():
    client = StrictFakeBigQuery({})
    warehouse = Warehouse("p", "d", client=client)
    provision.provision(warehouse, non_offender_retention_days=14, dead_letter_retention_days=45)
    assert (expiry_days(client, VEHICLE_IDENTITIES), expiry_days(client, DEAD_LETTER)) == (14, 45)
    assert expiry_days(client, VEHICLE_SPEEDS) is None  # no identity of a non-offender in it
    assert retention_problems(warehouse, 14) == []  # what the workers will check
    # Again with the same days: nothing to change.
    client.calls.clear()
    provision.provision(warehouse, non_offender_retention_days=14, dead_letter_retention_days=45)
    assert [c for c in client.calls if c.startswith("update_table")] == []
    # No retention: nothing is written, and what a longer one wrote goes within a day.
    provision.provision(warehouse)
    assert (expiry_days(client, VEHICLE_IDENTITIES), expiry_days(client, DEAD_LETTER)) == (1, 30)
    assert "update_table p.d.vehicle_identities expiration_ms=86400000" in client.calls


def test_provision_command_line_takes_the_retentions(monkeypatch):
    client = StrictFakeBigQuery({})
    monkeypatch.setattr(provision, "Warehouse", lambda p, d: Warehouse(p, d, client=client))
    argv = ["--project", "p", "--bq_dataset", "d", "--non_offender_retention_days", "90"]
    assert provision.main([*argv, "--dead_letter_retention_days", "10"]) == 0
    assert (expiry_days(client, VEHICLE_IDENTITIES), expiry_days(client, DEAD_LETTER)) == (90, 10)
    for bad in (["--dead_letter_retention_days", "0"], ["--non_offender_retention_days", "-1"]):
        with pytest.raises(SystemExit):
            provision.main(["--project", "p", "--bq_dataset", "d", *bad])
