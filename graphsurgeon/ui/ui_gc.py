"""Python's cyclic garbage collector run on the UI thread only, once the editor has a window.

A collection runs in whichever thread allocates when a threshold is passed. The editor's workers (capture, export)
allocate millions of objects, so most collections ran there, and a collection frees the Qt objects Python owns that
sit in reference cycles (a closed window's scene, the items of a rebuilt view): deleted off the UI thread while the UI
thread paints, they crash the process (seen: a segfault inside the event loop while a worker captured). So the editor
turns automatic collection off and collects on a timer of the UI thread, the generation the thresholds say is due,
as the interpreter would have; not while a capture pauses the collector (graph/gc_pause)."""

from __future__ import annotations

import gc

from PySide6.QtCore import QCoreApplication, QTimer

from graphsurgeon.graph.gc_pause import keep_off, pausing

INTERVAL_MS = 250
_timer: QTimer | None = None


def collect_on_ui_thread() -> None:
    """From now on, collect only on this (the UI) thread; once per process, with the QApplication made."""
    global _timer
    if _timer is not None:
        return
    keep_off()  # also when a pause that began before the window ends
    _timer = QTimer(QCoreApplication.instance())
    _timer.setInterval(INTERVAL_MS)
    _timer.timeout.connect(collect_due)
    _timer.start()


def installed() -> bool:
    return _timer is not None


def collect_due() -> int:
    """Collect the oldest generation whose threshold is passed (on the calling thread); the number freed."""
    gc.disable()  # a pause that began before the editor's window would turn it back on when it ends
    if pausing():
        return 0
    counts, thresholds = gc.get_count(), gc.get_threshold()
    due = [g for g in range(3) if counts[g] > thresholds[g]]
    return gc.collect(due[-1]) if due else 0
