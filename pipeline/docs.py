"""`python -m pipeline.docs`: regenerate docs/reference.md's tables from the code's definitions.

The options table comes from `pipeline.options.OPTION_SPECS` and the schema tables
from `domain.schemas`, so the reference cannot drift from the code (a test checks it).
"""

import re
import sys
from pathlib import Path

from pipeline.options import OPTION_SPECS
from section_speed.domain.schemas import (
    DEAD_LETTER_COLUMNS,
    FINE_COLUMNS,
    VEHICLE_IDENTITY_COLUMNS,
    VEHICLE_SPEED_COLUMNS,
    markdown_table,
)

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference.md"


def options_table() -> str:
    rows = [
        f"| `--{spec.name}` | {'' if spec.default is None else f'`{spec.default}`'} | {spec.help} |"
        for spec in OPTION_SPECS
    ]
    return "\n".join(["| option | default | meaning |", "| --- | --- | --- |", *rows])


SECTIONS = {
    "options": options_table,
    "fines-schema": lambda: markdown_table(FINE_COLUMNS),
    "vehicle-speeds-schema": lambda: markdown_table(VEHICLE_SPEED_COLUMNS),
    "vehicle-identities-schema": lambda: markdown_table(VEHICLE_IDENTITY_COLUMNS),
    "dead-letter-schema": lambda: markdown_table(DEAD_LETTER_COLUMNS),
}


def render(text: str) -> str:
    """`text` with every <!-- NAME:start --> ... <!-- NAME:end --> block regenerated."""
    for name, generate in SECTIONS.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.DOTALL)
        if not pattern.search(text):
            raise ValueError(f"{REFERENCE.name} has no <!-- {name}:start/end --> block")
        text = pattern.sub(rf"\g<1>{_escape(generate())}\n\g<2>", text)
    return text


def _escape(replacement: str) -> str:
    return replacement.replace("\\", "\\\\")


def main() -> int:
    REFERENCE.write_text(render(REFERENCE.read_text()))
    print(f"updated {REFERENCE}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
