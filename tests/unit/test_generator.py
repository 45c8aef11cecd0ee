"""Unit tests of the traffic generator: simulation, files, pacing and the command line."""

import dataclasses
import itertools
import json
import logging
import math
import re
from collections import defaultdict

import pytest

from generator import cli
from generator.arguments import parse_coordinates
from generator.course_traffic import CourseTrafficConfig, simulate_course_traffic
from generator.event_files import read_events_jsonl, rebase, write_events_jsonl
from generator.publish import PublishError, publish_events
from generator.simulate import (
    TrafficConfig,
    default_points,
    longest_camera_intervals,
    section_rule,
    simulate_traffic,
)
from section_speed.domain import defaults
from section_speed.domain.events import CameraEvent, parse_camera_event, parse_rfc3339_ms
from section_speed.domain.geometry import haversine_m
from section_speed.domain.judging import judge_traversal
from section_speed.domain.rules import SectionCatalog, SectionRule
from section_speed.domain.traversal import SECTION_AVERAGE, SPOT_MEAN, Traversal

START_MS = parse_rfc3339_ms("2026-11-22T12:00:00.000Z")


def make_config(**overrides) -> TrafficConfig:
    values = {
        "initial": defaults.INITIAL_COORDINATES,
        "final": defaults.FINAL_COORDINATES,
        "radar_id": "radar-7",
        "vehicles": 40,
        "rate": 20.0,
        "speeding_fraction": 0.3,
        "points": 5,
        "seed": 42,
    }
    values.update(overrides)
    return TrafficConfig(**values)


def by_vehicle(events: list[CameraEvent]) -> dict[str, list[CameraEvent]]:
    groups = defaultdict(list)
    for event in events:
        groups[event.vehicle_id].append(event)
    return groups


# --- simulation ---------------------------------------------------------------------------


def test_same_seed_and_start_give_identical_output():
    first = simulate_traffic(make_config(seed=7), START_MS)
    second = simulate_traffic(make_config(seed=7), START_MS)
    assert first == second
    assert len(first[0]) == 40 * 5


def test_different_seed_gives_different_traffic():
    events_a, truth_a = simulate_traffic(make_config(seed=1), START_MS)
    events_b, truth_b = simulate_traffic(make_config(seed=2), START_MS)
    assert {e.event_id for e in events_a}.isdisjoint({e.event_id for e in events_b})
    assert [t.vehicle_id for t in truth_a] != [t.vehicle_id for t in truth_b]
    assert [t.avg_speed_kmh for t in truth_a] != [t.avg_speed_kmh for t in truth_b]


def test_same_seed_other_start_shifts_times_only():
    events_a, truth_a = simulate_traffic(make_config(), START_MS)
    events_b, truth_b = simulate_traffic(make_config(), START_MS + 3_600_000)
    assert [e.event_id for e in events_a] == [e.event_id for e in events_b]
    assert [b.event_time_ms - a.event_time_ms for a, b in zip(events_a, events_b, strict=True)] == [
        3_600_000
    ] * len(events_a)
    assert [t.avg_speed_kmh for t in truth_a] == [t.avg_speed_kmh for t in truth_b]


def test_ids_have_the_documented_shape():
    events, truth = simulate_traffic(make_config(), START_MS)
    for record in truth:
        assert record.vehicle_id.startswith("veh-")
        assert len(record.vehicle_id) == 14
        int(record.vehicle_id[4:], 16)
        assert record.vehicle_id[4:] == record.vehicle_id[4:].lower()
    assert len({e.event_id for e in events}) == len(events)
    assert all(e.event_id[14] == "4" for e in events)  # UUID version 4


