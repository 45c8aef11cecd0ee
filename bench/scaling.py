"""Scaling: events/s and fine latency as traffic grows (x1, x4, x16), then over 2 pipelines.

    .venv/bin/python bench/scaling.py [--base_rate 2] [--duration 20]

Each row is one live run of the full pipeline (evidence + warehouse, session gap 10 s) on
the BundleBasedDirectRunner, fed by the generator for --duration seconds at base_rate x
the traffic factor (4 detections per vehicle, 3 vehicles in 10 speeding); bench/lib/live.py
says how latency is timed. "consumed" is events / (first event published -> a marker
published after the last event comes out): equal to the offered rate while the pipeline
keeps up. "queue" is that marker's own wait: the input backlog when traffic stopped.
"repeated" counts traversals that came out more than once: a pipeline that falls behind
the clock closes sessions before their last detections are read, then fires them again.

More workers. The BundleBasedDirectRunner has one worker thread: its executor's pool
size is a class constant (`_ExecutorServiceParallelExecutor.NUM_WORKERS = 1` in
apache_beam/runners/direct/executor.py), and --direct_num_workers /
--direct_running_mode are read only by the FnApiRunner (portability/fn_api_runner/
fn_runner.py), so they change nothing here. The last row scales out instead: two
pipeline processes, each with its own input topic, the vehicles split between them by a
hash of vehicle_id (as Dataflow splits keys between workers; a split by message would
cut sessions in two). A benchmark, not a test: it prints figures and asserts nothing.
About 1.5 minutes per row.
"""

import argparse
from pathlib import Path

from lib.harness import load_note, stop_on_sigterm, traffic
from lib.live import LiveResult, run_live

from local_stack.services import LocalStack

GAP_S = 10
SPEEDING_FRACTION = 0.3
HEADER = (
    f"{'traffic':>7} {'pipelines':>9} {'at once':>7} {'offered/s':>9} {'consumed/s':>10} "
    f"{'queue s':>7} {'fines':>7} {'median s':>8} {'p95 s':>6} {'repeated':>8}"
)


def row(factor: int, result: LiveResult) -> str:
    fines = f"{len(result.latencies)}/{result.fines_expected}"
    return (
        f"{f'x{factor}':>7} {result.pipelines:>9} {result.vehicles_at_once:>7.1f} "
        f"{result.offered_rate:>9.1f} {result.consumed_rate:>10.1f} {result.end_lag_s:>7.1f} "
        f"{fines:>7} {result.median():>8.1f} {result.p95():>6.1f} {result.repeated:>8}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base_rate", type=float, default=2.0, help="events/s at x1")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of traffic")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--pipelines", type=int, default=2, help="for the last, scaled-out row")
    parser.add_argument("--logs", type=Path, help="keep the services' and pipelines' logs here")
    args = parser.parse_args()
    stop_on_sigterm()
    runs = [(factor, 1) for factor in args.factors]
    if args.pipelines > 1:
        runs.append((max(args.factors), args.pipelines))
    print(load_note(), flush=True)
    print(f"session gap {GAP_S} s, {args.duration:g} s of traffic per row")
    print(HEADER, flush=True)
    with LocalStack(work_dir=args.logs) as stack:
        stack.apply_env()
        for factor, pipelines in runs:
            rate = args.base_rate * factor
            vehicles = max(1, round(rate * args.duration / 4))
            config = traffic(vehicles, rate, SPEEDING_FRACTION, seed=20 + factor)
            name = f"x{factor}-p{pipelines}"
            result = run_live(stack, name, config, GAP_S, pipelines)
            print(row(factor, result), flush=True)
    print(load_note())


if __name__ == "__main__":
    main()
