"""File → Export folder… off the UI thread: the status bar shows each step (checking, weights, writing, the self-check,
moving into place) with Cancel. Cancel stops the export at its next step and leaves nothing behind (export_folder
removes its temp folder and writes nothing into place); the graph is not edited while the export reads it."""

from __future__ import annotations

import threading

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QMessageBox

from graphsurgeon.errors import GraphsurgeonError
from graphsurgeon.ui.opening import Cancelled
from graphsurgeon.ui.worker_inbox import Inbox


class _Signals(QObject):  # the export thread's messages, emitted on the UI thread (worker_inbox)
    stage = Signal(str)
    finished = Signal(object, str)  # (ExportResult, "") when written; (None, why) when not: "cancelled" or a sentence


class ExportTask(QObject):
    """The export in progress of one window's Operate (at most one at a time)."""

    def __init__(self, ops) -> None:
        super().__init__(ops)
        self.ops = ops
        self.signals = _Signals(self)
        self.inbox = Inbox(self, self.signals, stage=self._stage, finished=self._finished)
        self.running = False
        self.dialogs = True  # the result or the refusal in a message box (tests turn this off: offscreen it blocks)
        self.result = None  # the last ExportResult
        self.outcome = ""  # the last export's end: "written", "cancelled" or the sentence that refused it
        self._cancel = threading.Event()
        self._out = ""

    def start(self, out_dir) -> threading.Thread | None:
        """Export the model shown into `out_dir` in a thread; None (and a status line) when one is running."""
        if self.running:
            self.ops.say("an export is being written; wait for it or press Cancel.")
            return None
        self.running, self._cancel, self._out = True, threading.Event(), str(out_dir)
        self.ops.set_editable(False)
        self._stage(f"exporting to {out_dir} …")
        args = (self.ops.session, out_dir, self._cancel)
        return self.inbox.start(self._work, args, "export")

    def cancel(self) -> bool:
        """Stop the export at its next step (it then removes what it wrote); False when none runs."""
        if not self.running or self._cancel.is_set():
            return False
        self._cancel.set()
        self._stage("cancelling the export at its next step; nothing will be left behind …")
        return True

    def _work(self, session, out_dir, cancel: threading.Event) -> None:
        def progress(text: str) -> None:
            if cancel.is_set():
                raise Cancelled
            self._emit("stage", f"{text} …")

        try:
            result = session.export(out_dir, progress=progress)
        except Cancelled:
            self._emit("finished", None, "cancelled")
        except GraphsurgeonError as err:
            self._emit("finished", None, str(err))
        except Exception as err:  # noqa: BLE001 - told to the user, never a crash of the window
            self._emit("finished", None, f"export failed: {err}")
        else:
            self._emit("finished", result, "")

    def _emit(self, signal: str, *args) -> None:
        self.inbox.post(signal, *args)  # emitted on the UI thread (worker_inbox); the worker never calls Qt

    # ---- on the UI thread ----------------------------------------------------------------------------
    def _stage(self, text: str) -> None:
        self.ops.window.show_work(text)

    def _finished(self, result, why: str) -> None:
        w = self.ops.window
        self.running = False
        w.show_work(None)
        self.ops.set_editable(True)
        self.result, self.outcome = result, why or "written"
        if why == "cancelled":
            self.ops.say(f"export cancelled; nothing was written to {self._out}.")
            return
        if why:
            self.ops.say(why)
            if self.dialogs:
                QMessageBox.warning(w, "Export", why)
            return
        self.ops.say(f"exported {len(result.files)} files to {result.folder}; {result.check}")
        if self.dialogs:
            notes = "".join(f"\n\nNote: {n}" for n in result.notes)
            QMessageBox.information(w, "Exported", f"Wrote to {result.folder}:\n" + "\n".join(result.files) +
                                    f"\n\n{result.check}.\n\nTrain: cd there && python train.py --synthetic --steps 50"
                                    + notes)
