"""The warehouse's views: each reading rule written once (section_speed/domain/schemas.py),
created by provision after what they read, and the only thing the report's SQL reads."""

import re
from pathlib import Path

from pipeline.provision import PROVISIONED_TABLES
from section_speed.domain.schemas import (
    COUNTED_FINES,
    COUNTED_TRAVERSALS,
    FINE_REVISIONS,
    FINES,
    TRAVERSAL_REVISIONS,
    VEHICLE_SPEEDS,
    VIEWS,
)

REPO = Path(__file__).resolve().parents[2]
SQL_FILES = sorted((REPO / "analyst_report" / "sql").rglob("*.sql"))
# What only the views may say: the latest revision, a merge, the standing decision.
RULES = (
    re.compile(r"PARTITION BY (fine_id|traversal_id)\s+ORDER BY revision", re.IGNORECASE),
    re.compile(r"UNNEST\(supersedes\)", re.IGNORECASE),
    re.compile(r"ORDER BY revision DESC, decided_at DESC", re.IGNORECASE),
)
NOT_A_RULE = {"notices"}  # one row per notice_id, counted DISTINCT: no revision to pick


def test_each_view_comes_after_what_it_reads_and_reads_only_provisioned_names():
    known = {table.name for table in PROVISIONED_TABLES}
    for view in VIEWS:
        assert set(view.reads) <= known, view.name
        sql = view.sql("p", "d")
        assert set(re.findall(r"`p\.d\.(\w+)`", sql)) == set(view.reads), view.name
        known.add(view.name)


def test_the_revision_views_carry_every_column_of_their_table():
    for view, table in (
        (TRAVERSAL_REVISIONS, VEHICLE_SPEEDS),
        (FINE_REVISIONS, FINES),
        (COUNTED_TRAVERSALS, VEHICLE_SPEEDS),
        (COUNTED_FINES, FINES),
    ):
        sql = view.sql("p", "d")
        assert all(re.search(rf"\b{c.name}\b", sql) for c in table.columns), view.name


def test_the_reports_sql_reads_the_views_and_states_no_rule_of_its_own():
    assert len(SQL_FILES) == 8  # six analyst queries, two of the desk's
    views = {view.name for view in VIEWS}
    for path in SQL_FILES:
        code = "\n".join(line.split("--", 1)[0] for line in path.read_text().splitlines())
        read = set(re.findall(r"`\{project\}\.\{dataset\}\.(\w+)`", code))
        assert read and read <= views | NOT_A_RULE, (path.name, read - views)
        for rule in RULES:
            assert not rule.search(code), (path.name, rule.pattern)