@pytest.mark.parametrize("seed", [0, 1, 99])
def test_measured_speed_and_verdict_match_truth(seed):
    config = make_config(seed=seed)
    events, truth = simulate_traffic(config, START_MS)
    groups = by_vehicle(events)
    assert sorted(groups) == [t.vehicle_id for t in truth]
    for record in truth:
        traversal = judge_traversal(groups[record.vehicle_id], config.rule)
        assert isinstance(traversal, Traversal)
        assert traversal.avg_speed_kmh == pytest.approx(record.avg_speed_kmh, abs=0.1)
        assert traversal.is_speeding == record.must_be_fined
        assert record.detections == 5
        assert parse_rfc3339_ms(record.entry_time) == traversal.entry_time_ms
        assert parse_rfc3339_ms(record.exit_time) == traversal.exit_time_ms
    assert sum(t.must_be_fined for t in truth) == round(40 * 0.3)


@pytest.mark.parametrize(("vehicles", "fraction"), [(7, 0.5), (10, 0.0), (10, 1.0), (3, 0.34)])
def test_speeder_count_is_rounded_fraction(vehicles, fraction):
    _, truth = simulate_traffic(make_config(vehicles=vehicles, speeding_fraction=fraction), 0)
    assert sum(t.must_be_fined for t in truth) == round(vehicles * fraction)


def test_speeds_keep_away_from_the_threshold():
    config = make_config(vehicles=200, speed_limit_mph=30, tolerance_mph=2)
    _, truth = simulate_traffic(config, START_MS)
    limit_kmh = 32 * 1.609344
    for record in truth:
        assert abs(record.avg_speed_kmh - limit_kmh) >= 5
        assert record.must_be_fined == (record.avg_speed_kmh > limit_kmh)


def test_spot_speed_is_close_to_vehicle_speed():
    events, truth = simulate_traffic(make_config(), START_MS)
    speeds = {t.vehicle_id: t.avg_speed_kmh for t in truth}
    for event in events:
        assert event.speed_kmh is not None
        assert event.speed_kmh == round(event.speed_kmh, 1)
        assert (
            abs(event.speed_kmh - speeds[event.vehicle_id])
            <= 0.03 * speeds[event.vehicle_id] + 0.05
        )


def test_timestamps_increase_and_path_runs_initial_to_final():
    config = make_config(points=7)
    events, _ = simulate_traffic(config, START_MS)
    assert events == sorted(events, key=lambda e: (e.event_time_ms, e.event_id))
    for detections in by_vehicle(events).values():
        times = [e.event_time_ms for e in detections]
        assert all(a < b for a, b in itertools.pairwise(times))
        assert detections[0].location == config.initial
        assert detections[-1].location == config.final
        assert len(detections) == 7
        assert all(e.radar_id == "radar-7" for e in detections)


def test_vehicles_enter_points_over_rate_apart():
    events, truth = simulate_traffic(make_config(vehicles=5, rate=10.0, points=5), START_MS)
    entries = sorted(parse_rfc3339_ms(t.entry_time) for t in truth)
    assert entries == [START_MS + k * 500 for k in range(5)]
    assert min(e.event_time_ms for e in events) == START_MS


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"vehicles": 0}, "vehicles"),
        ({"points": 1}, "points"),
        ({"rate": 0.0}, "rate"),
        ({"speeding_fraction": 1.5}, "speeding_fraction"),
        ({"initial": (91.0, 0.0)}, "latitude"),
        ({"final": defaults.INITIAL_COORDINATES}, "apart"),
        ({"radar_id": "bad id/with slash"}, "radar_id"),
        ({"speed_limit_mph": 2.0}, "too low"),
        ({"tolerance_mph": -1.0}, "tolerance_mph"),
        ({"points": 100_000}, "fewer points"),
    ],
)
def test_config_rejects_bad_values(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_config(**overrides)


# --- coordinates --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "(40.819390, -73.940744)",
        "40.819390,-73.940744",
        "[40.819390, -73.940744]",
        "  ( 40.819390 ,-73.940744 )  ",
        "+40.819390, -73.940744",
    ],
)
def test_parse_coordinates_accepts_common_forms(text):
    assert parse_coordinates(text) == (40.819390, -73.940744)


