"""The graph scene of one composite view: builds block and link items from the controller."""

from __future__ import annotations

from PySide6.QtCore import QObject, QPointF, Qt, Signal
from PySide6.QtGui import QColor, QPainterPath, QPen
from PySide6.QtWidgets import QGraphicsPathItem, QGraphicsScene

from graphsurgeon.ui.controller import Controller
from graphsurgeon.ui.items import BlockItem, LinkItem


class _Signals(QObject):
    unbox = Signal(str)  # composite path
    wire_started = Signal(str)  # output port id a wire is drawn from
    wire = Signal(str, str)  # (output port id, id of the link / port / block it was released on, or "")


class GraphScene(QGraphicsScene):
    """Items know ids; `items_by_id` maps block and link ids to their items."""

    def __init__(self, controller: Controller) -> None:
        super().__init__()
        self.controller = controller
        self.signals = _Signals()
        self.blocks: dict[str, BlockItem] = {}
        self.links: dict[str, LinkItem] = {}
        self._building = False
        self._wire: QGraphicsPathItem | None = None  # the wire being drawn from an output port
        self._wire_from: str | None = None

    def rebuild(self) -> None:
        """Re-derive every item from the controller's current view."""
        self._building = True
        self.clear()
        self._wire, self._wire_from = None, None
        self.blocks, self.links = {}, {}
        if self.controller.shown is None:  # no model open (a first capture failed)
            return
        view = self.controller.view
        pos = self.controller.positions()
        port_owner: dict[str, BlockItem] = {}
        for b in view.blocks:
            item = BlockItem(b, self)
            item.setPos(*pos.get(b.id, (0.0, 0.0)))
            self.addItem(item)
            self.blocks[b.id] = item
            for p in b.inputs + b.outputs:
                port_owner[p.id] = item
        for link in view.links:
            src, dst = port_owner.get(link.src), port_owner.get(link.dst)
            if src is None or dst is None:
                continue
            li = LinkItem(link, src, dst)
            src.links.append(li)
            dst.links.append(li)
            self.addItem(li)
            self.links[link.id] = li
        r = self.itemsBoundingRect()
        self.setSceneRect(r.adjusted(-200, -200, 200, 200))
        self._building = False

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

    def unbox_requested(self, block) -> None:
        self.signals.unbox.emit(block.module_path if block.module_path is not None else block.id[2:])

    def block_moved(self, item: BlockItem) -> None:
        if not self._building:
            self.controller.moved(item.block_id, item.pos().x(), item.pos().y())

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


def port_block(port_id: str) -> str:
    """The block id a port id belongs to (`<block>/in/<name>` or `<block>/out/<name>`)."""
    return port_id.rsplit("/out/", 1)[0].rsplit("/in/", 1)[0]
