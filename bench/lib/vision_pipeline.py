"""`python bench/lib/vision_pipeline.py HOST:PORT ARGS...`: `python -m pipeline ARGS...`
whose Cloud Vision reader talks to a local server (tests/fake_vision.py) at HOST:PORT.

The pipeline has no option for a Vision endpoint (on Google Cloud there is one service),
so this benchmark-only entry point gives the reader's client that endpoint before the
pipeline starts, and has the start-up checks take Vision as emulated (they want Google
credentials for it otherwise); the BundleBasedDirectRunner runs the steps in this process.
"""

import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository first

from pipeline import startup_checks
from pipeline.graph import run
from section_speed.clients import cloud_vision

if __name__ == "__main__":
    endpoint, argv = sys.argv[1], sys.argv[2:]
    new_client = cloud_vision._new_client
    cloud_vision._new_client = lambda _endpoint=None: new_client(endpoint)
    os.environ["BENCH_VISION_ENDPOINT"] = endpoint
    startup_checks.EMULATOR_VARIABLES[startup_checks.VISION] = "BENCH_VISION_ENDPOINT"
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run(argv)
