"""Inline the `torch.no_grad()` / `torch.enable_grad()` regions torch.export wraps in a higher-order op.

A model whose forward has `with torch.no_grad():` (DeepSeek-V3.2's sparse-attention indexer, CPM-Ant's position
buckets) is captured as `wrap_with_set_grad_enabled(False, submod, *operands)` with the region's ops in a nested
GraphModule. Every reader of the graph (the block view, target finding, the code generator) sees one flat graph, so
the region's ops are put back in line, each node keeping its meta (shapes, module path, source line). Only the
gradient mode differs, and the forward's values do not depend on it; the nodes that came from such a region are
tagged `meta["grad_enabled"] = False` so a reader can tell.
"""

from __future__ import annotations

import operator

import torch
import torch.fx

GRAD_ENABLED = "grad_enabled"


def _hop():
    return getattr(torch.ops.higher_order, "wrap_with_set_grad_enabled", None)


def inline_grad_regions(gm: torch.fx.GraphModule) -> int:
    """Inline every grad-mode region of `gm` (nested ones too); returns how many were inlined."""
    hop = _hop()
    if hop is None:
        return 0
    count = 0
    while True:
        node = next((n for n in gm.graph.nodes if n.op == "call_function" and n.target is hop), None)
        if node is None or not _inline(gm, node):
            break
        count += 1
    if count:
        gm.graph.eliminate_dead_code()
        gm.graph.lint()
        gm.recompile()
    return count


def _inline(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    enabled, sub_node, *operands = node.args
    sub = getattr(gm, sub_node.target, None) if isinstance(sub_node, torch.fx.Node) and sub_node.op == "get_attr" else None
    if not isinstance(sub, torch.fx.GraphModule) or any(n.op == "get_attr" for n in sub.graph.nodes):
        return False  # a region holding its own attributes: left as it is (the code generator says so)
    env: dict[torch.fx.Node, object] = {}
    placeholders = [n for n in sub.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(operands) or any(
            not (u.op == "call_function" and u.target is operator.getitem and isinstance(u.args[1], int))
            for u in node.users) and _returns_tuple(sub):
        return False
    env.update(zip(placeholders, operands))
    result = None
    with gm.graph.inserting_before(node):
        for inner in sub.graph.nodes:
            if inner.op == "placeholder":
                continue
            if inner.op == "output":
                result = torch.fx.node.map_arg(inner.args[0], lambda n: env[n])
                continue
            copy = gm.graph.node_copy(inner, lambda n: env[n])
            copy.meta[GRAD_ENABLED] = bool(enabled)
            env[inner] = copy
    outs = list(result) if isinstance(result, (list, tuple)) else [result]
    for user in list(node.users):
        if user.op == "call_function" and user.target is operator.getitem and isinstance(user.args[1], int):
            user.replace_all_uses_with(outs[user.args[1]])
            gm.graph.erase_node(user)
        else:
            user.replace_input_with(node, result)
    gm.graph.erase_node(node)
    if not sub_node.users:
        gm.graph.erase_node(sub_node)
        delattr(gm, sub_node.target)
    return True


def _returns_tuple(sub: torch.fx.GraphModule) -> bool:
    out = next(n for n in sub.graph.nodes if n.op == "output")
    return isinstance(out.args[0], (list, tuple))
