"""Scene items: one custom paint() per block, cubic links styled by dtype (colour) and rank (dots)."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QFont, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QStyleOptionGraphicsItem

from graphsurgeon.graph.meta import TensorMeta
from graphsurgeon.graph.blocks import Block, Link
from graphsurgeon.ui.controller import HEADER_H, ROW_H, block_size

KIND_COLOURS = {"int": "#3b82f6", "float": "#b04fc8", "bool": "#f59e0b", "complex": "#10b981"}
FILL = {"composite": "#eef2ff", "primitive": "#ffffff", "input": "#ecfdf5", "output": "#fef2f2"}
MARKS = {"ok": "#16a34a", "error": "#dc2626", "candidate": "#f59e0b"}
DASH, GAP, DOT = 6.0, 2.5, 1.0
LOD_TEXT = 0.4


def dash_pattern(rank: int) -> list[float]:
    """[] (solid) for a scalar; for rank N a dash followed by N dots."""
    if rank <= 0:
        return []
    return [DASH, GAP] + [DOT, GAP] * rank


def link_pen(meta: TensorMeta | None, width: float = 2.0) -> QPen:
    colour = QColor(KIND_COLOURS.get(meta.kind, "#6b7280") if meta else "#6b7280")
    pen = QPen(colour, width)
    pen.setCapStyle(Qt.FlatCap)
    pattern = dash_pattern(meta.rank if meta else 0)
    if pattern:
        pen.setDashPattern(pattern)
    return pen


class BlockItem(QGraphicsItem):
    """A block: title, input ports left, output ports right, static-input circles, unbox icon on composites."""

    def __init__(self, block: Block, scene_ref) -> None:
        super().__init__()
        self.block = block
        self.block_id = block.id
        self._scene_ref = scene_ref
        self.w, self.h = block_size(block)
        self.mark: str | None = None
        self.links: list[LinkItem] = []
        self.setFlags(QGraphicsItem.ItemIsMovable | QGraphicsItem.ItemIsSelectable | QGraphicsItem.ItemSendsGeometryChanges)
        self.setCacheMode(QGraphicsItem.DeviceCoordinateCache)
        self._in_y = {p.id: HEADER_H + (i + 0.5) * ROW_H for i, p in enumerate(block.inputs)}
        self._out_y = {p.id: HEADER_H + (i + 0.5) * ROW_H for i, p in enumerate(block.outputs)}
        tip = [f"{block.title}  {block.subtitle}"]
        if block.module_path is not None:
            tip.append(f"module: {block.module_path or '(root)'}")
        self.setToolTip("\n".join(tip))

    def boundingRect(self) -> QRectF:
        return QRectF(-6, -6, self.w + 12, self.h + 12)

    def unbox_rect(self) -> QRectF:
        return QRectF(self.w - 20, 5, 14, 14)

    def port_pos(self, port_id: str) -> QPointF:
        """Scene position of a port's anchor."""
        if port_id in self._in_y:
            return self.mapToScene(QPointF(0, self._in_y[port_id]))
        return self.mapToScene(QPointF(self.w, self._out_y.get(port_id, self.h / 2)))

    def paint(self, painter, option, widget=None) -> None:
        b = self.block
        lod = QStyleOptionGraphicsItem.levelOfDetailFromTransform(painter.worldTransform())
        border = QColor(MARKS.get(self.mark, "#2563eb" if self.isSelected() else "#475569"))
        painter.setPen(QPen(border, 3 if (self.isSelected() or self.mark) else 1.2))
        painter.setBrush(QBrush(QColor(FILL.get(b.kind, "#ffffff"))))
        painter.drawRoundedRect(QRectF(0, 0, self.w, self.h), 6, 6)
        if b.kind == "composite":
            r = self.unbox_rect()
            painter.setPen(QPen(QColor("#1e3a8a"), 1.2))
            painter.setBrush(QBrush(QColor("#dbeafe")))
            painter.drawRect(r)
            painter.drawLine(QPointF(r.center().x(), r.top() + 3), QPointF(r.center().x(), r.bottom() - 3))
            painter.drawLine(QPointF(r.left() + 3, r.center().y()), QPointF(r.right() - 3, r.center().y()))
        painter.setPen(QPen(QColor("#334155"), 1))
        painter.setBrush(QBrush(QColor("#334155")))
        for y in self._in_y.values():
            painter.drawEllipse(QPointF(0, y), 3, 3)
        for y in self._out_y.values():
            painter.drawEllipse(QPointF(self.w, y), 3, 3)
        statics_y0 = HEADER_H + len(b.inputs) * ROW_H
        painter.setBrush(QBrush(QColor("#fde68a")))
        for i, s in enumerate(b.static_inputs):
            painter.drawEllipse(QPointF(9, statics_y0 + (i + 0.5) * ROW_H), 4.5, 4.5)
        if lod < LOD_TEXT:
            return
        f = QFont()
        f.setPointSizeF(9.5)
        f.setBold(True)
        painter.setFont(f)
        painter.setPen(QColor("#0f172a"))
        painter.drawText(QRectF(8, 3, self.w - 30, 17), Qt.AlignLeft | Qt.AlignVCenter, b.title)
        f.setBold(False)
        f.setPointSizeF(8)
        painter.setFont(f)
        painter.setPen(QColor("#64748b"))
        painter.drawText(QRectF(8, 19, self.w - 16, 15), Qt.AlignLeft | Qt.AlignVCenter, b.subtitle)
        painter.setPen(QColor("#1f2937"))
        half = self.w / 2 - 8
        for p in b.inputs:
            painter.drawText(QRectF(8, self._in_y[p.id] - ROW_H / 2, half, ROW_H), Qt.AlignLeft | Qt.AlignVCenter, p.name)
        for p in b.outputs:
            painter.drawText(QRectF(8, self._out_y[p.id] - ROW_H / 2, self.w - 16, ROW_H), Qt.AlignRight | Qt.AlignVCenter, p.name)
        painter.setPen(QColor("#92400e"))
        for i, s in enumerate(b.static_inputs):
            painter.drawText(QRectF(17, statics_y0 + i * ROW_H, self.w - 25, ROW_H), Qt.AlignLeft | Qt.AlignVCenter,
                             f"{s.name} = {s.text}")

    def output_port_at(self, pos: QPointF, reach: float = 7.0) -> str | None:
        """The output port whose anchor dot is within `reach` of `pos` (item coordinates), if any."""
        for pid, y in self._out_y.items():
            if abs(pos.x() - self.w) <= reach and abs(pos.y() - y) <= reach:
                return pid
        return None

    def mousePressEvent(self, event) -> None:
        if self.block.kind == "composite" and self.unbox_rect().contains(event.pos()):
            self._scene_ref.unbox_requested(self.block)
            event.accept()
            return
        port = self.output_port_at(event.pos()) if event.button() == Qt.LeftButton else None
        if port is not None:  # dragging from an output dot draws a wire instead of moving the block
            self._scene_ref.wire_started(port, event.scenePos())
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:
        if self._scene_ref.wiring:
            self._scene_ref.wire_moved(event.scenePos())
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:
        if self._scene_ref.wiring:
            self._scene_ref.wire_finished(event.scenePos())
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event) -> None:
        if self.block.kind == "composite":
            self._scene_ref.unbox_requested(self.block)
            return
        super().mouseDoubleClickEvent(event)

    def itemChange(self, change, value):
        if change == QGraphicsItem.ItemPositionHasChanged:
            for link in self.links:
                link.update_path()
            self._scene_ref.block_moved(self)
        return super().itemChange(change, value)


