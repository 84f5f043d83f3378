"""Wires the operate gesture into part 1's MainWindow: palette, drops on the view, undo stack, budget, diagnostics, files.

The edit session (and with it surgery and torch) is imported when a captured model is first operated on, so the
window paints before torch is loaded. The view is not subclassed: an event filter on its viewport takes the palette's drags (so part 1's scene is
untouched); ids under the cursor come from the items' `block_id` / `link_id`.
"""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, Qt, QTimer
from PySide6.QtGui import QKeySequence, QUndoCommand, QUndoGroup, QUndoStack
from PySide6.QtWidgets import QDockWidget, QFileDialog, QLabel, QMessageBox, QUndoView

from graphsurgeon.errors import GraphsurgeonError
from graphsurgeon.ui.operate.diagnostics import ProblemList
from graphsurgeon.ui.operate.export_task import ExportTask
from graphsurgeon.ui.operate.lora_panel import LoRAEditor
from graphsurgeon.ui.operate.palette import MIME_TYPE, Palette, decode_mime
from graphsurgeon.ui.operate.queued import DropQueue


class _Edit(QUndoCommand):
    """Wraps one session edit already applied; undo/redo go through the session's history."""

    def __init__(self, ops: "Operate", text: str) -> None:
        super().__init__(text)
        self.ops, self._first = ops, True

    def redo(self) -> None:
        if self._first:
            self._first = False
            return
        self.ops.session.redo()
        self.ops.changed()

    def undo(self) -> None:
        self.ops.session.undo()
        self.ops.changed()


