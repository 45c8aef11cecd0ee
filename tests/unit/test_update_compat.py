"""An update Dataflow would refuse is caught here, before it reaches Dataflow.

The Dataflow job's graph is built offline (the DataflowRunner's dry run, every connection
refused) and its stateful steps (GroupByKeys, ParDos with state or timers) are compared
with pipeline/update_compat.json: this commit's steps must be the snapshot's `current`,
and each step that differs from the `released` job's must be named in docs/deploy.md's
list of steps that need drain and relaunch. The checks are shown to fail on a coder class
moved to another module (what the package move did), a renamed step and a missing note.
"""

import copy
import json
import socket
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import pytest

from pipeline import update_compat
from pipeline.update_compat import (
    NOTE_END,
    NOTE_START,
    WRITE_COMMAND,
    dataflow_graph,
    differences,
    noted_steps,
    problems,
    read_snapshot,
    stateful_steps,
)
from section_speed.domain.events import CameraEvent
from transforms.coders import CameraEventCoder

REPO = Path(__file__).resolve().parents[2]
DEPLOY_DOC = REPO / "docs" / "deploy.md"
GROUP_DETECTIONS = "SectionSpeedEnforcement/MeasureTraversals/GroupDetections"
# The keyed steps whose coders' classes moved from pipeline.transforms to transforms.
MOVED = {
    GROUP_DETECTIONS,
    "SectionSpeedEnforcement/MeasureTraversals/IdentifyTraversals/ParDo(IdentifyTraversalsFn)",
    "EnrichFines/BatchForPlates/GroupIntoBatches/GroupIntoBatches/ParDo(_GroupIntoBatchesDoFn)",
    "WriteToBigQuery/BatchRows/GroupIntoBatches/GroupIntoBatches/ParDo(_GroupIntoBatchesDoFn)",
    "DeadLettersApart/ReshufflePerKey/GroupByKey",
}


@pytest.fixture
def no_network(monkeypatch):
    """Refuses every connection and yields the list of attempts (which must stay empty)."""
    attempts = []

    def refuse(sock, address, *args):
        attempts.append(address)
        raise OSError(f"network disabled in this test: {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    yield attempts


@pytest.fixture(scope="module")
def graph():
    return stateful_steps(dataflow_graph())


def test_the_snapshot_is_this_graph_and_every_break_is_noted(no_network):
    found = problems(read_snapshot(), stateful_steps(dataflow_graph()), DEPLOY_DOC.read_text())
    assert found == [], "\n".join(found)
    assert no_network == []


def test_the_package_move_breaks_the_keyed_steps_and_the_doc_says_drain_and_relaunch():
    snapshot = read_snapshot()
    released = snapshot["released"]["steps"]
    assert set(released) == MOVED  # the released job's stateful steps: a fixed record
    assert all("[pipeline.transforms." in step["input_coder"] for step in released.values())
    # Each differs now (moved, and maybe changed or gone since), and each is noted.
    broken = differences(released, snapshot["current"]["steps"])
    assert set(broken) == MOVED
    assert MOVED <= noted_steps(DEPLOY_DOC.read_text())
    section = DEPLOY_DOC.read_text().split(NOTE_START, 1)[0].rsplit("\n## ", 1)[1]
    assert section.startswith("Releases that need drain and relaunch")
    assert "This release cannot update a job running the previous one" in section


class MovedCameraEventCoder(CameraEventCoder):
    """The same bytes as CameraEventCoder, its class in another module (as the move did)."""


def test_a_coder_class_moved_to_another_module_fails_naming_the_step(no_network, monkeypatch):
    monkeypatch.setitem(beam.coders.registry._coders, CameraEvent, MovedCameraEventCoder)
    moved = stateful_steps(dataflow_graph())
    found = problems(read_snapshot(), moved, DEPLOY_DOC.read_text())
    assert len(found) == 2, found  # the step, then what to do
    assert found[0].startswith(f"stateful step {GROUP_DETECTIONS} changed: input_coder:")
    assert f"transforms.coders.CameraEventCoder -> {__name__}.MovedCameraEventCoder" in found[0]
    assert f"`{WRITE_COMMAND}`" in found[1] and "docs/deploy.md" in found[1]
    assert no_network == []


def test_a_renamed_or_new_stateful_step_fails_until_the_snapshot_is_regenerated(graph):
    renamed = dict(graph)
    renamed["SectionSpeedEnforcement/MeasureTraversals/GroupByVehicle"] = renamed.pop(
        GROUP_DETECTIONS
    )
    found = problems(read_snapshot(), renamed, DEPLOY_DOC.read_text())
    assert found[0] == (
        f"stateful step {GROUP_DETECTIONS} changed: gone (removed or renamed; a rename needs "
        "--transform-name-mappings)"
    )
    assert found[1] == (
        "stateful step SectionSpeedEnforcement/MeasureTraversals/GroupByVehicle is new "
        "(not in the snapshot)"
    )
    assert WRITE_COMMAND in found[2]


def test_a_change_from_the_released_job_without_a_note_fails_naming_each_step(graph):
    doc = DEPLOY_DOC.read_text()
    before, rest = doc.split(NOTE_START, 1)
    without_notes = before + NOTE_START + "\n" + NOTE_END + rest.split(NOTE_END, 1)[1]
    found = problems(read_snapshot(), graph, without_notes)
    assert len(found) == len(MOVED)
    for step in MOVED:
        (problem,) = [p for p in found if p.startswith(f"stateful step {step} differs")]
        assert f"name `{step}` in docs/deploy.md" in problem


def test_a_step_new_since_the_release_needs_no_note(graph):
    """Dataflow starts a new stateful step empty: only changed or removed ones break."""
    snapshot = copy.deepcopy(read_snapshot())
    added = {**graph, "NewStep/GroupByKey": graph[GROUP_DETECTIONS]}
    snapshot["current"]["steps"] = added
    assert problems(snapshot, added, DEPLOY_DOC.read_text()) == []


def test_write_regenerates_the_committed_snapshot_and_check_exits_1_when_stale(tmp_path):
    """One command, no network: `python -m pipeline.update_compat --write`."""
    snapshot = tmp_path / "update_compat.json"
    stale = read_snapshot()
    stale["current"]["steps"].pop(GROUP_DETECTIONS)
    snapshot.write_text(json.dumps(stale))
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    command = [sys.executable, "-m", "pipeline.update_compat", "--snapshot", str(snapshot)]
    check = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert check.returncode == 1
    assert f"stateful step {GROUP_DETECTIONS} is new" in check.stderr
    write = subprocess.run(
        [*command, "--write"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert write.returncode == 0, write.stderr
    assert snapshot.read_text() == update_compat.SNAPSHOT.read_text()
