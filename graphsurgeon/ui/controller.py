"""The editor's state without Qt: the captured model, the open composite, history, ids → blocks, positions."""

from __future__ import annotations

from graphsurgeon.graph.snapshot import search_entries
from graphsurgeon.graph.blocks import Block, CompositeView, Link
from graphsurgeon.ui.layout import MARGIN, ROW_GAP, Box, Layout, Wire, layered
from graphsurgeon.ui.routing import place_new, port_points, route, route_is_free

VIEWPORT = (1020.0, 700.0)  # canvas size (px) a view is laid out to fit: the graph area of a 1600×1000 window


class Controller:
    """Owns the CapturedModel (or a ViewSnapshot shown while it is captured), the open path and navigation history."""

    def __init__(self, cm=None, path: str = "") -> None:
        self.cm = cm  # the live CapturedModel; None while only a preview is shown
        self.preview = None  # a graph.snapshot.ViewSnapshot painted until the capture arrives
        self.queued: dict[str, str] = {}  # module path -> badge of a LoRA dropped on the preview (operate/queued.py)
        self.path = path
        self.history: list[str] = []
        self.manual: dict[str, dict[str, tuple[float, float]]] = {}  # path -> block id -> position set by hand
        self.viewport = VIEWPORT
        self._layouts: dict[tuple[str, int], Layout] = {}
        self._placed: dict[str, dict[str, tuple[float, float]]] = {}  # path -> block id -> last position shown
        self._routes: dict[str, dict[str, list]] = {}  # path -> wire id -> last route shown
        self._sizes: dict[str, dict[str, tuple[float, float]]] = {}  # path -> block id -> last size shown
        self._spots: dict[str, dict[tuple, tuple[float, float]]] = {}  # path -> (id, w, h) -> where it was that size
        self._view: CompositeView | None = None
        self._view_key: tuple[str, int] | None = None

    def set_model(self, cm, path: str = "") -> None:
        """Show a live model; when it replaces the preview of the same model, keep the path and hand-placed blocks."""
        same = self.cm is None and self.preview is not None and self.preview.source_name == cm.source_name
        hierarchy = same and self.preview.modules_only  # its places were laid out without links: lay out afresh
        self.cm, self.preview = cm, None
        if not same:
            self.path, self.history = path, []
            self.manual.clear()
        if not same or hierarchy:
            self._placed.clear()
            self._routes.clear()
            self._sizes.clear()
            self._spots.clear()
        self._layouts.clear()
        self._view = None

    def set_preview(self, snapshot, path: str = "") -> None:
        """Show a read-only snapshot of a model whose capture is still running."""
        self.cm, self.preview, self.path, self.history = None, snapshot, path, []
        self.manual.clear()
        self._placed.clear()
        self._routes.clear()
        self._sizes.clear()
        self._spots.clear()
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

    def arrange(self, boxes: dict[str, Box], wires: list[Wire]) -> Layout:
        """Positions and routes of the current view (blocks placed by hand stay where they were put).

        The first time a composite is shown it gets a full layout; after an edit every block still there keeps
        its place, new blocks go into free space next to their neighbours, and only the links that changed are
        routed again.
        """
        key = (self.path, self.shown.version)
        if key not in self._layouts:
            before = self._placed.get(self.path)
            kept = {k: v for k, v in (before or {}).items() if k in boxes}
            if not kept:
                lay = layered(boxes, wires, self.viewport)
            else:
                lay = self._update(boxes, wires, kept, before)
            self._layouts[key] = lay
        lay = self._layouts[key]
        manual = {k: v for k, v in self.manual.get(self.path, {}).items() if k in lay.positions}
        if manual:
            pos = {**lay.positions, **manual}
            routes = dict(lay.routes)
            moved = {w.id for w in wires if w.src in manual or w.dst in manual}
            rects = _rects(boxes, pos)
            for w in wires:
                if w.id in moved:
                    a, z = port_points(boxes, pos, w)
                    routes[w.id] = route(a, z, rects)
            lay = Layout(pos, routes, lay.bands)
        remembered = self._placed.setdefault(self.path, {})
        remembered.update(lay.positions)
        self._routes[self.path] = dict(lay.routes)
        self._sizes.setdefault(self.path, {}).update({n: (b.w, b.h) for n, b in boxes.items()})
        spots = self._spots.setdefault(self.path, {})
        spots.update({(n, b.w, b.h): lay.positions[n] for n, b in boxes.items() if n in lay.positions})
        return lay

    def _update(self, boxes: dict[str, Box], wires: list[Wire], kept: dict, before: dict) -> Layout:
        kept = self._resized(boxes, kept)
        pos = dict(kept)
        pos.update(place_new(boxes, wires, kept, remembered=before))
        old = self._routes.get(self.path, {})
        rects = _rects(boxes, pos)
        fresh = _inflate(_rects(boxes, {n: p for n, p in pos.items() if n not in kept}), 2.0)
        routes = {}
        for w in wires:
            a, z = port_points(boxes, pos, w)
            r = old.get(w.id)
            if r and r[0] == a and r[-1] == z and route_is_free(r, fresh):
                routes[w.id] = r
            else:
                routes[w.id] = route(a, z, rects)
        return Layout(pos, routes)

    def _resized(self, boxes: dict[str, Box], kept: dict) -> dict:
        """Blocks whose size changed with the edit (a port renamed) stay put if they still fit — growing from their
        left, right or centre, whichever keeps clear of the others; one that fits nowhere is placed like a new one."""
        sizes = self._sizes.get(self.path, {})
        out = dict(kept)
        for n, (x, y) in kept.items():
            old = sizes.get(n)
            b = boxes[n]
            if old is None or old == (b.w, b.h):
                continue
            others = [(px - 2 * MARGIN, py - ROW_GAP / 2, px + boxes[m].w + 2 * MARGIN, py + boxes[m].h + ROW_GAP / 2)
                      for m, (px, py) in out.items() if m != n]
            del out[n]
            back = self._spots.get(self.path, {}).get((n, b.w, b.h))  # where it was at this size (undo, redo)
            for cx, cy in ([back] if back else []) + [(x, y), (x + old[0] - b.w, y), (x + (old[0] - b.w) / 2, y)]:
                if not any(cx < o[2] and o[0] < cx + b.w and cy < o[3] and o[1] < cy + b.h for o in others):
                    out[n] = (cx, cy)
                    break
        return out

    def moved(self, block_id: str, x: float, y: float) -> None:
        self.manual.setdefault(self.path, {})[block_id] = (x, y)

    def reroute(self, boxes: dict[str, Box], positions: dict, wires: list[Wire]) -> dict[str, list]:
        """Routes for `wires` around the blocks at `positions` (a block being dragged by hand)."""
        rects = _rects(boxes, positions)
        return {w.id: route(*port_points(boxes, positions, w), rects) for w in wires}

    # ---- LoRA blocks ---------------------------------------------------------------------------------
    def lora_of(self, block: Block):
        """The inserted LoRA block (surgery.spec.LoRABlock) a composite is, or None."""
        if self.cm is None or block.kind != "composite" or block.module_path is None:
            return None
        return self.cm.loras.get(block.module_path)

    def is_lora(self, block: Block) -> bool:
        """True for an inserted LoRA block and for everything drawn inside one."""
        if self.cm is None or block.module_path is None:
            return False
        return any(block.module_path == p or block.module_path.startswith(p + ".") for p in self.cm.loras)

    def badge(self, block: Block) -> str:
        """"LoRA r=8 α=16 · 12,288 params" on a LoRA block (a bare one also says where its output goes), "LoRA r=8
        α=16 · queued" on a preview's block a LoRA was dropped on; "" otherwise."""
        if self.cm is None:
            return self.queued.get(block.module_path or "", "")
        lb = self.lora_of(block)
        if lb is None:
            return ""
        c = lb.config
        text = f"LoRA r={c.r} α={c.alpha:g} · {block.param_count:,} params"
        if lb.kind == "bare":
            text += f" · onto {self._value_name(lb.wired_to)}" if lb.wired_to else " · not wired"
        return text

    def _value_name(self, node: str) -> str:
        """Display name of an fx value where the view shows it (its port name), else the fx name."""
        for b in self.view.blocks:
            for p in b.outputs:
                if p.value == node:
                    return p.name
        return node

    def search_index(self) -> dict[str, tuple[str, str]]:
        """Find targets: label → (composite path to open, block id to select), for modules and ops."""
        return search_entries(self.shown.blocks())


def _rects(boxes: dict[str, Box], pos: dict) -> list[tuple[float, float, float, float]]:
    return [(x, y, x + boxes[n].w, y + boxes[n].h) for n, (x, y) in pos.items() if n in boxes]


def _inflate(rects, m: float):
    return [(a - m, b - m, c + m, d + m) for a, b, c, d in rects]
