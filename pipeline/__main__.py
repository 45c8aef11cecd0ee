"""`python -m pipeline [options]`: run the section-speed pipeline (see pipeline.graph)."""

import logging

from pipeline.graph import run

if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run()
