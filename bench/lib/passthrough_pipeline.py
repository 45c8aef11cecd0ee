"""Beam's own ceiling: ReadFromPubSub -> WriteToPubSub, nothing in between.

    .venv/bin/python bench/lib/passthrough_pipeline.py --runner BundleBasedDirectRunner \\
        --streaming --subscription projects/P/subscriptions/S --topic projects/P/topics/T

Reads as the project's pipeline does (`pipeline.graph`: attributes on, no
timestamp_attribute) on the same runner and process model, so the gap between the two is
the cost of the project's own steps. Logs the same ready line as `pipeline.graph.start`.
"""

import argparse
import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from local_stack.run import READY_LINE

_log = logging.getLogger(__name__)


def run(argv: list[str] | None = None) -> None:
    """Run until killed: the benchmark stops this process, as LocalPipeline does the real one."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscription", required=True, help="projects/P/subscriptions/S")
    parser.add_argument("--topic", required=True, help="projects/P/topics/T")
    known, beam_args = parser.parse_known_args(argv)
    options = PipelineOptions(beam_args)
    options.view_as(StandardOptions).streaming = True
    pipeline = beam.Pipeline(options=options)
    (
        pipeline
        | "Read" >> beam.io.ReadFromPubSub(subscription=known.subscription, with_attributes=True)
        | "Write" >> beam.io.WriteToPubSub(known.topic, with_attributes=True)
    )
    result = pipeline.run()
    _log.info("%s: passing %s through to %s", READY_LINE, known.subscription, known.topic)
    result.wait_until_finish()


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run()
