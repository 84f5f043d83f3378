"""Left-to-right layered layout on plain data: sizes and edges in, top-left positions out (no Qt)."""

from __future__ import annotations

import networkx as nx

COL_GAP = 48.0
ROW_GAP = 22.0


def layout(sizes: dict[str, tuple[float, float]], edges: list[tuple[str, str]], sweeps: int = 4) -> dict[str, tuple[float, float]]:
    """Columns are topological generations; barycenter sweeps order each column to reduce crossings."""
    g = nx.DiGraph()
    g.add_nodes_from(sizes)
    g.add_edges_from((s, d) for s, d in edges if s in sizes and d in sizes and s != d)
    if not nx.is_directed_acyclic_graph(g):  # views are DAGs; be safe anyway
        g = nx.DiGraph([(s, d) for s, d in g.edges if list(sizes).index(s) < list(sizes).index(d)])
        g.add_nodes_from(sizes)
    order = {n: i for i, n in enumerate(sizes)}
    cols = [sorted(gen, key=order.__getitem__) for gen in nx.topological_generations(g)]
    pos_in_col: dict[str, float] = {}
    for col in cols:
        for i, n in enumerate(col):
            pos_in_col[n] = float(i)
    for sweep in range(sweeps):
        forward = sweep % 2 == 0
        seq = cols[1:] if forward else cols[-2::-1]
        for col in seq:
            nbrs = g.predecessors if forward else g.successors
            def bary(n: str) -> float:
                ps = [pos_in_col[p] for p in nbrs(n)]
                return sum(ps) / len(ps) if ps else pos_in_col[n]
            col.sort(key=lambda n: (bary(n), order[n]))
            for i, n in enumerate(col):
                pos_in_col[n] = float(i)
    out: dict[str, tuple[float, float]] = {}
    x = 0.0
    for col in cols:
        width = max(sizes[n][0] for n in col)
        total = sum(sizes[n][1] for n in col) + ROW_GAP * (len(col) - 1)
        y = -total / 2
        for n in col:
            out[n] = (x + (width - sizes[n][0]) / 2, y)
            y += sizes[n][1] + ROW_GAP
        x += width + COL_GAP
    return out


def crossings(positions: dict[str, tuple[float, float]], edges: list[tuple[str, str]]) -> int:
    """Number of crossing edge pairs between consecutive columns (for tests and benchmarks)."""
    segs = [(positions[s], positions[d]) for s, d in edges if s in positions and d in positions]
    n = 0
    for i, (a1, b1) in enumerate(segs):
        for a2, b2 in segs[i + 1:]:
            if a1[0] == a2[0] and b1[0] == b2[0] and (a1[1] - a2[1]) * (b1[1] - b2[1]) < 0:
                n += 1
    return n