def test_parse_coordinates_default_round_trips():
    assert parse_coordinates(str(defaults.INITIAL_COORDINATES)) == defaults.INITIAL_COORDINATES


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('x')",
        "(91, 0)",
        "(0, 181)",
        "(-90.5, 0)",
        "(40.8)",
        "(40.8, -73.9, 3)",
        "(40.8, -73.9]",
        "",
        "nan, 0",
        "(1e999, 0)",
    ],
)
def test_parse_coordinates_rejects_bad_text(text):
    with pytest.raises(ValueError):
        parse_coordinates(text)


# --- files and rebase ---------------------------------------------------------------------


def test_jsonl_round_trip(tmp_path):
    events, _ = simulate_traffic(make_config(vehicles=5), START_MS)
    path = tmp_path / "events.jsonl"
    assert write_events_jsonl(path, events) == 25
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [e.to_json() for e in events]
    assert read_events_jsonl(path) == events


def test_read_reports_line_number(tmp_path):
    events, _ = simulate_traffic(make_config(vehicles=1), START_MS)
    path = tmp_path / "events.jsonl"
    write_events_jsonl(path, events)
    with path.open("a", encoding="utf-8") as out:
        out.write('{"vehicle_id": "v", "location": [1, 2]}\n')
    with pytest.raises(ValueError, match=r"events\.jsonl:6: .*needs its publish_time"):
        read_events_jsonl(path)


def test_rebase_keeps_gaps_and_ids():
    events, _ = simulate_traffic(make_config(vehicles=4), START_MS)
    moved = rebase(events, 1_900_000_000_000)
    assert moved[0].event_time_ms == 1_900_000_000_000
    gaps = [b.event_time_ms - a.event_time_ms for a, b in itertools.pairwise(events)]
    moved_gaps = [b.event_time_ms - a.event_time_ms for a, b in itertools.pairwise(moved)]
    assert moved_gaps == gaps
    assert [e.event_id for e in moved] == [e.event_id for e in events]
    assert [e.location for e in moved] == [e.location for e in events]
    assert rebase([], 5) == []


# --- publishing ---------------------------------------------------------------------------


class FakeFuture:
    def __init__(self, error=None):
        self.error = error
        self.waited = False

    def done(self):
        return True

    def result(self, timeout=None):
        assert timeout is not None  # the generator must never wait forever
        self.waited = True
        if self.error is not None:
            raise self.error
        return "message-id"


class FakePublisher:
    def __init__(self, clock, error=None):
        self.clock = clock
        self.error = error
        self.calls = []
        self.futures = []

    def publish(self, topic, data, **attrs):
        self.calls.append((self.clock.now, topic, data, attrs))
        future = FakeFuture(self.error)
        self.futures.append(future)
        return future


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.reads = 0
        self.sleeps = []

    def __call__(self):
        self.reads += 1
        return self.now

    def sleep(self, seconds):
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


def event_at(time_ms: int, n: int) -> CameraEvent:
    return CameraEvent(f"evt-{n}", "radar-1", f"veh-{n}", (40.8, -73.9), time_ms, 50.0)


TOPIC = "projects/p/topics/camera-events"


def test_publish_in_order_with_attributes_and_paced_waits():
    clock = FakeClock()
    publisher = FakePublisher(clock)
    events = [event_at(START_MS + offset, n) for n, offset in enumerate([0, 1000, 1000, 4000])]
    shuffled = [events[3], events[0], events[1], events[2]]

    count = publish_events(
        shuffled, TOPIC, speedup=2.0, clock=clock, sleep=clock.sleep, publisher=publisher
    )

    assert count == 4
    assert [json.loads(call[2])["event_id"] for call in publisher.calls] == [
        "evt-0",
        "evt-1",
        "evt-2",
        "evt-3",
    ]
    for (_, topic, data, attrs), event in zip(publisher.calls, events, strict=True):
        assert topic == TOPIC
        assert attrs == {"event_id": event.event_id, "ts": str(event.event_time_ms)}
        parsed = parse_camera_event(
            data, attrs, message_id=None, publish_time_ms=0, default_radar_id=""
        )
        assert parsed == event  # event times are not changed by publishing
    # Offsets 0, 1, 1, 4 s at speedup 2 are published at 0, 0.5, 0.5, 2 s.
    assert [call[0] - 100.0 for call in publisher.calls] == [0.0, 0.5, 0.5, 2.0]
    assert clock.sleeps == [0.5, 1.5]
    assert clock.reads == 3  # the start, then only before each wait
    assert all(future.waited for future in publisher.futures)


