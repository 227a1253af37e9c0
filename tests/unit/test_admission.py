"""Render admission (admission.py): slots per node across processes, a share per process."""

import multiprocessing
import threading
import time
from contextlib import ExitStack

import pytest

from huimages_wsgi.cache.admission import RenderBusy, RenderSlots
from huimages_wsgi.core.config import Config


def hold(
    slots: RenderSlots, holding: threading.Event, release: threading.Event,
    full_decode: bool = True,
) -> None:
    with slots.slot(full_decode):
        holding.set()
        release.wait(10)


class InLine:
    """An observer that lets a test wait until a number of renders are queued."""

    def __init__(self) -> None:
        self.queued = 0
        self.changed = threading.Condition()

    def __call__(self, kind: str, value: float) -> None:
        if kind == "queued":
            with self.changed:
                self.queued += int(value)
                self.changed.notify_all()

    def wait_for(self, count: int) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: self.queued == count, timeout=10)


def test_a_process_takes_at_most_its_share_of_the_node_s_slots(tmp_path):
    """Two node slots, one per process: a second render of the same process waits for the
    first and is refused after the wait, though the node has a slot free."""
    slots = RenderSlots(tmp_path, slots=2, wait=0.3, per_process=1)
    holding, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold, args=(slots, holding, release))
    holder.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()
        with pytest.raises(RenderBusy):
            with slots.slot():
                pass
        assert time.monotonic() - started >= 0.3
    finally:
        release.set()
        holder.join()
    with slots.slot():  # the share is free again
        pass


def test_renders_from_previews_are_not_counted_in_the_share(tmp_path):
    """The share bounds the decoded originals a process holds; a render from a preview
    takes any free slot of the node, and does not use up the share either."""
    slots = RenderSlots(tmp_path, slots=3, wait=0.3, per_process=1)
    holding, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold, args=(slots, holding, release, True))
    holder.start()
    try:
        assert holding.wait(10)
        with slots.slot(full_decode=False):  # the node's second slot, at once
            with pytest.raises(RenderBusy):  # a second whole original: over the share
                with slots.slot(full_decode=True):
                    pass
    finally:
        release.set()
        holder.join()
    with slots.slot(full_decode=False), slots.slot(full_decode=True):
        pass  # a preview render held: the share is still free


def test_a_decode_waiting_for_the_share_does_not_hold_back_renders_from_previews(tmp_path):
    """The waiter queue is first come, first served per kind: a whole-original decode
    queued behind this process's share must not keep a preview render from a free slot."""
    in_line = InLine()
    slots = RenderSlots(tmp_path, slots=2, wait=3.0, observer=in_line, per_process=1)
    holding, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold, args=(slots, holding, release, True))
    waiter_done = threading.Event()

    def second_decode() -> None:
        with slots.slot(full_decode=True):  # waits for the holder's share
            waiter_done.set()

    waiter = threading.Thread(target=second_decode)
    holder.start()
    try:
        assert holding.wait(10)
        waiter.start()
        assert in_line.wait_for(1)  # the second decode is queued now
        assert not waiter_done.is_set()
        started = time.monotonic()
        with slots.slot(full_decode=False):  # the node's free slot
            took = time.monotonic() - started
        assert took < 1.5, f"a preview render waited {took:.2f} s behind a share-bound decode"
    finally:
        release.set()
        holder.join()
        waiter.join()
    assert waiter_done.is_set()  # and the queued decode got its turn


def test_waiters_of_both_kinds_are_served_in_arrival_order(tmp_path):
    in_line = InLine()
    slots = RenderSlots(tmp_path, slots=1, wait=5.0, observer=in_line)
    holding, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold, args=(slots, holding, release, False))
    order: list[str] = []

    def wait_for(full_decode: bool, name: str) -> None:
        with slots.slot(full_decode):
            order.append(name)

    holder.start()
    assert holding.wait(10)
    waiters = [threading.Thread(target=wait_for, args=(True, "decode")),
               threading.Thread(target=wait_for, args=(False, "preview"))]
    for queued, waiter in enumerate(waiters, 1):  # the decode first, then the preview
        waiter.start()
        assert in_line.wait_for(queued)
    release.set()
    for thread in (holder, *waiters):
        thread.join(10)
    assert order == ["decode", "preview"]


def test_without_a_share_one_process_may_use_every_slot(tmp_path):
    slots = RenderSlots(tmp_path, slots=2, wait=0.3)
    holding, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=hold, args=(slots, holding, release))
    holder.start()
    try:
        assert holding.wait(10)
        with slots.slot():  # the second slot, at once
            pass
    finally:
        release.set()
        holder.join()


def _hold_in_child(lock_dir, holding, release) -> None:
    slots = RenderSlots(lock_dir, slots=1, wait=5)
    with slots.slot():
        holding.set()
        release.wait(10)


def test_slots_are_per_node_across_processes(tmp_path):
    context = multiprocessing.get_context("fork")
    holding, release = context.Event(), context.Event()
    child = context.Process(target=_hold_in_child, args=(tmp_path, holding, release))
    child.start()
    try:
        assert holding.wait(10)
        with pytest.raises(RenderBusy):
            with RenderSlots(tmp_path, slots=1, wait=0.2).slot():
                pass
    finally:
        release.set()
        child.join(10)
    with RenderSlots(tmp_path, slots=1, wait=0.2).slot():  # freed when the child let go
        pass


def test_the_share_comes_from_the_configuration(tmp_path):
    config = Config(data_dir=tmp_path, render_slots=4, render_slots_per_process=2)
    slots = RenderSlots.from_config(config)
    assert (slots.slots, slots.per_process) == (4, 2)
    with pytest.raises(ValueError):
        Config(data_dir=tmp_path, render_slots_per_process=0)


def test_a_full_line_refuses_a_miss_at_once_and_renders_do_not_count_in_it(tmp_path):
    """Misses in place (looking up their image, or waiting) fill the line; the next one
    is refused without waiting, and a miss holding a slot has left the line."""
    slots = RenderSlots(tmp_path, slots=1, wait=5.0)
    assert slots.line_limit == 16
    with ExitStack() as held:
        held.enter_context(slots.place())
        held.enter_context(slots.slot())  # rendering: not in the line
        for _ in range(slots.line_limit):
            held.enter_context(slots.place())
        started = time.monotonic()
        with pytest.raises(RenderBusy):
            with slots.place():
                pass
        assert time.monotonic() - started < 1.0  # not after the 5 s wait
    with slots.place(), slots.slot():  # every place given back
        pass


def test_renders_without_usable_slot_files_are_not_held_in_the_line(tmp_path):
    """Slot files that cannot be used switch admission off: renders then run without a
    limit, and the line must not count them as waiting (else a 17th miss were refused)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    slots = RenderSlots(blocker, slots=1, wait=0.2)
    with ExitStack() as rendering:
        for _ in range(slots.line_limit + 1):
            rendering.enter_context(slots.place())
            rendering.enter_context(slots.slot())
