"""Flex Template entry point (FLEX_TEMPLATE_PYTHON_PY_FILE): the same as `python -m pipeline`.

The launcher runs `python main.py --name=value ...`: each template parameter as a flag,
plus the job's own Beam options (--runner, --project, --region, --temp_location, ...), so
the entry point has to be a file, not `-m pipeline`. The pipeline itself is the installed
`section-speed` package; this file is not part of it (setup.py ships packages only) and
the workers never need it.
"""

import logging

from pipeline.graph import run

if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run()