def test_publish_does_not_consult_clock_for_due_events():
    clock = FakeClock()
    publisher = FakePublisher(clock)
    events = [event_at(START_MS, n) for n in range(500)]
    assert publish_events(events, TOPIC, clock=clock, sleep=clock.sleep, publisher=publisher) == 500
    assert clock.reads == 1  # only the start
    assert clock.sleeps == []


def test_publish_without_realtime_never_sleeps():
    clock = FakeClock()
    publisher = FakePublisher(clock)
    events = [event_at(START_MS + 10_000 * n, n) for n in range(5)]
    count = publish_events(
        events, TOPIC, realtime=False, clock=clock, sleep=clock.sleep, publisher=publisher
    )
    assert count == 5
    assert clock.sleeps == []


def test_publish_failure_names_the_topic():
    from google.api_core.exceptions import NotFound

    clock = FakeClock()
    publisher = FakePublisher(clock, error=NotFound("Topic not found"))
    with pytest.raises(PublishError, match=r"projects/p/topics/camera-events not found.*create"):
        publish_events(
            [event_at(START_MS, 0)], TOPIC, clock=clock, sleep=clock.sleep, publisher=publisher
        )


# --- command line -------------------------------------------------------------------------


def test_cli_output_and_truth_files(tmp_path, capsys):
    output, truth = tmp_path / "events.jsonl", tmp_path / "truth.jsonl"
    argv = ["--seed", "3", "--vehicles", "8", "--points", "4", "--output", str(output)]
    argv += ["--truth", str(truth), "--start_time", "2026-11-22T12:00:00Z", "--radar_id", "r-9"]

    assert cli.main(argv) == 0

    lines = output.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 32
    for line in lines:
        event = parse_camera_event(
            line.encode(), {}, message_id=None, publish_time_ms=0, default_radar_id=""
        )
        assert event.radar_id == "r-9"
    events = read_events_jsonl(output)
    assert min(e.event_time_ms for e in events) == START_MS
    expected, expected_truth = simulate_traffic(
        make_config(seed=3, vehicles=8, points=4, radar_id="r-9", rate=10.0), START_MS
    )
    assert events == expected
    records = [json.loads(line) for line in truth.read_text(encoding="utf-8").splitlines()]
    assert records == [t.to_json() for t in expected_truth]
    assert len(records) == 8
    assert sum(r["must_be_fined"] for r in records) == round(8 * 0.3)
    assert f"wrote 32 events for 8 vehicles (2 speeders) to {output}" in capsys.readouterr().err


