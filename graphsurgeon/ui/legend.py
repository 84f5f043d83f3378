"""The legend: link colours by dtype kind and dash patterns by rank, drawn with the very pens the links use."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QSize
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QWidget

from graphsurgeon.graph.meta import TensorMeta
from graphsurgeon.ui.items import link_pen

KINDS = [("int", "int64"), ("float", "float32"), ("bool", "bool")]
RANKS = [0, 1, 2, 3, 4]


class Legend(QWidget):
    """Rows: one line per dtype kind (rank 2), one line per rank (float), then the block glyphs."""

    ROW = 18

    def __init__(self) -> None:
        super().__init__()
        self.setMinimumHeight(self.sizeHint().height())  # every row stays visible: the dock may not clip the key

    def sizeHint(self) -> QSize:
        return QSize(220, self.ROW * (len(KINDS) + len(RANKS) + 5))

    def paintEvent(self, event) -> None:
        p = QPainter(self)
        p.setRenderHint(QPainter.Antialiasing)
        y = 4
        p.setPen(QColor("#0f172a"))
        p.drawText(6, y + 12, "colour = dtype")
        y += self.ROW
        for kind, dtype in KINDS:
            self._line(p, y, TensorMeta(("a", "b"), (1, 1), dtype), kind)
            y += self.ROW
        p.setPen(QColor("#0f172a"))
        p.drawText(6, y + 12, "pattern = rank (N dots)")
        y += self.ROW
        for r in RANKS:
            self._line(p, y, TensorMeta(tuple("x" * r), (1,) * r, "float32"), "scalar" if r == 0 else f"rank {r}")
            y += self.ROW
        p.setPen(QPen(QColor("#1e3a8a"), 1.2))
        p.setBrush(QColor("#dbeafe"))
        p.drawRect(8, y + 3, 12, 12)
        p.drawLine(14, y + 6, 14, y + 12)
        p.drawLine(11, y + 9, 17, y + 9)
        p.setPen(QColor("#0f172a"))
        p.drawText(28, y + 14, "unbox (or double-click)")
        y += self.ROW
        p.setPen(QPen(QColor("#334155"), 1))
        p.setBrush(QColor("#fde68a"))
        p.drawEllipse(QPointF(14, y + 9), 4.5, 4.5)
        p.setPen(QColor("#0f172a"))
        p.drawText(28, y + 14, "given in place: weight, constant")
        p.end()

    def _line(self, p: QPainter, y: int, meta: TensorMeta, label: str) -> None:
        p.setPen(link_pen(meta))
        p.drawLine(QPointF(8, y + 9), QPointF(90, y + 9))
        p.setPen(QColor("#1f2937"))
        p.drawText(98, y + 14, label)
