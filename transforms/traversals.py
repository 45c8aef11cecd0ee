"""Detections -> traversals: sessions per vehicle, judged, then given one identity.

    streaming: events by vehicle -> Sessions -> GroupDetections -> JudgeTraversal
                                 -> IdentifyTraversals -> fined / not_fined / withdrawn fines
               (each firing's size -> CountJudgedDetections, for what open sessions hold)
    bounded:   events by vehicle -> GroupDetections -> SplitSessions -> JudgeTraversal
                                 -> SplitVerdicts -> fined / not_fined

Over bounded input nothing is late, so sessions are split in one pass over each vehicle's
detections (section_speed.domain.sessions, the same rule as Beam's Sessions window) instead of
by the runner's merging windows, which cost far more per element.

A session that is no measurement, implausible or partial becomes a Failure with every
detection (stage = the rejection's kind) and is counted: it is never fined nor fetched.
"""

import logging
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.coders import StrUtf8Coder
from apache_beam.metrics import Metrics
from apache_beam.transforms import trigger, window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration, Timestamp

from section_speed.domain import defaults
from section_speed.domain.events import CameraEvent, VehicleKey
from section_speed.domain.identity import (
    RejectedSession,
    SessionVerdict,
    dumps_publications,
    identify,
    loads_publications,
    unseen_publication,
    withdraw,
)
from section_speed.domain.judging import judge_traversal
from section_speed.domain.lag import LagMonitor
from section_speed.domain.rules import RulesSnapshot, SectionCatalog, newest_rules
from section_speed.domain.sessions import split_sessions
from section_speed.domain.single_detection import SingleDetectionMonitor
from section_speed.domain.traversal import IMPLAUSIBLE, PARTIAL, UNMEASURABLE, Rejection
from transforms.accounting import CountJudgedDetectionsFn
from transforms.failures import FAILURES, STAGES_BY_NAME, Failure, failed
from transforms.limit_signals import ApplyLimitSignals
from transforms.rules_updates import AsRulesInForce
from transforms.worker_clients import ClientHandler

FINED = "fined"
NOT_FINED = "not_fined"
WITHDRAWN_FINES = "withdrawn_fines"  # published fines taken back (also in not_fined)
PANE_SIZES = "pane_sizes"  # (key, (session start, end, detections)) of each firing

_log = logging.getLogger(__name__)

# Event time the identity state outlives the last pane that can still come, for the late
# pane's trigger delay (LATE_FIRING_DELAY_SECONDS of processing time) and its way through a
# shuffle to IdentifyTraversals, even where the watermark runs ahead of the clock.
LATE_PANE_MARGIN_SECONDS = 60


def identity_keep_seconds(gap_seconds: int, allowed_lateness_seconds: int) -> int:
    """How long after a vehicle's last published exit its identity state is kept.

    A detection up to one gap after that exit still joins the session, and is taken until
    its own time + gap + allowed lateness; its late pane fires a few seconds of processing
    time later (docs/architecture.md, One traversal, one identity).
    """
    return 2 * gap_seconds + allowed_lateness_seconds + LATE_PANE_MARGIN_SECONDS


class WindowIntoTraversals(beam.PTransform):
    """Event-time sessions per vehicle.

    Where late data can arrive (streaming), a late pane fires LATE_FIRING_DELAY_SECONDS
    after the first late detection, with those that came meanwhile: a burst of late
    detections (a camera flushing its buffer; a backlog on the local runner, whose
    watermark is the clock) is measured once, not once per bundle read. Accumulating
    panes make every firing carry every detection of the session: a complete, corrected
    measurement, not a fragment.
    Over bounded input nothing is late, so the default trigger fires each session once.
    """

    def __init__(self, gap_seconds: int, allowed_lateness_seconds: int | None) -> None:
        super().__init__()
        self.gap_seconds = gap_seconds
        self.allowed_lateness_seconds = allowed_lateness_seconds

    def expand(self, keyed_events: beam.PCollection) -> beam.PCollection:
        sessions = window.Sessions(self.gap_seconds)
        if self.allowed_lateness_seconds is None:
            return keyed_events | "Sessions" >> beam.WindowInto(sessions)
        return keyed_events | "Sessions" >> beam.WindowInto(
            sessions,
            trigger=trigger.AfterWatermark(
                late=trigger.AfterProcessingTime(defaults.LATE_FIRING_DELAY_SECONDS)
            ),
            accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
            allowed_lateness=Duration(seconds=self.allowed_lateness_seconds),
        )


