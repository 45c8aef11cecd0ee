"""`make test`'s lanes (tests/lanes.py): a test that starts a live pipeline is in the lane
that runs them one at a time."""

import ast
from pathlib import Path

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"
# What a module calls to run a streaming pipeline on the local runner.
LIVE_PIPELINE_CALLS = ("LocalPipeline(", "CourseCommandPipeline(")


def _marks(module: Path) -> set[str]:
    for node in ast.parse(module.read_text()).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "pytestmark" for target in node.targets
        ):
            return {
                sub.attr
                for sub in ast.walk(node.value)
                if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Attribute)
            }
    return set()


def test_every_module_that_runs_a_live_pipeline_is_marked_pipeline():
    live = {
        module.name
        for module in INTEGRATION.glob("test_*.py")
        if any(call in module.read_text() for call in LIVE_PIPELINE_CALLS)
    }
    assert {"test_restart.py", "test_end_to_end.py", "test_course_traffic.py"} <= live
    unmarked = sorted(name for name in live if "pipeline" not in _marks(INTEGRATION / name))
    assert unmarked == []


def test_every_integration_module_is_marked_integration():
    modules = sorted(INTEGRATION.glob("test_*.py"))
    assert len(modules) > 10
    assert [m.name for m in modules if "integration" not in _marks(m)] == []
