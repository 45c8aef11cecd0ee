"""SectionSpeedEnforcement: the whole enforcement logic, without I/O.

    messages (PubsubMessage: bytes + attributes, stamped with their publish time)
      -> ParseEvents -> MeasureTraversals (side input: the sections file's snapshots)
      -> EnforcementResult(fined, not_fined, withdrawn_fines, failures)
    signal messages (optional) -> ParseLimitSignals -> MeasureTraversals

The graph attaches sources (Pub/Sub, or files for a bounded run; the sections file's
snapshots, transforms/rules_updates.py) and sinks (evidence, topics, warehouse) around it;
the tests run it whole on TestStream, with the snapshots from Create.
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
from transforms.failures import FAILURES
from transforms.limit_signals import ParseLimitSignals
from transforms.parse import ParseEvents
from transforms.traversals import MeasureTraversals
from transforms.worker_clients import ClientHandler


@dataclass(frozen=True)
class EnforcementConfig:
    """The rules and the time model. `lateness=None`: bounded input, nothing is late.

    `rules`: as read at start; judged under until a snapshot of the file says otherwise."""

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
    """PubsubMessage -> EnforcementResult(fined, not_fined, withdrawn_fines, failures).

    `rules_updates`: RulesSnapshots of the sections file, in fixed windows (streaming) or
    the global window; None: `config.rules` all along. `limit_signals`: PubsubMessages of
    signalled limits (streaming only); None: no signals.
    """

    def __init__(
        self,
        config: EnforcementConfig,
        rules_updates: beam.PCollection | None = None,
        limit_signals: beam.PCollection | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.rules_updates = rules_updates
        self.limit_signals = limit_signals

    def expand(self, messages: beam.PCollection) -> Any:
        config = self.config
        lateness_s = config.lateness.allowed_lateness_seconds if config.lateness else None
        parsed = messages | "ParseEvents" >> ParseEvents(
            config.default_radar_id, config.lateness, config.clock, config.monitor
        )
        failures = [parsed.failures]
        signals = None
        if self.limit_signals is not None:
            parsed_signals = self.limit_signals | "ParseLimitSignals" >> ParseLimitSignals()
            signals = parsed_signals.signals
            failures.append(parsed_signals[FAILURES])
        measured = parsed.events | "MeasureTraversals" >> MeasureTraversals(
            config.rules,
            config.gap_seconds,
            lateness_s,
            self.rules_updates,
            signals,
            config.min_spot_readings,
            config.monitor,
        )
        failures = (*failures, measured.failures) | "AllFailures" >> beam.Flatten()
        return EnforcementResult(
            measured.fined, measured.not_fined, measured.withdrawn_fines, failures
        )
