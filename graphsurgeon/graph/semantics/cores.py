"""Attention cores recognised by structure, not by how the model spells them.

A core is `scaled_dot_product_attention`, or a softmax whose input is a product of two tensors (the scores, through
element-wise score arithmetic: scale, masks, soft-capping, added relative-position terms) and whose output is one
operand of a second product (the other operand is v). A product is `matmul` / `@`, `bmm`, `baddbmm` (its batch
operands) or a two-operand `einsum`; an op and its in-place form (`div_`, `masked_fill_`, `+=` as `add_`) are the
same step. Of the score product's operands, k is the one that brings the softmax's axis (the keys), q the other;
for `einsum` that is read from the equation's letters, for a matrix product from which side the axis comes.
"""

from __future__ import annotations

import torch
import torch.fx

from graphsurgeon.graph.semantics.columns import op_of

SDPA = {"scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention_for_cpu"}
PRODUCTS = {"matmul", "bmm", "baddbmm", "einsum"}
SOFTMAX = {"softmax", "_softmax", "_safe_softmax"}
# between the QK product and softmax: masks, scale, soft-capping, relative-position terms (added, never gathered),
# attention sinks (a learnt score column concatenated to the keys' scores: `cat`), scores kept above the dtype's
# minimum (XGLM's `torch.max(scores, finfo.min)`)
SCORE_OPS = {"add", "sub", "mul", "div", "masked_fill", "where", "to", "_to_copy", "type_as", "view", "reshape",
             "_unsafe_view", "expand", "clone", "contiguous", "tanh", "dropout", "neg", "float", "clamp",
             "transpose", "permute", "cat", "max", "maximum", "min", "minimum"}
# between softmax and the product with V: casts, dropout, head masks, reshapes, the sink's column sliced off
PROBS_OPS = {"to", "_to_copy", "type_as", "dropout", "view", "reshape", "_unsafe_view", "masked_fill", "where",
             "mul", "div", "clone", "contiguous", "expand", "_assert_tensor_metadata", "transpose", "permute",
             "slice"}


def step(node: torch.fx.Node) -> str:
    """The op a node computes, its in-place and out-of-place forms alike (`masked_fill_` is `masked_fill`)."""
    op = op_of(node)
    return op[:-1] if op.endswith("_") and not op.endswith("__") and op != "_" else op


def operands(product: torch.fx.Node) -> list[torch.fx.Node] | None:
    """The two multiplied tensors of a product node, or None."""
    op = op_of(product)
    if op == "baddbmm":
        return [product.args[1], product.args[2]]
    if op == "einsum":
        ts = product.args[1] if len(product.args) > 1 else None
        return list(ts) if isinstance(ts, (list, tuple)) and len(ts) == 2 else None
    if op in ("matmul", "bmm"):
        return [product.args[0], product.args[1]]
    return None


def attention_operands(gm: torch.fx.GraphModule) -> list[tuple[torch.fx.Node, dict[str, torch.fx.Node]]]:
    """(attention node, {"q": …, "k": …, "v": …}) for every SDPA op and every softmax between two products."""
    found = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        op = op_of(node)
        if op in SDPA:
            found.append((node, {"q": node.args[0], "k": node.args[1], "v": node.args[2]}))
        elif op in SOFTMAX:
            scores = _scores_product(node.args[0])
            pv = _probs_product(node)
            if scores is None or pv is None:
                continue
            q, k = _query_key(scores, node)
            found.append((node, {"q": q, "k": k, "v": pv[1]}))
    return found


def _shape(node) -> tuple:
    val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else ()


def _scores_product(node, budget: int = 24):
    """The nearest product (≥ 3-D) behind the softmax input, through score arithmetic only."""
    frontier, seen = [node], set()
    while frontier and budget > 0:
        nxt = []
        for n in frontier:
            if not isinstance(n, torch.fx.Node) or n in seen or n.op != "call_function":
                continue
            seen.add(n)
            budget -= 1
            if op_of(n) in PRODUCTS and len(_shape(n)) >= 3 and operands(n) is not None:
                return n
            if step(n) in SCORE_OPS:
                nxt.extend(n.all_input_nodes)
        frontier = nxt
    return None


def _probs_product(node, hops: int = 6):
    """(product, v): the product that multiplies the softmax output with v, and v (its other operand)."""
    frontier = {node}
    for _ in range(hops):
        nxt = set()
        for n in frontier:
            for u in n.users:
                if u.op != "call_function":
                    continue
                ops = operands(u) if op_of(u) in PRODUCTS else None
                if ops is not None and n in ops and ops[0] is not ops[1]:
                    return u, ops[1 - ops.index(n)]
                if step(u) in PROBS_OPS:
                    nxt.add(u)
        frontier = nxt
    return None


def _query_key(product: torch.fx.Node, softmax: torch.fx.Node) -> tuple[torch.fx.Node, torch.fx.Node]:
    """(q, k) of the score product: k brings the axis the softmax normalises over."""
    a, b = operands(product)
    rank = len(_shape(product))
    dim = softmax.args[1] if len(softmax.args) > 1 else softmax.kwargs.get("dim", -1)
    if not isinstance(dim, int) or not rank or len(_shape(softmax)) != rank:
        return a, b
    axis = dim % rank
    if op_of(product) == "einsum":
        inputs, _, output = str(product.args[0]).replace(" ", "").partition("->")
        first, _, second = inputs.partition(",")
        letter = output[axis] if output and axis < len(output) and "." not in output else None
        if letter is not None and letter in first and letter not in second:
            return b, a
        return a, b
    return (b, a) if axis == rank - 2 else (a, b)  # [.., rows from a, columns from b]
