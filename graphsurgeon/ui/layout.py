"""Compact layered left-to-right layout with routed links, on plain data (no Qt): boxes and wires in, positions and routes out.

Sugiyama-style: layers by longest path (sources pulled next to their first user), a dummy slot per layer a
long link passes, barycenter ordering on port positions (so q's chain sits above k's above v's), y by isotonic
regression toward the neighbours' ports (straight chains). A view longer than the viewport folds into bands —
rows of consecutive layers stacked top to bottom — so the composite fills the viewport's shape instead of one
thin row. Every link runs through free space only: the channel between two columns, its own slot in each
column it crosses, and tracks in the gaps between bands; so no link passes under a block.

Why not Graphviz: dot (pygraphviz wheel) routes well but cannot fold a long view into rows, and keeping blocks
still on an edit needs a second engine (neato -n); edits are handled by `routing.place_new` / `routing.route`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

CHANNEL = 36.0  # width of the gap between two columns (links bend there)
ROW_GAP = 14.0  # vertical gap between blocks in a column
SLOT = 8.0  # height a long link takes in a column it passes
BAND_GAP = 28.0  # vertical gap between two bands (plus one track per link crossing it)
TRACK = 5.0  # distance between parallel link tracks
MARGIN = 10.0  # clearance kept around blocks by routes


@dataclass(frozen=True)
class Box:
    """A block as the layout sees it: size and port offsets (y from the block's top), in port order."""

    w: float
    h: float
    ins: tuple[float, ...] = ()
    outs: tuple[float, ...] = ()


@dataclass(frozen=True)
class Wire:
    """A link from output port `src_port` of block `src` to input port `dst_port` of block `dst`."""

    id: str
    src: str
    src_port: int
    dst: str
    dst_port: int


Point = tuple[float, float]


@dataclass
class Layout:
    """Top-left corner per block; per wire a route: points where straight (horizontal/vertical) and
    S-shaped (any other step, drawn as a cubic with horizontal tangents inside the points' box) segments meet."""

    positions: dict[str, Point]
    routes: dict[str, list[Point]] = field(default_factory=dict)
    bands: int = 1

    def bounds(self, boxes: dict[str, Box]) -> tuple[float, float, float, float]:
        xs = [x for x, _ in self.positions.values()] + [x + boxes[n].w for n, (x, _) in self.positions.items()]
        ys = [y for _, y in self.positions.values()] + [y + boxes[n].h for n, (_, y) in self.positions.items()]
        for pts in self.routes.values():
            xs += [p[0] for p in pts]
            ys += [p[1] for p in pts]
        return (min(xs, default=0.0), min(ys, default=0.0), max(xs, default=0.0), max(ys, default=0.0))


# ---- layering and ordering ------------------------------------------------------------------------------------
def _layers(boxes: dict[str, Box], wires: list[Wire]) -> tuple[nx.DiGraph, dict[str, int]]:
    g = nx.DiGraph()
    g.add_nodes_from(boxes)
    order = {n: i for i, n in enumerate(boxes)}
    for w in wires:
        if w.src in boxes and w.dst in boxes and w.src != w.dst and not g.has_edge(w.dst, w.src):
            g.add_edge(w.src, w.dst)
    while not nx.is_directed_acyclic_graph(g):  # views are DAGs; drop a back edge if one ever appears
        cycle = nx.find_cycle(g)
        g.remove_edge(*max(cycle, key=lambda e: order[e[0]] - order[e[1]]))
    layer: dict[str, int] = {}
    for i, gen in enumerate(nx.topological_generations(g)):
        for n in gen:
            layer[n] = i
    for n in reversed(list(nx.topological_sort(g))):  # a source (constant, arange) sits next to its first user
        succ = [layer[s] for s in g.successors(n)]
        if succ and not any(True for _ in g.predecessors(n)):
            layer[n] = max(layer[n], min(succ) - 1)
    return g, layer


@dataclass
class _Graph:
    """The layered graph: real blocks and dummy slots, per layer in order, with port-level edges."""

    layers: list[list[str]]
    size: dict[str, tuple[float, float]]  # node -> (w, h); dummies are (0, SLOT)
    ins: dict[str, tuple[float, ...]]
    outs: dict[str, tuple[float, ...]]
    edges: list[tuple[str, int, str, int]]  # (u, out port, v, in port) between consecutive layers
    chains: dict[str, list[str]]  # wire id -> [src, dummies…, dst] for wires drawn through the layers

    def port_y(self, node: str, out: bool, i: int, y: dict[str, float]) -> float:
        offs = self.outs[node] if out else self.ins[node]
        return y[node] + (offs[i] if i < len(offs) else self.size[node][1] / 2)


def _build(boxes: dict[str, Box], wires: list[Wire], layer: dict[str, int], g: nx.DiGraph,
           through: set[str]) -> _Graph:
    """Dummies for the wires in `through` that span more than one layer."""
    n_layers = max(layer.values(), default=-1) + 1
    layers: list[list[str]] = [[] for _ in range(n_layers)]
    for n in boxes:
        layers[layer[n]].append(n)
    size = {n: (b.w, b.h) for n, b in boxes.items()}
    ins = {n: b.ins for n, b in boxes.items()}
    outs = {n: b.outs for n, b in boxes.items()}
    edges, chains = [], {}
    for w in wires:
        if w.id not in through:
            continue
        a, b = layer[w.src], layer[w.dst]
        chain = [w.src]
        for lay in range(a + 1, b):
            d = f"\0{w.id}\0{lay}"
            layers[lay].append(d)
            size[d], ins[d], outs[d] = (0.0, SLOT), (SLOT / 2,), (SLOT / 2,)
            chain.append(d)
        chain.append(w.dst)
        chains[w.id] = chain
        for k in range(len(chain) - 1):
            sp = w.src_port if k == 0 else 0
            dp = w.dst_port if k == len(chain) - 2 else 0
            edges.append((chain[k], sp, chain[k + 1], dp))
    return _Graph(layers, size, ins, outs, edges, chains)


def _gap(a: str, b: str) -> float:
    """Vertical gap between two neighbours in a column: a link's slot needs less room than a block."""
    return ROW_GAP if not (a.startswith("\0") or b.startswith("\0")) else ROW_GAP / 2


def _stack(G: _Graph, lay: list[str], y: dict[str, float]) -> None:
    top = 0.0
    for k, n in enumerate(lay):
        if k:
            top += _gap(lay[k - 1], n)
        y[n] = top
        top += G.size[n][1]


def _crossings(G: _Graph, y: dict[str, float], layer_of: dict[str, int]) -> int:
    by_gap: dict[int, list[tuple[float, float]]] = {}
    for u, sp, v, dp in G.edges:
        by_gap.setdefault(layer_of[u], []).append((G.port_y(u, True, sp, y), G.port_y(v, False, dp, y)))
    total = 0
    for segs in by_gap.values():
        for i, (a1, b1) in enumerate(segs):
            for a2, b2 in segs[i + 1:]:
                if (a1 - a2) * (b1 - b2) < 0:
                    total += 1
    return total


def _order(G: _Graph, sweeps: int = 8) -> None:
    """Barycenter sweeps on port positions; keeps the ordering with the fewest crossings."""
    layer_of = {n: i for i, lay in enumerate(G.layers) for n in lay}
    preds: dict[str, list[tuple[str, int, int]]] = {}
    succs: dict[str, list[tuple[str, int, int]]] = {}
    for u, sp, v, dp in G.edges:
        preds.setdefault(v, []).append((u, sp, dp))
        succs.setdefault(u, []).append((v, dp, sp))
    y: dict[str, float] = {}
    for lay in G.layers:
        _stack(G, lay, y)
    best = ([list(l) for l in G.layers], _crossings(G, y, layer_of))
    for s in range(sweeps):
        down = s % 2 == 0
        seq = range(1, len(G.layers)) if down else range(len(G.layers) - 2, -1, -1)
        for i in seq:
            lay = G.layers[i]
            rank = {n: k for k, n in enumerate(lay)}

            def key(n: str) -> tuple[float, int]:
                nb = preds.get(n, []) if down else succs.get(n, [])
                if not nb:
                    return (y[n], rank[n])
                ys = [G.port_y(m, down, mp, y) for m, mp, _ in nb]
                return (sum(ys) / len(ys), rank[n])
            lay.sort(key=key)
            _stack(G, lay, y)
        c = _crossings(G, y, layer_of)
        if c < best[1]:
            best = ([list(l) for l in G.layers], c)
    G.layers = best[0]


# ---- coordinates ---------------------------------------------------------------------------------------------
def _isotonic(desired: list[float], weights: list[float], offsets: list[float]) -> list[float]:
    """Positions closest (weighted least squares) to `desired` keeping order and min separations (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [value, weight, count]
    for d, w, o in zip(desired, weights, offsets):
        blocks.append([d - o, w, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, c2 = blocks.pop()
            v1, w1, c1 = blocks[-1]
            blocks[-1] = [(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, c1 + c2]
    out: list[float] = []
    for v, _, c in blocks:
        out.extend([v] * c)
    return [z + o for z, o in zip(out, offsets)]


def _coordinates(G: _Graph, layers: range, iterations: int = 10) -> dict[str, float]:
    """y (top) per node of the given layers, chains pulled straight; the band's top is at 0."""
    y: dict[str, float] = {}
    for i in layers:
        _stack(G, G.layers[i], y)
        h = y[G.layers[i][-1]] + G.size[G.layers[i][-1]][1] if G.layers[i] else 0
        for n in G.layers[i]:
            y[n] -= h / 2
    inside = set(y)
    nb: dict[str, list[tuple[str, float, bool]]] = {}  # node -> (neighbour, own-port minus neighbour-port offset, is pred)
    for u, sp, v, dp in G.edges:
        if u in inside and v in inside:
            su = G.outs[u][sp] if sp < len(G.outs[u]) else G.size[u][1] / 2
            dv = G.ins[v][dp] if dp < len(G.ins[v]) else G.size[v][1] / 2
            nb.setdefault(v, []).append((u, su - dv, True))
            nb.setdefault(u, []).append((v, dv - su, False))
    for it in range(iterations):
        mode = it % 3  # 0: from predecessors, 1: from successors, 2: both
        seq = list(layers) if mode != 1 else list(reversed(layers))
        for i in seq:
            lay = G.layers[i]
            if not lay:
                continue
            desired, weights, offsets = [], [], []
            off = 0.0
            for k, n in enumerate(lay):
                cand = [y[m] + d for m, d, is_pred in nb.get(n, []) if mode == 2 or is_pred == (mode == 0)]
                if cand:
                    cand.sort()
                    mid = len(cand) // 2
                    desired.append(cand[mid] if len(cand) % 2 else (cand[mid - 1] + cand[mid]) / 2)
                    weights.append(8.0 if n.startswith("\0") else 1.0 + len(cand))
                else:
                    desired.append(y[n])
                    weights.append(0.2)
                offsets.append(off)
                off += G.size[n][1] + (_gap(n, lay[k + 1]) if k + 1 < len(lay) else 0.0)
            for n, v in zip(lay, _isotonic(desired, weights, offsets)):
                y[n] = v
    top = min((y[n] for n in y), default=0.0)
    return {n: v - top for n, v in y.items()}


# ---- bands -------------------------------------------------------------------------------------------------
def _partitions(widths: list[float], k: int) -> list[range]:
    """Consecutive layer ranges of about equal width."""
    total = sum(widths) + CHANNEL * len(widths)
    out, start, acc = [], 0, 0.0
    for i, w in enumerate(widths):
        acc += w + CHANNEL
        left = k - len(out) - 1
        if left > 0 and acc >= total / k * (len(out) + 1) - (w + CHANNEL) / 2 and len(widths) - i - 1 >= left:
            out.append(range(start, i + 1))
            start = i + 1
    out.append(range(start, len(widths)))
    return [r for r in out if len(r)]


def layered(boxes: dict[str, Box], wires: list[Wire], viewport: tuple[float, float] = (1020.0, 700.0),
            good_scale: float = 0.8, max_bands: int = 6) -> Layout:
    """Positions and routes; folds into the fewest bands that fit `viewport` (px) at `good_scale` or more (else
    into the bands that fit at the largest scale): one row reads best, folding only buys legibility."""
    if not boxes:
        return Layout({})
    g, layer = _layers(boxes, wires)
    wires = [w for w in wires if w.src in boxes and w.dst in boxes and g.has_edge(w.src, w.dst)]
    full = _build(boxes, wires, layer, g, {w.id for w in wires})
    _order(full)
    order = {n: i for i, lay in enumerate(full.layers) for i, n in enumerate(lay)}
    widths = [max((boxes[n].w for n in lay if n in boxes), default=0.0) for lay in full.layers]
    best: tuple[float, Layout] | None = None
    for k in range(1, min(max_bands, max(1, len(widths) // 2)) + 1):
        bands = _partitions(widths, k)
        if best is not None and len(bands) < k:
            break
        lay_out = _assemble(boxes, wires, layer, g, order, bands)
        x0, y0, x1, y1 = lay_out.bounds(boxes)
        scale = min(1.0, viewport[0] / max(x1 - x0 + 40, 1), viewport[1] / max(y1 - y0 + 40, 1))
        if best is None or scale > best[0] * 1.04:
            best = (scale, lay_out)
        if scale >= good_scale:
            break
    return best[1]


def _assemble(boxes, wires, layer, g, order, bands: list[range]) -> Layout:
    band_of = {i: b for b, r in enumerate(bands) for i in r}
    through = {w.id for w in wires if band_of[layer[w.src]] == band_of[layer[w.dst]]}
    G = _build(boxes, wires, layer, g, through)
    for lay in G.layers:  # the global order for blocks, dummies by their wire's source position
        lay.sort(key=lambda n: order[n])
    # tracks: vertical ones in channels (band, channel index), horizontal ones in band gaps
    cross = [w for w in wires if w.id not in through]
    v_tracks: dict[tuple[int, int], list[str]] = {}
    h_tracks: dict[int, list[str]] = {}
    left_lane: list[str] = []
    for w in cross:
        bs, bd = band_of[layer[w.src]], band_of[layer[w.dst]]
        v_tracks.setdefault((bs, layer[w.src] + 1), []).append(w.id + "\0s")
        v_tracks.setdefault((bd, layer[w.dst]), []).append(w.id + "\0d")
        h_tracks.setdefault(bs, []).append(w.id)
        if bd > bs + 1:
            h_tracks.setdefault(bd - 1, []).append(w.id + "\0l")
            left_lane.append(w.id)
    widths = [max((G.size[n][0] for n in lay), default=0.0) for lay in G.layers]
    col_x: dict[int, float] = {}
    chan_w: dict[int, float] = {}
    for b, r in enumerate(bands):
        x = 0.0
        for i in r:
            chan = CHANNEL if i != r.start else 0.0
            chan = max(chan, 2 * MARGIN + TRACK * (len(v_tracks.get((b, i), [])) + 1)) if i != r.start else 0.0
            chan_w[i] = chan
            x += chan
            col_x[i] = x
            x += widths[i]
    ys: dict[str, float] = {}
    band_top: list[float] = []
    band_bottom: list[float] = []
    top = 0.0
    for b, r in enumerate(bands):
        yb = _coordinates(G, r)
        h = max((yb[n] + G.size[n][1] for n in yb), default=0.0)
        for n, v in yb.items():
            ys[n] = v + top
        band_top.append(top)
        band_bottom.append(top + h)
        top += h + BAND_GAP + TRACK * len(h_tracks.get(b, []))
    pos = {n: (col_x[layer[n]] + (widths[layer[n]] - boxes[n].w) / 2, ys[n]) for n in boxes}
    routes: dict[str, list[Point]] = {}

    def out_pt(n: str, i: int) -> Point:
        b = boxes[n]
        return (pos[n][0] + b.w, pos[n][1] + (b.outs[i] if i < len(b.outs) else b.h / 2))

    def in_pt(n: str, i: int) -> Point:
        b = boxes[n]
        return (pos[n][0], pos[n][1] + (b.ins[i] if i < len(b.ins) else b.h / 2))

    for w in wires:
        a, z = out_pt(w.src, w.src_port), in_pt(w.dst, w.dst_port)
        if w.id in G.chains:
            pts = [a, (col_x[layer[w.src]] + widths[layer[w.src]], a[1])]
            for d in G.chains[w.id][1:-1]:
                lay, yd = layer[w.src] + len(pts) // 2, ys[d] + SLOT / 2
                pts += [(col_x[lay], yd), (col_x[lay] + widths[lay], yd)]
            pts += [(col_x[layer[w.dst]], z[1]), z]
        else:
            bs, bd = band_of[layer[w.src]], band_of[layer[w.dst]]
            ls, ld = layer[w.src], layer[w.dst]
            right = col_x[ls] + widths[ls]
            xs = right + MARGIN + TRACK * v_tracks[(bs, ls + 1)].index(w.id + "\0s")
            xd = col_x[ld] - MARGIN - TRACK * v_tracks[(bd, ld)].index(w.id + "\0d")
            gy = band_bottom[bs] + BAND_GAP / 2 + TRACK * h_tracks[bs].index(w.id)
            pts = [a, (xs, a[1]), (xs, gy)]
            if bd > bs + 1:
                xl = -2 * MARGIN - TRACK * left_lane.index(w.id)
                gy2 = band_bottom[bd - 1] + BAND_GAP / 2 + TRACK * h_tracks[bd - 1].index(w.id + "\0l")
                pts += [(xl, gy), (xl, gy2), (xd, gy2)]
            else:
                pts.append((xd, gy))
            pts += [(xd, z[1]), z]
        routes[w.id] = clean(pts)
    return Layout(pos, routes, len(bands))


def clean(pts: list[Point]) -> list[Point]:
    """The route without repeated points."""
    out: list[Point] = []
    for p in pts:
        if out and abs(out[-1][0] - p[0]) < 1e-6 and abs(out[-1][1] - p[1]) < 1e-6:
            continue
        out.append(p)
    return out
