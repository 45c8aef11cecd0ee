"""WriteToWarehouse against the BigQuery emulator: a refused row reaches dead_letter."""

import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from clients.warehouse import Warehouse
from domain.schemas import DEAD_LETTER, FINES, fine_record
from domain.speed import SectionRule, measure_traversal
from tests.helpers import T0_MS, track
from transforms.warehouse import ToWarehouseRows, WriteToWarehouse

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
    assert letter["error"].startswith("fines: failed after 3 attempts: fines: 500")
    assert json.loads(letter["payload"])["avg_speed_kmh"] == "fast"
    assert json.loads(letter["attributes"])["table"] == "fines"
