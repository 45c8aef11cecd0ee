"""WriteToWarehouse against the BigQuery emulator: a refused row reaches dead_letter."""

import json
import re

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from section_speed.clients.warehouse import Warehouse
from section_speed.domain.schemas import DEAD_LETTER, FINES, output_record
from tests.helpers import T0_MS, measured, section, track
from transforms.failures import to_dead_letter_record
from transforms.warehouse import ToWarehouseRows, WriteToWarehouse, warehouse_factory
from transforms.worker_clients import ClientHandler

pytestmark = pytest.mark.integration

DATASET = "it_rejects"


def test_a_row_the_warehouse_refuses_reaches_dead_letter_and_the_rest_is_written(stack):
    warehouse = Warehouse(stack.project_id, DATASET)
    warehouse.ensure_tables()  # at deploy time; the sink's workers only check them
    tables = ClientHandler(warehouse_factory(stack.project_id, DATASET))
    good = output_record(measured(track("good", 70.0), section()), T0_MS)
    bad = {**output_record(measured(track("bad", 70.0), section()), T0_MS),
           "avg_speed_kmh": "fast"}  # fmt: skip
    with TestPipeline(runner="BundleBasedDirectRunner") as p:
        refused = (
            p
            | beam.Create([good, bad])
            | "FineRows" >> ToWarehouseRows(FINES)
            | "WriteFines" >> WriteToWarehouse(tables, batch_wait_s=None)
        ).failures
        assert_that(
            refused | beam.Map(lambda f: (f.stage.name, json.loads(f.payload)["vehicle_id"])),
            equal_to([("bigquery", "bad")]),
        )
        _ = refused | "WriteDeadLetters" >> WriteToWarehouse(
            tables, batch_wait_s=None, rows=ToWarehouseRows(DEAD_LETTER, to_dead_letter_record)
        )
    fines = warehouse.query(f"SELECT vehicle_id FROM `{stack.project_id}.{DATASET}.fines`")
    assert fines == [{"vehicle_id": "good"}]
    (letter,) = warehouse.query(f"SELECT * FROM `{stack.project_id}.{DATASET}.dead_letter`")
    assert letter["stage"] == "bigquery"
    # 5 attempts when the row came alone, 3 when a batch was split to isolate it.
    assert re.match(r"fines: failed after [35] attempts: fines: 500", letter["error"])
    assert json.loads(letter["payload"])["avg_speed_kmh"] == "fast"
    assert json.loads(letter["attributes"])["table"] == "fines"