def test_cli_replay_rebases_to_now_and_derives_truth(tmp_path, monkeypatch, capsys):
    recorded, expected_truth = simulate_traffic(make_config(vehicles=6, seed=5), START_MS)
    source, truth = tmp_path / "recorded.jsonl", tmp_path / "truth.jsonl"
    write_events_jsonl(source, recorded)
    published = {}

    def fake_publish(events, topic, *, speedup):
        published.update(events=events, topic=topic, speedup=speedup)
        return len(events)

    monkeypatch.setattr(cli, "publish_events", fake_publish)
    monkeypatch.setattr(cli, "_now_ms", lambda: 1_900_000_000_000)
    argv = ["--replay", str(source), "--truth", str(truth), "--speedup", "4"]
    argv += ["--project_id", "proj", "--topic_name", "cams"]

    assert cli.main(argv) == 0

    events = published["events"]
    assert published["topic"] == "projects/proj/topics/cams"
    assert published["speedup"] == 4.0
    assert events == rebase(recorded, 1_900_000_000_000)
    records = [json.loads(line) for line in truth.read_text(encoding="utf-8").splitlines()]
    assert [r["vehicle_id"] for r in records] == [t.vehicle_id for t in expected_truth]
    for record, expected in zip(records, expected_truth, strict=True):
        assert record["avg_speed_kmh"] == pytest.approx(expected.avg_speed_kmh, abs=0.1)
        assert record["must_be_fined"] == expected.must_be_fined
        assert record["detections"] == 5
    summary = capsys.readouterr().err
    assert "published 30 events for 6 vehicles (2 speeders) to projects/proj/topics/cams" in summary


def test_cli_live_publishes_simulation_from_now(monkeypatch, capsys):
    published = {}

    def fake_publish(events, topic, *, speedup):
        published.update(events=events, topic=topic)
        return len(events)

    monkeypatch.setattr(cli, "publish_events", fake_publish)
    monkeypatch.setattr(cli, "_now_ms", lambda: START_MS)
    topic = "projects/other/topics/t1"
    assert cli.main(["--seed", "1", "--vehicles", "3", "--topic_name", topic]) == 0
    assert published["topic"] == topic
    # 11 cameras on the default 1215 m section: the slowest vehicle (24.1 km/h) passes one
    # every 18.1 s, within a third of the default 60 s session gap.
    expected = make_config(seed=1, vehicles=3, rate=10.0, radar_id="radar-1", points=11)
    assert published["events"] == simulate_traffic(expected, START_MS)[0]
    assert "published 33 events for 3 vehicles" in capsys.readouterr().err


def test_cli_reports_publish_failure(monkeypatch):
    def failing_publish(events, topic, *, speedup):
        raise PublishError(f"topic {topic} not found: create it first")

    monkeypatch.setattr(cli, "publish_events", failing_publish)
    assert cli.main(["--vehicles", "1"]) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--vehicles", "0"], "--vehicles"),
        (["--vehicles", "two"], "not an integer"),
        (["--rate", "-1"], "--rate"),
        (["--speeding_fraction", "1.2"], "between 0 and 1"),
        (["--points", "1"], "--points"),
        (["--speedup", "0"], "--speedup"),
        (["--initial_coordinates", "__import__('os').system('x')"], "coordinates"),
        (["--final_coordinates", "(40.8, 200)"], "longitude"),
        (["--start_time", "yesterday"], "RFC 3339"),
        (["--start_time", "2026-11-22T12:00:00Z"], "only applies with --output"),
        (["--output", "a.jsonl", "--replay", "b.jsonl"], "cannot be combined"),
        (["--topic_name", "projects/p/topics"], "projects/PROJECT/topics/TOPIC"),
        (["--radar_id", "has space"], "radar_id"),
        (["--final_coordinates", str(defaults.INITIAL_COORDINATES)], "apart"),
        (["--replay", "/nonexistent/file.jsonl"], "--replay"),
        (["--no_such_flag"], "unrecognized"),
        (["--course_format", "--points", "5"], "--points does not apply with --course_format"),
        (["--course_format", "--rate", "5"], "--rate does not apply with --course_format"),
        (["--replay", "x.jsonl", "--course_format"], "--course_format does not apply with"),
        (["--replay", "x.jsonl", "--sections_file", "s.json"], "--sections_file does not"),
        (["--session_gap_seconds", "0"], "--session_gap_seconds"),
        (
            ["--sections_file", "/tmp/s.json", "--final_coordinates", "(40.8195, -73.9408)"],
            "--sections_file: entry and exit are 13.1 m apart",
        ),
    ],
)
def test_cli_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_section_length_used_by_simulation_is_the_haversine():
    config = make_config(points=2, vehicles=1)
    events, truth = simulate_traffic(config, START_MS)
    duration_s = (events[1].event_time_ms - events[0].event_time_ms) / 1000
    expected_kmh = haversine_m(config.initial, config.final) / duration_s * 3.6
    assert truth[0].avg_speed_kmh == pytest.approx(expected_kmh, abs=0.1)


