"""WriteToWarehouse against the BigQuery emulator: a refused row reaches dead_letter."""

import json
import re

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipeline.clients.warehouse import Warehouse
from pipeline.domain.events import format_rfc3339_ms
from pipeline.domain.schemas import DEAD_LETTER, FINES, fine_record
from pipeline.domain.speed import SectionRule, measure_traversal
from pipeline.transforms.warehouse import ToWarehouseRows, WriteToWarehouse, to_warehouse_row
from tests.helpers import T0_MS, track

pytestmark = pytest.mark.integration

DATASET = "it_rejects"


def test_a_row_the_warehouse_refuses_reaches_dead_letter_and_the_rest_is_written(stack):
    good = fine_record(measure_traversal(track("good", 70.0), SectionRule()), T0_MS)
    bad = {**fine_record(measure_traversal(track("bad", 70.0), SectionRule()), T0_MS),
           "avg_speed_kmh": "fast"}  # fmt: skip
    with TestPipeline(runner="BundleBasedDirectRunner") as p:
        refused = (
            p
            | beam.Create([good, bad])
            | "FineRows" >> ToWarehouseRows(FINES)
            | "WriteFines" >> WriteToWarehouse(stack.project_id, DATASET, dedupe_seconds=60)
        )
        assert_that(
            refused | beam.Map(lambda r: (r["stage"], json.loads(r["payload"])["vehicle_id"])),
            equal_to([("bigquery", "bad")]),
        )
        _ = (
            refused
            | "DeadLetterRows" >> ToWarehouseRows(DEAD_LETTER)
            | "WriteDeadLetters" >> WriteToWarehouse(stack.project_id, DATASET, 60)
        )
    warehouse = Warehouse(stack.project_id, DATASET)
    fines = warehouse.query(f"SELECT vehicle_id FROM `{stack.project_id}.{DATASET}.fines`")
    assert fines == [{"vehicle_id": "good"}]
    (letter,) = warehouse.query(f"SELECT * FROM `{stack.project_id}.{DATASET}.dead_letter`")
    assert letter["stage"] == "bigquery"
    # 5 attempts when the row came alone, 3 when a batch was split to isolate it.
    assert re.match(r"fines: failed after [35] attempts: fines: 500", letter["error"])
    assert json.loads(letter["payload"])["avg_speed_kmh"] == "fast"
    assert json.loads(letter["attributes"])["table"] == "fines"


def test_rows_already_in_the_table_are_not_written_again_after_a_restart(stack):
    """A replay after a restart re-sends rows written before it: the sink finds and skips
    them (same id and content), while a correction of a written fine is still written."""
    dataset = "it_restart"
    rule = SectionRule()
    events = track("v", 70.0, points=3)
    written = fine_record(measure_traversal(events[::2], rule), T0_MS, {"license_plate": "ABC1234"})
    corrected = fine_record(measure_traversal(events, rule), T0_MS + 5)
    warehouse = Warehouse(stack.project_id, dataset)
    warehouse.ensure_tables()
    row = to_warehouse_row(written, FINES)
    assert warehouse.insert(FINES, [row.row], [row.insert_id]) == []
    assert warehouse.existing_insert_ids(FINES, [written, corrected]) == {row.insert_id}

    replayed = {**written, "processed_at": format_rfc3339_ms(T0_MS + 60_000)}  # re-fired
    with TestPipeline(runner="BundleBasedDirectRunner") as p:
        _ = (
            p
            | beam.Create([replayed, corrected])
            | ToWarehouseRows(FINES)
            | WriteToWarehouse(stack.project_id, dataset, dedupe_seconds=600)
        )
    rows = warehouse.query(
        f"SELECT license_plate, duration_s FROM `{stack.project_id}.{dataset}.fines`"
    )
    # The first write and the correction; the replayed row was skipped.
    assert sorted(rows, key=lambda r: r["license_plate"] or "") == [
        {"license_plate": None, "duration_s": corrected["duration_s"]},
        {"license_plate": "ABC1234", "duration_s": written["duration_s"]},
    ]