class LinkItem(QGraphicsPathItem):
    """A cubic link between two ports; pen colour = dtype kind, pattern = rank; tooltip = shape and dtype."""

    def __init__(self, link: Link, src: BlockItem, dst: BlockItem) -> None:
        super().__init__()
        self.link = link
        self.link_id = link.id
        self.src, self.dst = src, dst
        self.setPen(link_pen(link.meta))
        self.setZValue(-1)
        self.setFlag(QGraphicsItem.ItemIsSelectable)
        m = link.meta
        self.setToolTip(f"{link.value}: {m.shape_text} {m.dtype}" if m else link.value)
        self.update_path()

    def update_path(self) -> None:
        a, b = self.src.port_pos(self.link.src), self.dst.port_pos(self.link.dst)
        dx = max(40.0, abs(b.x() - a.x()) / 2)
        path = QPainterPath(a)
        path.cubicTo(QPointF(a.x() + dx, a.y()), QPointF(b.x() - dx, b.y()), b)
        self.setPath(path)

    def paint(self, painter, option, widget=None) -> None:
        if self.isSelected():
            pen = QPen(self.pen())
            pen.setWidthF(4)
            painter.setPen(pen)
            painter.drawPath(self.path())
            return
        painter.setPen(self.pen())
        painter.drawPath(self.path())