class JudgeTraversalFn(beam.DoFn):
    """A session's detections -> its Traversal (still keyed), or a Failure naming why not.

    The rules are the newest snapshot of the sections file for the session's interval
    (side input `snapshots`, transforms/rules_updates.py), else those read at start.
    """

    def __init__(
        self,
        rules: SectionCatalog,
        gap_seconds: int,
        keep_rule: bool = False,
        min_spot_readings: int = defaults.MIN_SPOT_READINGS,
        count_panes: bool = False,
    ) -> None:
        self.rules = rules
        self.gap_seconds = gap_seconds
        self.keep_rule = keep_rule  # for the signals step, which judges the limit again
        self.min_spot_readings = min_spot_readings
        self.count_panes = count_panes  # streaming: for what open sessions still hold
        self.traversals = Metrics.counter(self.__class__, "traversals")
        self.fines = Metrics.counter(self.__class__, "fines")
        self.rejected = {
            kind: Metrics.counter(self.__class__, f"{kind}_sessions")
            for kind in (UNMEASURABLE, IMPLAUSIBLE, PARTIAL)
        }

    def setup(self) -> None:
        self.monitor = SingleDetectionMonitor(gap_seconds=self.gap_seconds)

    def process(
        self,
        element: tuple[VehicleKey, Iterable[CameraEvent]],
        session: Any = beam.DoFn.WindowParam,
        snapshots: Iterable[RulesSnapshot] = (),
    ) -> Iterator[Any]:
        key, events = element
        radar_id, vehicle_id = key
        events = list(events)
        if self.count_panes:
            start_ms, end_ms = session.start.micros // 1000, session.end.micros // 1000
            yield beam.pvalue.TaggedOutput(PANE_SIZES, (key, (start_ms, end_ms, len(events))))
        rules = newest_rules(snapshots, self.rules)
        verdict = judge_traversal(
            events,
            rules.for_radar(radar_id),
            rules.version,
            min_spot_readings=self.min_spot_readings,
        )
        warning = self.monitor.observe(verdict)
        if warning:
            _log.warning(warning)
        if isinstance(verdict, Rejection):
            self.rejected[verdict.kind].inc()
            # A late pane can reject a session whose earlier pane was published: the
            # identity step withdraws what was published.
            yield key, SessionVerdict(rejected=RejectedSession.of(verdict))
            yield failed(
                Failure.of_detections(
                    STAGES_BY_NAME[verdict.kind],
                    verdict.reason,
                    verdict.detections,
                    radar_id=radar_id,
                    vehicle_id=vehicle_id,
                )
            )
            return
        self.traversals.inc()
        if verdict.is_speeding:
            self.fines.inc()
        rule = rules.for_radar(radar_id) if self.keep_rule else None
        yield key, SessionVerdict(traversal=verdict, rule=rule)


