"""Update compatibility: the keyed steps a running job's state lives in, recorded.

Dataflow updates a running streaming job in place (`--update`) only when every step that
holds state (each GroupByKey, each ParDo with state or timers) keeps its name, its input's
coders and its windowing; otherwise it refuses the update ("The Coder or type for step ...
has changed") and the old job runs on. A Python coder that Beam pickles is named in the
graph by its class's module, so moving a coder's class to another module is such a change.
This module builds the Dataflow job's graph offline (the DataflowRunner's dry run: no
network, no credentials), describes every stateful step, and compares the description with
the committed snapshot `pipeline/update_compat.json`:

- `current`: this commit's stateful steps. `tests/unit/test_update_compat.py` fails when
  the graph differs from it, naming each step and what changed.
- `released`: the steps of the release jobs run today. Each step that differs between the
  two (changed or gone) must be named in docs/deploy.md's list of steps that need drain and
  relaunch (between the `update-breaks` markers), or the test fails.

    python -m pipeline.update_compat            # check; exit 1 with what differs
    python -m pipeline.update_compat --write    # record this graph as `current`
    python -m pipeline.update_compat --release LABEL   # after launching a release: its
                                                       # steps become `released`

docs/deploy.md (Releases that need drain and relaunch) says when an update works and how to
move over when it does not.
"""

import argparse
import base64
import difflib
import io
import json
import pickle
import re
import sys
import tempfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.portability import common_urns, python_urns
from apache_beam.portability.api import beam_runner_api_pb2, standard_window_fns_pb2
from google.protobuf import text_format, wrappers_pb2

from pipeline.graph import build_pipeline
from pipeline.options import SectionSpeedOptions, pipeline_options

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT = Path(__file__).with_name("update_compat.json")
DEPLOY_DOC = REPO / "docs" / "deploy.md"
NOTE_START, NOTE_END = "<!-- update-breaks:start -->", "<!-- update-breaks:end -->"
WRITE_COMMAND = "python -m pipeline.update_compat --write"

# The deployed job with every stage on (docs/deploy.md's launch plus the evidence stage), on
# the DataflowRunner's dry run: the graph Dataflow compares at an update. The sections file
# is a local stand-in written at build time (the launch passes gs://...).
JOB_ARGS = (
    "--runner=DataflowRunner",
    "--dry_run=True",
    "--project=update-compat",
    "--region=us-central1",
    "--temp_location=gs://update-compat/tmp",
    "--job_name=section-speed",
    "--sdk_container_image=us-central1-docker.pkg.dev/update-compat/section-speed/section-speed:0",
    "--input_subscription=camera-events-sub",
    "--output_topic=fines",
    "--dead_letter_topic=dead-letter",
    "--bq_dataset=section_speed",
    "--cars_api=https://cars.example.com/cars/{vehicle_id}",
    "--bucket=evidence",
)
SECTIONS = {"radar-1": {"entry": [40.81939, -73.940744], "exit": [40.811, -73.95]}}

Steps = dict[str, dict[str, Any]]


def dataflow_graph(args: tuple[str, ...] = JOB_ARGS) -> beam_runner_api_pb2.Pipeline:
    """The Dataflow job's pipeline proto, built by the dry run (nothing leaves the machine)."""
    with tempfile.TemporaryDirectory() as work:
        sections = Path(work) / "sections.json"
        sections.write_text(json.dumps(SECTIONS))
        options = pipeline_options([*args, f"--sections_file={sections}"], save_main_session=False)
        pipeline = beam.Pipeline(options=options)
        build_pipeline(pipeline, options.view_as(SectionSpeedOptions))
        return pipeline.run().job.proto_pipeline


def stateful_steps(proto: beam_runner_api_pb2.Pipeline) -> Steps:
    """Each step holding state, by unique name: its kind, input coder, windowing, state."""
    components = proto.components
    steps: Steps = {}
    for transform in components.transforms.values():
        if transform.spec.urn == common_urns.primitives.GROUP_BY_KEY.urn:
            step: dict[str, Any] = {"kind": "GroupByKey"}
            side_inputs: list[str] = []
        elif transform.spec.urn == common_urns.primitives.PAR_DO.urn:
            payload = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
            if not payload.state_specs and not payload.timer_family_specs:
                continue
            step = {
                "kind": "stateful ParDo",
                "state": {
                    name: _state(spec, components)
                    for name, spec in sorted(payload.state_specs.items())
                },
                "timers": sorted(payload.timer_family_specs),
                "side_inputs": sorted(payload.side_inputs),
            }
            side_inputs = list(payload.side_inputs)
        else:
            continue
        (main_input,) = [
            components.pcollections[pc]
            for tag, pc in transform.inputs.items()
            if tag not in side_inputs
        ]
        step["input_coder"] = coder(main_input.coder_id, components)
        step["windowing"] = windowing(
            components.windowing_strategies[main_input.windowing_strategy_id], components
        )
        steps[transform.unique_name] = step
    return dict(sorted(steps.items()))


