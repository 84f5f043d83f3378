"""Structural recognisers on the fx graph: projections, fused-projection parts, attention cores.

Everything here reads the graph's structure (ops, shapes, module classes from ``nn_module_stack``),
never module names. Surgery (LoRA targets), validation and the semantic roles all build on it.

A projection is:
- a Linear: ``aten.linear(x, W, b)`` or ``addmm(b, x, t(W))`` / ``mm(x, t(W))`` with W a weight ``get_attr``;
- GPT-2's Conv1D: ``view(addmm(b, view(x, [-1, in]), W), [..., out])`` inside a module of class Conv1D;
- one part of a fused projection: ``getitem(split(proj, n, -1), i)`` or ``slice(proj, -1, a, b)``
  (GPT-2's c_attn in three equal parts, GPTBigCode's multi-query c_attn split unevenly).
"""

from __future__ import annotations

import operator
import re

import torch
import torch.fx

aten = torch.ops.aten


# ops that move or re-lay data without mixing values across the projection's output columns
SHAPE_ONLY = {"view", "reshape", "_unsafe_view", "transpose", "permute", "contiguous", "unsqueeze", "squeeze",
              "clone", "expand", "alias", "detach", "to", "_to_copy", "type_as", "repeat_interleave",
              "_assert_tensor_metadata", "dropout"}
# element-wise rotary-embedding arithmetic: followed on every tensor operand, the projection must be unique
ROTARY = {"mul", "add", "sub", "cat", "neg", "slice", "stack", "div"}


def op_of(node: torch.fx.Node) -> str:
    packet = getattr(node.target, "_overloadpacket", None)
    return packet.__name__ if packet is not None else getattr(node.target, "__name__", str(node.target))


_MEMO = "_graphsurgeon_module_of"  # node.meta key: (the nn_module_stack it was read from, the result)


def module_of(node: torch.fx.Node) -> tuple[str, str]:
    """(path, class name) of the innermost module the node ran in."""
    stack = node.meta.get("nn_module_stack") or {}
    memo = node.meta.get(_MEMO)
    if memo is not None and memo[0] is stack:
        return memo[1]
    found = _innermost(stack)
    node.meta[_MEMO] = (stack, found)
    return found


def _innermost(stack: dict) -> tuple[str, str]:
    for path, cls in reversed(list(stack.values())):
        if isinstance(path, str) and path and not path.startswith("_empty"):
            name = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
            return path, name.rsplit(".", 1)[-1]
    return "", ""


def layer_index(path: str) -> int | None:
    """The first numeric component of a module path: 'transformer.h.3.attn' -> 3."""
    m = re.search(r"(?:^|\.)(\d+)(?:\.|$)", path)
    return int(m.group(1)) if m else None


def _weight(node) -> torch.fx.Node | None:
    if isinstance(node, torch.fx.Node) and node.op == "call_function" and op_of(node) in ("t", "permute", "transpose"):
        node = node.args[0]
    return node if isinstance(node, torch.fx.Node) and node.op == "get_attr" else None


def _shape(node) -> tuple:
    val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else ()


def projection(node: torch.fx.Node) -> dict | None:
    """If `node` is the output of a whole Linear/Conv1D, describe it (module, kind, x, in, out)."""
    if node.op != "call_function":
        return None
    op = op_of(node)
    if op == "linear" and _weight(node.args[1]) is not None:
        w = node.args[1]
        out, inn = _shape(w)
        return dict(module=module_of(node)[0] or w.target.rpartition(".")[0], kind="linear", x=node.args[0],
                    in_features=int(inn), out_features=int(out), weight=w.target)
    if op in ("view", "reshape", "_unsafe_view") and isinstance(node.args[0], torch.fx.Node):
        inner = node.args[0]
        if inner.op == "call_function" and op_of(inner) in ("addmm", "mm"):
            mat, wnode = (inner.args[1], inner.args[2]) if op_of(inner) == "addmm" else (inner.args[0], inner.args[1])
            path, cls = module_of(inner)
            x = mat.args[0] if isinstance(mat, torch.fx.Node) and op_of(mat) in ("view", "reshape") else mat
            if wnode is not None and isinstance(wnode, torch.fx.Node) and wnode.op == "get_attr" and cls == "Conv1D":
                inn, out = _shape(wnode)  # Conv1D weight is [in, out]
                return dict(module=path, kind="conv1d", x=x, in_features=int(inn), out_features=int(out),
                            weight=wnode.target)
            w = _weight(wnode)
            if w is not None:
                out, inn = _shape(w)
                return dict(module=path or w.target.rpartition(".")[0], kind="linear", x=x,
                            in_features=int(inn), out_features=int(out), weight=w.target)
    return None


