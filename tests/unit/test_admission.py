"""Admission by expected wait (cache/admission.py): a counter and a condition per process."""

from __future__ import annotations

import threading
import time

import pytest

from huimages_wsgi.cache.admission import FIRST_GUESS, Admission, RenderBusy
from huimages_wsgi.core.config import Config


def hold(admission: Admission, large: bool, holding: threading.Event,
         release: threading.Event) -> threading.Thread:
    def run() -> None:
        with admission.render(large):
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=run)
    thread.start()
    assert holding.wait(10)
    return thread


def wait_until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def test_renders_beyond_the_slots_wait_and_start_in_arrival_order():
    admission = Admission(slots=1, decode_slots=1, wait=5.0, queue=10)
    release, order = threading.Event(), []
    first = hold(admission, False, threading.Event(), release)
    waiters = []
    for number in range(3):
        def run(number: int = number) -> None:
            with admission.render(False):
                order.append(number)

        waiters.append(threading.Thread(target=run))
        waiters[-1].start()
        wait_until(lambda number=number: len(admission._waiting) == number + 1)
    release.set()
    for thread in [first, *waiters]:
        thread.join(10)
    assert order == [0, 1, 2]


def test_a_miss_is_refused_at_once_when_its_expected_wait_is_too_long():
    admission = Admission(slots=1, decode_slots=1, wait=0.5, queue=100)
    admission._seconds[False] = 0.2  # renders take 0.2 s here
    release = threading.Event()
    threads = [hold(admission, False, threading.Event(), release)]
    for _ in range(2):  # 2 x 0.2 s ahead: 0.4 s, still within 0.5 s
        threads.append(threading.Thread(target=lambda: admission.render(False).__enter__()))
    for thread in threads[1:]:
        thread.start()
    wait_until(lambda: len(admission._waiting) == 2)
    assert admission.expected_wait(False) == pytest.approx(0.6)
    started = time.monotonic()
    with pytest.raises(RenderBusy) as refused, admission.render(False):
        pass
    assert time.monotonic() - started < 0.1 and refused.value.status == 503
    release.set()
    for thread in threads:
        thread.join(10)


def test_a_miss_that_would_wait_too_long_is_refused_before_the_catalog_is_read():
    """check_room runs before the catalog read: under a storm most refusals cost nothing."""
    admission = Admission(slots=1, decode_slots=1, wait=0.5, queue=100)
    admission._seconds[False] = 0.3
    release = threading.Event()
    threads = [hold(admission, False, threading.Event(), release)]
    admission.check_room()  # the slot is taken but nothing waits: 0.3 s expected
    threads.append(threading.Thread(target=lambda: admission.render(False).__enter__()))
    threads[-1].start()
    wait_until(lambda: len(admission._waiting) == 1)
    assert admission.expected_wait(False) == pytest.approx(0.6)
    with pytest.raises(RenderBusy, match="busy for more than 0.5 s"):
        admission.check_room()
    release.set()
    for thread in threads:
        thread.join(10)


def test_check_room_lets_a_miss_on_when_a_slot_is_free():
    admission = Admission(slots=2, decode_slots=1, wait=0.0, queue=0)
    release = threading.Event()
    thread = hold(admission, False, threading.Event(), release)
    admission.check_room()  # one of two slots free: no wait at all
    release.set()
    thread.join(10)


def test_a_full_queue_refuses_before_anything_else():
    admission = Admission(slots=1, decode_slots=1, wait=60.0, queue=0)
    release = threading.Event()
    thread = hold(admission, False, threading.Event(), release)
    with pytest.raises(RenderBusy):
        admission.check_room()
    with pytest.raises(RenderBusy), admission.render(False):
        pass
    release.set()
    thread.join(10)


def test_a_waiting_decode_does_not_hold_back_renders_from_previews():
    admission = Admission(slots=2, decode_slots=1, wait=5.0, queue=10)
    release = threading.Event()
    decoding = hold(admission, True, threading.Event(), release)
    second = threading.Thread(target=lambda: admission.render(True).__enter__())
    second.start()  # waits: the one decode slot is taken
    wait_until(lambda: len(admission._waiting) == 1)
    started = time.monotonic()
    with admission.render(False):  # the free slot: it starts at once
        assert time.monotonic() - started < 0.5
    release.set()
    decoding.join(10)
    second.join(10)


def test_a_decode_waits_for_the_decodes_ahead_of_it():
    admission = Admission(slots=4, decode_slots=1, wait=1.0, queue=10)
    admission._seconds[True] = 0.6
    release = threading.Event()
    thread = hold(admission, True, threading.Event(), release)
    assert admission.expected_wait(False) == 0.0  # three slots are free
    assert admission.expected_wait(True) == pytest.approx(0.6)  # the running decode
    waiter = threading.Thread(target=lambda: admission.render(True).__enter__())
    waiter.start()
    wait_until(lambda: len(admission._waiting) == 1)
    with pytest.raises(RenderBusy), admission.render(True):  # 1.2 s expected
        pass
    release.set()
    thread.join(10)
    waiter.join(10)


def test_a_miss_that_waited_its_whole_wait_is_refused():
    admission = Admission(slots=1, decode_slots=1, wait=0.3, queue=10)
    admission._seconds[False] = 0.0  # nothing suggests a wait
    release = threading.Event()
    thread = hold(admission, False, threading.Event(), release)
    started = time.monotonic()
    with pytest.raises(RenderBusy), admission.render(False):
        pass
    assert 0.25 < time.monotonic() - started < 2.0
    assert not admission._waiting  # it left the queue
    release.set()
    thread.join(10)


def test_the_render_time_follows_what_renders_take():
    admission = Admission(slots=1, decode_slots=1, wait=5.0, queue=10)
    assert admission._seconds[False] == FIRST_GUESS[False]
    for _ in range(20):
        with admission.render(False):
            time.sleep(0.05)
    assert admission._seconds[False] == pytest.approx(0.05, rel=0.5)
    assert admission._seconds[True] == FIRST_GUESS[True]


def test_the_observer_sees_queue_running_waits_and_refusals():
    events = []
    admission = Admission(slots=1, decode_slots=1, wait=0.1, queue=10,
                          observer=lambda kind, value: events.append((kind, value)))
    with admission.render(False):
        with pytest.raises(RenderBusy), admission.render(False):
            pass
    kinds = [kind for kind, _ in events]
    assert kinds.count("queued") == 4 and sum(v for k, v in events if k == "queued") == 0
    assert ("running", 1) in events and ("running", -1) in events
    assert ("refused", 1) in events and "waited" in kinds


def test_the_admission_comes_from_the_configuration():
    assert Admission.from_config(Config(render_slots=0)) is None
    admission = Admission.from_config(Config(render_slots=3, render_slots_per_process=1,
                                             render_wait=2.0, render_queue=7))
    assert (admission.slots, admission.decode_slots, admission.wait, admission.queue) == (
        3, 1, 2.0, 7)
    assert Admission.from_config(Config(render_slots=2)).decode_slots == 2
    assert Admission.from_config(Config()).queue == 48
