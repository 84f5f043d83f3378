"""Scene items: one custom paint() per block, routed links styled by dtype (colour) and rank (dots).

Sizes come from `geometry` (measured text). Level of detail: when zoomed out, port labels go first; titles are
redrawn larger in scene units so they never fall under TITLE_MIN_PX on screen.
"""

from __future__ import annotations

import math

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QBrush, QColor, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QStyleOptionGraphicsItem

from graphsurgeon.graph.meta import TensorMeta
from graphsurgeon.graph.blocks import Block, Link
from graphsurgeon.ui.geometry import (  # TITLE_PX, TITLE_MIN_PX, geometry: also read from here
    LABEL_MIN_PX, PAD, PORT_PX, ROW_H, SUB_PX, TITLE_MIN_PX, TITLE_PX, Geometry, font, geometry, port_text,
    shows_input_labels, text_width)

KIND_COLOURS = {"int": "#3b82f6", "float": "#b04fc8", "bool": "#f59e0b", "complex": "#10b981"}
FILL = {"composite": "#eef2ff", "primitive": "#ffffff", "input": "#ecfdf5", "output": "#fef2f2"}
LORA_FILL, LORA_BORDER, LORA_BADGE = "#fff7ed", "#ea580c", "#9a3412"
MARKS = {"ok": "#16a34a", "error": "#dc2626", "candidate": "#f59e0b"}
GLOW, BAD = "#14b8a6", "#dc2626"
DASH, GAP, DOT = 6.0, 2.5, 1.0


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


class ProblemIcon(QGraphicsItem):
    """A small red warning sign on a block or link; its tooltip is the diagnostic."""

    def __init__(self, parent: QGraphicsItem, message: str) -> None:
        super().__init__(parent)
        self.setToolTip(message)
        self.setZValue(5)

    def boundingRect(self) -> QRectF:
        return QRectF(-8, -8, 16, 16)

    def paint(self, painter, option, widget=None) -> None:
        painter.setPen(QPen(QColor("#7f1d1d"), 1))
        painter.setBrush(QColor(BAD))
        path = QPainterPath(QPointF(0, -7))
        path.lineTo(7, 6)
        path.lineTo(-7, 6)
        path.closeSubpath()
        painter.drawPath(path)
        painter.setPen(QPen(QColor("white"), 1.8))
        painter.drawLine(QPointF(0, -3), QPointF(0, 2))
        painter.drawPoint(QPointF(0, 4.2))


