"""The fast local check run before every LoRA insertion: only the inputs' tensor meta is read."""

from __future__ import annotations

import torch

from graphsurgeon.graph.peft_classes import PEFT_NAMES
from graphsurgeon.graph.semantics.dataflow import producer
from graphsurgeon.validate.diagnostics import Diagnostic


def _text(val) -> str:
    if isinstance(val, torch.Tensor):
        return "[" + ", ".join(str(d) for d in val.shape) + f"] {str(val.dtype).removeprefix('torch.')}"
    return type(val).__name__ if val is not None else "no value"


def _product(dims):
    """The product of sizes, as a sympy expression."""
    import sympy

    expr = sympy.Integer(1)
    for d in dims:
        expr = expr * (d.node.expr if isinstance(d, torch.SymInt) else sympy.Integer(int(d)))
    return sympy.expand(expr)


def _tokens(val: torch.Tensor):
    """The number of token rows (product of all dims but the last), as a sympy expression."""
    return _product(val.shape[:-1])


RANK_EXPECTED = "1 ≤ r ≤ {hi}"  # the `expected` of the rank diagnostic (the CLI rewords it with its flag)


def check_insertion(cm, target, config) -> list[Diagnostic]:
    """Diagnostics that refuse inserting a LoRA block with `config` on `target` (empty list = fine).

    `config` is a LoRAConfig, valid on its own (its __post_init__ checked it); only r ≤ min(in, out) is left here.
    """
    nodes = {n.name: n for n in cm.gm.graph.nodes}
    tnode, xnode = nodes.get(target.target_node), nodes.get(target.input_node)
    if tnode is None or xnode is None:
        missing = target.target_node if tnode is None else target.input_node
        return [Diagnostic(missing, "this node is not in the graph; find the targets again on the current model.")]
    out: list[Diagnostic] = []
    for block in cm.loras.values():
        if block.target.target_node == target.target_node:
            return [Diagnostic(tnode.name, f"{block.path} already adapts this tensor; change its r/alpha/dropout "
                                           "instead of adding a second LoRA.", "no LoRA", block.path)]
    layer = getattr(cm, "not_for_peft", {}).get(target.module)
    if layer is not None:  # exact here, but its adapter could never be loaded in PEFT
        return [Diagnostic(tnode.name, f"{target.module} is a {layer}, a layer class PEFT cannot adapt (it adapts "
                                       f"{PEFT_NAMES}), so its LoRA adapter could never be loaded in PEFT; adapt "
                                       "other projections (--targets) or load the model with nn.Linear layers.")]
    t, x = tnode.meta.get("val"), xnode.meta.get("val")
    if not isinstance(t, torch.Tensor) or t.dim() == 0:
        return [Diagnostic(tnode.name, "a scalar cannot be adapted; pick a projection's output tensor.",
                           "a tensor [tokens…, out]", _text(t))]
    if not t.is_floating_point():
        return [Diagnostic(tnode.name, "an integer tensor cannot be adapted (LoRA needs a floating-point tensor); "
                                       "pick a projection's output.", "floating dtype", _text(t))]
    hit = producer(tnode)
    if hit is None:
        return [Diagnostic(tnode.name, "no Linear/Conv1D projection produces this tensor, so there is no weight to "
                                       "adapt; pick a projection's output or a slice of a fused one.",
                           "a projection output", f"{tnode.format_node()}")]
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        out.append(Diagnostic(xnode.name, "the projection's input must be a floating-point tensor.",
                              "floating dtype", _text(x)))
        return out
    if target.kind == "conv1x1":
        out += _pointwise_problems(tnode, xnode, t, x, target, hit)
    else:
        out += _token_problems(tnode, xnode, t, x, target, hit)
    if t.dtype != x.dtype:
        out.append(Diagnostic(tnode.name, "x and the target have different dtypes.", str(x.dtype), str(t.dtype)))
    hi = min(target.in_features, target.out_features)  # the one bound that depends on the target (LoRAConfig checks the rest)
    if config.r > hi:
        where = f"{target.module}{target.column_text}" + (f" (layer {target.layer}, {target.role!r})"
                                                           if target.layer is not None else f" ({target.role!r})")
        out.append(Diagnostic(tnode.name, f"rank r = {config.r} is too large for {where}: r must be between 1 and "
                                          f"min(in {target.in_features}, out {target.out_features}) = {hi}.",
                              RANK_EXPECTED.format(hi=hi), str(config.r)))
    return out