def producer(node: torch.fx.Node) -> dict | None:
    """A projection output, or one last-dim part of a fused projection (with its columns)."""
    whole = projection(node)
    if whole is not None:
        return dict(whole, target=node, columns=None, width=whole["out_features"])
    if node.op != "call_function":
        return None
    if node.target is operator.getitem and isinstance(node.args[0], torch.fx.Node):
        split = node.args[0]
        if split.op == "call_function" and op_of(split) in ("split", "split_with_sizes"):
            base = projection(_keep_rows(split.args[0]))
            dim = split.args[2] if len(split.args) > 2 else split.kwargs.get("dim", 0)
            rank = len(_shape(split.args[0]))
            if base is None or dim % max(rank, 1) != rank - 1:
                return None
            sizes = split.args[1]
            total = base["out_features"]
            sizes = [sizes] * (total // sizes) + ([total % sizes] if total % sizes else []) if isinstance(sizes, int) else list(sizes)
            i = int(node.args[1])
            start = sum(sizes[:i])
            return dict(base, target=node, columns=(start, start + sizes[i]), width=sizes[i])
    if op_of(node) == "slice" and isinstance(node.args[0], torch.fx.Node):
        base = projection(_keep_rows(node.args[0]))
        rank = len(_shape(node.args[0]))
        args = list(node.args) + [0, None, None, 1][len(node.args) - 1:]
        dim, start, stop, step = args[1], args[2], args[3], args[4]
        if base is None or step != 1 or dim % max(rank, 1) != rank - 1:
            return None
        total = base["out_features"]
        start = 0 if start is None else (start + total if start < 0 else min(start, total))
        stop = total if stop is None else (stop + total if stop < 0 else min(stop, total))
        return dict(base, target=node, columns=(start, stop), width=stop - start)
    return None


def _keep_rows(node):
    """Look through ops that keep the last dim and the row-major token order (BigCode's unsqueeze before split)."""
    while isinstance(node, torch.fx.Node) and node.op == "call_function" and projection(node) is None \
            and op_of(node) in ("unsqueeze", "squeeze", "view", "reshape", "_unsafe_view", "contiguous", "clone") \
            and _shape(node) and _shape(node.args[0]) and _shape(node)[-1] == _shape(node.args[0])[-1]:
        node = node.args[0]
    return node


def trace_back(node, lora_adds: set[str] = frozenset(), depth: int = 0) -> dict | None:
    """Follow `node` back through shape-only ops (and rotary arithmetic) to the unique producer."""
    if not isinstance(node, torch.fx.Node) or depth > 40:
        return None
    if node.name in lora_adds:  # an inserted Add LoRA Layer: look through it to the adapted tensor
        return trace_back(node.args[0], lora_adds, depth + 1)
    found = producer(node)
    if found is not None or node.op != "call_function":
        return found
    op = op_of(node)
    if op in SHAPE_ONLY:
        return trace_back(node.args[0], lora_adds, depth + 1)
    if op in ROTARY:
        flat = [a for a in node.args if isinstance(a, torch.fx.Node)]
        flat += [x for a in node.args if isinstance(a, (list, tuple)) for x in a if isinstance(x, torch.fx.Node)]
        hits = [h for h in (trace_back(a, lora_adds, depth + 1) for a in flat) if h is not None]
        if hits and all(h["target"] is hits[0]["target"] for h in hits):
            return hits[0]
    return None


def attention_operands(gm: torch.fx.GraphModule) -> list[tuple[torch.fx.Node, dict[str, torch.fx.Node]]]:
    """(attention node, {"q": …, "k": …, "v": …}) for SDPA ops and eager matmul → softmax → matmul."""
    found = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        op = op_of(node)
        if op in ("scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
                  "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention_for_cpu"):
            found.append((node, {"q": node.args[0], "k": node.args[1], "v": node.args[2]}))
        elif op in ("softmax", "_softmax"):
            scores = _back_to(node.args[0], ("matmul", "bmm"))
            probs_user = _forward_to(node, ("matmul", "bmm"))
            if scores is not None and probs_user is not None:
                v = probs_user.args[1]
                found.append((node, {"q": scores.args[0], "k": scores.args[1], "v": v}))
    return found


def _back_to(node, ops, hops: int = 6):
    while isinstance(node, torch.fx.Node) and hops > 0 and node.op == "call_function":
        if op_of(node) in ops:
            return node
        tensors = [a for a in node.args if isinstance(a, torch.fx.Node) and isinstance(a.meta.get("val"), torch.Tensor)
                   and a.meta["val"].dim() >= 3 and a.meta["val"].is_floating_point()]
        node = tensors[0] if tensors else None
        hops -= 1
    return None


def _forward_to(node, ops, hops: int = 4):
    frontier = [node]
    for _ in range(hops):
        frontier = [u for n in frontier for u in n.users if u.op == "call_function"]
        for u in frontier:
            if op_of(u) in ops:
                return u
    return None
