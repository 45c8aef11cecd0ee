"""Fine latency: from a speeder's last detection published to its fine on the output topic.

    .venv/bin/python bench/fine_latency.py [--speeders 30] [--rate 6] [--gap 10]

The full pipeline (evidence from the cars API, embedded OCR, photo to the storage
emulator, warehouse on) runs on the BundleBasedDirectRunner; simulated vehicles are
published live (event time = now) on the short bench section, half of them speeding so
that --speeders fines arrive in about a minute. Per speeder, latency = its fine's arrival
on the output topic - the Pub/Sub acknowledgement of its last detection's publish
(bench/lib/live.py). A session closes one gap after its last detection, so the gap is
the floor: a small gap (10 s by default; the pipeline's default is 60 s) keeps the run
short and the rest visible. "In the pipeline" is the same start to the fine's own
processed_at (stamped after its evidence), so the remainder is the output publish and
the delivery to the reader. A keep-alive stands for other traffic on the road after the
last vehicle (bench/lib/harness.py). A benchmark, not a test: it prints figures and
asserts nothing.
"""

import argparse
import statistics
from pathlib import Path

from lib.harness import load_note, percentile, stop_on_sigterm, traffic
from lib.live import run_live

from local_stack.services import LocalStack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speeders", type=int, default=30)
    parser.add_argument("--rate", type=float, default=6.0, help="events/s (4 per vehicle)")
    parser.add_argument("--gap", type=int, default=10, help="session gap, s")
    parser.add_argument("--logs", type=Path, help="keep the services' and pipeline's logs here")
    args = parser.parse_args()
    stop_on_sigterm()
    config = traffic(args.speeders * 2, args.rate, speeding_fraction=0.5, seed=11)
    print(load_note(), flush=True)
    with LocalStack(work_dir=args.logs) as stack:
        stack.apply_env()
        result = run_live(stack, "latency", config, args.gap)
    median, p95 = result.median(), result.p95()
    print(f"traffic: {result.events} events at {result.offered_rate:.1f} events/s, "
          f"{config.vehicles} vehicles ({result.vehicles_at_once:.1f} at once), "
          f"{len(result.latencies)} of {result.fines_expected} fines timed")  # fmt: skip
    print(f"session gap: {args.gap} s")
    print(f"fine latency: median {median:.1f} s, p95 {p95:.1f} s, "
          f"max {max(result.latencies, default=float('nan')):.1f} s")  # fmt: skip
    print(f"median - gap: {median - args.gap:.1f} s (target: median <= gap + 5 s on 2 cores)")
    print(f"in the pipeline (to processed_at): median {statistics.median(result.in_pipeline):.1f}"
          f" s, p95 {percentile(result.in_pipeline, 95):.1f} s")  # fmt: skip
    print(
        f"input queue when traffic ended: {result.end_lag_s:.1f} s; traversals "
        f"{result.traversals} of {result.traversals_expected}, {result.repeated} repeated"
    )
    print(load_note())


if __name__ == "__main__":
    main()