# --- camera spacing and the session gap (the README's hand-run example) -------------------


def sessions(events: list[CameraEvent], gap_seconds: float) -> list[list[CameraEvent]]:
    """Event-time sessions per vehicle, as Beam's Sessions(gap) groups them."""
    result = []
    for group in by_vehicle(events).values():
        group = sorted(group, key=lambda e: e.event_time_ms)
        current = [group[0]]
        for event in group[1:]:
            if event.event_time_ms - current[-1].event_time_ms < gap_seconds * 1000:
                current.append(event)
            else:
                result.append(current)
                current = [event]
        result.append(current)
    return result


def test_default_points_keep_the_slowest_vehicle_within_a_third_of_the_gap():
    initial, final = defaults.INITIAL_COORDINATES, defaults.FINAL_COORDINATES
    assert default_points(initial, final, 60) == 11  # 121.5 m apart: 18.1 s at 24.1 km/h
    assert default_points(initial, final, 20) == 29  # 43.4 m apart: 6.5 s
    assert default_points(initial, final, 600) == 5  # never fewer than five
    for gap in (10, 20, 60):
        config = make_config(points=default_points(initial, final, gap), vehicles=50)
        events, _ = simulate_traffic(config, START_MS)
        assert max(longest_camera_intervals(events).values()) <= gap / 3


@pytest.mark.parametrize("gap", [20, 60])
def test_the_readme_example_gives_a_verdict_for_every_vehicle(tmp_path, gap):
    """Issue 11 item 6: generator and pipeline at one session gap; every vehicle measured."""
    output, truth_path, sections = (tmp_path / name for name in ("e.jsonl", "t.jsonl", "s.json"))
    argv = ["--vehicles", "20", "--speeding_fraction", "0.3", "--seed", "1",
            "--session_gap_seconds", str(gap), "--output", str(output), "--truth",
            str(truth_path), "--sections_file", str(sections)]  # fmt: skip
    assert cli.main(argv) == 0
    events = read_events_jsonl(output)
    truth = {r["vehicle_id"]: r for r in map(json.loads, truth_path.read_text().splitlines())}
    rules = SectionCatalog.from_json(sections.read_text(), SectionRule())
    split = sessions(events, gap)
    assert len(split) == 20  # one session per vehicle: none split by the gap
    for session in split:
        traversal = judge_traversal(session, rules.for_radar("radar-1"))
        assert isinstance(traversal, Traversal), traversal
        record = truth[traversal.vehicle_id]
        assert traversal.is_speeding == record["must_be_fined"]
        assert traversal.avg_speed_kmh == pytest.approx(record["avg_speed_kmh"], abs=0.1)
    assert sum(r["must_be_fined"] for r in truth.values()) == 6


def test_too_few_cameras_for_the_gap_are_warned_about(tmp_path, caplog):
    argv = ["--vehicles", "20", "--speeding_fraction", "0.3", "--seed", "1", "--points", "5",
            "--session_gap_seconds", "20", "--output", str(tmp_path / "e.jsonl")]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="generator"):
        assert cli.main(argv) == 0
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    events = read_events_jsonl(tmp_path / "e.jsonl")
    slow = sorted(s for s in longest_camera_intervals(events).values() if s >= 20)
    # 304 m between cameras: the 14 lawful vehicles (24-35 km/h) and one speeder (52 km/h).
    assert len(slow) == 15 and 42 < slow[-1] < 43
    assert warning.startswith(
        f"15 of 20 vehicles take up to {slow[-1]:.1f} s between cameras, not less than the "
        "session gap of 20 s: the pipeline would split their traversals"
    )
    assert len(sessions(events, 20)) > 20  # what the pipeline would have lost
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="generator"):
        assert cli.main([*argv[:8], "--output", str(tmp_path / "f.jsonl")]) == 0  # default gap
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


