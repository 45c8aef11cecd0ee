"""Start bqemulator 1.4.0 without DuckDB's spatial extension, so it runs offline.

bqemulator installs and loads DuckDB's `spatial` extension at start, downloading it
from the internet, and has no option to skip it. This launcher replaces that one
method with a no-op (GEOGRAPHY and ST_* functions are then unavailable; this project
uses none) and turns off the optional format extensions, then runs bqemulator's own
CLI with the arguments given, e.g.:

    .venv-bqemulator/bin/python scripts/bqemulator_offline.py start --rest-port 9050 ...
"""

import os
import sys

os.environ.setdefault("BQEMU_ENABLE_FORMAT_EXTENSIONS", "false")

from bqemulator.cli import main
from bqemulator.storage import engine


def _skip_spatial(_engine: object) -> None:
    """No spatial extension: its download fails offline."""


engine.DuckDBEngine._load_spatial = _skip_spatial

if __name__ == "__main__":
    sys.exit(main())
