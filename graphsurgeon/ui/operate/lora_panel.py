"""The LoRA side panel: r / alpha / dropout of the LoRA block selected, or of the one the view is inside."""

from __future__ import annotations

from PySide6.QtWidgets import QDoubleSpinBox, QFormLayout, QLabel, QPushButton, QSizePolicy, QSpinBox, QWidget

EMPTY = "select an inserted LoRA block, or open one"


def wrappable(text: str) -> str:
    """A module path that may wrap after each dot (a zero-width space), so a long one never widens the panel."""
    return text.replace(".", ".\u200b")


class LoRAEditor(QWidget):
    """Side panel of one window's Operate: shows the block `ops.selected_lora()` names; Apply is one undoable edit.

    `load()` runs on every selection change and after every edit, undo and redo, so the values shown are the
    block's current ones (or the panel is cleared and disabled when there is no block)."""

    def __init__(self, ops) -> None:
        super().__init__()
        self.ops = ops
        self.title = QLabel(EMPTY)
        self.title.setWordWrap(True)
        # the label's text must never set the dock's width: the side panels keep theirs whatever is selected
        self.title.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.title.setMinimumWidth(1)
        self.r, self.alpha, self.dropout = QSpinBox(), QDoubleSpinBox(), QDoubleSpinBox()
        self.r.setRange(0, 4096)  # 0 is allowed here so the session refuses it with a reason
        self.alpha.setRange(0.0, 10000.0)
        self.dropout.setRange(0.0, 1.0)
        self.dropout.setSingleStep(0.05)
        apply = QPushButton("Apply")
        apply.clicked.connect(self.apply)
        form = QFormLayout(self)
        form.addRow(self.title)
        form.addRow("r", self.r)
        form.addRow("alpha", self.alpha)
        form.addRow("dropout", self.dropout)
        form.addRow(apply)
        self.path: str | None = None  # the block shown
        self.setEnabled(False)

    def load(self) -> None:
        try:
            path = self.ops.selected_lora()
        except RuntimeError:  # scene being torn down
            return
        self.path = path
        self.setEnabled(path is not None)
        block = self.ops.session.cm.loras.get(path) if path is not None else None
        if block is None:
            self.title.setText(EMPTY)
            for box in (self.r, self.alpha, self.dropout):
                box.setValue(0)  # no stale values from a block that is gone
            return
        c = block.config
        wiring = "" if block.kind == "add" else (f"\nbare LoRA Layer, added onto {block.wired_to}" if block.wired_to else
                                                 "\nbare LoRA Layer, not connected: drag from its output dot onto a link")
        self.title.setText(wrappable(path) + wiring)
        self.title.setToolTip(path)
        self.r.setValue(c.r)
        self.alpha.setValue(c.alpha)
        self.dropout.setValue(c.dropout)

    def apply(self) -> bool:
        return self.ops.edit_selected(r=self.r.value(), alpha=self.alpha.value(), dropout=self.dropout.value())
