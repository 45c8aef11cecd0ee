"""The report's verification section without a warehouse: its SQL, one snapshot, the page."""

import re
from datetime import UTC, datetime

import pytest
from google.api_core.exceptions import NotFound

from analyst_report.contents import build_report, verification_line
from analyst_report.page import render_html
from analyst_report.queries import (
    SNAPSHOT_READINGS,
    VERIFICATION_SQL_DIR,
    SnapshotMoved,
    Verification,
    has_desk_tables,
    load_sql,
    sql_names,
    verification_sql_names,
)
from section_speed.clients.warehouse import Warehouse
from tests.unit import test_report as base

QUERIES = {"summary", "reader_accuracy"}
FOLDER = VERIFICATION_SQL_DIR
# The shared CTEs, from the first WITH to the query's own SELECT (the last one at line start).
PRELUDE = base.PRELUDE


def sql(name: str) -> str:
    return load_sql(name, "p-1", "d", FOLDER)


def prelude(name: str) -> str:
    found = PRELUDE.search(sql(name))
    assert found, f"verification/{name}.sql does not start with the shared WITH ... CTEs"
    return found.group(0)


def code(text: str) -> str:
    return " ".join(base.without_comments(text).split())


def test_the_package_ships_the_desk_queries_apart_from_the_traversal_queries():
    assert set(verification_sql_names()) == QUERIES
    assert set(sql_names()) == base.QUERIES  # the folder is no query of sql/


@pytest.mark.parametrize("name", sorted(QUERIES))
def test_each_query_formats_aliases_and_names_no_parameter_in_comments(name):
    text = sql(name)
    assert "`p-1.d.fine_decisions`" in text and "{" not in text and "}" not in text
    assert base.unaliased_aggregates(text) == []
    comments = [line.split("--", 1)[1] for line in text.splitlines() if "--" in line]
    assert not any("@" in comment for comment in comments)


def test_both_queries_share_one_prelude_that_counts_fines_as_the_desk_queues_them():
    shared = {prelude(name) for name in QUERIES}
    assert len(shared) == 1
    text = code(shared.pop())
    for clause in (
        # one moment, through the views that hold the queue's rules (docs/warehouse.md)
        "FROM `p-1.d.fine_queue` "
        "WHERE valid_from <= @as_of AND (valid_until IS NULL OR @as_of < valid_until)",
        "FROM `p-1.d.fine_decisions` WHERE decided_at <= @as_of",
        "FROM decisions WHERE stands_until IS NULL OR @as_of < stands_until",
        "FROM `p-1.d.notices` WHERE decided_at <= @as_of",
        # a read judged is the plate of the revision decided on; closing a withdrawn fine
        # judges no plate
        "ON read_by.fine_id = last_decisions.fine_id "
        "AND read_by.revision = last_decisions.revision",
        "WHERE last_decisions.decision != 'acknowledged'",
    ):
        assert clause in text, clause
    assert "fine_reviews" not in text and "`p-1.d.fines`" not in text  # only the views


def own_part(name: str) -> str:
    text = sql(name)
    return code(text[text.index(prelude(name)) + len(prelude(name)) :])


def test_the_summary_counts_pending_issued_rejected_and_decision_times():
    text = own_part("summary")
    assert "`" not in text and "FROM verified" in text
    for clause in (
        "COUNTIF(decision IS NULL) AS fines_pending",
        "COUNTIF(decision IN ('confirmed', 'corrected')) AS fines_issued",
        "COUNTIF(decision = 'rejected') AS fines_rejected",
        "(SELECT COUNT(DISTINCT notice_id) AS n FROM issued_notices) AS notices",
        "APPROX_QUANTILES(TIMESTAMP_DIFF(decided_at, opened_at, MILLISECOND), 100)"
        "[OFFSET(50)] AS ms",
        "APPROX_QUANTILES(TIMESTAMP_DIFF(decided_at, opened_at, MILLISECOND), 100)"
        "[OFFSET(90)] AS ms",
    ):
        assert clause in text, clause


def test_reader_accuracy_is_reads_confirmed_over_reads_confirmed_or_corrected():
    text = own_part("reader_accuracy")
    assert "`" not in text and "FROM judged_reads GROUP BY plate_reader" in text
    assert (
        "SAFE_DIVIDE( COUNTIF(decision = 'confirmed'), COUNTIF(decision IN ('confirmed', "
        "'corrected') AND reader_plate IS NOT NULL) ) AS read_accuracy" in text
    )
    assert "COUNTIF(decision = 'corrected' AND reader_plate IS NULL) AS unread_typed" in text
    # A wrong vehicle in the photo is its own heading, not "other".
    assert (
        "COUNTIF(decision = 'rejected' AND reason = 'wrong_vehicle') AS rejected_wrong_vehicle"
        in text
    )
    assert (
        "COUNTIF(decision = 'rejected' AND reason NOT IN ('plate_unreadable', 'wrong_vehicle')) "
        "AS rejected_other" in text
    )