class Operate(QObject):
    """The operate side of one MainWindow."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self.window = window
        self._session = None  # session.EditSession of the model shown
        self._candidates: dict = {}
        self.validated_version: int | None = None  # cm.version the diagnostics panel shows
        self.last_message = ""
        self.palette = Palette()
        self._dock("Blocks", self.palette, Qt.LeftDockWidgetArea)
        self.stack = QUndoStack(self)  # the edits of the model shown
        self.export_task = ExportTask(self)  # File → Export folder… in a thread, with the status bar's Cancel
        self.queue = DropQueue(self)  # drops made on a preview, applied when its capture is in (its own stack)
        self.undo_group = QUndoGroup(self)  # Undo / Redo / History act on the active one of the two stacks
        for stack in (self.stack, self.queue.stack):
            self.undo_group.addStack(stack)
        self.stack.setActive(True)
        self.history_view = QUndoView(self.undo_group)
        self._dock("History", self.history_view, Qt.LeftDockWidgetArea)
        self.diagnostics = ProblemList(window)  # one wrapped row per problem, there until the problem is fixed
        self._dock("Diagnostics", self.diagnostics, Qt.BottomDockWidgetArea)
        self.editor = LoRAEditor(self)
        self._dock("LoRA block", self.editor, Qt.RightDockWidgetArea)
        window.scene.selectionChanged.connect(self.editor.load)
        window.view_changed.connect(self.editor.load)  # into or out of a LoRA block, and after every edit
        window.view_changed.connect(self._active_history)
        window.model_ready.connect(self.update_status)
        window.model_ready.connect(self.offer_recovery)
        window.model_ready.connect(self.queue.apply)
        window.opener.preview_closed.connect(self.queue.discard)
        window.scene.signals.wire_started.connect(self.wire_started)
        window.scene.signals.wire.connect(self.wire)
        self.budget_label = QLabel()
        window.statusBar().addPermanentWidget(self.budget_label)
        window.view.setAcceptDrops(True)
        window.view.viewport().setAcceptDrops(True)
        self._viewport = window.view.viewport()
        self._viewport.installEventFilter(self)
        window.installEventFilter(self)
        self.undo_actions = (undo, redo) = (self.undo_group.createUndoAction(self, "Undo"),
                                            self.undo_group.createRedoAction(self, "Redo"))
        undo.setShortcut(QKeySequence.Undo)
        redo.setShortcut(QKeySequence(Qt.CTRL | Qt.SHIFT | Qt.Key_Z))
        for a in (undo, redo):
            window.edit_menu.addAction(a)
            window.addAction(a)
        delete = window.edit_menu.addAction("Delete LoRA block", self.delete_selected)
        delete.setShortcut(QKeySequence.Delete)
        window.addAction(delete)
        f = window.file_menu
        f.addSeparator()
        f.addAction("Save recipe…", self._save_recipe_dialog)
        f.addAction("Open recipe…", self._open_recipe_dialog)
        f.addAction("Export folder…", self._export_dialog)
        self.recovery: dict | None = None  # the autosave of the model shown, when its last session did not close
        self.recover_action = f.addAction("Recover autosaved session", self.recover)
        self.offer_recovery()
        self.update_status()

    def ask(self, title: str, question: str) -> bool:
        """Yes/no question (tests replace this attribute; offscreen a modal box would block)."""
        return QMessageBox.question(self.window, title, question) == QMessageBox.Yes

    def offer_recovery(self) -> None:
        """Offer (never force) the autosave of the model now shown: a File-menu entry and a status message.

        Autosaves are kept per model (source, meta, eager attention), so opening model B never offers A's edits."""
        cm = self.window.controller.cm
        problem = None
        if cm is None or cm.loras:
            self.recovery = None
        else:
            from graphsurgeon.ui.operate.session import read_recovery

            self.recovery, problem = read_recovery(cm)
        self.recover_action.setVisible(self.recovery is not None)
        if problem is not None:
            self.say(problem)
        if self.recovery is not None:
            steps = len(self.recovery["recipe"]["steps"])
            self.say(f"an unsaved session on {self.recovery['source']} ({steps} edit(s)) can be recovered: "
                     "File → Recover autosaved session.")

    def recover(self) -> bool:
        """Replay the offered autosave onto the open model as one undoable edit."""
        if self.recovery is None or not self.live():
            return False
        data, self.recovery = self.recovery, None
        self.recover_action.setVisible(False)
        return self.run_edit(lambda: self.session.recover(data))

    def _dock(self, title, widget, area) -> QDockWidget:
        d = QDockWidget(title, self.window)
        d.setWidget(widget)
        self.window.addDockWidget(area, d)
        return d

    def live(self) -> bool:
        """True when a captured model is open; a preview shown while capturing cannot be edited (and says so), nor a
        model an export is reading."""
        if self.export_task.running:
            self.say("an export is being written from this model; edit when it is done (or press Cancel).")
            return False
        if self.window.controller.cm is not None:
            return True
        self.say("the model is still being captured; editing starts when it is ready.")
        return False

    def _active_history(self) -> None:
        """Undo / Redo / History act on the queued drops while a preview is shown, on the model's edits otherwise (a
        preview that replaced a model never undoes that model's edits unseen)."""
        c = self.window.controller
        (self.queue.stack if c.cm is None and c.preview is not None else self.stack).setActive(True)

    def set_editable(self, on: bool) -> None:
        """Undo / redo (keys, menu, the History list) off while an export reads the graph (edits ask `live()`)."""
        self.history_view.setEnabled(on)
        undo, redo = self.undo_actions
        undo.setEnabled(on and self.stack.canUndo())
        redo.setEnabled(on and self.stack.canRedo())

    @property
    def session(self):
        """The EditSession of the model the window shows (a new model starts a new session and history)."""
        from graphsurgeon.ui.operate.session import EditSession

        cm = self.window.controller.cm
        if self._session is None or self._session.cm is not cm:
            self._session = EditSession(cm, later=lambda fn: QTimer.singleShot(0, fn))  # autosave after the frame
            self.stack.clear()
        return self._session

    # ---- drag and drop ------------------------------------------------------------------------
    def eventFilter(self, obj, event) -> bool:
        t = event.type()
        if obj is self.window and t == QEvent.Close:
            if self._confirm_close():
                return False
            event.ignore()  # eating the event is not enough: an accepted QCloseEvent still closes the window
            return True
        if obj is not self._viewport or t not in (QEvent.DragEnter, QEvent.DragMove, QEvent.Drop,
                                                                QEvent.DragLeave):
            return False
        if t == QEvent.DragLeave:
            self.window.scene.clear_targets()
            return True
        mime = event.mimeData()
        if mime is None or not mime.hasFormat(MIME_TYPE):
            return False
        queued = self.queue.accepts()  # a preview: drops on its projections are queued until the capture is in
        if not queued and not self.live():
            event.ignore()
            return True
        payload = decode_mime(mime, event.modifiers())
        if t == QEvent.DragEnter:
            self.queue.drag_entered() if queued else self.drag_entered()
            event.acceptProposedAction()
            return True
        pos = event.position().toPoint()
        hit = self.id_at(pos)
        if t == QEvent.DragMove:
            (self.queue.drag_moved if queued else self.drag_moved)(hit, self.window.view.mapToScene(pos))
            event.acceptProposedAction()
            return True
        self.window.scene.clear_targets()
        self.drop(hit, payload, bool(payload.get("every_layer")))
        event.acceptProposedAction()
        return True

    def drag_entered(self) -> None:
        """Every place the dragged LoRA may go glows (q / v slices of a fused projection tagged); the rest dims."""
        self._candidates = self.session.candidates(self.window.controller.path)
        self._refusals: dict[str, str] = {}
        self.window.scene.show_targets({i: (t.role if t.is_slice else "") for i, t in self._candidates.items()})

    def drag_moved(self, hit: str | None, at) -> None:
        """Over a target: it lights up and the status bar says what the drop does; elsewhere "not here: why" at the cursor."""
        if hit is None or hit in self._candidates:
            self.window.scene.hover(hit, "", at)
            t = self._candidates.get(hit) if hit else None
            self.say(f"drop: LoRA on {t.module} {t.role}" if t is not None else "")
            return
        if hit not in self._refusals:
            self._refusals[hit] = self.session.why_not(self.window.controller.path, hit)
        reason = self._refusals[hit]
        self.window.scene.hover(hit, reason, at)
        self.say(f"not here: {reason}")

    def id_at(self, pos) -> str | None:
        """The output port, block or link id under a viewport position (ports, then blocks, win over links)."""
        return self.window.scene.id_at(self.window.view.mapToScene(pos)) or None

    def drop(self, id: str | None, payload: dict, every_layer: bool = False) -> bool:
        """Insert at `id` (on a preview: queue it, see queued.py); a refusal changes nothing and says why. True when
        something was inserted or queued."""
        path = self.window.controller.path
        queued = self.queue.accepts()
        if not queued and not self.live():
            return False
        if id is None:
            self.say("drop onto a highlighted block or link (a Linear/Conv1D output, or GPT-2's q/v slice).")
            return False
        from graphsurgeon.surgery.spec import LoRAConfig

        kind = payload.get("kind", "add_lora")
        try:
            config = LoRAConfig(r=int(payload["r"]), alpha=float(payload["alpha"]), dropout=float(payload["dropout"]))
            if queued:
                return self.queue.add(id, kind, config, every_layer)
            entry = self.session.drop(path, id, kind=kind, config=config, every_layer=every_layer)
        except (GraphsurgeonError, ValueError) as e:
            self.say(str(e))
            return False
        self.stack.push(_Edit(self, entry.text))
        self.changed()
        self.say(entry.text)
        return True

    # ---- wiring a bare LoRA Layer's output -------------------------------------------------------
    def _bare_block(self, port_id: str) -> str | None:
        """The bare LoRA Layer whose output port `port_id` is, if it is one."""
        from graphsurgeon.ui.scene import port_block

        cm = self.window.controller.cm
        bid = port_block(port_id)
        path = bid[2:] if bid.startswith("m:") else ""
        block = cm.loras.get(path) if cm is not None else None
        return path if block is not None and block.kind == "bare" else None

    def wire_started(self, port_id: str) -> None:
        """Light up the links and outputs the wire may end on."""
        path = self._bare_block(port_id)
        if path is None:
            return
        ok = self.session.connect_candidates(self.window.controller.path, path)
        self.window.scene.show_targets({i: "" for i in ok}, keep=(f"m:{path}",))  # the right shape glows, the rest dims
        self.say(f"release on a highlighted output or link to add {path}'s output onto it." if ok else
                 f"nothing in this view can take {path}'s output; open the composite that holds its target.")

    def wire(self, port_id: str, onto_id: str) -> bool:
        """A wire was released on `onto_id`: connect the bare LoRA Layer there (one undoable edit)."""
        self.window.scene.clear_targets()
        if not self.live():
            return False
        path = self._bare_block(port_id)
        if path is None:
            self.say("only a bare LoRA Layer's output can be wired by hand; drop \"LoRA Layer\" from the palette first.")
            return False
        if not onto_id:
            self.say("release the wire on a link or on a block's output.")
            return False
        c = self.window.controller
        return self.run_edit(lambda: self.session.connect(c.path, path, onto_id))

    # ---- after every edit ------------------------------------------------------------------
    def changed(self) -> None:
        c = self.window.controller
        while c.path:  # an undo may remove the composite on screen (inside a LoRA block): show its parent
            try:
                c.view  # noqa: B018 - derived once per version: refresh below reuses it
                break
            except GraphsurgeonError:
                c.path = c.path.rpartition(".")[0]
        self.window.refresh(fit=False)  # view_changed: the LoRA panel shows the values after this edit/undo/redo
        self.update_status()

    def update_status(self) -> None:
        """Budget in the status bar now; full validation right after the frame is painted (it takes ~0.6 s on
        gpt2, the local check already ran at insertion), so a drop repaints within the frame budget."""
        if self.window.controller.cm is None:
            return
        b = self.session.budget()
        pct = b.percent() if callable(b.percent) else b.percent
        self.budget_label.setText(f"trainable {b.trainable:,} / total {b.total:,} ({pct:.4f}%)")
        QTimer.singleShot(0, self.validate_now)

    def validate_now(self) -> list:
        """Full validation of the current graph into the diagnostics panel and red marks (skipped if current)."""
        if self.window.controller.cm is None:  # a preview replaced the model before this ran
            return []
        cm = self.session.cm
        if self.validated_version != cm.version:
            self.diagnostics.show_problems(self.session.diagnostics() if cm.loras else [])
            self.validated_version = cm.version
        return self.diagnostics.problems

    def say(self, text: str) -> None:
        self.last_message = text
        self.window.statusBar().showMessage(text, 8000)

    # ---- block edits ---------------------------------------------------------------------------
    def selected_lora(self) -> str | None:
        """The LoRA block selected on the canvas; else the one the view is inside (its composite or deeper)."""
        c = self.window.controller
        if c.cm is None:
            return None
        loras = self.session.cm.loras
        for bid in self.window.scene.selected_ids():
            path = bid[2:] if bid.startswith("m:") else ""
            if path in loras:
                return path
        return next((p for p in loras if c.path == p or c.path.startswith(p + ".")), None)

    def edit_selected(self, **changes) -> bool:
        path = self.selected_lora()
        return path is not None and self.run_edit(lambda: self.session.edit(path, **changes))

    def delete_selected(self) -> bool:
        path = self.selected_lora()
        if path is None:
            self.say("select an inserted LoRA block to delete it.")
            return False
        return self.run_edit(lambda: self.session.delete(path))

    def run_edit(self, fn) -> bool:
        if not self.live():
            return False
        try:
            entry = fn()
        except (GraphsurgeonError, ValueError) as e:
            self.say(str(e))
            return False
        self.stack.push(_Edit(self, entry.text))
        self.changed()
        return True

    # ---- files -------------------------------------------------------------------------------
    def open_recipe(self, file) -> bool:
        """Replay the recipe `file` onto the open model: one undoable edit, or a one-sentence warning and no change."""
        if not self.live():
            return False
        try:
            entry = self.session.open_recipe(file)
        except GraphsurgeonError as e:
            self.say(str(e))
            QMessageBox.warning(self.window, "Open recipe", str(e))
            return False
        self.stack.push(_Edit(self, entry.text))
        self.changed()
        self.say(entry.text)
        return True

    def _save_recipe_dialog(self) -> None:
        if not self.live():
            return
        name, _ = QFileDialog.getSaveFileName(self.window, "Save recipe", "surgery.json", "Recipe (*.json)")
        if name:
            self.session.save_recipe(name)

    def _open_recipe_dialog(self) -> None:
        if not self.live():
            return
        name, _ = QFileDialog.getOpenFileName(self.window, "Open recipe", "", "Recipe (*.json)")
        if name:
            self.open_recipe(name)

    def export(self, out_dir):
        result = self.session.export(out_dir)
        self.say(f"exported {len(result.files)} files to {result.folder}; {result.check}")
        return result

    def _export_dialog(self) -> None:
        if not self.live():
            return
        folder = QFileDialog.getExistingDirectory(self.window, "Export into folder")
        if folder:
            self.export_task.start(folder)  # progress in the status bar with Cancel; the result in a message box

    def _confirm_close(self) -> bool:
        if self._session is not None:
            self._session.autosave_if_due()  # an edit's autosave not written yet: written before asking
        if self._session is None or not self._session.dirty:
            if self._session is not None:
                self._session.clear_autosave()
            return True
        if self.ask("Unsaved edits", "Discard the unsaved edits and close?"):
            self._session.clear_autosave()
            return True
        return False