class BlockItem(QGraphicsItem):
    """A block: title, subtitle or LoRA badge, input ports left, output ports right, static inputs, unbox icon.

    `state` during a palette drag: "target" (glows), "dim" (not a target), "hover" (the target under the
    cursor), "bad" (under the cursor, refused); `glow_ports` are output ports that are targets themselves
    (GPT-2's q / v slices); `problem` is a diagnostic message (red outline and icon).
    """

    def __init__(self, block: Block, scene_ref, geom: Geometry | None = None, lora: bool = False) -> None:
        super().__init__()
        self.block = block
        self.block_id = block.id
        self._scene_ref = scene_ref
        self.geom = geom or geometry(block)
        self.w, self.h = self.geom.w, self.geom.h
        self.lora = lora
        self.mark: str | None = None
        self.state: str | None = None
        self.glow_ports: set[str] = set()
        self.problem: str | None = None
        self._problem_icon: ProblemIcon | None = None
        self.links: list[LinkItem] = []
        self.setFlags(QGraphicsItem.ItemIsMovable | QGraphicsItem.ItemIsSelectable | QGraphicsItem.ItemSendsGeometryChanges)
        self.setCacheMode(QGraphicsItem.DeviceCoordinateCache)
        self._in_y, self._out_y = self.geom.in_y, self.geom.out_y
        self.setToolTip(self._tooltip())

    def _tooltip(self) -> str:
        b = self.block
        tip = [f"{b.title}  ({b.subtitle})"]
        if self.geom.badge:
            tip.append(self.geom.badge)
        if b.node:
            tip.append(f"fx node: {b.node}")
        if b.module_path is not None and b.kind == "composite":
            tip.append(f"module: {b.module_path or '(root)'}")
        for side, ports in (("in", b.inputs), ("out", b.outputs)):
            for p in ports:
                shape = f" {p.meta.shape_text} {p.meta.dtype}" if p.meta else ""
                step = f"  ({p.step})" if getattr(p, "step", "") else ""  # which binding of a rebound name
                tip.append(f"{side}: {port_text(p)} = {p.value}{shape}{step}")
        if self.problem:
            tip.insert(0, f"⚠ {self.problem}")
        return "\n".join(tip)

    def set_problem(self, message: str | None) -> None:
        if message == self.problem:
            return
        self.problem = message
        if self._problem_icon is not None:
            self._problem_icon.setParentItem(None)
            if self.scene() is not None:
                self.scene().removeItem(self._problem_icon)
            self._problem_icon = None
        if message:
            self._problem_icon = ProblemIcon(self, message)
            self._problem_icon.setPos(self.w - (30 if self.block.kind == "composite" else 10), 0)
        self.setToolTip(self._tooltip())
        self.update()

    def boundingRect(self) -> QRectF:
        return QRectF(-8, -8, self.w + 16, self.h + 16)

    def unbox_rect(self) -> QRectF:
        return QRectF(self.w - 20, 5, 14, 14)

    def port_pos(self, port_id: str) -> QPointF:
        """Scene position of a port's anchor."""
        if port_id in self._in_y:
            return self.mapToScene(QPointF(0, self._in_y[port_id]))
        return self.mapToScene(QPointF(self.w, self._out_y.get(port_id, self.h / 2)))

    def title_px(self, lod: float) -> int:
        """Scene pixel size of the title at zoom `lod`: TITLE_PX, or larger so it stays ≥ TITLE_MIN_PX on screen."""
        return max(TITLE_PX, math.ceil(TITLE_MIN_PX / max(lod, 1e-3)))

    def label_rects(self) -> list[QRectF]:
        """Item-coordinate rectangles of the port labels as drawn at 1:1 (for tests: none may overlap)."""
        out = []
        if shows_input_labels(self.block):
            for p in self.block.inputs:
                tw = text_width(port_text(p), PORT_PX)
                out.append(QRectF(PAD, self._in_y[p.id] - ROW_H / 2, tw, ROW_H))
        for p in self.block.outputs:
            tw = text_width(port_text(p), PORT_PX)
            out.append(QRectF(self.w - PAD - tw, self._out_y[p.id] - ROW_H / 2, tw, ROW_H))
        return out

    def paint(self, painter, option, widget=None) -> None:
        b = self.block
        lod = QStyleOptionGraphicsItem.levelOfDetailFromTransform(painter.worldTransform())
        dim = self.state == "dim"
        if dim:
            painter.setOpacity(0.3)
        if self.state in ("target", "hover"):
            glow = QColor(GLOW)
            glow.setAlpha(110 if self.state == "target" else 200)
            painter.setPen(QPen(glow, 9 if self.state == "hover" else 6))
            painter.setBrush(Qt.NoBrush)
            painter.drawRoundedRect(QRectF(-2, -2, self.w + 4, self.h + 4), 8, 8)
        if self.problem or self.state == "bad":
            border, width = QColor(BAD), 3.0
        elif self.mark:
            border, width = QColor(MARKS.get(self.mark, "#475569")), 3.0
        elif self.isSelected():
            border, width = QColor("#2563eb"), 3.0
        else:
            border, width = QColor(LORA_BORDER if self.lora else "#475569"), 2.0 if self.lora else 1.2
        painter.setPen(QPen(border, width))
        painter.setBrush(QBrush(QColor(LORA_FILL if self.lora else FILL.get(b.kind, "#ffffff"))))
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
        for pid, y in self._out_y.items():
            if pid in self.glow_ports:
                painter.setBrush(QBrush(QColor(GLOW)))
                painter.drawEllipse(QPointF(self.w, y), 6, 6)
                painter.setBrush(QBrush(QColor("#334155")))
            painter.drawEllipse(QPointF(self.w, y), 3, 3)
        painter.setBrush(QBrush(QColor("#fde68a")))
        for i, _ in enumerate(self.geom.statics):
            painter.drawEllipse(QPointF(9, self.geom.statics_y0 + (i + 0.5) * ROW_H), 4, 4)
        if lod < 0.12:
            return
        labels = PORT_PX * lod >= LABEL_MIN_PX
        title_px = self.title_px(lod)
        painter.setFont(font(title_px, True))
        painter.setPen(QColor("#0f172a"))
        room = self.w - 2 * PAD - (22 if b.kind == "composite" else 0)
        title = b.title if title_px == TITLE_PX else painter.fontMetrics().elidedText(b.title, Qt.ElideRight, int(room))
        painter.drawText(QRectF(PAD, 2, room, max(18.0, title_px * 1.3)), Qt.AlignLeft | Qt.AlignVCenter, title)
        if not labels or title_px > TITLE_PX * 1.3:
            return
        painter.setFont(font(SUB_PX))
        if self.geom.badge:
            tw = text_width(self.geom.badge, SUB_PX)
            painter.setPen(Qt.NoPen)
            painter.setBrush(QColor("#fed7aa"))
            painter.drawRoundedRect(QRectF(PAD - 3, 20, tw + 6, 14), 4, 4)
            painter.setPen(QColor(LORA_BADGE))
            painter.drawText(QRectF(PAD, 20, self.w - 2 * PAD, 14), Qt.AlignLeft | Qt.AlignVCenter, self.geom.badge)
        else:
            painter.setPen(QColor("#64748b"))
            painter.drawText(QRectF(PAD, 20, self.w - 2 * PAD, 14), Qt.AlignLeft | Qt.AlignVCenter, b.subtitle)
        painter.setFont(font(PORT_PX))
        painter.setPen(QColor("#1f2937"))
        if shows_input_labels(b):
            for p in b.inputs:
                painter.drawText(QRectF(PAD, self._in_y[p.id] - ROW_H / 2, self.w, ROW_H), Qt.AlignLeft | Qt.AlignVCenter,
                                 port_text(p))
        for p in b.outputs:
            painter.drawText(QRectF(0, self._out_y[p.id] - ROW_H / 2, self.w - PAD, ROW_H), Qt.AlignRight | Qt.AlignVCenter,
                             port_text(p))
        painter.setFont(font(SUB_PX))
        painter.setPen(QColor("#92400e"))
        for i, text in enumerate(self.geom.statics):
            painter.drawText(QRectF(17, self.geom.statics_y0 + i * ROW_H, self.w, ROW_H), Qt.AlignLeft | Qt.AlignVCenter,
                             text)

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
            self._scene_ref.block_moved(self)
        return super().itemChange(change, value)


