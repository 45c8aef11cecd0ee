"""Child processes and polling, for the emulators and for the pipeline run beside them.

Each child runs in its own session so that stopping it stops its children too (gcloud
starts a JVM); readiness is polled with a deadline, never waited for with a sleep.
"""

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

_log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    condition: Callable[[], bool], *, timeout_s: float, what: str, interval_s: float = 0.1
) -> None:
    """Poll `condition` until it holds; raise TimeoutError naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


class ManagedProcess:
    """A child process in its own session, logging to a file, stopped by process group."""

    def __init__(self, name: str, argv: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_path
        self._log_file = log_path.open("ab")
        self.process = subprocess.Popen(
            argv,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        _log.info("started %s (pid %d), log %s", name, self.process.pid, log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the whole group, SIGKILL what is left after `timeout_s`, reap the leader.

        The group, not the leader, is waited on: gcloud exits at once on SIGTERM while
        the emulator's JVM it started is still shutting down.
        """
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self._group_alive():
                break
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                wait_until(
                    lambda: not self._group_alive(),
                    timeout_s=timeout_s,
                    what=f"{self.name} to stop",
                )
            except TimeoutError:
                _log.warning("%s did not stop on %s", self.name, sig.name)
        self._log_file.close()
        _log.info("stopped %s (pid %d)", self.name, self.process.pid)

    def _group_alive(self) -> bool:
        """Whether any process of the group still runs (zombies, which run nothing, don't)."""
        self.process.poll()  # reap the leader so that a dead leader does not count
        proc = Path("/proc")
        if not proc.is_dir():  # not Linux: ask the kernel about the group as a whole
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return False
            return True
        for stat in proc.glob("[0-9]*/stat"):
            try:
                # pid (comm) state ppid pgrp ...; comm may hold spaces, so split after ')'.
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # the process ended while we looked
            if int(fields[2]) == self.process.pid and fields[0] != "Z":
                return True
        return False
