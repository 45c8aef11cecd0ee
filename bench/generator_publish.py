"""Generator publish rate against the raw Pub/Sub client, on the same emulator.

    .venv/bin/python bench/generator_publish.py [--events 20000]

Prints events/s for `generator.publish.publish_events` (as fast as it can: realtime off)
and for a bare PublisherClient loop with the same batch settings, and their ratio.
A benchmark, not a test: it prints figures and asserts nothing.
"""

import argparse
import time

from google.cloud import pubsub_v1

from generator.publish import publish_events
from generator.simulate import TrafficConfig, simulate_traffic
from local_stack.services import LocalStack


def raw_client_rate(topic: str, messages: list[tuple[bytes, dict[str, str]]]) -> float:
    settings = pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.05)
    publisher = pubsub_v1.PublisherClient(batch_settings=settings)
    started = time.perf_counter()
    futures = [publisher.publish(topic, data, **attributes) for data, attributes in messages]
    for future in futures:
        future.result(timeout=60)
    return len(messages) / (time.perf_counter() - started)


def generator_rate(topic: str, events: list) -> float:
    started = time.perf_counter()
    publish_events(events, topic, realtime=False, progress=False)
    return len(events) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    config = TrafficConfig(
        initial=(40.819390, -73.940744), final=(40.811, -73.950), radar_id="bench",
        vehicles=args.events // 5, rate=1000.0, speeding_fraction=0.3, points=5, seed=1,
    )  # fmt: skip
    events, _ = simulate_traffic(config, start_ms=int(time.time() * 1000))
    with LocalStack(services=("pubsub",)) as stack:
        stack.apply_env()
        stack.create_topics(["bench-generator", "bench-raw"])
        messages = [event.to_pubsub() for event in events]
        raw_client_rate(stack.topic_path("bench-raw"), messages[:2000])  # warm the emulator's JVM
        # Best of three each, interleaved, so neither side gets the warmer emulator.
        raw = generator = 0.0
        for _ in range(3):
            raw = max(raw, raw_client_rate(stack.topic_path("bench-raw"), messages))
            generator = max(generator, generator_rate(stack.topic_path("bench-generator"), events))
    print(f"events: {len(events)}")
    print(f"raw PublisherClient: {raw:,.0f} events/s (best of 3)")
    print(f"generator publish_events: {generator:,.0f} events/s (best of 3)")
    print(f"ratio generator/raw: {generator / raw:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
