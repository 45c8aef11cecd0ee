"""The warehouse on the BigQuery emulator: a refused row reaches dead_letter; the views
every reader reads count each traversal, fine and decision once, as of any moment, even
when a retried insert wrote a row twice (docs/warehouse.md, Views)."""

import dataclasses
import json
import re
from datetime import UTC, datetime

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from google.cloud import bigquery

from analyst_report.queries import VERIFICATION_SQL_DIR, run_query
from pipeline.provision import PROVISIONED_TABLES
from section_speed.clients.warehouse import Warehouse
from section_speed.domain.events import format_rfc3339_ms
from section_speed.domain.schemas import (
    COUNTED_TRAVERSALS,
    DEAD_LETTER,
    FINES,
    VEHICLE_SPEEDS,
    VIEWS,
    insert_id,
    output_record,
    vehicle_speed_record,
)
from section_speed.domain.verification import FINE_REVIEWS
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


# -- the views ---------------------------------------------------------------------------
MINUTE_MS = 60_000


def moment(minutes: float) -> datetime:
    return datetime.fromtimestamp((T0_MS + minutes * MINUTE_MS) / 1000, UTC)


def insert_twice_where_asked(warehouse, table, rows, twice=()):
    """Rows as the sink writes them; those in `twice` again under another insertId, as a
    retry after BigQuery's best-effort deduplication window writes them."""
    ids = [insert_id(table, row) for row in rows]
    assert warehouse.insert(table, rows, ids) == []
    again = [row for row in rows if (row[table.id_column], row["revision"]) in twice]
    if again:
        assert warehouse.insert(table, again, [f"retry-{i}" for i in range(len(again))]) == []


def counted_as_of(warehouse, view, id_column, minutes):
    sql = (
        f"SELECT {id_column} AS id, revision FROM `{warehouse.project}.{warehouse.dataset}"
        f".{view}` WHERE valid_from <= TIMESTAMP '{moment(minutes).isoformat()}' AND "
        f"(valid_until IS NULL OR TIMESTAMP '{moment(minutes).isoformat()}' < valid_until)"
    )
    # No cached answer: the same text must see a view defined again.
    config = bigquery.QueryJobConfig(use_query_cache=False)
    rows = warehouse.client.query(sql, job_config=config).result()
    return sorted((row["id"], row["revision"]) for row in rows)


