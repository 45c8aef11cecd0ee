"""ClientHandler: one client per worker process and handler, closed once no DoFn uses it."""

import gc
import itertools
import pickle
import threading

from apache_beam.utils.shared import Shared

from transforms.worker_clients import ClientHandler, WorkerClients

_builds = itertools.count()


class Client:
    def __init__(self) -> None:
        self.serial = next(_builds)
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_copies_of_one_handler_share_its_client_across_set_ups_and_tear_downs():
    handler, other_step = ClientHandler(Client), ClientHandler(Client)
    first = handler.acquire()
    for _ in range(3):
        # What the local runner does each bundle: a fresh copy of each DoFn, set up, torn
        # down and dropped; the DoFns of other steps acquire their clients in turn.
        copy = pickle.loads(pickle.dumps(handler))
        other = other_step.acquire()
        other_step.release(other)
        gc.collect()
        client = copy.acquire()
        copy.release(client)
        assert client is first and not client.closed
    assert other_step.acquire().serial == first.serial + 1


def test_handlers_of_their_own_get_their_own_clients():
    one, two = ClientHandler(Client), ClientHandler(Client)
    assert one.acquire() is not two.acquire()
    assert one.acquire() is one.acquire()


def test_the_client_is_closed_when_its_last_user_releases_it():
    handler = ClientHandler(Client, keep_idle_s=0)
    copy = pickle.loads(pickle.dumps(handler))  # another DoFn instance of the same step
    client = handler.acquire()
    assert copy.acquire() is client
    handler.release(client)
    assert not client.closed  # the other instance still uses it
    copy.release(client)
    assert client.closed
    again = handler.acquire()  # the next set-up loads a new one
    assert again is not client and not again.closed


def test_an_idle_client_is_kept_for_keep_idle_s_then_closed_by_the_next_acquire_or_release():
    now = [0.0]
    clients = WorkerClients(clock=lambda: now[0])
    kept, other = ClientHandler(Client, keep_idle_s=60), ClientHandler(Client, keep_idle_s=60)
    client = clients.acquire(kept)
    clients.release(kept, client)
    now[0] = 59.0
    assert clients.acquire(kept) is client  # the next bundle's DoFn reuses it
    clients.release(kept, client)
    now[0] = 59.0 + 60.0
    assert not client.closed  # nothing closes it between calls...
    clients.release(other, clients.acquire(other))  # ...the next call does
    assert client.closed
    assert clients.acquire(kept) is not client


def test_a_factory_that_fails_is_tried_again_on_the_next_set_up():
    calls = []

    def flaky() -> Client:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("the service is not up yet")
        return Client()

    handler = ClientHandler(flaky)
    try:
        handler.acquire()
    except ConnectionError:
        pass
    else:
        raise AssertionError("the first load should have failed")
    assert isinstance(handler.acquire(), Client)
    assert len(calls) == 2


def test_a_client_in_use_lives_whatever_else_is_acquired_through_shared():
    handler = ClientHandler(Client)
    first = handler.acquire()
    Shared().acquire(Client)  # another library's Shared object displaces the last-acquired
    gc.collect()
    assert handler.acquire() is first  # the DoFn (as a long-lived Dataflow DoFn) still holds it


def test_a_slow_load_holds_up_only_the_dofns_waiting_for_the_same_client():
    building, release = threading.Event(), threading.Event()

    def slow_factory() -> Client:
        building.set()
        release.wait(timeout=30)
        return Client()

    slow, fast = ClientHandler(slow_factory), ClientHandler(Client)
    builder = threading.Thread(target=slow.acquire)
    builder.start()
    got: list[Client] = []
    try:
        assert building.wait(timeout=10)
        other = threading.Thread(target=lambda: got.append(fast.acquire()))
        other.start()
        other.join(timeout=5)  # with one lock for all loads it would wait for `release`
        assert got and isinstance(got[0], Client)
    finally:
        release.set()
        builder.join(timeout=10)
    assert not builder.is_alive()
