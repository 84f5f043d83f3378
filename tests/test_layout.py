"""The layout on plain data (no Qt): left to right, rows in port order, long views folded, links around blocks, edits local."""

from graphsurgeon.ui.layout import Box, Wire, layered
from graphsurgeon.ui.routing import place_new, port_points, route, route_is_free


def _rects(boxes, pos, skip=()):
    return [(x, y, x + boxes[n].w, y + boxes[n].h) for n, (x, y) in pos.items() if n not in skip]


def _fan():
    """a splits into three outputs (q, k, v) read by three chains that meet again in `attn`."""
    boxes = {"a": Box(80, 70, (40,), (30, 45, 60))}
    wires = []
    for i, name in enumerate("qkv"):
        boxes[f"{name}1"] = Box(70, 40, (30,), (30,))
        boxes[f"{name}2"] = Box(70, 40, (30,), (30,))
        wires += [Wire(f"a-{name}", "a", i, f"{name}1", 0), Wire(f"{name}12", f"{name}1", 0, f"{name}2", 0),
                  Wire(f"{name}-attn", f"{name}2", 0, "attn", i)]
    boxes["attn"] = Box(90, 80, (30, 45, 60), (30,))
    boxes = {**{k: boxes[k] for k in ["a", "v1", "k1", "q1", "v2", "k2", "q2", "attn"]}}  # given in a scrambled order
    return boxes, wires


def test_left_to_right_and_rows_follow_port_order():
    boxes, wires = _fan()
    lay = layered(boxes, wires)
    pos = lay.positions
    assert all(pos[w.src][0] + boxes[w.src].w < pos[w.dst][0] for w in wires)
    assert pos["q1"][1] < pos["k1"][1] < pos["v1"][1] and pos["q2"][1] < pos["k2"][1] < pos["v2"][1]


def test_routes_start_and_end_at_ports_and_avoid_blocks():
    boxes, wires = _fan()
    boxes["skip"] = Box(70, 40, (30,), (30,))
    wires += [Wire("a-skip", "a", 0, "skip", 0), Wire("long", "a", 2, "attn", 1)]  # a link spanning three columns
    lay = layered(boxes, wires)
    for w in wires:
        pts = lay.routes[w.id]
        assert (pts[0], pts[-1]) == port_points(boxes, lay.positions, w)
        others = [(x0 + 1, y0 + 1, x1 - 1, y1 - 1) for x0, y0, x1, y1 in _rects(boxes, lay.positions, {w.src, w.dst})]
        assert route_is_free(pts, others), w.id


def test_a_long_chain_folds_into_bands_to_fit_the_viewport():
    boxes = {f"n{i}": Box(120, 50, (25,), (25,)) for i in range(20)}
    wires = [Wire(f"w{i}", f"n{i}", 0, f"n{i + 1}", 0) for i in range(19)]
    wires.append(Wire("skip", "n2", 0, "n15", 0))  # crosses a fold
    lay = layered(boxes, wires, viewport=(1000, 700))
    x0, y0, x1, y1 = lay.bounds(boxes)
    assert lay.bands > 1 and x1 - x0 < 20 * 120 / 2
    for w in wires:
        others = [(a + 1, b + 1, c - 1, d - 1) for a, b, c, d in _rects(boxes, lay.positions, {w.src, w.dst})]
        assert route_is_free(lay.routes[w.id], others), w.id
    small = layered({k: boxes[k] for k in ["n0", "n1", "n2"]}, wires[:2], viewport=(1000, 700))
    assert small.bands == 1  # a view that fits at 1:1 is never folded


def test_new_blocks_go_into_free_space_and_nothing_else_moves():
    boxes, wires = _fan()
    lay = layered(boxes, wires)
    boxes["lora"] = Box(90, 50, (20, 35), (25,))
    wires = [w for w in wires if w.id != "a-q"] + [Wire("a-lora", "a", 0, "lora", 1), Wire("lora-q", "lora", 0, "q1", 0)]
    new = place_new(boxes, wires, lay.positions)
    assert set(new) == {"lora"}
    x, y = new["lora"]
    r = (x, y, x + 90, y + 50)
    assert all(r[2] <= a or c <= r[0] or r[3] <= b or d <= r[1] for a, b, c, d in _rects(boxes, lay.positions))
    assert abs(y - lay.positions["q1"][1]) < 300  # next to its neighbours, not far away
    back = place_new(boxes, wires, lay.positions, remembered={"lora": (x, y)})
    assert back == new  # a block that comes back (redo) goes where it was


def test_route_around_a_block_in_the_way():
    wall = (100.0, -200.0, 160.0, 200.0)
    pts = route((0.0, 0.0), (300.0, 10.0), [wall])
    assert pts[0] == (0.0, 0.0) and pts[-1] == (300.0, 10.0)
    assert route_is_free(pts, [wall])
