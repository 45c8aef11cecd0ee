"""Bounded runs: `python -m pipeline --input_file ... --output_path ...` on the same core."""

import json
from pathlib import Path

from pipeline.graph import run
from section_speed.domain.rules import SectionCatalog
from tests.helpers import T0_MS, section, track


def read_jsonl(prefix: Path, kind: str) -> list[dict]:
    files = sorted(prefix.parent.glob(f"{prefix.name}-{kind}-*.jsonl"))
    assert files, f"no {kind} output next to {prefix}"
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def test_archived_detections_are_re_enforced_to_files(tmp_path):
    events = [
        *track("fast", 72.0, start_ms=T0_MS),
        *track("slow", 30.0, start_ms=T0_MS + 100),
        *track("fast", 36.0, start_ms=T0_MS + 3_600_000),  # an hour later: a second pass
        *track("alone", 50.0, start_ms=T0_MS)[:1],  # one detection: no measurement
    ]
    lines = [json.dumps(event.to_json()) for event in events]
    # Archived a day ago: nothing is too late in a bounded run.
    archive = tmp_path / "archive.jsonl"
    archive.write_text("\n".join([*lines, "not json"]) + "\n")
    out = tmp_path / "out" / "day"
    sections = tmp_path / "sections.json"
    sections.write_text(SectionCatalog(section(), {"radar-1": section()}).to_json())
    run(
        [
            f"--input_file={archive}",
            f"--sections_file={sections}",
            f"--output_path={out}",
            "--runner=DirectRunner",
            "--direct_num_workers=1",
        ],
        save_main_session=False,
    )
    traversals = sorted(
        (r["vehicle_id"], round(r["avg_speed_kmh"], 1), r["is_ticketed"], r["speed_method"])
        for r in read_jsonl(out, "traversals")
    )
    assert traversals == [
        ("fast", 36.0, False, "section_average"),
        ("fast", 72.0, True, "section_average"),
        ("slow", 30.0, False, "section_average"),
    ]
    letters = sorted((r["stage"], r["payload"][:8]) for r in read_jsonl(out, "dead_letter"))
    assert letters == [("parse", "not json"), ("unmeasurable", '{"event_')]
