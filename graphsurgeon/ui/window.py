"""MainWindow: crumb bar, graph view, shape table, side panel, legend, find, open/export; capture off the UI thread."""

from __future__ import annotations

import threading

from PySide6.QtCore import QRectF, QSize, Qt, Signal
from PySide6.QtGui import QImage, QKeySequence, QPainter
from PySide6.QtWidgets import (QDockWidget, QFileDialog, QGraphicsView, QHBoxLayout, QInputDialog,
                               QLabel, QMainWindow, QMessageBox, QProgressBar, QPushButton, QTextEdit, QVBoxLayout, QWidget)

from graphsurgeon.errors import GraphsurgeonError
from graphsurgeon.ui.controller import Controller
from graphsurgeon.ui.legend import Legend
from graphsurgeon.ui.minimap import Minimap
from graphsurgeon.ui.opening import Opener
from graphsurgeon.ui.code_panel import install as install_code_panel
from graphsurgeon.ui.operate import install as install_operate
from graphsurgeon.ui.scene import GraphScene, port_block
from graphsurgeon.ui.shape_table import ShapeTable
from graphsurgeon.ui.ui_gc import collect_on_ui_thread

PRESETS = ["gpt2", "bert-base-uncased", "tiny-gpt2", "tiny-bert"]
SHAPES_HEIGHT = 290  # the shape table's dock: ~11 rows at 1600×1000 (it was 190: ~5 rows)
READABLE_SCALE = 0.35  # fitting never zooms out below this (a bigger view opens left-aligned); titles stay ≥ 10 px by level of detail


def capture_notes(cm) -> list[str]:
    """What capture chose or could not record (cm.notes, as the CLI prints them), and random weights when they are."""
    notes = list(cm.notes)
    if "random" in (cm.weights, cm.materializes_to) or "partial" in (cm.weights, cm.materializes_to):
        note = cm.materialize_note if cm.weights == "meta" else cm.weights_note
        if note and note not in notes:
            notes.append(note)
    return notes


class GraphView(QGraphicsView):
    """Zoom with the wheel, pan by dragging the background, F fits."""

    def __init__(self, scene) -> None:
        super().__init__(scene)
        self.setRenderHint(QPainter.Antialiasing)
        self.setDragMode(QGraphicsView.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.AnchorUnderMouse)

    def wheelEvent(self, event) -> None:
        f = 1.15 if event.angleDelta().y() > 0 else 1 / 1.15
        self.scale(f, f)

    def fit(self, min_scale: float = READABLE_SCALE) -> None:
        """Fit the view to the blocks; with min_scale, never zoom out below it (text stays readable), left-aligned."""
        r = self.scene().itemsBoundingRect()
        if r.isEmpty():
            return
        self.fitInView(r.adjusted(-20, -20, 20, 20), Qt.KeepAspectRatio)
        if self.transform().m11() > 1.0:  # a small view stays at 1:1 rather than blown up
            self.resetTransform()
            self.centerOn(r.center())
        elif self.transform().m11() < min_scale:
            self.resetTransform()
            self.scale(min_scale, min_scale)
            self.centerOn(r.left() + self.viewport().width() / (2 * min_scale) - 20, r.center().y())


