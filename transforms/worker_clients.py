"""Service clients a worker process shares: loaded in DoFn.setup, released in DoFn.teardown.

All of them sit behind one `Shared` handle, as `Shared` keeps alive only the object acquired
last in a process (docs/architecture.md, Clients).
"""

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from apache_beam.utils.shared import Shared

_log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a client no DoFn uses is kept for the next one: the local runner tears every DoFn
# down after each bundle, and a plate reader takes about a second to load.
KEEP_IDLE_S = 60.0


class ClientHandler(Generic[T]):
    """One kind of service client for the DoFns of a worker process (what RunInference's
    ModelHandler is for a model): `load` calls the injected factory; `close` calls the
    client's `close()`, if it has one.

    A DoFn acquires its client in `setup` and releases it in `teardown`. The key is pickled
    with the DoFn, so every copy of a handler on a worker shares one client, and other
    handlers (other steps, other test pipelines) never do. The client is closed once no DoFn
    has used it for `keep_idle_s`.
    """

    def __init__(
        self,
        factory: Callable[[], T],
        keep_idle_s: float = KEEP_IDLE_S,
    ) -> None:
        self.factory = factory
        self.keep_idle_s = keep_idle_s
        self.key = uuid.uuid4().hex
        # Held once acquired (not pickled), so that while DoFns use the clients they live,
        # whatever else the process acquires through `Shared`.
        self._clients: WorkerClients | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_clients": None}

    def load(self) -> T:
        return self.factory()

    def close(self, client: T) -> None:
        close = getattr(client, "close", None)  # the client's own, when it has one
        if callable(close):
            close()

    def acquire(self) -> T:
        """The process's client of this handler, loaded on first use; one more user of it."""
        self._clients = _WORKER_CLIENTS.acquire(WorkerClients)
        return self._clients.acquire(self)

    def release(self, client: T) -> None:
        """One user fewer of `client`, which `acquire` gave: closed once no one uses it."""
        if self._clients is not None:
            self._clients.release(self, client)


@dataclass
class _Entry:
    handler: ClientHandler[Any]
    client: Any = None
    users: int = 0
    idle_since: float | None = None
    loading: threading.Lock = field(default_factory=threading.Lock)


class WorkerClients:
    """The clients of one worker process, by handler key, each counted by its users."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()  # guards the entries, never held while loading or closing
        self._entries: dict[str, _Entry] = {}

    def acquire(self, handler: ClientHandler[T]) -> T:
        with self._lock:
            entry = self._entries.setdefault(handler.key, _Entry(handler))
            entry.users += 1  # counted before loading: no release or sweep closes it meanwhile
            entry.idle_since = None
            idle = self._expired()
        self._close(idle)
        try:
            # Loaded once even when several threads set up at once; a slow load (a model, a
            # table check) holds up only the DoFns waiting for the same client.
            with entry.loading:
                if entry.client is None:
                    entry.client = handler.load()
        except BaseException:
            self.release(handler, None)  # a failed load is tried again by the next setup
            raise
        return entry.client

    def release(self, handler: ClientHandler[T], client: T | None) -> None:
        with self._lock:
            entry = self._entries.get(handler.key)
            if entry is not None and entry.users > 0 and entry.client is client:
                entry.users -= 1
                if entry.users == 0:
                    entry.idle_since = self._clock()
            idle = self._expired()
        self._close(idle)

    def _expired(self) -> list[_Entry]:
        """Remove and return the entries no one has used for their handler's keep_idle_s."""
        now = self._clock()
        expired = [
            entry
            for entry in self._entries.values()
            if entry.idle_since is not None and now - entry.idle_since >= entry.handler.keep_idle_s
        ]
        for entry in expired:
            del self._entries[entry.handler.key]
        return expired

    def _close(self, entries: list[_Entry]) -> None:
        for entry in entries:
            if entry.client is None:
                continue
            try:
                entry.handler.close(entry.client)
            except Exception as error:  # one client's close must not stop another's
                _log.warning("closing a %s failed: %s", type(entry.client).__name__, error)


_WORKER_CLIENTS = Shared()  # the process's one handle, never pickled
