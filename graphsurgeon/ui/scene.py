"""The graph scene of one composite view: block and link items from the controller, drag feedback, problems."""

from __future__ import annotations

from PySide6.QtCore import QObject, QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPathItem, QGraphicsScene

from graphsurgeon.ui.controller import Controller
from graphsurgeon.ui.items import GLOW, BlockItem, LinkItem, geometry
from graphsurgeon.ui.layout import Wire


class _Signals(QObject):
    unbox = Signal(str)  # composite path
    wire_started = Signal(str)  # output port id a wire is drawn from
    wire = Signal(str, str)  # (output port id, id of the link / port / block it was released on, or "")
    rebuilt = Signal()  # the items were made again (navigation, edit): marks are to be put back


class Bubble(QGraphicsItem):
    """Text in a rounded box drawn at a fixed screen size wherever it is put: a link's tag ("q"), a refusal at the cursor."""

    def __init__(self, text: str, fill: str, ink: str = "#ffffff", width: float = 340.0, px: int = 12) -> None:
        super().__init__()
        self.setFlag(QGraphicsItem.ItemIgnoresTransformations)
        self.setZValue(20)
        self.text, self.fill, self.ink, self.px = text, fill, ink, px
        self.font = QFont()
        self.font.setPixelSize(px)
        self.font.setBold(True)
        fm = QFontMetricsF(self.font)
        self.rect = fm.boundingRect(QRectF(0, 0, width, 1000), Qt.TextWordWrap, text).adjusted(-6, -3, 6, 3)

    def boundingRect(self) -> QRectF:
        return self.rect.adjusted(-1, -1, 1, 1)

    def paint(self, painter, option, widget=None) -> None:
        painter.setPen(Qt.NoPen)
        painter.setBrush(QColor(self.fill))
        painter.drawRoundedRect(self.rect, 5, 5)
        painter.setPen(QColor(self.ink))
        painter.setFont(self.font)
        painter.drawText(self.rect.adjusted(6, 3, -6, -3), Qt.TextWordWrap, self.text)


