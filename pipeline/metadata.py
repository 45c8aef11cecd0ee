"""`python -m pipeline.metadata`: write the Flex Template's metadata.json from the options.

Every parameter comes from `pipeline.options.OPTION_SPECS` (name, label, help, regex,
default), so the template can never offer a parameter the pipeline does not have, nor
miss one (a test compares the committed file with `render()`). The launcher passes each
parameter to main.py as `--name=value`, which `SectionSpeedOptions` parses.
"""

import json
import sys
from pathlib import Path
from typing import Any

from pipeline.options import OPTION_SPECS, OptionSpec

METADATA = Path(__file__).resolve().parent.parent / "metadata.json"

NAME = "Section-speed enforcement"
DESCRIPTION = (
    "Streaming average-speed (section control) enforcement: reads camera detections from "
    "Pub/Sub, measures each vehicle's average speed over the section in event-time "
    "sessions and publishes every traversal, fined or not, as JSON to the output topic; "
    "bad input goes to the dead-letter topic."
)


def parameter(spec: OptionSpec) -> dict[str, Any]:
    """One metadata parameter; its regex checks the value when one is given."""
    entry: dict[str, Any] = {
        "name": spec.name,
        "label": spec.label,
        "helpText": spec.help,
        "isOptional": spec.is_optional,
    }
    if spec.regex:
        entry["regexes"] = [spec.regex]
    if spec.default is not None:
        entry["defaultValue"] = str(spec.default)
    return entry


def metadata() -> dict[str, Any]:
    return {
        "name": NAME,
        "description": DESCRIPTION,
        "streaming": True,
        "parameters": [parameter(spec) for spec in OPTION_SPECS],
    }


def render() -> str:
    return json.dumps(metadata(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else METADATA
    target.write_text(render())
    print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
