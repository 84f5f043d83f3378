"""Opening a model in the window: paint what is known at once, capture in a worker thread, go live when it is in.

1. A cached view snapshot of the model (capture/view_cache) is painted at once, read-only.
2. Otherwise a module tree known from the config (capture/module_trees: a preset's shipped tree, also for a local
   folder with a preset's config; the tree cached for a folder with that config) is painted at once: no torch needed.
3. Otherwise the worker instantiates the model on the meta device (this imports torch and transformers, seconds) and
   the window paints its module hierarchy (graph/module_tree) while torch.export runs. A known tree is checked
   against the one the worker derives and replaced if they differ; a folder's derived tree is cached for next time.
4. The captured model replaces the preview, keeping the composite the user opened; editing starts.
5. Then, between frames (slices of a few ms on the UI thread, so a drop is never held up by more than one), the views
   are derived and cached for the next open of this model (capture/view_cache); an edit or another open first stops it.
   On a 405B architecture this is ~2 s of work that used to come before editing could start.

The status bar shows what runs (the stage, a busy bar) and a Cancel button. Cancel brings back what was shown before
(or the empty window) at once; the worker stops at its next step (between stages, or at capture's next progress line:
torch.export itself cannot be interrupted) and leaves nothing behind: no module tree or view snapshot is cached for an
open that was cancelled. A failure brings back what was shown before and says why in one sentence. Every open has a
number: the signals of an open that a later open replaced are dropped (its worker stops at its next step), and captures
run one at a time (torch.export is not safe to run in two threads at once), skipping an open already replaced.
"""

from __future__ import annotations

import os
import threading
import time

from PySide6.QtCore import QObject, QTimer, Signal

from graphsurgeon.errors import GraphsurgeonError
from graphsurgeon.ui.worker_inbox import Inbox

_ONE_CAPTURE_AT_A_TIME = threading.Lock()


class Cancelled(BaseException):
    """Raised inside the worker at its next step after the user pressed Cancel; a BaseException, as Ctrl-C's
    KeyboardInterrupt is, so capture's fallbacks (`except Exception`: capture every layer instead) let it through."""


class _Signals(QObject):  # the worker's messages, emitted on the UI thread (worker_inbox); the int is the open's number
    stage = Signal(int, str)  # what the worker does now
    hierarchy = Signal(int, object, str)  # (graph.snapshot.ViewSnapshot of the modules, path)
    done = Signal(int, object, str)  # (CapturedModel, path)
    views_stored = Signal(str)  # the cache key the views of the model just opened were written under
    failed = Signal(int, str)  # one sentence