class GraphScene(QGraphicsScene):
    """Items know ids; `blocks` / `links` map block and link ids to their items."""

    def __init__(self, controller: Controller) -> None:
        super().__init__()
        self.controller = controller
        self.signals = _Signals()
        self.blocks: dict[str, BlockItem] = {}
        self.links: dict[str, LinkItem] = {}
        self.boxes: dict = {}
        self.wires: dict[str, Wire] = {}
        self.tags: dict[str, Bubble] = {}
        self.note: Bubble | None = None  # "not here: …" at the cursor during a palette drag
        self._building = False
        self._shown_path: str | None = None
        self._wire: QGraphicsPathItem | None = None  # the wire being drawn from an output port
        self._wire_from: str | None = None

    def rebuild(self) -> None:
        """Re-derive every item from the controller's current view (positions kept across edits)."""
        self._building = True
        self.clear()
        self._wire, self._wire_from, self.note = None, None, None
        self.blocks, self.links, self.tags = {}, {}, {}
        if self.controller.shown is None:  # no model open (a first capture failed)
            self._building = False
            return
        c = self.controller
        shown = [v for v in self.views() if v.isVisible()]
        if shown and shown[0].viewport().width() >= 480 and shown[0].viewport().height() >= 320:
            size = shown[0].viewport().size()  # a composite opened now is laid out for the canvas as it is
            c.viewport = (float(size.width()), float(size.height()))
        view = c.view
        geoms = {b.id: geometry(b, c.badge(b)) for b in view.blocks}
        self.boxes = {b.id: geoms[b.id].box(b) for b in view.blocks}
        port_index: dict[str, tuple[str, int]] = {}
        for b in view.blocks:
            for i, p in enumerate(b.inputs):
                port_index[p.id] = (b.id, i)
            for i, p in enumerate(b.outputs):
                port_index[p.id] = (b.id, i)
        self.wires = {}
        for link in view.links:
            if link.src in port_index and link.dst in port_index:
                (s, si), (d, di) = port_index[link.src], port_index[link.dst]
                self.wires[link.id] = Wire(link.id, s, si, d, di)
        lay = c.arrange(self.boxes, list(self.wires.values()))
        for b in view.blocks:
            item = BlockItem(b, self, geoms[b.id], lora=c.is_lora(b))
            item.setPos(*lay.positions.get(b.id, (0.0, 0.0)))
            self.addItem(item)
            self.blocks[b.id] = item
        for link in view.links:
            w = self.wires.get(link.id)
            if w is None:
                continue
            src, dst = self.blocks[w.src], self.blocks[w.dst]
            li = LinkItem(link, src, dst)
            if link.id in lay.routes:
                li.set_route(lay.routes[link.id])
            src.links.append(li)
            dst.links.append(li)
            self.addItem(li)
            self.links[link.id] = li
        r = self.itemsBoundingRect().adjusted(-400, -400, 400, 400)
        if self._shown_path == c.path:  # an edit: the scene only grows, so the view does not jump
            r = r.united(self.sceneRect())
        self._shown_path = c.path
        self.setSceneRect(r)
        self._building = False
        self.signals.rebuilt.emit()

    def item(self, item_id: str):
        return self.blocks.get(item_id) or self.links.get(item_id)

    def select(self, ids: list[str]) -> None:
        self.clearSelection()
        for i in ids:
            it = self.item(i)
            if it is not None:
                it.setSelected(True)

    def selected_ids(self) -> list[str]:
        return [getattr(i, "block_id", None) or getattr(i, "link_id") for i in self.selectedItems()]

    def set_marks(self, marks: dict[str, str]) -> None:
        """Colour block borders: {block id: "ok" | "error" | "candidate"}; blocks not named lose their mark."""
        for bid, item in self.blocks.items():
            item.mark = marks.get(bid)
            item.update()

    # ---- diagnostics ------------------------------------------------------------------------------
    def set_problems(self, blocks: dict[str, str], links: dict[str, str]) -> None:
        """Mark offending blocks and links (red outline, warning icon whose tooltip is the message); others clear."""
        for bid, item in self.blocks.items():
            item.set_problem(blocks.get(bid))
        for lid, item in self.links.items():
            item.set_problem(links.get(lid))

    # ---- palette drag feedback ----------------------------------------------------------------------
    def show_targets(self, targets: dict[str, str], keep: tuple[str, ...] = ()) -> None:
        """During a palette drag: {block / link / output-port id: tag}; these glow, everything else dims except the
        blocks in `keep` (the block a wire is drawn from). A tagged link (GPT-2's q / v slices of the fused
        projection) gets its tag drawn on it."""
        self.clear_targets()
        glow_ports: dict[str, set[str]] = {}
        for i in targets:
            if "/out/" in i:
                glow_ports.setdefault(port_block(i), set()).add(i)
        for bid, item in self.blocks.items():
            item.glow_ports = glow_ports.get(bid, set())
            item.state = "target" if bid in targets else (None if bid in keep else "dim")
            item.update()
        for lid, item in self.links.items():
            on = lid in targets or item.link.src in targets
            item.state = "target" if on else "dim"
            tag = targets.get(lid) or targets.get(item.link.src, "")
            item.tag = tag if on else ""
            if item.tag:
                b = Bubble(item.tag, GLOW, px=13)
                b.setPos(_along(item.path(), 0.6) + QPointF(-4, -20))
                self.addItem(b)
                self.tags[lid] = b
            item.update()

    def hover(self, item_id: str | None, reason: str, at: QPointF | None) -> None:
        """The drag is over `item_id`: a target ("hover") or refused ("bad", with "not here: reason" at the cursor)."""
        for bid, item in self.blocks.items():
            if item.state in ("hover", "bad"):
                item.state = "target" if item.state == "hover" else "dim"
                item.update()
        for lid, item in self.links.items():
            if item.state in ("hover", "bad"):
                item.state = "target" if item.state == "hover" else "dim"
                item.update()
        self._drop_note()
        it = self.item(item_id) if item_id else None
        if it is not None:
            it.state = "bad" if reason else "hover"
            it.update()
        if reason and at is not None:
            self.note = Bubble(f"not here: {reason}", "#7f1d1d")
            self.note.setPos(at + QPointF(12, 12) * (1 / max(self._scale(), 1e-3)))
            self.addItem(self.note)

    def clear_targets(self) -> None:
        self._drop_note()
        for b in self.tags.values():
            self.removeItem(b)
        self.tags = {}
        for item in list(self.blocks.values()) + list(self.links.values()):
            item.state = None
            if isinstance(item, BlockItem):
                item.glow_ports = set()
            else:
                item.tag = ""
            item.update()

    def _drop_note(self) -> None:
        if self.note is not None:
            self.removeItem(self.note)
            self.note = None

    def _scale(self) -> float:
        views = self.views()
        return views[0].transform().m11() if views else 1.0

    # ---- navigation and moves ----------------------------------------------------------------------
    def unbox_requested(self, block) -> None:
        self.signals.unbox.emit(block.module_path if block.module_path is not None else block.id[2:])

    def block_moved(self, item: BlockItem) -> None:
        if self._building:
            return
        self.controller.moved(item.block_id, item.pos().x(), item.pos().y())
        pos = {bid: (b.pos().x(), b.pos().y()) for bid, b in self.blocks.items()}
        wires = [self.wires[li.link_id] for li in item.links if li.link_id in self.wires]
        for lid, pts in self.controller.reroute(self.boxes, pos, wires).items():
            self.links[lid].set_route(pts)

    # ---- drawing a wire from an output port ------------------------------------------------------
    @property
    def wiring(self) -> bool:
        return self._wire is not None

    def wire_started(self, port_id: str, at: QPointF) -> None:
        self._wire_from = port_id
        self._wire = QGraphicsPathItem()
        self._wire.setPen(QPen(QColor("#0f766e"), 2, Qt.DashLine))
        self._wire.setZValue(10)
        self.addItem(self._wire)
        self.wire_moved(at)
        self.signals.wire_started.emit(port_id)

    def wire_moved(self, to: QPointF) -> None:
        owner = self.blocks.get(port_block(self._wire_from))
        a = owner.port_pos(self._wire_from) if owner is not None else to
        dx = max(40.0, abs(to.x() - a.x()) / 2)
        path = QPainterPath(a)
        path.cubicTo(QPointF(a.x() + dx, a.y()), QPointF(to.x() - dx, to.y()), to)
        self._wire.setPath(path)

    def wire_finished(self, at: QPointF) -> None:
        src = self._wire_from
        self.removeItem(self._wire)
        self._wire, self._wire_from = None, None
        self.signals.wire.emit(src, self.id_at(at))

    def id_at(self, at: QPointF) -> str:
        """The output port, block or link under a scene point (ports and blocks win over links); "" for none."""
        items = [i for i in self.items(at) if i is not self._wire]
        for it in items:
            if isinstance(it, BlockItem):
                return it.output_port_at(it.mapFromScene(at)) or it.block_id
        for it in items:
            if isinstance(it, LinkItem):
                return it.link_id
        return ""


def _along(path: QPainterPath, t: float) -> QPointF:
    return path.pointAtPercent(max(0.0, min(1.0, t)))


def port_block(port_id: str) -> str:
    """The block id a port id belongs to (`<block>/in/<name>` or `<block>/out/<name>`)."""
    return port_id.rsplit("/out/", 1)[0].rsplit("/in/", 1)[0]