def coder(coder_id: str, components: beam_runner_api_pb2.Components) -> str:
    """One line per coder tree: `Name:urn(components)`, a pickled coder with the classes its
    pickle names, e.g. `CameraEventCoder:pickled_python[transforms.coders.CameraEventCoder]`.

    Name is the coder id without Beam's counter (it carries a coder's version tag)."""
    proto = components.coders[coder_id]
    name = re.sub(r"^ref_Coder_|_\d+$", "", coder_id)
    urn = proto.spec.urn.removeprefix("beam:coder:")
    if proto.spec.urn == python_urns.PICKLED_CODER:
        urn += "[" + ", ".join(pickled_classes(proto.spec.payload)) + "]"
    elif proto.spec.payload:
        urn += "{" + base64.b64encode(proto.spec.payload).decode() + "}"
    inner = [coder(c, components) for c in proto.component_coder_ids]
    return f"{name}:{urn}" + (f"({', '.join(inner)})" if inner else "")


def pickled_classes(payload: bytes) -> list[str]:
    """The module-qualified names a pickled coder's pickle refers to, in order.

    The payload is Beam's `serialize_coder`: `ClassName$` + base64(zlib(pickle)).
    """
    serialized = wrappers_pb2.BytesValue.FromString(payload).value
    pickled = zlib.decompress(base64.b64decode(serialized.split(b"$", 1)[1]))
    names: list[str] = []

    class Recording(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if f"{module}.{name}" not in names:
                names.append(f"{module}.{name}")
            return super().find_class(module, name)

    Recording(io.BytesIO(pickled)).load()
    return names


_WINDOW_PAYLOADS = {
    common_urns.fixed_windows.urn: standard_window_fns_pb2.FixedWindowsPayload,
    common_urns.sliding_windows.urn: standard_window_fns_pb2.SlidingWindowsPayload,
    common_urns.session_windows.urn: standard_window_fns_pb2.SessionWindowsPayload,
}


def windowing(
    strategy: beam_runner_api_pb2.WindowingStrategy, components: beam_runner_api_pb2.Components
) -> dict[str, str]:
    """What an update must keep of a step's windowing (Dataflow refuses to change it)."""
    window_fn = strategy.window_fn.urn
    payload_type = _WINDOW_PAYLOADS.get(window_fn)
    if payload_type is not None:
        parsed = payload_type.FromString(strategy.window_fn.payload)
        window_fn += " {" + text_format.MessageToString(parsed, as_one_line=True) + "}"
    elif strategy.window_fn.payload:
        window_fn += " [pickled]"
    enum = beam_runner_api_pb2
    return {
        "window_fn": window_fn,
        "window_coder": coder(strategy.window_coder_id, components),
        "trigger": text_format.MessageToString(strategy.trigger, as_one_line=True),
        "accumulation": enum.AccumulationMode.Enum.Name(strategy.accumulation_mode),
        "allowed_lateness_ms": str(strategy.allowed_lateness),
        "output_time": enum.OutputTime.Enum.Name(strategy.output_time),
        "closing_behavior": enum.ClosingBehavior.Enum.Name(strategy.closing_behavior),
    }


def _state(spec: beam_runner_api_pb2.StateSpec, components: beam_runner_api_pb2.Components) -> str:
    kind = spec.WhichOneof("spec")
    inner = getattr(spec, kind)
    fields = ("coder_id", "element_coder_id", "key_coder_id", "value_coder_id",
              "accumulator_coder_id")  # fmt: skip
    ids = [getattr(inner, field) for field in fields if getattr(inner, field, "")]
    return f"{kind}(" + ", ".join(coder(i, components) for i in ids) + ")"


# --- comparing -------------------------------------------------------------------------------


def differences(before: Steps, after: Steps) -> dict[str, str]:
    """Each step of `before` that `after` lacks or holds differently, with what differs.

    A step only in `after` is new: Dataflow starts it empty, so it breaks no update.
    """
    found = {}
    for name, old in before.items():
        new = after.get(name)
        if new is None:
            found[name] = "gone (removed or renamed; a rename needs --transform-name-mappings)"
            continue
        old, new = _flat(old), _flat(new)
        changed = [
            f"{key}: {_changed(_show(old.get(key)), _show(new.get(key)))}"
            for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key)
        ]
        if changed:
            found[name] = "; ".join(changed)
    return found


