"""SectionSpeedEnforcement: the whole enforcement logic, without I/O.

    messages (PubsubMessage: bytes + attributes, stamped with their publish time)
      -> ParseEvents -> MeasureTraversals
      -> EnforcementResult(fined, not_fined, withdrawn_fines, failures)

The graph attaches sources (Pub/Sub, or files for a bounded run) and sinks (evidence,
topics, warehouse) around it; the tests run it whole on TestStream.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import apache_beam as beam

from section_speed.domain import defaults
from section_speed.domain.lag import LagMonitor
from section_speed.domain.lateness import LatenessRule
from section_speed.domain.rules import SectionCatalog
from transforms.parse import ParseEvents
from transforms.traversals import MeasureTraversals
from transforms.worker_clients import ClientHandler


@dataclass(frozen=True)
class EnforcementConfig:
    """The rules and the time model. `lateness=None`: bounded input, nothing is late."""

    default_radar_id: str
    rules: SectionCatalog
    gap_seconds: int
    lateness: LatenessRule | None
    clock: Callable[[], float] = field(default=time.time, compare=False)
    # Timeless sessions with fewer distinct spot readings are partial (docs/course.md).
    min_spot_readings: int = defaults.MIN_SPOT_READINGS
    # The process's read lag monitor and tally (streaming), for the stop report.
    monitor: ClientHandler[LagMonitor] | None = field(default=None, compare=False)


class EnforcementResult(NamedTuple):
    """What enforcement yields, in the style of Beam's WriteResult: callers wire each."""

    fined: beam.PCollection  # Traversals over the limit: evidence and publication next
    not_fined: beam.PCollection  # Traversals within the limit, and withdrawals
    # Withdrawals of published fines (also in not_fined), for the fines table.
    withdrawn_fines: beam.PCollection
    failures: beam.PCollection  # Failures of every stage, for the dead letter


class SectionSpeedEnforcement(beam.PTransform):
    """PubsubMessage -> EnforcementResult(fined, not_fined, withdrawn_fines, failures)."""

    def __init__(self, config: EnforcementConfig) -> None:
        super().__init__()
        self.config = config

    def expand(self, messages: beam.PCollection) -> Any:
        config = self.config
        lateness_s = config.lateness.allowed_lateness_seconds if config.lateness else None
        parsed = messages | "ParseEvents" >> ParseEvents(
            config.default_radar_id, config.lateness, config.clock, config.monitor
        )
        measured = parsed.events | "MeasureTraversals" >> MeasureTraversals(
            config.rules, config.gap_seconds, lateness_s, config.min_spot_readings, config.monitor
        )
        failures = (parsed.failures, measured.failures) | "AllFailures" >> beam.Flatten()
        return EnforcementResult(
            measured.fined, measured.not_fined, measured.withdrawn_fines, failures
        )
