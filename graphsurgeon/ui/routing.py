"""Edits on a laid-out view (no Qt): blocks stay put, new ones go into free space next to their neighbours, and links
are routed around blocks — for a block placed by an edit or dragged by hand (`layout.layered` routes a fresh view)."""

from __future__ import annotations

import networkx as nx

from graphsurgeon.ui.layout import CHANNEL, MARGIN, ROW_GAP, TRACK, Box, Point, Wire, clean

Rect = tuple[float, float, float, float]  # x0, y0, x1, y1


def _hits(r: Rect, rects: list[Rect]) -> bool:
    return any(r[0] < o[2] and o[0] < r[2] and r[1] < o[3] and o[1] < r[3] for o in rects)


def place_new(boxes: dict[str, Box], wires: list[Wire], fixed: dict[str, Point],
              remembered: dict[str, Point] | None = None) -> dict[str, Point]:
    """Positions for the blocks not in `fixed`, each in free space next to its neighbours; fixed blocks never move.

    A block with a remembered position (it was there before an undo) goes back there when that spot is free.
    """
    pos = dict(fixed)
    remembered = remembered or {}
    new = [n for n in boxes if n not in pos]
    g = nx.DiGraph()
    g.add_nodes_from(new)
    g.add_edges_from((w.src, w.dst) for w in wires if w.src in g and w.dst in g and w.src != w.dst)
    seq = list(nx.topological_sort(g)) if nx.is_directed_acyclic_graph(g) else new
    for n in seq:
        b = boxes[n]
        rects = [(x - ROW_GAP, y - ROW_GAP, x + boxes[m].w + ROW_GAP, y + boxes[m].h + ROW_GAP) for m, (x, y) in pos.items()]
        if n in remembered:
            x, y = remembered[n]
            if not _hits((x, y, x + b.w, y + b.h), rects):
                pos[n] = (x, y)
                continue
        pos[n] = _free_spot(n, b, boxes, wires, pos, rects)
    return {n: pos[n] for n in new}


def _free_spot(n: str, b: Box, boxes: dict[str, Box], wires: list[Wire], pos: dict[str, Point],
               rects: list[Rect]) -> Point:
    lefts = [pos[w.src][0] + boxes[w.src].w for w in wires if w.dst == n and w.src in pos]
    rights = [pos[w.dst][0] for w in wires if w.src == n and w.dst in pos]
    ys = [pos[w.src][1] + _off(boxes[w.src].outs, w.src_port, boxes[w.src].h) - _off(b.ins, w.dst_port, b.h)
          for w in wires if w.dst == n and w.src in pos]
    ys += [pos[w.dst][1] + _off(boxes[w.dst].ins, w.dst_port, boxes[w.dst].h) - _off(b.outs, w.src_port, b.h)
           for w in wires if w.src == n and w.dst in pos]
    if lefts and rights:
        x0 = (max(lefts) + min(rights)) / 2 - b.w / 2
    elif lefts:
        x0 = max(lefts) + CHANNEL
    elif rights:
        x0 = min(rights) - CHANNEL - b.w
    else:
        x0 = max((x + boxes[m].w for m, (x, _) in pos.items()), default=0.0) + CHANNEL
    y0 = sum(ys) / len(ys) if ys else 0.0
    xs = {x0} | {r[2] for r in rects} | {r[0] - b.w for r in rects}
    yset = {y0} | {r[3] for r in rects} | {r[1] - b.h for r in rects}
    best: tuple[float, Point] | None = None
    last_in, first_out = max(lefts, default=None), min(rights, default=None)

    def backwards(x: float) -> float:
        """A link that has to turn back (into the block from the right, out of it to the left) costs a detour."""
        return ((last_in is not None and x < last_in + MARGIN) + (first_out is not None and x + b.w > first_out - MARGIN)) * 120.0

    for x in xs:
        dx = abs(x - x0)
        if best is not None and dx * 1.5 >= best[0]:
            continue
        for y in yset:
            cost = dx * 1.5 + abs(y - y0) + backwards(x)
            if (best is None or cost < best[0]) and not _hits((x, y, x + b.w, y + b.h), rects):
                best = (cost, (x, y))
    return best[1] if best else (x0, y0)


