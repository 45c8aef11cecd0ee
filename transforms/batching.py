"""Batches for services that take many items per call (Cloud Vision, BigQuery insertAll)."""

from collections.abc import Callable
from typing import Any

import apache_beam as beam


class BatchForService(beam.PTransform):
    """Elements -> lists of at most `size`, for one service call each.

    Streaming (`wait_s` set): Beam's GroupIntoBatches on sharded keys collects across
    bundles for at most `wait_s` seconds; after the keyed steps Dataflow's bundles are
    small, so batching within a bundle would send one item per call. Bounded input
    (`wait_s=None`): BatchElements fills batches within the large bundles of a batch job.
    """

    def __init__(
        self, key: Callable[[Any], str], element_type: type, size: int, wait_s: float | None
    ) -> None:
        super().__init__()
        self.key = key
        self.element_type = element_type
        self.size = size
        self.wait_s = wait_s

    def expand(self, elements: beam.PCollection) -> beam.PCollection:
        if self.wait_s is None:
            return elements | "BatchInBundles" >> beam.BatchElements(
                min_batch_size=1, max_batch_size=self.size
            )
        key = self.key
        return (
            elements
            # Typed, so that the state GroupIntoBatches keeps per key gets deterministic
            # coders: a str key, and the element's own registered coder.
            | "Key"
            >> beam.Map(lambda e: (key(e), e)).with_output_types(tuple[str, self.element_type])
            | "GroupIntoBatches"
            >> beam.GroupIntoBatches.WithShardedKey(
                self.size, max_buffering_duration_secs=self.wait_s
            )
            | "DropKeys" >> beam.Values()
        )