CORNER = 6.0


def _straight(a, b) -> bool:
    return abs(a[0] - b[0]) < 1e-6 or abs(a[1] - b[1]) < 1e-6


def route_path(points: list[tuple[float, float]]) -> QPainterPath:
    """Straight segments where horizontal or vertical (corners between two of them rounded), an S-curve elsewhere
    (a cubic with horizontal tangents, inside its end points' box)."""
    path = QPainterPath(QPointF(*points[0]))
    n = len(points)
    for i in range(1, n):
        a, b = points[i - 1], points[i]
        if not _straight(a, b):
            mx = (a[0] + b[0]) / 2
            path.cubicTo(QPointF(mx, a[1]), QPointF(mx, b[1]), QPointF(*b))
            continue
        if i + 1 < n and _straight(b, points[i + 1]):
            c = points[i + 1]
            la, lc = math.dist(a, b), math.dist(b, c)
            r = min(CORNER, la / 2, lc / 2)
            if r > 0.5:
                p1 = QPointF(b[0] + (a[0] - b[0]) * r / la, b[1] + (a[1] - b[1]) * r / la)
                p2 = QPointF(b[0] + (c[0] - b[0]) * r / lc, b[1] + (c[1] - b[1]) * r / lc)
                path.lineTo(p1)
                path.quadTo(QPointF(*b), p2)
                continue
        path.lineTo(*b)
    return path


class LinkItem(QGraphicsPathItem):
    """A routed link between two ports; pen colour = dtype kind, pattern = rank; tooltip = name, fx name, shape, dtype.

    `state`: "target" (glows; `tag` says which slice, e.g. q / v), "dim", "hover", "bad"; `problem` marks it red.
    """

    def __init__(self, link: Link, src: BlockItem, dst: BlockItem) -> None:
        super().__init__()
        self.link = link
        self.link_id = link.id
        self.src, self.dst = src, dst
        self.state: str | None = None
        self.tag = ""
        self.problem: str | None = None
        self.setPen(link_pen(link.meta))
        self.setZValue(-1)
        self.setFlag(QGraphicsItem.ItemIsSelectable)
        self.setToolTip(self._tooltip())

    def _tooltip(self) -> str:
        m, name = self.link.meta, getattr(self.link, "name", None) or self.link.value
        text = f"{name}  (fx: {self.link.value})" if name != self.link.value else name
        text += f"\n{m.shape_text} {m.dtype}" if m else ""
        text += f"\n{self.link.step}" if getattr(self.link, "step", "") else ""  # which binding of a rebound name
        return f"⚠ {self.problem}\n{text}" if self.problem else text

    def set_route(self, points: list[tuple[float, float]]) -> None:
        self.prepareGeometryChange()
        self.setPath(route_path(points))

    def set_problem(self, message: str | None) -> None:
        self.problem = message
        self.setToolTip(self._tooltip())
        self.update()

    def shape(self) -> QPainterPath:
        from PySide6.QtGui import QPainterPathStroker

        s = QPainterPathStroker()
        s.setWidth(10)
        return s.createStroke(self.path())

    def boundingRect(self) -> QRectF:
        return super().boundingRect().adjusted(-8, -8, 8, 8)

    def paint(self, painter, option, widget=None) -> None:
        pen = QPen(self.pen())
        if self.state == "dim":
            painter.setOpacity(0.25)
        if self.state in ("target", "hover") or self.problem or self.state == "bad":
            halo = QColor(BAD if (self.problem or self.state == "bad") else GLOW)
            halo.setAlpha(200 if self.state in ("hover", "bad") else 120)
            painter.setPen(QPen(halo, 10 if self.state == "hover" else 7, Qt.SolidLine, Qt.RoundCap))
            painter.drawPath(self.path())
        if self.isSelected():
            pen.setWidthF(4)
        painter.setPen(pen)
        painter.drawPath(self.path())
