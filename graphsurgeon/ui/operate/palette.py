"""The block palette: "Add LoRA Layer" / "LoRA Layer" with r, alpha, dropout and "every layer", dragged as JSON mime."""

from __future__ import annotations

import json

from PySide6.QtCore import QMimeData, Qt
from PySide6.QtGui import QDrag
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QDoubleSpinBox, QFormLayout, QLabel, QListWidget,
                               QListWidgetItem, QSpinBox, QVBoxLayout, QWidget)

MIME_TYPE = "application/x-graphsurgeon-block"

ENTRIES = [  # (kind, title, one-line explanation)
    ("add_lora", "Add LoRA Layer",
     "LoRA plus the add: output = target + B·A·x · alpha/r. The usual choice."),
    ("lora", "LoRA Layer",
     "The bare branch B·A·x · alpha/r: drop it, then drag from its output dot onto a link to add it there."),
]


def decode_mime(mime: QMimeData, modifiers=Qt.KeyboardModifier.NoModifier) -> dict:
    """The dropped block as a dict {kind, r, alpha, dropout, every_layer}; Shift at drop time forces every_layer."""
    if not mime.hasFormat(MIME_TYPE):
        raise ValueError(f"not a graphsurgeon palette block (no {MIME_TYPE} data)")
    data = json.loads(bytes(mime.data(MIME_TYPE)).decode("utf-8"))
    if Qt.KeyboardModifier.ShiftModifier in Qt.KeyboardModifier(modifiers):
        data["every_layer"] = True
    return data


def read_mime(mime: QMimeData | None) -> dict | None:
    """Like `decode_mime` without modifiers, but None for anything that is not a palette block."""
    if mime is None or not mime.hasFormat(MIME_TYPE):
        return None
    try:
        return decode_mime(mime)
    except (ValueError, UnicodeDecodeError):
        return None


class _BlockList(QListWidget):
    """The draggable list; `startDrag` builds the mime data and records it as `last_mime`."""

    def __init__(self, palette: "Palette") -> None:
        super().__init__()
        self._palette = palette
        self.last_mime: QMimeData | None = None
        self.setDragEnabled(True)
        self.setDragDropMode(QAbstractItemView.DragDropMode.DragOnly)
        self.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.setWordWrap(True)  # the explanations wrap to the dock's width instead of hiding behind a scrollbar
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.setSpacing(2)

    def startDrag(self, supported_actions) -> None:  # Qt override
        item = self.currentItem()
        if item is None:
            return
        mime = self._palette.mime_for(item.data(Qt.ItemDataRole.UserRole))
        self.last_mime = mime
        self._palette.last_mime = mime
        drag = QDrag(self)
        drag.setMimeData(mime)
        drag.exec(Qt.DropAction.CopyAction)


class Palette(QWidget):
    """Lists the droppable blocks and their parameters."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.last_mime: QMimeData | None = None
        self.list = _BlockList(self)
        for kind, title, text in ENTRIES:
            item = QListWidgetItem(f"{title}\n{text}")
            item.setData(Qt.ItemDataRole.UserRole, kind)
            item.setToolTip(text)
            self.list.addItem(item)
        self.r = QSpinBox()
        self.r.setRange(1, 4096)
        self.r.setValue(8)
        self.alpha = QDoubleSpinBox()
        self.alpha.setRange(0.01, 100000.0)
        self.alpha.setValue(16.0)
        self.dropout = QDoubleSpinBox()
        self.dropout.setRange(0.0, 0.99)
        self.dropout.setSingleStep(0.05)
        self.dropout.setValue(0.0)
        self.every_layer = QCheckBox("every layer (or hold Shift when dropping)")
        form = QFormLayout()
        form.addRow("r", self.r)
        form.addRow("alpha", self.alpha)
        form.addRow("dropout", self.dropout)
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Drag a block onto a projection or its output link:"))
        layout.addWidget(self.list)
        layout.addLayout(form)
        layout.addWidget(self.every_layer)

    def values(self, kind: str = "add_lora") -> dict:
        return {"kind": kind, "r": self.r.value(), "alpha": self.alpha.value(),
                "dropout": self.dropout.value(), "every_layer": self.every_layer.isChecked()}

    def mime_for(self, kind: str) -> QMimeData:
        mime = QMimeData()
        mime.setData(MIME_TYPE, json.dumps(self.values(kind)).encode("utf-8"))
        return mime
