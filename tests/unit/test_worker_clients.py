"""ClientSlot: one client per worker process and step, however often DoFns are set up."""

import gc
import itertools
import pickle

from transforms.worker_clients import ClientSlot

_builds = itertools.count()


class Client:
    def __init__(self) -> None:
        self.serial = next(_builds)


def test_copies_of_one_step_share_its_client_across_set_ups():
    slot, other_step = ClientSlot(Client), ClientSlot(Client)
    first = slot.acquire().serial
    for _ in range(3):
        # What the local runner does each bundle: a fresh copy of each DoFn, set up and
        # then dropped; steps of the graph acquire their clients in turn.
        copy = pickle.loads(pickle.dumps(slot))
        other_step.acquire()
        gc.collect()
        assert copy.acquire().serial == first
    assert other_step.acquire().serial == first + 1


def test_steps_with_their_own_slots_get_their_own_clients():
    one, two = ClientSlot(Client), ClientSlot(Client)
    assert one.acquire() is not two.acquire()
    assert one.acquire() is one.acquire()


def test_a_factory_that_fails_is_tried_again_on_the_next_set_up():
    calls = []

    def flaky() -> Client:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("the service is not up yet")
        return Client()

    slot = ClientSlot(flaky)
    try:
        slot.acquire()
    except ConnectionError:
        pass
    else:
        raise AssertionError("the first build should have failed")
    assert isinstance(slot.acquire(), Client)
    assert len(calls) == 2


def test_a_live_step_keeps_its_clients_whatever_else_is_acquired_through_shared():
    slot = ClientSlot(Client)
    first = slot.acquire()
    from apache_beam.utils.shared import Shared

    Shared().acquire(Client)  # another library's Shared object displaces the last-acquired
    gc.collect()
    assert slot.acquire() is first  # the step (as a long-lived Dataflow DoFn) still holds it


def test_a_slow_build_holds_up_only_the_steps_waiting_for_the_same_client():
    import threading

    building, release = threading.Event(), threading.Event()

    def slow_factory() -> Client:
        building.set()
        release.wait(timeout=30)
        return Client()

    slow, fast = ClientSlot(slow_factory), ClientSlot(Client)
    builder = threading.Thread(target=slow.acquire)
    builder.start()
    got: list[Client] = []
    try:
        assert building.wait(timeout=10)
        other = threading.Thread(target=lambda: got.append(fast.acquire()))
        other.start()
        other.join(timeout=5)  # with one lock for all builds it would wait for `release`
        assert got and isinstance(got[0], Client)
    finally:
        release.set()
        builder.join(timeout=10)
    assert not builder.is_alive()
