"""Capture leftovers removed from a fresh export graph, so no surface shows them: aliases, conversions that
convert nothing (``x.to(device)`` on the model's device), and dead values.

A conversion between floating dtypes that the model's source asks for stays, even when it changed nothing at the
capture's dtype: HF's precision choices (RMSNorm's ``hidden_states.to(torch.float32)`` … ``.to(input_dtype)``,
rotary's ``cos.to(dtype=x.dtype)``) vanish in a float32 capture but matter in bf16. Each kept one is written as
``aten.to.dtype`` and marked ``meta[PRECISION]``: ``"fixed"`` when the source line spells the dtype (an upcast),
``"follow"`` when it names another tensor's dtype (back to the activations' dtype) — on its own line, or in the
plain function its line calls, whose frame the capture loses (OLMo 2's rotary: ``q_embed.to(q_type)``).
"""

from __future__ import annotations

import re

import torch
import torch.fx

from graphsurgeon.graph.semantics.source import (called_function, function_source, module_paths, node_frames,
                                                 statement_text)

aten = torch.ops.aten
_PASS_THROUGH = {aten.alias.default}
_CONVERSIONS = {aten.to.dtype, aten.to.device, aten.to.dtype_layout, aten.to.other, aten._to_copy.default,
                aten.type_as.default}
PRECISION = "precision_cast"  # node.meta key of a kept float conversion: "fixed" or "follow"
_FIXED = re.compile(r"\.(float|double|half|bfloat16)\(\)|torch\.(float|float32|float64|double|float16|half|bfloat16)\b")
_FOLLOW = re.compile(r"dtype|type_as\(")
# on a line with both (`F.softmax(x, dim=-1, dtype=torch.float32).to(query.dtype)`), the conversion is the `.to`
_FIXED_CONVERSION = re.compile(r"\.(float|double|half|bfloat16)\(\)|\.to\(\s*(dtype=)?torch\.")
_FOLLOW_CONVERSION = re.compile(r"\.to\(\s*(dtype=)?[\w.]*dtype\s*\)|type_as\(")
# in a plain function the line calls (its frame is lost at capture): a cast back to a dtype it saved, OLMo 2's
# `q_type, k_type = q.dtype, k.dtype` … `return q_embed.to(q_type), k_embed.to(k_type)`
_FOLLOW_SAVED = re.compile(r"\.to\(\s*\w*_?type\s*\)")
_CONVERSION_CALL = re.compile(r"\.(to|type_as|float|double|half|bfloat16)\(")


def tidy(gm: torch.fx.GraphModule) -> None:
    """Read through aliases and no-op conversions, drop values nothing uses; recompiles."""
    graph = gm.graph
    order = _statement_order(graph)
    for node in list(graph.nodes):
        if node.op != "call_function" or not isinstance(node.args[0] if node.args else None, torch.fx.Node):
            continue
        if node.target in _PASS_THROUGH or (node.target in _CONVERSIONS and _same(node, node.args[0])):
            kind = precision(node, order.get(node))
            if kind is not None:
                _keep(graph, node, kind)
                continue
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    graph.eliminate_dead_code()
    gm.recompile()


def precision(node: torch.fx.Node, place: str | None = None) -> str | None:
    """"fixed" / "follow" for a no-op floating conversion the source asks for (see the module docstring), else None.
    `place`: the conversion's own call in its statement, where the statement makes several (_statement_order)."""
    val = node.meta.get("val")
    if node.target not in _CONVERSIONS or not isinstance(val, torch.Tensor) or not val.is_floating_point():
        return None
    frames = node_frames(node)
    code = place or (frames[-1].own if frames else "")  # the conversion's own line (not its statement's first)
    if _FOLLOW_CONVERSION.search(code) and not _FIXED_CONVERSION.search(code):
        return "follow"
    if _FIXED.search(code):
        return "fixed"
    if _FOLLOW.search(code):
        return "follow"
    called = function_source(frames[-1].file, called_function(code)) if frames else ""
    if _FOLLOW_SAVED.search(called) and not _FIXED_CONVERSION.search(called) and not _FIXED.search(called):
        return "follow"
    return None


def _statement_order(graph: torch.fx.Graph) -> dict[torch.fx.Node, str]:
    """For each conversion in a statement that makes several (OLMo's LayerNorm:
    `F.layer_norm(x.to(dtype=torch.float32), …).to(\n orig_dtype\n)`, both on one reported line): the text of its
    own call, matched in order — the statement's conversions run in the order they are written. Left out where the
    graph holds another number of conversions for the statement than its text makes."""
    runs: dict[tuple, list[torch.fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_function" and node.target in _CONVERSIONS:
            frames = node_frames(node)
            if frames:
                runs.setdefault((frames[-1], module_paths(node)), []).append(node)
    out = {}
    for (frame, _), nodes in runs.items():
        calls = _conversion_calls(statement_text(frame))
        if len(calls) > 1 and len(nodes) % len(calls) == 0:  # a module called twice runs its statement twice
            out.update({node: calls[i % len(calls)] for i, node in enumerate(nodes)})
    return out


def _conversion_calls(text: str) -> list[str]:
    """`.to(…)`, `.float()`, `.type_as(…)` … calls in `text`, in order, each with its balanced arguments."""
    calls = []
    for m in _CONVERSION_CALL.finditer(text):
        depth, end = 0, len(text)
        for i in range(m.end() - 1, len(text)):
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            if depth == 0:
                end = i + 1
                break
        calls.append(text[m.start():end])
    return calls


def _keep(graph: torch.fx.Graph, node: torch.fx.Node, kind: str) -> None:
    """The conversion as one `aten.to.dtype(x, dtype)` marked with its kind (a device move is the model's device)."""
    if node.target is not aten.to.dtype:
        with graph.inserting_after(node):
            new = graph.call_function(aten.to.dtype, (node.args[0], node.meta["val"].dtype))
        new.meta.update(node.meta)
        node.replace_all_uses_with(new)
        graph.erase_node(node)
        node = new
    node.meta[PRECISION] = kind


def _same(node: torch.fx.Node, src: torch.fx.Node) -> bool:
    """True when a conversion's output has its input's dtype, device and layout (it returns the input itself)."""
    a, b = node.meta.get("val"), src.meta.get("val")
    return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
            and a.device == b.device and a.layout == b.layout and a.shape == b.shape)
