"""Signalled limits, applied by event time (docs/enforcement.md, Signalled limits).

    signal messages -> ParseLimitSignals -> LimitSignals stamped with their in_force_from
    verdicts (per vehicle) + signals -> ApplyLimitSignals (per section) -> verdicts

A signal governs its section from `in_force_from` until the next signal, whenever it
arrives. `ApplyLimitSignals` holds each verdict until the watermark (of detections and
signals alike) passes the traversal's exit, so that the signals in force during it, sent
on time, are there; a signal that arrives later judges again the traversals it governs
that are still within gap + allowed lateness of their exit, and those whose limit changes
go out again: the identity step makes them a correction (same id, next revision), as it
does for a late detection. Verdicts of one vehicle leave in the order they came.

State is JSON (update-safe, as the identity step's): the section's signals, the verdicts
waiting for the watermark, and those released and still correctable.
"""

import json
import logging
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import apache_beam as beam
from apache_beam.coders import StrUtf8Coder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from section_speed.domain.events import VehicleKey
from section_speed.domain.identity import RejectedSession, SessionVerdict
from section_speed.domain.judging import with_signals
from section_speed.domain.limits import LimitSignal
from section_speed.domain.rules import rule_from_json
from section_speed.domain.traversal import traversal_from_json, traversal_to_json
from transforms.failures import FAILURES, LIMIT_SIGNAL_STAGE, Failure, failed

_log = logging.getLogger(__name__)
_VERDICT, _SIGNAL = "verdict", "signal"


class ParseLimitSignalFn(beam.DoFn):
    """A message -> a LimitSignal stamped with its in_force_from, or a Failure."""

    def __init__(self) -> None:
        self.signals = Metrics.counter(self.__class__, "limit_signals")
        self.invalid = Metrics.counter(self.__class__, "limit_signals_invalid")

    def process(self, message: Any) -> Iterator[Any]:
        data = message.data or b""
        try:
            signal = LimitSignal.parse(data)
        except ValueError as error:
            self.invalid.inc()
            yield failed(Failure(LIMIT_SIGNAL_STAGE.name, str(error), data,
                                 dict(message.attributes or {})))  # fmt: skip
            return
        self.signals.inc()
        yield TimestampedValue(signal, Timestamp(micros=signal.in_force_from_ms * 1000))


class ParseLimitSignals(beam.PTransform):
    """PubsubMessage -> LimitSignals (main) and Failures (FAILURES)."""

    def expand(self, messages: beam.PCollection) -> Any:
        return messages | "ParseLimitSignal" >> beam.ParDo(ParseLimitSignalFn()).with_outputs(
            FAILURES, main="signals"
        )


def _verdict_json(key: VehicleKey, verdict: SessionVerdict, seq: int) -> dict[str, Any]:
    traversal, rejected = verdict.traversal, verdict.rejected
    times = traversal if traversal is not None else rejected
    assert times is not None
    return {
        "key": list(key),
        "seq": seq,
        "exit_ms": times.exit_time_ms,
        "entry_ms": times.entry_time_ms,
        "traversal": traversal_to_json(traversal) if traversal is not None else None,
        "rejected": asdict(rejected) if rejected is not None else None,
        "rule": verdict.rule.to_json() if verdict.rule is not None else None,
    }


def _verdict_of(item: dict[str, Any]) -> tuple[VehicleKey, SessionVerdict]:
    key = (item["key"][0], item["key"][1])
    if item["traversal"] is None:
        return key, SessionVerdict(rejected=RejectedSession(**item["rejected"]))
    return key, SessionVerdict(traversal=traversal_from_json(item["traversal"]))


def _judged_again(item: dict[str, Any], signals: list[LimitSignal]) -> dict[str, Any]:
    """The item with its traversal judged under `signals` (unchanged without a rule or ends)."""
    if item["traversal"] is None or item["rule"] is None:
        return item
    rule = rule_from_json(item["rule"])
    if not rule.ends_known:  # docs/enforcement.md: signals need the section's ends
        return item
    traversal = traversal_from_json(item["traversal"])
    again = with_signals(traversal, rule, signals)
    if again is traversal:
        return item
    return {**item, "traversal": traversal_to_json(again)}


