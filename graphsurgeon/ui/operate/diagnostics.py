"""The Diagnostics dock: one wrapped row per problem of the last full validation, red marks on the blocks and links
of the view a problem is in, and a click on a row opens the composite its node is drawn in."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QListWidget, QListWidgetItem


class ProblemList(QListWidget):
    """The problems of one window's model (validate.Diagnostic: `.node`, `.message`), there until they are fixed."""

    def __init__(self, window) -> None:
        super().__init__()
        self.window = window
        self.problems: list = []
        self.setWordWrap(True)
        self.setTextElideMode(Qt.ElideNone)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.setResizeMode(QListWidget.Adjust)
        self.itemClicked.connect(self.jump)
        window.scene.signals.rebuilt.connect(self.mark)

    def show_problems(self, problems: list) -> None:
        """List `problems` (replacing the last ones) and mark them on the view."""
        self.problems = problems
        self.clear()
        for d in problems:
            it = QListWidgetItem(str(d))
            it.setData(Qt.UserRole, d.node)
            it.setToolTip(str(d))
            self.addItem(it)
        self.mark()

    def mark(self) -> None:
        """Red outline and a warning icon (tooltip = the message) on every block and link of the view a problem is in."""
        c = self.window.controller
        if c.cm is None:
            return
        bg = c.cm.blocks()
        blocks: dict[str, str] = {}
        links: dict[str, str] = {}
        for d in self.problems:
            node = bg.nodes.get(d.node)
            if node is None:
                continue
            chain = set(bg.chain.get(node, ()))
            for b in c.view.blocks:
                if b.node == d.node or (b.kind == "composite" and b.module_path in chain):
                    blocks.setdefault(b.id, d.message)
            for link in c.view.links:
                if link.value == d.node:
                    links.setdefault(link.id, d.message)
        self.window.scene.set_problems(blocks, links)

    def jump(self, item) -> None:
        """Open the composite the problem's node is drawn in and select its block."""
        node = item.data(Qt.UserRole)
        c = self.window.controller
        if not node or c.cm is None:
            return
        bg = c.cm.blocks()
        n = bg.nodes.get(node)
        if n is None:
            return
        chain = bg.chain.get(n, ())
        path = chain[-1] if chain else ""
        self.window.navigate(path)
        bid = f"n:{node}" if f"n:{node}" in self.window.scene.blocks else None
        if bid is None:  # a node folded into its producer (a getitem): select the block its link leaves
            bid = next((l.src.rsplit("/out/", 1)[0] for l in c.view.links if l.value == node), None)
        if bid is not None:
            self.window.scene.select([bid])
            self.window.view.centerOn(self.window.scene.blocks[bid])
