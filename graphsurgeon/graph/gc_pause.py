"""Python's cyclic garbage collector paused while a capture or its views are built.

Capturing and deriving allocate millions of long-lived objects (fx nodes, their meta, fake tensors, semantic maps);
each allocation burst triggers a collection that walks the whole growing heap, and none of them frees much: a
5,000-layer `inspect --meta --tree` spent ~27 % of its CPU time in the collector (44.7 → 32.4 CPU s paused,
benchmarks/capture.py). Reference counting still frees everything that is not in a cycle; the cycles left meanwhile
are collected once the collector is back on. Nested and concurrent uses (the editor's worker while the window
derives a view) share one pause: the collector comes back when the last one ends, and only if it was on before.
"""

from __future__ import annotations

import gc
import threading
from contextlib import contextmanager

_LOCK = threading.Lock()
_DEPTH = 0
_WAS_ENABLED = False


def pausing() -> bool:
    """A pause is in progress (in any thread)."""
    return _DEPTH > 0


def keep_off() -> None:
    """Automatic collection off from now on, also when the pauses in progress end (the editor collects on its UI
    thread: ui/ui_gc.py)."""
    global _WAS_ENABLED
    with _LOCK:
        _WAS_ENABLED = False
        gc.disable()


_FROZE = False


def freeze_once() -> None:
    """Once per process, when the first capture has imported torch and transformers: everything alive is moved out of
    the collector's generations (`gc.freeze`). Those million objects live as long as the process; without this, the
    first collections after a paused open walked them all on the editor's UI thread (~2 s while a drop waited, on a
    loaded machine), and every full collection after that walked them again. Garbage in cycles made before it is kept."""
    global _FROZE
    with _LOCK:
        if not _FROZE:
            _FROZE = True
            gc.freeze()


@contextmanager
def paused_gc(exiting: bool = False):
    """No cyclic garbage collection inside this block (reference counting still frees memory).

    exiting: the process ends after the block (a command line run): what it made is frozen out of later collections
    (`gc.freeze`), so the collector coming back — and the interpreter's exit — do not walk the whole heap once more
    (~10 CPU s after a 5,000-layer inspect printed its tree)."""
    global _DEPTH, _WAS_ENABLED
    with _LOCK:
        if _DEPTH == 0:
            _WAS_ENABLED = gc.isenabled()
            gc.disable()
        _DEPTH += 1
    try:
        yield
    finally:
        with _LOCK:
            if exiting:
                gc.freeze()
            _DEPTH -= 1
            if _DEPTH == 0 and _WAS_ENABLED:
                gc.enable()