def _flat(step: Mapping[str, Any]) -> dict[str, Any]:
    """`windowing.trigger`, `state.values`, ...: a difference names the part that differs."""
    flat = {}
    for key, value in step.items():
        if isinstance(value, Mapping):
            flat.update({f"{key}.{inner}": part for inner, part in value.items()})
        else:
            flat[key] = value
    return flat


def _show(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _changed(old: str, new: str) -> str:
    """`old -> new`, down to the names that differ (a moved class: its two module paths)."""
    tokens = re.compile(r"[\w.\-]+|[^\w.\-]")
    before, after = tokens.findall(old), tokens.findall(new)
    parts = [
        f"{''.join(before[i1:i2]) or '(nothing)'} -> {''.join(after[j1:j2]) or '(nothing)'}"
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, before, after).get_opcodes()
        if tag != "equal"
    ]
    whole = f"{old} -> {new}"
    if parts == [whole] or len(old) >= 120:
        return "; ".join(parts)
    return "; ".join(parts) + f" (was {old})"


def noted_steps(doc_text: str) -> set[str]:
    """The step names docs/deploy.md's update-breaks list gives (each in backticks)."""
    if NOTE_START not in doc_text or NOTE_END not in doc_text:
        return set()
    block = doc_text.split(NOTE_START, 1)[1].split(NOTE_END, 1)[0]
    return set(re.findall(r"`([^`]+)`", block))


def problems(snapshot: Mapping[str, Any], graph: Steps, doc_text: str) -> list[str]:
    """What stops this commit: a graph the snapshot does not record, and a step that differs
    from the released job's without a note in docs/deploy.md."""
    found = []
    current = snapshot["current"]["steps"]
    for name, what in differences(current, graph).items():
        found.append(f"stateful step {name} changed: {what}")
    for name in sorted(graph.keys() - current.keys()):
        found.append(f"stateful step {name} is new (not in the snapshot)")
    if found:
        found.append(
            f"The stateful steps differ from pipeline/update_compat.json. Run `{WRITE_COMMAND}`; "
            "then, for each changed or removed step, Dataflow refuses to update a running job "
            "(apache/beam#30357): name the step in docs/deploy.md, section 'Releases that "
            f"need drain and relaunch', between {NOTE_START} and {NOTE_END}."
        )
    released = snapshot["released"]
    noted = noted_steps(doc_text)
    for name, what in differences(released["steps"], current).items():
        if name not in noted:
            found.append(
                f"stateful step {name} differs from the released job's ({released['label']}): "
                f"{what}. Dataflow refuses to update a running job across it: name `{name}` "
                f"in docs/deploy.md, section 'Releases that need drain and relaunch', between "
                f"{NOTE_START} and {NOTE_END}, and say how to move over (drain, relaunch)."
            )
    return found


# --- the command -------------------------------------------------------------------------------


def read_snapshot(path: Path = SNAPSHOT) -> dict[str, Any]:
    return json.loads(path.read_text())


def write_snapshot(snapshot: Mapping[str, Any], path: Path = SNAPSHOT) -> None:
    path.write_text(json.dumps(snapshot, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.update_compat",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="record this graph as `current`")
    action.add_argument(
        "--release", metavar="LABEL", help="record this graph as `released` too (after a launch)"
    )
    parser.add_argument("--snapshot", type=Path, default=SNAPSHOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    graph = stateful_steps(dataflow_graph())
    snapshot = read_snapshot(args.snapshot) if args.snapshot.exists() else {}
    if args.write or args.release:
        snapshot["current"] = {"steps": graph}
        if args.release:
            snapshot["released"] = {"label": args.release, "steps": graph}
        snapshot.setdefault("released", {"label": "none yet", "steps": {}})
        write_snapshot(snapshot, args.snapshot)
        print(f"wrote {args.snapshot}: {len(graph)} stateful steps", file=sys.stderr)
    found = problems(snapshot, graph, DEPLOY_DOC.read_text())
    for problem in found:
        print(problem, file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
