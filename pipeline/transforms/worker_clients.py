"""Clients built once per worker process, through one Beam `Shared` handle.

Beam's `Shared` keeps an object alive while a DoFn holds it and, beyond that, only the
object acquired last in the process. Dataflow keeps DoFn instances (and so their clients)
for many bundles. The local runner sets a DoFn up and tears it down for every bundle:
with one handle per client, each acquisition let the previous client go, and the plate
reader's models and the warehouse client (with its table checks) were rebuilt dozens of
times a run. Every client of the pipeline is therefore reached through the one handle
below: it is always the last acquired, so the clients it holds live as long as the
process. (Should other code in the process acquire a Shared object of its own, the
clients are built again on their next use, as with one handle each.)
"""

import threading
import uuid
from collections.abc import Callable
from typing import Any

from apache_beam.utils.shared import Shared


class WorkerClients:
    """The clients of one worker process, by the slot that asked for each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}

    def get(self, key: str, factory: Callable[[], Any]) -> Any:
        with self._lock:  # built once, even when several threads set up at the same time
            if key not in self._clients:
                self._clients[key] = factory()
            return self._clients[key]


_WORKER_CLIENTS = Shared()  # one handle per process: never pickled, never displaced


class ClientSlot:
    """What a DoFn keeps for one client: its factory, and a key made with the graph.

    The key is pickled with the DoFn, so every copy of one step on a worker shares one
    client, and steps (or test pipelines) with different factories never do.
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self.key = uuid.uuid4().hex

    def acquire(self) -> Any:
        """The worker's client for this slot, built by the factory on first use."""
        return _WORKER_CLIENTS.acquire(WorkerClients).get(self.key, self.factory)