def test_sections_file_describes_the_simulated_section(tmp_path):
    path = tmp_path / "sections.json"
    argv = ["--output", str(tmp_path / "e.jsonl"), "--sections_file", str(path),
            "--radar_id", "cam-7", "--speed_limit_mph", "30", "--tolerance_mph", "2"]  # fmt: skip
    assert cli.main(argv) == 0
    written = json.loads(path.read_text())
    initial, final = defaults.INITIAL_COORDINATES, defaults.FINAL_COORDINATES
    assert written == {"cam-7": {
        "speed_limit_mph": 30.0, "tolerance_mph": 2.0,
        "length_m": haversine_m(initial, final),
        "entry": list(initial), "exit": list(final),
    }}  # fmt: skip
    rule = SectionCatalog.from_json(path.read_text(), SectionRule()).for_radar("cam-7")
    assert rule == section_rule(initial, final, 30.0, 2.0)
    assert rule.length_m == pytest.approx(1215.358, abs=1e-3)


# --- the course's own generator --------------------------------------------------------------

COURSE_ID = re.compile(r"[A-Za-z0-9]{6}")


def course_config(**overrides) -> CourseTrafficConfig:
    values = {"initial": defaults.INITIAL_COORDINATES, "final": defaults.FINAL_COORDINATES,
              "vehicles": 75, "seed": 1}  # fmt: skip
    return CourseTrafficConfig(**(values | overrides))


def test_course_traffic_is_the_course_generators_messages():
    events, truth = simulate_course_traffic(course_config(), START_MS)
    assert len(events) == 750 and len(truth) == 75
    initial, final = defaults.INITIAL_COORDINATES, defaults.FINAL_COORDINATES
    course_points = [
        (initial[0] + i / 9 * (final[0] - initial[0]), initial[1] + i / 9 * (final[1] - initial[1]))
        for i in range(10)
    ]  # the course's getVehicleLocation, verbatim arithmetic
    for vehicle_id, group in by_vehicle(events).items():
        assert COURSE_ID.fullmatch(vehicle_id)
        assert [e.location for e in group] == course_points
        assert len({e.event_time_ms for e in group}) == 1  # one burst
        for event in group:
            assert not event.timed and event.radar_id == "radar-1"
            assert 25 <= event.speed_kmh <= 90
            data, attributes = event.to_pubsub()
            assert attributes == {}
            assert (
                data
                == json.dumps(
                    {"vehicle_id": vehicle_id, "speed": event.speed_kmh, "location": event.location}
                ).encode()
            )  # what the course's json.dumps of its dict gives
    # 5 loops of 15 vehicles, 1 to 10 s apart.
    loops = sorted({e.event_time_ms for e in events})
    assert len(loops) == 5 and loops[0] == START_MS
    assert all(1000 <= b - a <= 10_000 for a, b in itertools.pairwise(loops))
    assert [sum(e.event_time_ms == t for e in events) for t in loops] == [150] * 5


