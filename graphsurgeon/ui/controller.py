"""The editor's state without Qt: the captured model, the open composite, history, ids → blocks, positions."""

from __future__ import annotations

from graphsurgeon.graph.snapshot import search_entries
from graphsurgeon.graph.blocks import Block, CompositeView, Link
from graphsurgeon.ui.layout import layout

BLOCK_MIN_W = 96.0
HEADER_H = 38.0
ROW_H = 18.0
CHAR_W = 6.6


def block_size(b: Block) -> tuple[float, float]:
    """Width and height of a block as drawn: title, ports left and right, static circles under the inputs."""
    left = [p.name for p in b.inputs] + [f"{s.name}={s.text}" for s in b.static_inputs]
    right = [p.name for p in b.outputs]
    lw = max((len(t) for t in left), default=0)
    rw = max((len(t) for t in right), default=0)
    w = max(BLOCK_MIN_W, (lw + rw) * 7.4 + 34, (max(len(b.title), len(b.subtitle)) + 3) * CHAR_W)
    rows = max(len(b.inputs) + len(b.static_inputs), len(b.outputs), 1)
    return (min(w, 420.0), HEADER_H + rows * ROW_H + 6)


class Controller:
    """Owns the CapturedModel (or a ViewSnapshot shown while it is captured), the open path and navigation history."""

    def __init__(self, cm=None, path: str = "") -> None:
        self.cm = cm  # the live CapturedModel; None while only a preview is shown
        self.preview = None  # a graph.snapshot.ViewSnapshot painted until the capture arrives
        self.path = path
        self.history: list[str] = []
        self.manual: dict[str, dict[str, tuple[float, float]]] = {}  # path -> block id -> position set by hand
        self._layouts: dict[tuple[str, int], dict[str, tuple[float, float]]] = {}
        self._view: CompositeView | None = None
        self._view_key: tuple[str, int] | None = None

    def set_model(self, cm, path: str = "") -> None:
        """Show a live model; when it replaces the preview of the same model, keep the path and hand-placed blocks."""
        same = self.cm is None and self.preview is not None and self.preview.source_name == cm.source_name
        self.cm, self.preview = cm, None
        if not same:
            self.path, self.history = path, []
            self.manual.clear()
        self._layouts.clear()
        self._view = None

    def set_preview(self, snapshot, path: str = "") -> None:
        """Show a read-only snapshot of a model whose capture is still running."""
        self.cm, self.preview, self.path, self.history = None, snapshot, path, []
        self.manual.clear()
        self._layouts.clear()
        self._view = None

    def state(self) -> tuple:
        """What is shown (model, preview, path), to put back with `restore` if an open fails."""
        return (self.cm, self.preview, self.path)

    def restore(self, state: tuple) -> None:
        self.cm, self.preview, self.path = state
        self._layouts.clear()
        self._view = None

    @property
    def shown(self):
        """What the window draws: the live model, else the preview (both answer .blocks(), .version, .model_class)."""
        return self.cm if self.cm is not None else self.preview

    @property
    def view(self) -> CompositeView:
        key = (self.path, self.shown.version)
        if self._view is None or self._view_key != key:
            self._view, self._view_key = self.shown.blocks().view(self.path), key
        return self._view

    def blocks(self) -> dict[str, Block]:
        return {b.id: b for b in self.view.blocks}

    def links(self) -> dict[str, Link]:
        return {l.id: l for l in self.view.links}

    def block(self, block_id: str) -> Block:
        return self.view.block(block_id)

    def breadcrumbs(self) -> list[tuple[str, str]]:
        return self.shown.blocks().breadcrumbs(self.path)

    def navigate(self, path: str, remember: bool = True) -> None:
        """Open a composite (raises ViewError for an unknown path, leaving the state as it was)."""
        self.shown.blocks().view(path)
        if remember and path != self.path:
            self.history.append(self.path)
        self.path = path

    def back(self) -> bool:
        if not self.history:
            return False
        self.path = self.history.pop()
        return True

    def up(self) -> bool:
        parent = self.shown.blocks().parent(self.path) if self.path else None
        if parent is None:
            return False
        self.navigate(parent)
        return True

    def positions(self) -> dict[str, tuple[float, float]]:
        """Block positions for the current view: the cached layout overridden by hand-placed blocks."""
        key = (self.path, self.shown.version)
        if key not in self._layouts:
            v = self.view
            sizes = {b.id: block_size(b) for b in v.blocks}
            port_block = {p.id: b.id for b in v.blocks for p in b.inputs + b.outputs}
            edges = [(port_block[l.src], port_block[l.dst]) for l in v.links if l.src in port_block and l.dst in port_block]
            self._layouts[key] = layout(sizes, edges)
        pos = dict(self._layouts[key])
        pos.update({k: v for k, v in self.manual.get(self.path, {}).items() if k in pos})
        return pos

    def moved(self, block_id: str, x: float, y: float) -> None:
        self.manual.setdefault(self.path, {})[block_id] = (x, y)

    def search_index(self) -> dict[str, tuple[str, str]]:
        """Find targets: label → (composite path to open, block id to select), for modules and ops."""
        return search_entries(self.shown.blocks())
