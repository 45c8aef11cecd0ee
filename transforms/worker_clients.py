"""Clients built once per worker process, through one Beam `Shared` handle.

Beam's `Shared` keeps an object alive while a DoFn holds it and, beyond that, only the
object acquired last in the process. Dataflow keeps DoFn instances (and so their clients)
for many bundles. The local runner sets a DoFn up and tears it down for every bundle:
with one handle per client, each acquisition let the previous client go, and the plate
reader's models and the warehouse client (with its table checks) were rebuilt dozens of
times a run. Every client of the pipeline is therefore reached through the one handle
below: it is always the last acquired, so the clients it holds live as long as the
process. The slots also hold it while their DoFns live, so other code's own `Shared`
objects cannot release clients in use; only on the local runner, between bundles, would
they be built again after such an acquisition.
"""

import threading
import uuid
from collections.abc import Callable
from typing import Any

from apache_beam.utils.shared import Shared


class WorkerClients:
    """The clients of one worker process, by the slot that asked for each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the two dicts, never held while building
        self._key_locks: dict[str, threading.Lock] = {}
        self._clients: dict[str, Any] = {}

    def get(self, key: str, factory: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._clients:
                return self._clients[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        # Built once even when several threads set up at once; a slow build (a model, a
        # table check) holds up only the steps that wait for the same client.
        with key_lock:
            with self._lock:
                if key in self._clients:
                    return self._clients[key]
            client = factory()
            with self._lock:
                self._clients[key] = client
            return client


_WORKER_CLIENTS = Shared()  # one handle per process: never pickled, never displaced


class ClientSlot:
    """What a DoFn keeps for one client: its factory, and a key made with the graph.

    The key is pickled with the DoFn, so every copy of one step on a worker shares one
    client, and steps (or test pipelines) with different factories never do. The slot
    also holds the process's `WorkerClients` once acquired (not pickled), so that while
    any DoFn lives its clients do, whatever else the process acquires through `Shared`.
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self.key = uuid.uuid4().hex
        self._clients: WorkerClients | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"factory": self.factory, "key": self.key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.factory, self.key = state["factory"], state["key"]
        self._clients = None

    def acquire(self) -> Any:
        """The worker's client for this slot, built by the factory on first use."""
        self._clients = _WORKER_CLIENTS.acquire(WorkerClients)
        return self._clients.get(self.key, self.factory)
