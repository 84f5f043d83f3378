"""graph/gc_pause: the collector is off inside nested and concurrent pauses and comes back only as it was."""

from __future__ import annotations

import gc
import threading

from graphsurgeon.graph.gc_pause import keep_off, paused_gc


def test_nested_and_threaded_pauses_restore_the_collector():
    was = gc.isenabled()  # off once an editor window collects on its UI thread (ui/ui_gc)
    gc.enable()
    inside = threading.Event()
    leave = threading.Event()

    def worker():
        with paused_gc():
            inside.set()
            leave.wait(10)

    t = threading.Thread(target=worker)
    with paused_gc():
        t.start()
        inside.wait(10)
        with paused_gc():
            assert not gc.isenabled()
    assert not gc.isenabled()  # the worker's pause still holds
    leave.set()
    t.join(10)
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # off before: stays off
    finally:
        (gc.enable if was else gc.disable)()


def test_a_command_that_exits_freezes_what_it_made():
    was = gc.isenabled()
    gc.enable()
    made = [[] for _ in range(3)]
    try:
        with paused_gc(exiting=True):
            made.append(made)  # a cycle made inside the pause
        assert gc.isenabled() and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        (gc.enable if was else gc.disable)()


def test_kept_off_during_a_pause_stays_off_after_it():
    """The editor turns automatic collection off for good (ui/ui_gc) while a pause that began before its window
    (a capture) is in progress: the pause's end must not turn it back on."""
    was = gc.isenabled()
    gc.enable()
    try:
        with paused_gc():
            keep_off()
        assert not gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()


def test_the_first_capture_freezes_what_is_alive_once(monkeypatch):
    """freeze_once (called by the editor's open once torch and transformers are imported) freezes on its first call
    only: a later open's previous model must stay collectable."""
    import graphsurgeon.graph.gc_pause as gc_pause

    monkeypatch.setattr(gc_pause, "_FROZE", False)
    frozen = []
    monkeypatch.setattr(gc_pause.gc, "freeze", lambda: frozen.append(1))
    gc_pause.freeze_once()
    gc_pause.freeze_once()
    assert frozen == [1]