class Opener(QObject):
    """The open/capture side of one MainWindow."""

    preview_closed = Signal(str)  # an open ended without its capture shown (why): drops queued on it are discarded

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.signals = _Signals(self)
        self.inbox = Inbox(self, self.signals, stage=self._stage, hierarchy=self._hierarchy, done=self._done,
                           failed=self._failed)
        self.number = 0  # the current open; earlier opens' signals are ignored
        self.thread: threading.Thread | None = None
        self._cancel = threading.Event()  # set by cancel(): the current worker stops at its next step
        self.stopped: list[int] = []  # numbers of the opens whose worker stopped because they were cancelled
        self.active = False  # an open is in progress: its result has not been shown yet
        self._to_store: dict[int, str] = {}  # open number -> cache key its views are to be written under
        self.storing = None  # (open number, CapturedModel, key, steps) while its views are cached between frames
        self._before: tuple | None = None  # what was shown before a preview, restored if the capture fails
        self.showing = ""  # what the preview is: "cached views", "shipped module tree", "cached module tree",
        # "module tree built on meta"

    def open(self, source, *, meta: bool, path: str = "", eager_attention: bool = False) -> threading.Thread:
        from graphsurgeon.capture.module_trees import WHENCE, known_tree
        from graphsurgeon.capture.view_cache import cache_key, load_views
        from graphsurgeon.graph.snapshot import ViewSnapshot

        if self.active:
            self.preview_closed.emit(f"{self.window.controller.shown.source_name} was replaced by another open"
                                     if self.window.controller.shown is not None else "another open started")
        self.number += 1
        number = self.number
        self._cancel.set()  # an open still running for an earlier number stops too: it was replaced
        self._cancel = threading.Event()
        self.active = True
        key = cache_key(source, meta=meta, eager_attention=eager_attention)
        cached = load_views(key)
        known = known_tree(source) if cached is None else None
        shipped = known[0] if known is not None else None
        self._before = None
        self.showing = ""
        self._stage(number, f"opening {source} …")
        if cached is not None and path in cached.paths():
            self._show_preview(cached, path, "cached views")
            self._stage(number, f"capturing {source} with torch.export; showing its cached views, "
                                "a LoRA dropped now is applied when the capture is in …")
        elif known is not None:
            self._show_preview(ViewSnapshot(shipped), path, known[1])
            self._stage(number, f"opening {source}: its modules, {WHENCE[known[1]]}; importing torch and transformers "
                                "to capture it …")
        args = (number, source, meta, path, eager_attention, key, cached is None, shipped, self._cancel)
        self.thread = self.inbox.start(self._work, args, f"open {source}")
        return self.thread

    # ---- the worker thread -----------------------------------------------------------------------------
    def _work(self, number: int, *args) -> None:
        from graphsurgeon.graph.gc_pause import paused_gc

        # the collector paused for the whole open, its imports too: they make a million long-lived objects, and the
        # collections the UI thread's timer ran meanwhile walked them (1.3-1.8 s of a GPT-2 launch's wall time at
        # load ~6, one full collection 0.5 s of it); capture() alone paused only its own part
        with _ONE_CAPTURE_AT_A_TIME, paused_gc():
            if number == self.number:  # not replaced by a later open while it waited
                self._capture(number, *args)

    def _capture(self, number: int, source, meta: bool, path: str, eager: bool, key, uncached: bool,
                 shipped: dict | None, cancel: threading.Event) -> None:
        def emit(signal: str, *args) -> None:  # every step first checks Cancel
            if cancel.is_set():
                raise Cancelled
            self._emit(signal, *args)

        def progress(line: str) -> None:  # capture's own steps (torch.export, replicating layer i of n)
            emit("stage", number, f"{line} …")

        try:
            model = None
            if uncached and isinstance(source, (str, os.PathLike)):  # the module hierarchy, derived (or checked)
                if key is None and _hub_id_like(source):  # no key: a hub id not in the cache (or a bad source)
                    emit("stage", number, f"opening {source}: downloading it from the Hugging Face Hub (progress on "
                                          "the terminal) …")
                    from graphsurgeon.capture import resolve

                    resolve(source)  # the download, or the one sentence saying why there is none
                if shipped is None:
                    emit("stage", number, f"opening {source}: importing torch and transformers, building the model "
                                          "on the meta device …")
                from graphsurgeon.capture import build_model
                from graphsurgeon.graph.module_tree import module_tree_data
                from graphsurgeon.graph.snapshot import ViewSnapshot

                model = build_model(source, meta=True, eager_attention=eager)
                tree = module_tree_data(model, str(source))
                if cancel.is_set():
                    raise Cancelled
                if tree != shipped:  # nothing shown yet, or another transformers builds other modules than known
                    emit("hierarchy", number, ViewSnapshot(tree), path)
                    from graphsurgeon.capture.module_trees import remember_tree

                    remember_tree(source, tree)  # a local folder's next first frame needs no torch
            emit("stage", number, f"capturing {source} with torch.export: dataflow and shapes when it is in; a LoRA "
                                  "dropped on a Linear/Conv1D module meanwhile is applied then …")
            from graphsurgeon.capture import capture
            from graphsurgeon.graph.gc_pause import freeze_once

            freeze_once()  # torch and transformers, imported by now, out of every later collection

            cm = capture(source, meta=meta, eager_attention=eager, model=model if meta else None, progress=progress)
            emit("stage", number, f"deriving the views of {cm.model_class} …")
            cm.blocks().view(path)  # an unknown path fails here, before the window switches
            if key is not None and uncached:  # cached after editing starts (_store_step); next time it opens at once
                self._to_store[number] = key
            emit("done", number, cm, path)
        except Cancelled:
            self.stopped.append(number)
        except GraphsurgeonError as err:
            self._emit("failed", number, str(err))
        except Exception as err:  # noqa: BLE001 — shown to the user, never a crash of the window
            self._emit("failed", number, f"capture failed: {err}")

    def _write(self, key: str, data: dict) -> None:
        from graphsurgeon.capture.view_cache import store_views

        if store_views(key, data) is not None:
            self._emit("views_stored", key)

    def _emit(self, signal: str, *args) -> None:
        """From the worker: the UI thread emits it (worker_inbox); the worker never calls Qt."""
        self.inbox.post(signal, *args)

    # ---- on the UI thread ------------------------------------------------------------------------------
    def cancel(self) -> bool:
        """Stop the open in progress: what was shown before comes back now, the worker stops at its next step and
        caches nothing. False when nothing was being opened."""
        w = self.window
        if not self.active:
            return False
        self.active = False
        self._cancel.set()
        self.number += 1  # whatever the worker still signals is dropped
        self.window.show_work(None)
        self.showing = ""
        self._put_back()
        w.statusBar().showMessage("opening cancelled; " + ("the model shown before is back." if
                                  w.controller.shown is not None else "no model is open."), 8000)
        self.preview_closed.emit("the open was cancelled")
        return True

    def _stage(self, number: int, text: str) -> None:
        if number != self.number:
            return
        self.window.show_work(text)

    def _put_back(self) -> None:
        """The model shown before the preview (if a preview replaced it), as if the preview never was."""
        if self._before is None:
            return
        c = self.window.controller
        c.restore(self._before)
        self._before = None
        if c.shown is not None:
            self.window.refresh()
        else:  # no model was open: the empty window, no crumbs, no rows
            self.window.scene.rebuild()
            self.window.clear_crumbs()
            self.window.table.fill([])
            self.window.refresh_title()

    def _show_preview(self, snapshot, path: str, showing: str) -> None:
        c = self.window.controller
        if self._before is None:
            self._before = c.state()
        c.set_preview(snapshot, path if path in snapshot.paths() else "")
        self.showing = showing
        self.window.refresh(fit=True)

    def _hierarchy(self, number: int, snapshot, path: str) -> None:
        if number != self.number:
            return
        from graphsurgeon.capture.module_trees import WHENCE

        if self.showing in WHENCE:  # a known tree replaced: stay where the user went
            path = self.window.controller.path
        self._show_preview(snapshot, path, "module tree built on meta")

    def _done(self, number: int, cm, path: str) -> None:
        if number != self.number:
            return
        self.active = False
        self.window.show_work(None)
        self.showing = ""
        c = self.window.controller
        preview = c.preview if c.cm is None else None
        c.set_model(cm, path)
        while c.path:  # a composite the live model lacks (a module that runs no op) falls back to its parent
            try:
                c.view  # noqa: B018
                break
            except GraphsurgeonError:
                c.path = c.path.rpartition(".")[0]
        self._before = None
        # a cached preview showed these very views: keep the user's zoom; a module hierarchy had no dataflow: fit
        self.window.refresh(fit=preview is None or preview.modules_only)
        notes = "".join(f" · note: {n}" for n in cm.notes)  # also kept in the status bar's notes label
        self.window.statusBar().showMessage(f"{cm.model_class} captured: {cm.weights_note or cm.weights}{notes}", 15000)
        self.window.model_ready.emit()
        key = self._to_store.pop(number, None)
        if key is not None:
            from graphsurgeon.graph.snapshot import snapshot_steps

            self.storing = (number, cm, key, snapshot_steps(cm))
            QTimer.singleShot(0, self._store_step)

    SLICE_S = 0.008  # views derived per turn of the event loop: at most this long plus one view

    def _store_step(self) -> None:
        """Derive views of the model just opened for a few ms; when all are done, write them (view_cache)."""
        if self.storing is None:
            return
        number, cm, key, steps = self.storing
        try:
            gone = not self.window.isVisible() or self.window.controller.cm is not cm
        except RuntimeError:  # the window was deleted
            gone = True
        if gone or number != self.number or cm.version != 0:
            self.storing = None  # closed, edited, replaced or cancelled: a later open caches its unedited views
            return
        end = time.perf_counter() + self.SLICE_S
        for data in steps:
            if data is not None:  # written by a thread: json.dump yields the GIL between chunks, frames go on
                self.storing = None
                self.inbox.start(self._write, (key, data), "cache views")
                return
            if time.perf_counter() > end:
                break
        QTimer.singleShot(0, self._store_step)

    def _failed(self, number: int, message: str) -> None:
        if number != self.number:
            return
        self.active = False
        self.window.show_work(None)
        self.window.statusBar().clearMessage()
        self._put_back()  # the previous model comes back, as if the preview never was
        self.preview_closed.emit("the capture failed")
        self.window._error(message)


def _hub_id_like(source) -> bool:
    """`org/name` that is no local path: what resolve() looks up on the Hub."""
    return (isinstance(source, str) and source.count("/") == 1 and not source.startswith((".", "/", "~"))
            and not os.path.exists(os.path.expanduser(source)))