def test_course_truth_carries_both_verdicts_and_matches_judge_traversal():
    config = course_config()
    events, truth = simulate_course_traffic(config, START_MS)
    rule = section_rule(config.initial, config.final)
    groups = by_vehicle(events)
    for record in truth:
        speeds = [e.speed_kmh for e in groups[record.vehicle_id]]
        assert record.avg_speed_kmh == math.fsum(speeds) / 10
        assert record.course_fined == (record.avg_speed_kmh > 40)
        assert record.must_be_fined == (record.avg_speed_kmh > 25 * 1.609344)
        assert record.speed_method == SPOT_MEAN and record.detections == 10
        # As read from Pub/Sub: message ids that grow in publish order (the digests a
        # read without ids gives say nothing of the order).
        sent = [
            dataclasses.replace(event, event_id=str(1000 + i))
            for i, event in enumerate(groups[record.vehicle_id])
        ]
        traversal = judge_traversal(sent, rule)
        assert isinstance(traversal, Traversal)
        assert traversal.speed_method == SPOT_MEAN
        assert (traversal.distance_m, traversal.duration_s, traversal.spot_readings) == (
            None,
            None,
            10,
        )
        assert traversal.avg_speed_kmh == record.avg_speed_kmh
        assert traversal.is_speeding == record.must_be_fined
        assert (traversal.entry_location, traversal.exit_location) == (config.initial, config.final)
    # Seed 1: 40 vehicles fined by the course's rule, 38 by ours (2 in the 40-40.23 band).
    assert sum(r.course_fined for r in truth) == 40
    assert sum(r.must_be_fined for r in truth) == 38
    band = [r for r in truth if r.course_fined != r.must_be_fined]
    assert len(band) == 2 and all(40 < r.avg_speed_kmh <= 40.2336 for r in band)


def test_timed_truth_also_gives_the_courses_verdict_on_spot_speeds():
    events, truth = simulate_traffic(make_config(seed=4), START_MS)
    groups = by_vehicle(events)
    for record in truth:
        speeds = [e.speed_kmh for e in groups[record.vehicle_id]]
        assert record.course_fined == (math.fsum(speeds) / len(speeds) > 40)
        assert record.speed_method == SECTION_AVERAGE


def test_cli_course_format_records_replays_and_writes_truth(tmp_path, monkeypatch, capsys):
    output, truth, sections = tmp_path / "c.jsonl", tmp_path / "t.jsonl", tmp_path / "s.json"
    argv = ["--course_format", "--vehicles", "20", "--seed", "5", "--output", str(output),
            "--truth", str(truth), "--start_time", "2026-11-22T12:00:00Z",
            "--sections_file", str(sections)]  # fmt: skip
    assert cli.main(argv) == 0
    expected, expected_truth = simulate_course_traffic(course_config(vehicles=20, seed=5), START_MS)
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(lines) == 200
    assert set(lines[0]) == {"vehicle_id", "speed", "location", "publish_time"}
    assert lines[0]["publish_time"] == "2026-11-22T12:00:00.000Z"
    assert read_events_jsonl(output) == expected  # ids: the pipeline's digest of the bytes
    records = [json.loads(line) for line in truth.read_text().splitlines()]
    assert records == [t.to_json() for t in expected_truth]
    fined = sum(t.must_be_fined for t in expected_truth)
    by_course = sum(t.course_fined for t in expected_truth)
    assert (
        f"wrote 200 events for 20 vehicles ({fined} speeders, {by_course} by the course's "
        f"> 40 km/h rule) to {output}"
    ) in capsys.readouterr().err
    # Replayed: published exactly as recorded (course bytes, no attributes), moved to now.
    published = {}

    def fake_publish(events, topic, *, speedup):
        published.update(events=events)
        return len(events)

    monkeypatch.setattr(cli, "publish_events", fake_publish)
    monkeypatch.setattr(cli, "_now_ms", lambda: START_MS + 3_600_000)
    assert cli.main(["--replay", str(output), "--truth", str(tmp_path / "t2.jsonl")]) == 0
    assert published["events"] == rebase(expected, START_MS + 3_600_000)
    assert [e.to_pubsub() for e in published["events"]] == [e.to_pubsub() for e in expected]
    replayed = [json.loads(line) for line in (tmp_path / "t2.jsonl").read_text().splitlines()]
    assert [(r["vehicle_id"], r["avg_speed_kmh"], r["must_be_fined"], r["course_fined"])
            for r in replayed] == [(t.vehicle_id, t.avg_speed_kmh, t.must_be_fined,
                                    t.course_fined) for t in expected_truth]  # fmt: skip