class IdentifyTraversalsFn(beam.DoFn):
    """Per vehicle: a correction keeps its traversal's id, a repeat is dropped, and a
    published traversal whose session a late detection made unjudgeable is withdrawn.

    State lives as long as a late pane can still come (`identity_keep_seconds` past the
    last exit), cleared by an event-time timer, which holds no watermark back.
    """

    # "issued" is the id running jobs keep this state under: an update must not change it.
    PUBLICATIONS = ReadModifyWriteStateSpec("issued", StrUtf8Coder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, keep_seconds: int) -> None:
        self.keep_seconds = keep_seconds
        self.corrections = Metrics.counter(self.__class__, "corrections")
        self.merges = Metrics.counter(self.__class__, "merges")
        self.repeats = Metrics.counter(self.__class__, "repeats_dropped")
        self.withdrawals = Metrics.counter(self.__class__, "withdrawals")
        self.not_withdrawable = Metrics.counter(self.__class__, "withdrawals_impossible")

    def process(
        self,
        element: tuple[VehicleKey, SessionVerdict],
        publications_state: Any = beam.DoFn.StateParam(PUBLICATIONS),
        expiry: Any = beam.DoFn.TimerParam(EXPIRY),
    ) -> Iterator[Any]:
        _, judged = element
        publications = loads_publications(publications_state.read())
        if judged.traversal is None:
            assert judged.rejected is not None
            if unseen := unseen_publication(judged.rejected, publications):
                self.not_withdrawable.inc()
                _log.warning(
                    "traversal %s should be withdrawn (%s: %s) but was published before "
                    "published forms were kept: check it by hand",
                    unseen, judged.rejected.kind, judged.rejected.reason,
                )  # fmt: skip
            withdrawal, publications = withdraw(judged.rejected, publications)
            published = withdrawal and withdrawal.traversal
        else:
            published, publications = identify(judged.traversal, publications)
        if publications:
            publications_state.write(dumps_publications(publications))
            last_exit_ms = max(record.exit_time_ms for record in publications)
            expiry.set(Timestamp(micros=(last_exit_ms + self.keep_seconds * 1000) * 1000))
        if published is None:
            # A repeat; or a rejected session with nothing (new) published to take back:
            # its dead letter is all there is.
            if judged.traversal is not None:
                self.repeats.inc()
            return
        if judged.traversal is None:
            self.withdrawals.inc()
            if withdrawal.of_fine:  # the fines table hears of it too
                yield beam.pvalue.TaggedOutput(WITHDRAWN_FINES, published)
        elif published.traversal_id != judged.traversal.traversal_id:
            self.corrections.inc()
        if published.supersedes:
            self.merges.inc()
        yield beam.pvalue.TaggedOutput(FINED if published.is_speeding else NOT_FINED, published)

    @on_timer(EXPIRY)
    def expire(self, publications_state: Any = beam.DoFn.StateParam(PUBLICATIONS)) -> None:
        publications_state.clear()


def sessions_of(
    keyed_events: tuple[VehicleKey, Iterable[CameraEvent]], gap_seconds: int
) -> Iterator[tuple[VehicleKey, list[CameraEvent]]]:
    key, events = keyed_events
    for session in split_sessions(events, gap_seconds):
        yield key, session


def split_verdict(keyed: tuple[VehicleKey, SessionVerdict]) -> Iterator[Any]:  # TaggedOutputs
    traversal = keyed[1].traversal
    # A rejected session (no traversal) is dead-lettered; a bounded run published nothing
    # for it to take back.
    if traversal is not None:
        yield beam.pvalue.TaggedOutput(FINED if traversal.is_speeding else NOT_FINED, traversal)


class MeasuredTraversals(NamedTuple):
    fined: beam.PCollection  # Traversals over the limit
    not_fined: beam.PCollection  # Traversals within the limit, and withdrawals
    withdrawn_fines: beam.PCollection  # withdrawals of published fines (also in not_fined)
    failures: beam.PCollection  # Failures: the rejected sessions, with their detections


