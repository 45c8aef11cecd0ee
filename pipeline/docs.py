"""`python -m pipeline.docs`: regenerate the docs' tables from the code's definitions.

In docs/reference.md, the options table comes from `pipeline.options.OPTION_SPECS`, a schema
table for each of `section_speed.domain.schemas.TABLES` and the dead-letter stages from
`transforms.failures.DEAD_LETTER_STAGES`; in docs/architecture.md, the sinks table from
`pipeline.graph`'s sink tables. So the pages cannot drift from the code (a test checks it).
"""

import re
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.graph import DEAD_LETTER_SINKS, TRAVERSAL_SINKS
from pipeline.options import OPTION_SPECS
from section_speed.domain.schemas import REPLAYS, TABLES, VIEWS, Table, markdown_table
from transforms.failures import stages_table

DOCS = Path(__file__).resolve().parent.parent / "docs"
REFERENCE = DOCS / "reference.md"
ARCHITECTURE = DOCS / "architecture.md"


def options_table() -> str:
    rows = [
        f"| `--{spec.name}` | {'' if spec.default is None else f'`{spec.default}`'} | {spec.help} |"
        for spec in OPTION_SPECS
    ]
    return "\n".join(["| option | default | meaning |", "| --- | --- | --- |", *rows])


def sinks_table() -> str:
    rows = [
        f"| `{sink.label}` | {kind} | {sink.writes} | {sink.only_with} |"
        for kind, sinks in (("traversals", TRAVERSAL_SINKS), ("dead letters", DEAD_LETTER_SINKS))
        for sink in sinks
    ]
    header = "| sink | of | what it writes | only with |"
    return "\n".join([header, "| --- | --- | --- | --- |", *rows])


def views_table() -> str:
    """The views provision creates beside the tables (docs/warehouse.md, Views)."""
    rows = [f"| `{v.name}` | {', '.join(f'`{r}`' for r in v.reads)} | {v.description} |"
            for v in VIEWS]  # fmt: skip
    return "\n".join(["| view | reads | holds |", "| --- | --- | --- |", *rows])


def _schema(table: Table) -> Callable[[], str]:
    return lambda: markdown_table(table.columns)


# Each page's generated blocks: <!-- NAME:start --> ... <!-- NAME:end -->.
PAGES: dict[Path, dict[str, Callable[[], str]]] = {
    REFERENCE: {
        "options": options_table,
        **{f"{table.name.replace('_', '-')}-schema": _schema(table) for table in TABLES},
        "replays-schema": _schema(REPLAYS),
        "views": views_table,
        "dead-letter-stages": stages_table,
    },
    ARCHITECTURE: {"sinks": sinks_table},
}


def render(page: Path, text: str) -> str:
    """`text` (of `page`) with each of the page's generated blocks regenerated."""
    for name, generate in PAGES[page].items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.DOTALL)
        if not pattern.search(text):
            raise ValueError(f"{page.name} has no <!-- {name}:start/end --> block")
        text = pattern.sub(rf"\g<1>{_escape(generate())}\n\g<2>", text)
    return text


def _escape(replacement: str) -> str:
    return replacement.replace("\\", "\\\\")


def main() -> int:
    for page in PAGES:
        page.write_text(render(page, page.read_text()))
        print(f"updated {page}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
