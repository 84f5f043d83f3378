"""The graph scene of one composite view: builds block and link items from the controller."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QGraphicsScene

from graphsurgeon.ui.controller import Controller
from graphsurgeon.ui.items import BlockItem, LinkItem


class _Signals(QObject):
    unbox = Signal(str)  # composite path


class GraphScene(QGraphicsScene):
    """Items know ids; `items_by_id` maps block and link ids to their items."""

    def __init__(self, controller: Controller) -> None:
        super().__init__()
        self.controller = controller
        self.signals = _Signals()
        self.blocks: dict[str, BlockItem] = {}
        self.links: dict[str, LinkItem] = {}
        self._building = False

    def rebuild(self) -> None:
        """Re-derive every item from the controller's current view."""
        self._building = True
        self.clear()
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