def test_the_views_count_each_traversal_once_as_of_any_moment_and_no_retried_copy(stack):
    warehouse = Warehouse(stack.project_id, "it_views")
    warehouse.ensure_tables(PROVISIONED_TABLES)  # what python -m pipeline.provision creates
    present = {t.table_id for t in warehouse.client.list_tables("it_views")}
    assert {view.name for view in VIEWS} <= present

    rule = section()
    a = measured(track("a", 70.0), rule)
    a_corrected = dataclasses.replace(a, revision=1, avg_speed_kmh=90.0)
    b = measured(track("b", 80.0, start_ms=T0_MS + 10 * MINUTE_MS), rule)
    merged = dataclasses.replace(
        measured(track("b", 80.0, start_ms=T0_MS + 9 * MINUTE_MS), rule),
        supersedes=(b.traversal_id,),
    )
    w = measured(track("w", 75.0, start_ms=T0_MS + 20 * MINUTE_MS), rule)
    w_withdrawn = dataclasses.replace(w, revision=1, withdrawn_reason="partial: left the road")
    # (traversal, processed at minute): a at 1, corrected at 3; b at 2, merged away at 4;
    # w at 1, withdrawn at 3.
    written = [(a, 1), (a_corrected, 3), (b, 2), (merged, 4), (w, 1), (w_withdrawn, 3)]
    speeds = [vehicle_speed_record(t, T0_MS + m * MINUTE_MS) for t, m in written]
    fines = [output_record(t, T0_MS + m * MINUTE_MS) for t, m in written]
    # a's first row and the merge written twice: a retry after the dedup window.
    twice = {(a.traversal_id, 0), (merged.traversal_id, 0)}
    insert_twice_where_asked(warehouse, VEHICLE_SPEEDS, speeds, twice)
    insert_twice_where_asked(warehouse, FINES, fines, twice)
    assert warehouse.count(VEHICLE_SPEEDS) == len(written) + 2  # the copies are stored

    a_id, b_id, m_id, w_id = (t.traversal_id for t in (a, b, merged, w))
    expected = {
        0.5: [],
        1.5: sorted([(a_id, 0), (w_id, 0)]),
        2.5: sorted([(a_id, 0), (b_id, 0), (w_id, 0)]),
        3.5: sorted([(a_id, 1), (b_id, 0)]),  # a corrected, w withdrawn
        4.5: sorted([(a_id, 1), (m_id, 0)]),  # b merged into m
    }
    for view, id_column in (("counted_traversals", "traversal_id"), ("counted_fines", "fine_id")):
        for minutes, ids in expected.items():
            assert counted_as_of(warehouse, view, id_column, minutes) == ids, (view, minutes)
    now = warehouse.query(
        f"SELECT traversal_id, avg_speed_kmh FROM `{stack.project_id}.it_views."
        "counted_traversals` WHERE valid_until IS NULL"
    )
    assert sorted(row["traversal_id"] for row in now) == sorted([a_id, m_id])
    revisions = counted_as_of(warehouse, "traversal_revisions", "traversal_id", 3.5)
    assert revisions == sorted([(a_id, 1), (b_id, 0), (w_id, 1)])  # latest, withdrawn too

    # The desk's decisions on a's fine: rejected on revision 0 (written twice by a retry),
    # then the fine was corrected (pending again), then confirmed on revision 1.
    def review(review_id, revision, decision, minute):
        at = format_rfc3339_ms(T0_MS + minute * MINUTE_MS)
        return {"review_id": review_id, "fine_id": a_id, "revision": revision,
                "decision": decision, "license_plate": None, "reader_plate": None,
                "reason": "other" if decision == "rejected" else None, "note": "n",
                "reviewer": "officer", "opened_at": at, "decided_at": at}  # fmt: skip

    reviews = [review("r1", 0, "rejected", 2), review("r2", 1, "confirmed", 5)]
    ids = [r["review_id"] for r in reviews]
    assert warehouse.insert(FINE_REVIEWS, reviews, ids) == []
    assert warehouse.insert(FINE_REVIEWS, reviews[:1], ["retry-r1"]) == []

    def queue(minutes):
        (row,) = run_query(warehouse, "summary", moment(minutes), VERIFICATION_SQL_DIR)
        keys = ("fines_pending", "fines_changed", "fines_issued", "fines_rejected", "decisions")
        return tuple(row[key] for key in keys)

    # (pending, changed, issued, rejected, decisions): the copy of r1 counts once.
    assert queue(1.5) == (2, 0, 0, 0, 0)  # a and w, undecided
    assert queue(2.5) == (2, 0, 0, 1, 1)  # a rejected; b pending
    assert queue(3.5) == (2, 1, 0, 0, 1)  # a corrected since: pending again, decided before
    assert queue(5.5) == (1, 0, 1, 0, 2)  # a confirmed; m (b merged) pending

    # Provision again: nothing changes; a release that changes a rule redefines its view.
    assert warehouse.ensure_views() == [view.name for view in VIEWS]
    assert counted_as_of(warehouse, "counted_traversals", "traversal_id", 4.5) == expected[4.5]
    changed = dataclasses.replace(
        COUNTED_TRAVERSALS,
        query=f"SELECT * FROM ({COUNTED_TRAVERSALS.query})\nWHERE radar_id = 'elsewhere'",
    )
    assert warehouse.ensure_views([changed]) == [changed.name]
    assert counted_as_of(warehouse, "counted_traversals", "traversal_id", 4.5) == []
