"""Limits changed while the pipeline runs, on the emulators (docs/enforcement.md, Changing
limits on a running job): the sections file rewritten, no restart.

Signals are tested on TestStream (tests/unit/test_limit_signals.py) and in the graph
(tests/unit/test_rules_updates.py): on the local runner a second, idle subscription makes
every watermark step wait for two 30 s pulls, which would triple this test's time."""

import json
import time
from pathlib import Path

import pytest

from generator.publish import publish_events
from local_stack.processes import wait_until
from local_stack.run import LocalPipeline, LocalTopics, OutputCollector
from section_speed.domain.rules import SectionCatalog, SectionRule
from section_speed.domain.traversal import mph_to_kmh
from tests.helpers import ENTRY, EXIT, track

pytestmark = [pytest.mark.integration, pytest.mark.pipeline]

GAP_S, REFRESH_S = 5, 5
RADAR = "radar-limits"


def sections(limit_mph: float) -> str:
    return json.dumps({RADAR: {"speed_limit_mph": limit_mph, "entry": list(ENTRY),
                               "exit": list(EXIT)}})  # fmt: skip


def version(limit_mph: float) -> str:
    return SectionCatalog.from_json(sections(limit_mph), SectionRule()).version


def test_a_new_sections_file_applies_without_a_restart(stack, tmp_path: Path):
    topics = LocalTopics(
        input_topic="lim-events", input_subscription="lim-events-sub",
        output_topic="lim-fines", output_subscription="lim-fines-reader",
        dead_letter_topic="lim-dead", dead_letter_subscription="lim-dead-reader",
    )  # fmt: skip
    topics.create(stack)
    path = tmp_path / "sections.json"
    path.write_text(sections(50))
    local = LocalPipeline(stack, topics, GAP_S, allowed_lateness_seconds=60, extra_args=[
        "--sections_file", str(path), "--rules_refresh_seconds", str(REFRESH_S),
    ])  # fmt: skip
    local.start()
    outputs = OutputCollector(stack, topics.output_subscription, producer=local.process)
    log = stack.work_dir / "pipeline.log"
    try:
        # 60 mph: over 50, under 70; 303 m in 11 s, short traversals keep the test short.
        before = track("before", mph_to_kmh(60), radar_id=RADAR, points=4,
                       start_ms=int(time.time() * 1000))  # fmt: skip
        publish_events(before, local.input_topic_path(), realtime=False, progress=False)
        # Its first interval is read (the local runner's ticks are the detections)...
        wait_until(lambda: f"rules version {version(50)}" in log.read_text(), timeout_s=150,
                   what="the first reading of the sections file", interval_s=0.5)  # fmt: skip
        # ...then the limit is raised, with no restart; the next vehicle enters after it.
        path.write_text(sections(70))
        now_ms = int(time.time() * 1000) + REFRESH_S * 1000
        after = track("after", mph_to_kmh(60), radar_id=RADAR, points=4, start_ms=now_ms)
        publish_events(after, local.input_topic_path(), realtime=False, progress=False)
        assert outputs.wait_for(lambda got: len(got) >= 2, timeout_s=180), (
            f"{len(outputs.snapshot())} of 2 traversals; log:\n{local.process.log_tail(30)}"
        )
    finally:
        outputs.close()
        local.process.stop()
    got = {
        r["vehicle_id"]: (r["speed_limit_mph"], r["limit_source"], r["limit_reference"],
                          r["is_ticketed"], r["rules_version"])
        for r in outputs.snapshot()
    }  # fmt: skip
    assert got == {
        "before": (50.0, "default", None, True, version(50)),
        "after": (70.0, "default", None, False, version(70)),
    }