class MainWindow(QMainWindow):
    model_ready = Signal()  # a captured model is now shown live (after open_model, or replacing its preview)
    view_changed = Signal()  # the scene was rebuilt: another composite, or the same one after an edit

    def __init__(self, cm=None, path: str = "") -> None:
        super().__init__()
        collect_on_ui_thread()  # Qt objects in reference cycles are freed on this thread, never a worker's
        self.resize(1600, 1000)
        self.controller = Controller(cm, path)
        self.scene = GraphScene(self.controller)
        self.view = GraphView(self.scene)
        self.minimap = Minimap(self.view)
        self.crumb_buttons: list[QPushButton] = []
        self._crumbs = QHBoxLayout()
        # in the status bar while a model is opened (ui/opening.py) or an export written: the stage, a busy bar, Cancel
        self.progress_label = QLabel()  # the stage: importing, building on meta, torch.export, deriving views
        self.progress_label.setMaximumWidth(760)
        self.progress_label.hide()
        self.progress = QProgressBar()
        self.progress.setRange(0, 0)
        self.progress.setMaximumWidth(160)
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel")  # stops the open (what was shown before comes back) or the export
        self.cancel_button.setToolTip("Stop opening the model (the one shown before stays) or writing the export "
                                      "(nothing is left behind)")
        self.cancel_button.hide()
        top = QHBoxLayout()
        top.addLayout(self._crumbs)
        top.addStretch(1)
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.view, 1)
        self.setCentralWidget(central)
        self.table = ShapeTable()
        shapes = self._dock("Shapes", self.table, Qt.BottomDockWidgetArea)
        self.panel = QTextEdit()
        self.panel.setReadOnly(True)
        self._dock("Block", self.panel, Qt.RightDockWidgetArea)
        self.legend = Legend()
        legend = self._dock("Legend", self.legend, Qt.RightDockWidgetArea)
        self.resizeDocks([shapes], [SHAPES_HEIGHT], Qt.Vertical)
        self.resizeDocks([legend], [230], Qt.Horizontal)
        self.notes_label = QLabel()  # what capture chose or could not record (eager attention, a seq bound, random weights)
        self.notes_label.setMaximumWidth(620)
        self.notes_label.hide()
        self.statusBar().addPermanentWidget(self.notes_label)
        for w in (self.progress_label, self.progress, self.cancel_button):
            self.statusBar().addPermanentWidget(w)
        self._syncing = False
        self.opener = Opener(self)
        self.cancel_button.clicked.connect(self.cancel_work)
        self._menus()
        self.scene.signals.unbox.connect(self.navigate)
        self.scene.selectionChanged.connect(self._scene_selection)
        self.table.rows_selected.connect(self._table_selection)
        if cm is not None:
            self.refresh(fit=True)
        install_operate(self)
        install_code_panel(self)

    def _dock(self, title: str, widget, area) -> QDockWidget:
        d = QDockWidget(title, self)
        d.setWidget(widget)
        self.addDockWidget(area, d)
        return d

    def _menus(self) -> None:
        self.file_menu = self.menuBar().addMenu("&File")
        open_menu = self.file_menu.addMenu("Open preset")
        for name in PRESETS:
            open_menu.addAction(name, lambda n=name: self.open_model(n, meta=True))
        self.file_menu.addAction("Open folder…", self._open_folder)
        self.file_menu.addAction("Export view as PNG…", lambda: self._export_dialog("png"))
        self.file_menu.addAction("Export view as SVG…", lambda: self._export_dialog("svg"))
        self.file_menu.addAction("Quit", self.close, QKeySequence.Quit)
        self.edit_menu = self.menuBar().addMenu("&Edit")
        self.edit_menu.addAction("Find…", self.find, QKeySequence.Find)
        nav = self.menuBar().addMenu("&View")
        for label, slot, key in [("Back", self.back, QKeySequence(Qt.ALT | Qt.Key_Left)),
                                 ("Up", self.up, QKeySequence(Qt.ALT | Qt.Key_Up)),
                                 ("Fit", lambda: self.view.fit(), QKeySequence(Qt.Key_F))]:
            action = nav.addAction(label, slot, key)
            action.setShortcutContext(Qt.WindowShortcut)
            self.addAction(action)  # active while any child of the window has focus

    # --- navigation -------------------------------------------------------------------------
    def refresh(self, fit: bool = True) -> None:
        """Re-derive the scene, crumbs and table from the controller (call after cm.touch()); what was selected and is
        still shown stays selected."""
        try:
            selected = self.scene.selected_ids()
        except RuntimeError:  # the scene is being destroyed with the window
            return
        self.scene.rebuild()
        self._rebuild_crumbs()
        self._fill_table()
        self.scene.select([i for i in selected if self.scene.item(i) is not None])
        self._show_panel(self.scene.selected_ids())  # also when the selection did not change (none: the notes)
        self.refresh_title()
        if fit:
            self.view.fit(min_scale=READABLE_SCALE)
        self.view_changed.emit()

    def refresh_title(self) -> None:
        self.show_notes()
        c = self.controller
        if c.shown is None:
            self.setWindowTitle("graphsurgeon")
            return
        state = ""
        if c.cm is None:
            state = (" · modules only: capturing, dataflow when it is in; LoRA drops are queued" if c.preview.modules_only
                     else " · capturing; LoRA drops are queued until it is in")
        self.setWindowTitle(f"graphsurgeon · {c.shown.model_class} · {c.path or '(root)'}{state}")

    def show_notes(self) -> None:
        """The live model's capture notes in the status bar (first one, elided; all in the tooltip)."""
        notes = capture_notes(self.controller.cm) if self.controller.cm is not None else []
        text = ""
        if notes:
            more = f"  (+{len(notes) - 1} more)" if len(notes) > 1 else ""
            first = self.notes_label.fontMetrics().elidedText(notes[0], Qt.ElideRight, 560 - 8 * len(more))
            text = f"note: {first}{more}"
        if text != self.notes_label.text():
            self.notes_label.setText(text)
            self.notes_label.setToolTip("\n".join(f"note: {n}" for n in notes))
            self.notes_label.setVisible(bool(notes))

    def navigate(self, path: str) -> None:
        try:
            self.controller.navigate(path)
        except GraphsurgeonError as err:
            self._error(str(err))
            return
        self.refresh()

    def back(self) -> None:
        if self.controller.back():
            self.refresh()

    def up(self) -> None:
        if self.controller.shown is not None and self.controller.up():
            self.refresh()

    def _rebuild_crumbs(self) -> None:
        self.clear_crumbs()
        for i, (label, path) in enumerate(self.controller.breadcrumbs()):
            btn = QPushButton(("› " if i else "") + label)
            btn.setFlat(True)
            btn.clicked.connect(lambda _=False, p=path: self.navigate(p))
            self._crumbs.addWidget(btn)
            self.crumb_buttons.append(btn)

    def clear_crumbs(self) -> None:
        for b in self.crumb_buttons:
            self._crumbs.removeWidget(b)
            b.hide()  # deleteLater waits for the event loop; a screenshot taken before it must not show stale crumbs
            b.setParent(None)
            b.deleteLater()
        self.crumb_buttons = []

    # --- table and selection ------------------------------------------------------------------
    def _fill_table(self) -> None:
        self.table.fill(self.controller.view.variables)

    port_block = staticmethod(port_block)

    def _table_selection(self, rows: list[int]) -> None:
        if self._syncing:
            return
        vs = self.controller.view.variables
        ids = list(dict.fromkeys(self.port_block(vs[r].port) for r in rows))
        self._syncing = True
        self.scene.select(ids)
        self._syncing = False
        self._show_panel(ids)

    def _scene_selection(self) -> None:
        try:
            ids = self.scene.selected_ids()
        except RuntimeError:  # the scene is being destroyed with the window
            return
        self._show_panel(ids)
        if self._syncing:
            return
        links = self.controller.links()
        blocks = {self.port_block(links[i].src) if i in links else i for i in ids}
        self.table.select_rows([r for r, v in enumerate(self.controller.view.variables)
                                if self.port_block(v.port) in blocks])

    def _show_panel(self, ids: list[str]) -> None:
        blocks = self.controller.blocks()
        b = next((blocks[i] for i in ids if i in blocks), None)
        if b is None:  # nothing selected: what capture said about the model
            notes = capture_notes(self.controller.cm) if self.controller.cm is not None else []
            self.panel.setPlainText("\n".join(["capture notes:"] + [f"• {n}" for n in notes]) if notes else "")
            return
        lines = [f"{b.title}", f"class: {b.subtitle}", f"module path: {b.module_path or '(root)'}",
                 f"parameters: {b.param_count:,}"]
        if b.static_inputs:
            lines.append("static inputs:")
            lines += [f"  {s.name} = {s.text}" + (f"  ({s.source})" if s.source else "") for s in b.static_inputs]
        self.panel.setPlainText("\n".join(lines))

    # --- find --------------------------------------------------------------------------------
    def find(self, label: str | None = None) -> bool:
        index = self.controller.search_index()
        if label is None:
            label, ok = QInputDialog.getItem(self, "Find", "module or op:", sorted(index), 0, True)
            if not ok:
                return False
        if label not in index:
            return False
        path, bid = index[label]
        self.navigate(path)
        self.scene.select([bid])
        if bid in self.scene.blocks:
            self.view.centerOn(self.scene.blocks[bid])
        return True

    # --- open / capture ----------------------------------------------------------------------
    def open_model(self, source, meta: bool = True, path: str = "", eager_attention: bool = False) -> threading.Thread:
        """Capture in a worker thread; on success the model replaces the current one, on failure a dialog says why.

        Meanwhile the window shows the model's cached views, or else its module hierarchy (ui/opening.py)."""
        return self.opener.open(source, meta=meta, path=path, eager_attention=eager_attention)

    @property
    def capture_thread(self) -> threading.Thread | None:
        return self.opener.thread

    def show_work(self, stage: str | None) -> None:
        """The status bar's work in progress (an open or an export): its stage, a busy bar and Cancel; None hides them."""
        if stage is not None:
            self.progress_label.setText(stage)
        for w in (self.progress_label, self.progress, self.cancel_button):
            w.setVisible(stage is not None)

    def cancel_work(self) -> bool:
        """The status bar's Cancel: stops the open or the export in progress (False: nothing was running)."""
        return self.opener.cancel() or self.operate.export_task.cancel()

    def _open_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a Hugging Face model folder")
        if folder:
            self.open_model(folder, meta=False)

    def _error(self, message: str) -> None:
        QMessageBox.warning(self, "graphsurgeon", message)

    # --- export ------------------------------------------------------------------------------
    def _export_dialog(self, kind: str) -> None:
        fn, _ = QFileDialog.getSaveFileName(self, f"Export view as {kind.upper()}", f"view.{kind}", f"*.{kind}")
        if fn:
            self.export(fn)

    def export(self, filename: str) -> None:
        """The whole current composite view as PNG or SVG (by the file's extension)."""
        src = self.scene.itemsBoundingRect().adjusted(-20, -20, 20, 20)
        if filename.lower().endswith(".svg"):
            from PySide6.QtSvg import QSvgGenerator

            gen = QSvgGenerator()
            gen.setFileName(filename)
            gen.setSize(QSize(int(src.width()), int(src.height())))
            gen.setViewBox(QRectF(0, 0, src.width(), src.height()))
            p = QPainter(gen)
            self.scene.render(p, QRectF(0, 0, src.width(), src.height()), src)
            p.end()
            return
        scale = min(2.0, 8000 / max(src.width(), src.height(), 1))
        img = QImage(int(src.width() * scale), int(src.height() * scale), QImage.Format_ARGB32)
        img.fill(Qt.white)
        p = QPainter(img)
        p.setRenderHint(QPainter.Antialiasing)
        self.scene.render(p, QRectF(img.rect()), src)
        p.end()
        img.save(filename)

    def screenshot(self, filename: str) -> None:
        """The window as shown, into a PNG."""
        self.grab().save(filename)
