"""Opening a model in the window: paint what is known at once, capture in a worker thread, go live when it is in.

1. A cached view snapshot of the model (capture/view_cache) is painted at once, read-only.
2. Otherwise a module tree known from the config (capture/module_trees: a preset's shipped tree, also for a local
   folder with a preset's config; the tree cached for a folder with that config) is painted at once: no torch needed.
3. Otherwise the worker instantiates the model on the meta device (this imports torch and transformers, seconds) and
   the window paints its module hierarchy (graph/module_tree) while torch.export runs. A known tree is checked
   against the one the worker derives and replaced if they differ; a folder's derived tree is cached for next time.
4. The captured model replaces the preview, keeping the composite the user opened; editing starts.

A progress bar and a stage line show what runs. A failure brings back what was shown before and says why in one
sentence. Every open has a number: the signals of an open that a later open replaced are dropped, and captures run
one at a time (torch.export is not safe to run in two threads at once), skipping an open already replaced.
"""

from __future__ import annotations

import os
import threading

from PySide6.QtCore import QObject, Signal

from graphsurgeon.errors import GraphsurgeonError

_ONE_CAPTURE_AT_A_TIME = threading.Lock()


class _Signals(QObject):  # emitted from the worker thread, delivered on the UI thread; the int is the open's number
    stage = Signal(int, str)  # what the worker does now
    hierarchy = Signal(int, object, str)  # (graph.snapshot.ViewSnapshot of the modules, path)
    done = Signal(int, object, str)  # (CapturedModel, path)
    failed = Signal(int, str)  # one sentence


class Opener(QObject):
    """The open/capture side of one MainWindow."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self.signals = _Signals()
        self.signals.stage.connect(self._stage)
        self.signals.hierarchy.connect(self._hierarchy)
        self.signals.done.connect(self._done)
        self.signals.failed.connect(self._failed)
        self.number = 0  # the current open; earlier opens' signals are ignored
        self.thread: threading.Thread | None = None
        self._before: tuple | None = None  # what was shown before a preview, restored if the capture fails
        self.showing = ""  # what the preview is: "cached views", "shipped module tree", "cached module tree",
        # "module tree built on meta"

    def open(self, source, *, meta: bool, path: str = "", eager_attention: bool = False) -> threading.Thread:
        from graphsurgeon.capture.module_trees import WHENCE, known_tree
        from graphsurgeon.capture.view_cache import cache_key, load_views
        from graphsurgeon.graph.snapshot import ViewSnapshot

        self.number += 1
        number = self.number
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
                                "editing starts when the capture is in …")
        elif known is not None:
            self._show_preview(ViewSnapshot(shipped), path, known[1])
            self._stage(number, f"opening {source}: its modules, {WHENCE[known[1]]}; importing torch and transformers "
                                "to capture it …")
        args = (number, source, meta, path, eager_attention, key, cached is None, shipped)
        self.thread = threading.Thread(target=self._work, args=args, daemon=True, name=f"open {source}")
        self.thread.start()
        return self.thread

    # ---- the worker thread -----------------------------------------------------------------------------
    def _work(self, number: int, *args) -> None:
        with _ONE_CAPTURE_AT_A_TIME:
            if number == self.number:  # not replaced by a later open while it waited
                self._capture(number, *args)

    def _capture(self, number: int, source, meta: bool, path: str, eager: bool, key, uncached: bool,
                 shipped: dict | None) -> None:
        emit = self._emit
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
                if tree != shipped:  # nothing shown yet, or another transformers builds other modules than known
                    emit("hierarchy", number, ViewSnapshot(tree), path)
                    from graphsurgeon.capture.module_trees import remember_tree

                    remember_tree(source, tree)  # a local folder's next first frame needs no torch
            emit("stage", number, f"capturing {source} with torch.export: dataflow, shapes and editing when it is in …")
            from graphsurgeon.capture import capture

            cm = capture(source, meta=meta, eager_attention=eager, model=model if meta else None)
            emit("stage", number, f"deriving the views of {cm.model_class} …")
            cm.blocks().view(path)  # an unknown path fails here, before the window switches
            if key is not None and uncached:  # ~0.2 s on gpt2; next time this model opens at once
                from graphsurgeon.capture.view_cache import store_views
                from graphsurgeon.graph.snapshot import take_snapshot

                store_views(key, take_snapshot(cm))
            emit("done", number, cm, path)
        except GraphsurgeonError as err:
            emit("failed", number, str(err))
        except Exception as err:  # noqa: BLE001 — shown to the user, never a crash of the window
            emit("failed", number, f"capture failed: {err}")

    def _emit(self, signal: str, *args) -> None:
        """Emit from the worker; once the window is gone (the app quit mid-capture) there is no one to tell."""
        try:
            getattr(self.signals, signal).emit(*args)
        except RuntimeError:  # the signals' QObject was deleted with the window
            pass

    # ---- on the UI thread ------------------------------------------------------------------------------
    def _stage(self, number: int, text: str) -> None:
        if number != self.number:
            return
        w = self.window
        w.progress.show()
        w.progress_label.setText(text)
        w.progress_label.show()

    def _end(self) -> None:
        self.window.progress.hide()
        self.window.progress_label.hide()

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
        self._end()
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

    def _failed(self, number: int, message: str) -> None:
        if number != self.number:
            return
        self._end()
        self.window.statusBar().clearMessage()
        if self._before is not None:  # the previous model comes back, as if the preview never was
            c = self.window.controller
            c.restore(self._before)
            self._before = None
            if c.shown is not None:
                self.window.refresh()
            else:
                self.window.scene.rebuild()
                self.window.refresh_title()
        self.window._error(message)


def _hub_id_like(source) -> bool:
    """`org/name` that is no local path: what resolve() looks up on the Hub."""
    return (isinstance(source, str) and source.count("/") == 1 and not source.startswith((".", "/", "~"))
            and not os.path.exists(os.path.expanduser(source)))
