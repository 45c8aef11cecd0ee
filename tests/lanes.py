"""`make test`'s integration tests in two lanes at once, each its own pytest and local stack.

    .venv/bin/python -m tests.lanes [PYTEST ARGS...]

The live streaming pipelines (marker `pipeline`) are paced by the clock and the local runner
judges lateness by it, so they run one at a time, in one lane. Everything else (the desk and
its browser, database and race tests, the warehouse, the report, replay, plates) runs in the
second lane beside them: those tests wait on conditions, not on the clock. Each lane starts
its own emulators on free ports. Every output line is prefixed with its lane; the exit
status is 0 only when both lanes passed.
"""

import subprocess
import sys
import threading
from typing import IO

LANES = {
    "pipelines": ["-m", "pipeline"],
    "services": ["-m", "not pipeline"],
}
_print_lock = threading.Lock()


def _relay(lane: str, stream: IO[str]) -> None:
    width = max(map(len, LANES))
    for line in stream:
        with _print_lock:
            sys.stdout.write(f"[{lane:<{width}}] {line}")
            sys.stdout.flush()


def main(extra: list[str]) -> int:
    running = {}
    for lane, selection in LANES.items():
        argv = [sys.executable, "-m", "pytest", "tests/integration", "-v", *selection, *extra]
        running[lane] = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
    relays = [
        threading.Thread(target=_relay, args=(lane, process.stdout), daemon=True)
        for lane, process in running.items()
    ]
    for relay in relays:
        relay.start()
    codes = {lane: process.wait() for lane, process in running.items()}
    for relay in relays:
        relay.join(timeout=10)
    # pytest exits 5 when it collected nothing: a lane that ran no test is a failure too.
    for lane, code in codes.items():
        print(f"lane {lane}: {'passed' if code == 0 else f'FAILED (pytest exit {code})'}")
    return 0 if all(code == 0 for code in codes.values()) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
