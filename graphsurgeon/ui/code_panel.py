"""The Code panel: the open composite as model.py writes it (export/codegen), in step with the canvas.

Selecting blocks highlights the lines that write them; clicking a line selects its blocks. The text is the
class (a module), the function (a function group) or the layers' class (a stack) of the open composite, with
the canvas's names. It is rebuilt after the view changes, a moment later (debounced), and only while shown, so
an edit repaints the canvas first.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor, QFont, QTextCursor, QTextFormat
from PySide6.QtWidgets import QDockWidget, QPlainTextEdit, QTextEdit

from graphsurgeon.errors import GraphsurgeonError

HIGHLIGHT = QColor("#fff3b0")
DELAY_MS = 120  # after a view change, so the canvas repaints first


class CodePanel(QPlainTextEdit):
    def __init__(self, window) -> None:
        super().__init__()
        self.window = window
        self.code = None  # export.codegen.CodeView shown
        self._key = None  # (model, version, path) of the text shown
        self._syncing = False
        self.setReadOnly(True)
        self.setLineWrapMode(QPlainTextEdit.NoWrap)
        font = QFont("monospace")
        font.setStyleHint(QFont.Monospace)
        font.setPointSize(9)
        self.setFont(font)
        self.setTextInteractionFlags(Qt.TextSelectableByMouse | Qt.TextSelectableByKeyboard)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.reload)
        self.cursorPositionChanged.connect(self._line_clicked)

    # ---- text ------------------------------------------------------------------------------
    def shown(self) -> bool:
        """On screen (a dock behind another tab stays 'visible', moved off screen)."""
        return self.isVisible() and not self.visibleRegion().isEmpty()

    def schedule(self) -> None:
        self._timer.start(DELAY_MS)

    def paintEvent(self, event) -> None:  # Qt's name; painted = brought to the front of its tabs
        super().paintEvent(event)
        c = self.window.controller
        if c.cm is not None and self._key != (id(c.cm), c.cm.version, c.path) and not self._timer.isActive():
            self.schedule()

    def reload(self) -> None:
        """Show the open composite's code (no work when nothing changed or the panel is hidden)."""
        from graphsurgeon.export.codegen import composite_code

        if not self.shown():
            return
        c = self.window.controller
        if c.cm is None:
            self._show(None, "The code appears when the capture is in.")
            return
        key = (id(c.cm), c.cm.version, c.path)
        if key == self._key:
            self.highlight(self._selected())
            return
        self._key = key
        try:
            view = composite_code(c.cm, c.path)
        except (GraphsurgeonError, NotImplementedError) as err:
            self._show(None, f"model.py cannot be written for this graph: {err}")
            return
        self._show(view, "" if view is not None else "This composite has no code of its own.")
        self.highlight(self._selected())

    def _show(self, view, message: str) -> None:
        self.code = view
        self._syncing = True
        self.setPlainText(view.text if view is not None else message)
        self._syncing = False

    # ---- selection both ways ---------------------------------------------------------------------
    def _selected(self) -> list[str]:
        try:
            return self.window.scene.selected_ids()
        except RuntimeError:  # the scene is going away with the window
            return []

    def highlight(self, ids: list[str]) -> list[int]:
        """Mark the lines that write the blocks `ids`; returns them (0-based)."""
        lines = sorted({i for b in ids for i in (self.code.block_lines.get(b, []) if self.code else [])})
        marks = []
        for i in lines:
            sel = QTextEdit.ExtraSelection()
            sel.format.setBackground(HIGHLIGHT)
            sel.format.setProperty(QTextFormat.FullWidthSelection, True)
            sel.cursor = QTextCursor(self.document().findBlockByNumber(i))
            marks.append(sel)
        self.setExtraSelections(marks)
        if lines and not self._syncing:
            self._syncing = True
            self.setTextCursor(QTextCursor(self.document().findBlockByNumber(lines[0])))
            self.centerCursor()
            self._syncing = False
        return lines

    def select_line(self, line: int) -> list[str]:
        """Select on the canvas the blocks line `line` (0-based) writes; returns their ids."""
        if self.code is None or not 0 <= line < len(self.code.line_blocks):
            return []
        scene = self.window.scene
        ids = [b for b in self.code.line_blocks[line] if scene.item(b) is not None]
        if ids:
            self._syncing = True
            scene.select(ids)
            self._syncing = False
        return ids

    def _line_clicked(self) -> None:
        if not self._syncing and self.hasFocus():
            self.select_line(self.textCursor().blockNumber())

    def _scene_selection(self) -> None:
        if not self._syncing:
            self.highlight(self._selected())


def install(window) -> CodePanel:
    """Dock the Code panel on the right of `window`, a tab beside the block panel when there is one."""
    panel = CodePanel(window)
    dock = QDockWidget("Code", window)
    dock.setObjectName("code_dock")
    dock.setWidget(panel)
    window.addDockWidget(Qt.RightDockWidgetArea, dock)
    block = next((d for d in window.findChildren(QDockWidget) if d.windowTitle() == "Block"), None)
    if block is not None:  # a tab beside the block panel, which stays in front: the canvas keeps its room
        window.tabifyDockWidget(block, dock)
        block.raise_()
    window.code_dock = dock
    window.view_changed.connect(panel.schedule)
    panel.schedule()
    window.scene.selectionChanged.connect(panel._scene_selection)
    dock.visibilityChanged.connect(lambda shown: shown and panel.schedule())
    window.code_panel = panel
    return panel