# -- one snapshot, the page ---------------------------------------------------------------
SUMMARY = {
    "fines_pending": 2,
    "fines_changed": 1,
    "fines_issued": 6,
    "fines_rejected": 1,
    "notices": 6,
    "decisions": 8,
    "decision_ms_median": 2100,
    "decision_ms_p90": 4870,
}
READERS = [
    {
        "plate_reader": "<b>reader</b>",
        "reads_confirmed": 5,
        "reads_corrected": 1,
        "unread_typed": 0,
        "rejected_unreadable": 1,
        "rejected_wrong_vehicle": 2,
        "rejected_other": 0,
        "read_accuracy": 5 / 6,
    }
]


class DeskBigQuery(base.FakeBigQuery):
    """The report's fake warehouse, with the desk's tables and their queries."""

    def __init__(self, decision_counts: list[tuple[int, int]]) -> None:
        super().__init__([(2, 6)])
        self.decision_counts = decision_counts
        self.answers |= {"v:summary": [SUMMARY], "v:reader_accuracy": READERS}
        self.sql |= {load_sql(n, "p-1", "d", FOLDER): f"v:{n}" for n in QUERIES}
        self.tables: list[str] = []

    def get_table(self, table: str):
        self.tables.append(table)
        return table

    def query(self, sql: str, job_config):
        if "AS review_rows" not in sql:
            return super().query(sql, job_config)
        (as_of,) = [p.value for p in job_config.query_parameters if p.name == "as_of"]
        self.as_of.append(as_of)
        self.asked.append("decisions_as_of")
        counts = self.decision_counts
        review_rows, notice_rows = counts.pop(0) if len(counts) > 1 else counts[0]
        rows = [{"review_rows": review_rows, "notice_rows": notice_rows}]

        class Job:
            def result(self):
                return rows

        return Job()


def test_with_the_desk_tables_the_report_reads_the_decisions_as_of_the_same_moment():
    client = DeskBigQuery([(8, 6)])
    warehouse = Warehouse("p-1", "d", client=client)
    as_of = datetime(2026, 11, 18, 12, tzinfo=UTC)
    built = build_report(warehouse, photos=lambda _url: None, as_of=as_of)
    assert client.tables == ["p-1.d.fine_reviews", "p-1.d.notices"]
    assert client.asked[-4:] == ["decisions_as_of", "v:summary", "v:reader_accuracy",
                                 "decisions_as_of"]  # fmt: skip
    assert set(client.as_of) == {as_of}
    assert built.verification == Verification.from_rows(SUMMARY, READERS)
    assert built.verification.readers[0].reads_corrected == 1


def test_decisions_arriving_during_the_reading_make_it_read_them_again():
    client = DeskBigQuery([(7, 5), (8, 6), (8, 6)])
    warehouse = Warehouse("p-1", "d", client=client)
    build_report(warehouse, photos=lambda _url: None)
    assert client.asked.count("v:summary") == 2
    never = DeskBigQuery([(n, n) for n in range(SNAPSHOT_READINGS + 2)])
    with pytest.raises(SnapshotMoved, match="decisions before"):
        build_report(Warehouse("p-1", "d", client=never), photos=lambda _: None)


def test_a_dataset_without_the_desk_tables_has_no_verification_section():
    warehouse, client = base.fake_warehouse([(2, 6)])
    built = build_report(warehouse, photos=lambda _url: None)
    assert built.verification is None and "decisions_as_of" not in client.asked
    assert 'id="verification"' not in render_html(built)

    class Missing:
        def get_table(self, table: str):
            raise NotFound(table)

    assert has_desk_tables(Warehouse("p-1", "d", client=Missing())) is False


def test_the_page_shows_the_counts_the_times_and_each_reader_as_text():
    client = DeskBigQuery([(8, 6)])
    built = build_report(Warehouse("p-1", "d", client=client), photos=lambda _url: None)
    page = render_html(built)
    section = page[page.index('<section id="verification">') : page.index('id="latest-fines"')]
    assert (
        "Verified: 6 issued (6 notices), 1 rejected, 2 pending (1 changed since a decision); "
        "officers decide in 2.1 s (median), 4.9 s (90th percentile) over 8 decisions."
    ) in section
    cells = re.findall(r"<td>(.*?)</td>", section)
    assert cells == ["&lt;b&gt;reader&lt;/b&gt;", "5", "1", "0", "1", "2", "0", "83 %"]
    assert "<th>rejected: wrong vehicle</th><th>rejected: other</th>" in section


def test_the_line_leaves_out_times_before_any_decision():
    quiet = Verification(3, 0, 0, 0, 0, 0, None, None)
    assert verification_line(quiet) == "Verified: 0 issued (0 notices), 0 rejected, 3 pending."