def _token_problems(tnode, xnode, t, x, target, hit: dict) -> list[Diagnostic]:
    """A projection over the last dim: x [tokens…, in], the target its tokens × the LoRA output width."""
    out: list[Diagnostic] = []
    if x.shape[-1] != target.in_features:
        out.append(Diagnostic(xnode.name, "the input's last dim must equal the projection's in_features.",
                              f"[…, {target.in_features}]", _text(x)))
    out += _column_problems(tnode, t, target, hit)
    if target.columns is None and t.shape[-1] != target.out_features:
        out.append(Diagnostic(tnode.name, "the target's last dim must equal the LoRA output width.",
                              f"[…, {target.out_features}]", _text(t)))
    elif t.shape[-1] == target.out_features and target.layout is None:
        if _tokens(x) != _tokens(t):
            out.append(Diagnostic(tnode.name, "the token dims of x and of the target differ, so B·A·x cannot be added.",
                                  "[" + ", ".join(map(str, x.shape[:-1])) + ", …]", _text(t)))
    elif _tokens(x) * target.out_features != _product(t.shape):  # heads laid out apart: [batch, heads, seq, head_dim]
        out.append(Diagnostic(tnode.name, "the target does not hold x's tokens × the LoRA output width, so B·A·x "
                                          "cannot be laid out onto it.",
                              "[" + ", ".join(map(str, x.shape[:-1])) + f"] tokens × {target.out_features}", _text(t)))
    return out


def _pointwise_problems(tnode, xnode, t, x, target, hit: dict) -> list[Diagnostic]:
    """A kernel-1 Conv1d: [batch, in, seq] -> [batch, out, seq], not grouped (PEFT's B is grouped there)."""
    if hit.get("groups", 1) != 1:
        return [Diagnostic(tnode.name, f"{target.module} is a grouped 1×1 convolution (groups={hit['groups']}), "
                                       "which PEFT adapts with a grouped B that this LoRA cannot hold yet; adapt "
                                       "the model's other projections.", "groups=1", f"groups={hit['groups']}")]
    if x.dim() != 3 or t.dim() != 3 or x.shape[1] != target.in_features or t.shape[1] != target.out_features:
        return [Diagnostic(tnode.name, "a 1×1 convolution's LoRA reads [batch, in, seq] and adds [batch, out, seq].",
                           f"[batch, {target.in_features}, seq] -> [batch, {target.out_features}, seq]",
                           f"{_text(x)} -> {_text(t)}")]
    return []


def _column_problems(tnode, t, target, hit: dict) -> list[Diagnostic]:
    """The target's columns and layout must be what the graph says the tensor holds (column provenance)."""
    if target.columns is None and target.layout is None and hit["columns"] is None:
        return []
    if hit["columns"] != target.columns:
        what = "every column" if hit["columns"] is None else f"{len(hit['columns'])} columns"
        return [Diagnostic(tnode.name, f"this tensor holds {what} of {hit['module']}, not the columns the target "
                                       "names; find the targets again on the current model.",
                           f"{len(target.columns or ())} columns", what)]
    if hit["layout"] != target.layout:
        return [Diagnostic(tnode.name, "the target's layout of its columns is not the tensor's; find the targets again "
                                       "on the current model.", str(target.layout), str(hit["layout"]))]
    return []