class ApplyLimitSignalsFn(beam.DoFn):
    """Per section: verdicts wait for the watermark to pass their exit, then leave judged
    with the signals in force; a late signal judges again what it governs."""

    SIGNALS = ReadModifyWriteStateSpec("signals", StrUtf8Coder())
    PENDING = BagStateSpec("pending", StrUtf8Coder())
    RELEASED = ReadModifyWriteStateSpec("released", StrUtf8Coder())
    SEQ = ReadModifyWriteStateSpec("seq", VarIntCoder())
    WAKE_AT = ReadModifyWriteStateSpec("wake_at", VarIntCoder())
    WAKE = TimerSpec("wake", TimeDomain.WATERMARK)

    def __init__(self, keep_seconds: int) -> None:
        self.keep_ms = keep_seconds * 1000
        self.late_signals = Metrics.counter(self.__class__, "late_signal_corrections")
        self.duplicates = Metrics.counter(self.__class__, "limit_signals_repeated")

    def process(
        self,
        element: tuple[str, tuple[str, str]],
        signals_state: Any = beam.DoFn.StateParam(SIGNALS),
        pending: Any = beam.DoFn.StateParam(PENDING),
        released_state: Any = beam.DoFn.StateParam(RELEASED),
        seq_state: Any = beam.DoFn.StateParam(SEQ),
        wake_at: Any = beam.DoFn.StateParam(WAKE_AT),
        wake: Any = beam.DoFn.TimerParam(WAKE),
    ) -> Iterator[tuple[VehicleKey, SessionVerdict]]:
        _, (kind, text) = element
        if kind == _VERDICT:
            seq = (seq_state.read() or 0) + 1
            seq_state.write(seq)
            item = {**json.loads(text), "seq": seq}
            pending.add(json.dumps(item))
            self._wake_by(item["exit_ms"] + 1, wake_at, wake)
            return
        signal = LimitSignal.from_json(json.loads(text))
        signals = _signals(signals_state)
        if any(known.signal_id == signal.signal_id for known in signals):
            self.duplicates.inc()  # Pub/Sub delivers at least once
            return
        signals.append(signal)
        signals_state.write(json.dumps([s.to_json() for s in signals]))
        released = json.loads(released_state.read() or "[]")
        for index, item in enumerate(released):
            if item["exit_ms"] < signal.in_force_from_ms:
                continue
            again = _judged_again(item, signals)
            if again is not item:
                self.late_signals.inc()
                released[index] = again
                yield _verdict_of(again)
        released_state.write(json.dumps(released))

    @on_timer(WAKE)
    def release(
        self,
        fired: Timestamp = beam.DoFn.TimestampParam,
        signals_state: Any = beam.DoFn.StateParam(SIGNALS),
        pending: Any = beam.DoFn.StateParam(PENDING),
        released_state: Any = beam.DoFn.StateParam(RELEASED),
        wake_at: Any = beam.DoFn.StateParam(WAKE_AT),
        wake: Any = beam.DoFn.TimerParam(WAKE),
    ) -> Iterator[tuple[VehicleKey, SessionVerdict]]:
        watermark_ms = fired.micros // 1000  # the watermark has passed this
        waiting = [json.loads(text) for text in pending.read()]
        due = sorted((i for i in waiting if i["exit_ms"] < watermark_ms), key=_order)
        still = [i for i in waiting if i["exit_ms"] >= watermark_ms]
        pending.clear()
        for item in still:
            pending.add(json.dumps(item))
        signals = _signals(signals_state)
        released = [
            item
            for item in json.loads(released_state.read() or "[]")
            if item["exit_ms"] + self.keep_ms >= watermark_ms
        ]
        for item in due:
            item = _judged_again(item, signals)
            yield _verdict_of(item)
            if item["traversal"] is not None:
                released.append(item)
        released_state.write(json.dumps(released))
        # Signals older than every traversal still held are needed only as the one in force.
        oldest = min((i["entry_ms"] for i in [*still, *released]), default=watermark_ms)
        kept = [s for s in signals if s.in_force_from_ms > oldest]
        before = [s for s in signals if s.in_force_from_ms <= oldest]
        if before:
            kept.insert(0, max(before, key=lambda s: (s.in_force_from_ms, s.signal_id)))
        signals_state.write(json.dumps([s.to_json() for s in kept]))
        wake_at.clear()
        times = [i["exit_ms"] + 1 for i in still] + [i["exit_ms"] + self.keep_ms + 1
                                                     for i in released]  # fmt: skip
        if times:
            self._wake_by(min(times), wake_at, wake)

    @staticmethod
    def _wake_by(at_ms: int, wake_at: Any, wake: Any) -> None:
        current = wake_at.read()
        if current is None or at_ms < current:
            wake_at.write(at_ms)
            wake.set(Timestamp(micros=at_ms * 1000))


def _order(item: dict[str, Any]) -> tuple[int, int]:
    return item["exit_ms"], item["seq"]


def _signals(state: Any) -> list[LimitSignal]:
    return [LimitSignal.from_json(value) for value in json.loads(state.read() or "[]")]


def _keyed_verdict(element: tuple[VehicleKey, SessionVerdict]) -> tuple[str, tuple[str, str]]:
    key, verdict = element
    return key[0], (_VERDICT, json.dumps(_verdict_json(key, verdict, 0)))


def _keyed_signal(signal: LimitSignal) -> tuple[str, tuple[str, str]]:
    return signal.radar_id, (_SIGNAL, json.dumps(signal.to_json()))


class ApplyLimitSignals(beam.PTransform):
    """(verdicts, signals) -> verdicts judged with the signals in force (module docstring).

    `keep_seconds`: how long after its exit a released traversal can still be corrected
    (gap + allowed lateness, as the identity step keeps its publications).
    """

    def __init__(self, keep_seconds: int) -> None:
        super().__init__()
        self.keep_seconds = keep_seconds

    def expand(self, inputs: Any) -> beam.PCollection:  # (verdicts, signals)
        verdicts, signals = inputs
        by_section = (
            verdicts | "VerdictsBySection" >> beam.Map(_keyed_verdict),
            signals | "SignalsBySection" >> beam.Map(_keyed_signal),
        ) | "VerdictsAndSignals" >> beam.Flatten().with_output_types(tuple[str, tuple[str, str]])
        # Typed keys: the identity step's state needs their deterministic coder.
        return by_section | "ApplySignals" >> beam.ParDo(
            ApplyLimitSignalsFn(self.keep_seconds)
        ).with_output_types(tuple[VehicleKey, SessionVerdict])