class MeasureTraversals(beam.PTransform):
    """CameraEvents keyed by vehicle -> MeasuredTraversals(fined, not_fined, ..., failures).

    `allowed_lateness_seconds=None` declares input without late data (bounded files):
    one firing per session, so no identity state is needed. `rules_updates`: snapshots of
    the sections file (transforms/rules_updates.py); None: `rules` all along.
    `limit_signals`: LimitSignals (streaming only, transforms/limit_signals.py).
    """

    def __init__(
        self,
        rules: SectionCatalog,
        gap_seconds: int,
        allowed_lateness_seconds: int | None,
        rules_updates: beam.PCollection | None = None,
        limit_signals: beam.PCollection | None = None,
        min_spot_readings: int = defaults.MIN_SPOT_READINGS,
        monitor: ClientHandler[LagMonitor] | None = None,
    ) -> None:
        super().__init__()
        if limit_signals is not None and allowed_lateness_seconds is None:
            raise ValueError("limit signals come from a subscription: streaming only")
        self.rules = rules
        self.gap_seconds = gap_seconds
        self.allowed_lateness_seconds = allowed_lateness_seconds
        self.rules_updates = rules_updates
        self.limit_signals = limit_signals
        self.min_spot_readings = min_spot_readings
        self.monitor = monitor  # the process's tally for the stop report (streaming)

    def expand(self, keyed: beam.PCollection) -> Any:
        if self.allowed_lateness_seconds is None:
            sessions = (
                keyed
                | "GroupDetections" >> beam.GroupByKey()
                | "SplitSessions" >> beam.FlatMap(sessions_of, self.gap_seconds)
            )
        else:
            sessions = (
                keyed
                | "WindowIntoTraversals"
                >> WindowIntoTraversals(self.gap_seconds, self.allowed_lateness_seconds)
                | "GroupDetections" >> beam.GroupByKey()
            )
        side_inputs = {}
        if self.rules_updates is not None:
            side_inputs["snapshots"] = AsRulesInForce(self.rules_updates)
        # Typed keys get the deterministic coder that the identity step's state needs.
        streaming = self.allowed_lateness_seconds is not None
        judge = JudgeTraversalFn(
            self.rules,
            self.gap_seconds,
            self.limit_signals is not None,
            self.min_spot_readings,
            count_panes=streaming,
        )
        judged = sessions | "JudgeTraversal" >> beam.ParDo(judge, **side_inputs).with_output_types(
            tuple[VehicleKey, SessionVerdict]
        ).with_outputs(FAILURES, PANE_SIZES, main="verdicts")
        if self.allowed_lateness_seconds is not None:
            _ = (
                judged[PANE_SIZES]
                # Typed: the counting step's state needs the key's deterministic coder.
                | "PanesLeaveSessions"
                >> beam.WindowInto(window.GlobalWindows()).with_output_types(
                    tuple[VehicleKey, tuple[int, int, int]]
                )
                | "CountJudgedDetections"
                >> beam.ParDo(CountJudgedDetectionsFn(self.allowed_lateness_seconds, self.monitor))
            )
        # Verdicts and failures leave their sessions: what follows is per traversal, and
        # outputs of every stage flatten together.
        traversals = judged.verdicts | "LeaveSessions" >> beam.WindowInto(window.GlobalWindows())
        failures = judged[FAILURES] | "FailuresLeaveSessions" >> beam.WindowInto(
            window.GlobalWindows()
        )
        if self.allowed_lateness_seconds is None:
            # Sessions fire once: nothing published is ever withdrawn (the tag stays empty).
            verdicts = traversals | "SplitVerdicts" >> beam.FlatMap(split_verdict).with_outputs(
                FINED, NOT_FINED, WITHDRAWN_FINES
            )
        else:
            keep_seconds = identity_keep_seconds(self.gap_seconds, self.allowed_lateness_seconds)
            if self.limit_signals is not None:
                traversals = (traversals, self.limit_signals) | "ApplyLimitSignals" >> (
                    ApplyLimitSignals(keep_seconds)
                )
            verdicts = traversals | "IdentifyTraversals" >> beam.ParDo(
                IdentifyTraversalsFn(keep_seconds)
            ).with_outputs(FINED, NOT_FINED, WITHDRAWN_FINES)
        return MeasuredTraversals(
            verdicts[FINED], verdicts[NOT_FINED], verdicts[WITHDRAWN_FINES], failures
        )