def _off(offs: tuple[float, ...], i: int, h: float) -> float:
    return offs[i] if i < len(offs) else h / 2


def port_points(boxes: dict[str, Box], pos: dict[str, Point], w: Wire) -> tuple[Point, Point]:
    s, d = boxes[w.src], boxes[w.dst]
    a = (pos[w.src][0] + s.w, pos[w.src][1] + _off(s.outs, w.src_port, s.h))
    z = (pos[w.dst][0], pos[w.dst][1] + _off(d.ins, w.dst_port, d.h))
    return a, z


def route_is_free(pts: list[Point], rects: list[Rect]) -> bool:
    """True when no segment's box (a cubic stays inside its end points' box) meets a rect."""
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        r = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        if r[2] - r[0] < 1e-6:
            r = (r[0] - 0.5, r[1], r[2] + 0.5, r[3])
        if r[3] - r[1] < 1e-6:
            r = (r[0], r[1] - 0.5, r[2], r[3] + 0.5)
        if _hits(r, rects):
            return False
    return True


def route(a: Point, z: Point, rects: list[Rect]) -> list[Point]:
    """A route from output port `a` (leaving rightwards) to input port `z` (entering from the left) around `rects`.

    Tries, cheapest first: one S-bend, one vertical jog in a free column, a detour along a free row.
    `rects` are the blocks to avoid (the two ends' blocks included: the stubs leave them sideways).
    """
    ax, zx = a[0] + MARGIN, z[0] - MARGIN
    obst = [(r[0] - MARGIN / 2, r[1] - MARGIN / 2, r[2] + MARGIN / 2, r[3] + MARGIN / 2) for r in rects]
    stub_a, stub_z = (ax, a[1]), (zx, z[1])
    if ax <= zx:
        pts = [a, stub_a, stub_z, z]
        if route_is_free(pts[1:3], obst):
            return clean(pts)
    edges = sorted({r[0] for r in obst} | {r[2] for r in obst})
    cols = [ax, zx] + [(p + q) / 2 for p, q in zip(edges, edges[1:]) if q - p > TRACK]
    if ax <= zx:
        for x in sorted((c for c in cols if ax <= c <= zx), key=lambda c: abs(c - (ax + zx) / 2)):
            pts = [a, (x, a[1]), (x, z[1]), z]
            if route_is_free(pts[1:3], obst) and route_is_free([stub_a, (x, a[1])], obst) \
                    and route_is_free([(x, z[1]), stub_z], obst):
                return clean(pts)
    ys_edges = sorted({r[1] for r in obst} | {r[3] for r in obst})
    rows = [(p + q) / 2 for p, q in zip(ys_edges, ys_edges[1:]) if q - p > TRACK]
    top = min((r[1] for r in obst), default=min(a[1], z[1])) - MARGIN
    bottom = max((r[3] for r in obst), default=max(a[1], z[1])) + MARGIN
    rows += [top, bottom]
    xas = sorted((c for c in cols if c >= ax), key=lambda c: c - ax)[:4]
    xzs = sorted((c for c in cols if c <= zx), key=lambda c: zx - c)[:4]
    best: tuple[float, list[Point]] | None = None
    for y in sorted(rows, key=lambda r: abs(r - a[1]) + abs(r - z[1])):
        if best is not None and abs(y - a[1]) + abs(y - z[1]) >= best[0]:
            break
        for xa in xas:
            if not route_is_free([stub_a, (xa, a[1]), (xa, y)], obst):
                continue
            for xz in xzs:
                pts = [a, (xa, a[1]), (xa, y), (xz, y), (xz, z[1]), z]
                cost = abs(y - a[1]) + abs(y - z[1]) + abs(xz - xa) + (xa - ax) + (zx - xz)
                if (best is None or cost < best[0]) and route_is_free(pts[2:5] + [stub_z], obst):
                    best = (cost, pts)
    if best is not None:
        return clean(best[1])
    return clean([a, stub_a, (ax, top), (zx, top), stub_z, z])  # over everything
