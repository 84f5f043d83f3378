"""Capture leftovers removed from a fresh export graph, so no surface shows them: aliases, conversions that
convert nothing (``x.to(torch.float32)`` on a float32 tensor returns x itself), and dead values."""

from __future__ import annotations

import torch
import torch.fx

aten = torch.ops.aten
_PASS_THROUGH = {aten.alias.default}
_CONVERSIONS = {aten.to.dtype, aten.to.device, aten.to.dtype_layout, aten.to.other, aten._to_copy.default,
                aten.type_as.default}


def tidy(gm: torch.fx.GraphModule) -> None:
    """Read through aliases and no-op conversions, drop values nothing uses; recompiles."""
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op == "call_function" and isinstance(node.args[0] if node.args else None, torch.fx.Node) \
                and (node.target in _PASS_THROUGH or (node.target in _CONVERSIONS and _same(node, node.args[0]))):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    graph.eliminate_dead_code()
    gm.recompile()


def _same(node: torch.fx.Node, src: torch.fx.Node) -> bool:
    """True when a conversion's output has its input's dtype, device and layout (it returns the input itself)."""
    a, b = node.meta.get("val"), src.meta.get("val")
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
            and a.device == b.device and a.layout == b.layout and a.shape == b.shape)
