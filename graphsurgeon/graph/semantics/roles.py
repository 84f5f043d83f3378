"""Roles by dataflow: what each value and module is for (query, attention core, MLP up/down, norm, mask …).

This module holds the result types, `find_roles` and the attention side (cores, q/k/v, rotary, the mask
builder); layer_roles.py the rest of a layer (MLPs, norms, activations, embeddings, heads, residual adds).

Everything is found from the graph's structure — attention cores and projections (dataflow.py), op kinds,
which value depends on which — never from module or parameter names. A few config sizes (vocab size,
max positions, type vocab size) tell embedding tables apart where the structure alone cannot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx

from graphsurgeon.graph.semantics.cores import SDPA, attention_operands
from graphsurgeon.graph.semantics.dataflow import (SHAPE_ONLY, is_float, module_of, op_of, projection, tensor_args,
                                                   trace_back)
from graphsurgeon.graph.semantics.layer_roles import (mark_embeddings, mark_heads, mark_mlps, mark_norms_and_activations,
                                                      mark_residuals)

COMPARISONS = {"le", "lt", "ge", "gt", "tril", "triu"}
_ROLE_OF = {"q": "query", "k": "key", "v": "value"}


@dataclass
class Operand:
    """One input of an attention core, traced back to the projection that makes it."""

    role: str  # "query", "key" or "value"
    node: torch.fx.Node  # the value the core reads (after view/transpose/rotary)
    target: torch.fx.Node | None  # the projection output, or the part of a fused one, it comes from
    projection: str | None  # module path of that projection
    columns: object = None  # which output columns of a fused projection, in order (None: all of them)
    output: torch.fx.Node | None = None  # the projection's whole output (the fused qkv for a part)


@dataclass
class Attention:
    """One attention: its core ops, operands, mask and output projection."""

    path: str  # module path the core runs in
    core: torch.fx.Node  # the SDPA op, or the softmax of an eager chain
    kind: str  # "sdpa" or "eager"
    nodes: list[torch.fx.Node]  # the core's ops (SDPA: one; eager: scores … output)
    output: torch.fx.Node  # the attention output (before heads are merged)
    weights: torch.fx.Node | None  # the attention probabilities (eager only)
    operands: dict[str, Operand] = field(default_factory=dict)
    mask: torch.fx.Node | None = None  # the mask value the core reads
    fused: torch.fx.Node | None = None  # output of a fused q/k/v projection, if any
    out_projection: str | None = None  # module path of the output projection


@dataclass
class Roles:
    """The result: roles of values (fx nodes) and of module paths, and the attentions."""

    values: dict[torch.fx.Node, str] = field(default_factory=dict)
    modules: dict[str, str] = field(default_factory=dict)
    attentions: list[Attention] = field(default_factory=list)
    mask_builder: set[torch.fx.Node] = field(default_factory=set)
    rotary: set[torch.fx.Node] = field(default_factory=set)
    residuals: dict[torch.fx.Node, torch.fx.Node] = field(default_factory=dict)  # add -> its skip operand


def find_roles(gm: torch.fx.GraphModule, config: dict | None, lora_adds: set[str] = frozenset()) -> Roles:
    """Every role the graph's structure shows."""
    roles = Roles()
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    for core, operands in attention_operands(gm):
        roles.attentions.append(_attention(core, operands, lora_adds))
    for att in roles.attentions:
        _mark_attention(roles, att, order)
    mark_norms_and_activations(roles, gm)
    mark_heads(roles, gm, config or {})
    mark_mlps(roles, gm)
    mark_embeddings(roles, gm, config or {})
    mark_residuals(roles, gm, order)
    return roles


# ---- attention ---------------------------------------------------------------------------------
def _attention(core: torch.fx.Node, operands: dict, lora_adds) -> Attention:
    kind = "sdpa" if op_of(core) in SDPA else "eager"
    nodes, output, weights, mask = [core], core, None, None
    if kind == "sdpa":
        mask = core.args[3] if len(core.args) > 3 else core.kwargs.get("attn_mask")
    else:
        weights = core
        scores = _chain_back(core, ("matmul", "bmm", "baddbmm"))
        output = _forward_to(core, ("matmul", "bmm")) or core
        nodes = _between(scores, output) if scores is not None else [core]
        mask = _mask_operand(nodes)
    att = Attention(module_of(core)[0], core, kind, nodes, output, weights,
                    mask=mask if isinstance(mask, torch.fx.Node) else None)
    for short, node in operands.items():
        hit = trace_back(node, lora_adds)
        att.operands[_ROLE_OF[short]] = Operand(
            _ROLE_OF[short], node, hit["target"] if hit else None, hit["module"] if hit else None,
            hit.get("columns") if hit else None, hit.get("projection") if hit else None)
    fused = {o.output for o in att.operands.values() if o.output is not None and o.columns is not None}
    if len(fused) == 1:
        att.fused = fused.pop()
    att.out_projection = _out_projection(output)
    return att


def _chain_back(node: torch.fx.Node, ops, hops: int = 8):
    while isinstance(node, torch.fx.Node) and hops > 0:
        if node.op == "call_function" and op_of(node) in ops:
            return node
        floats = [a for a in tensor_args(node) if a.meta["val"].dim() >= 3 and a.meta["val"].is_floating_point()]
        node = floats[0] if floats else None
        hops -= 1
    return None


def _forward_to(node: torch.fx.Node, ops, hops: int = 4):
    frontier = [node]
    for _ in range(hops):
        frontier = [u for n in frontier for u in n.users if u.op == "call_function"]
        for u in frontier:
            if op_of(u) in ops:
                return u
    return None


def _between(first: torch.fx.Node, last: torch.fx.Node) -> list[torch.fx.Node]:
    """Nodes on a path from `first` to `last` (both included), in graph order."""
    down, todo = {first}, [first]
    while todo:
        n = todo.pop()
        for u in n.users:
            if u not in down and u is not last:
                down.add(u)
                todo.append(u)
    up, todo = {last}, [last]
    while todo:
        n = todo.pop()
        for a in n.all_input_nodes:
            if a not in up and a in down:
                up.add(a)
                todo.append(a)
    up.add(first)
    order = {n: i for i, n in enumerate(first.graph.nodes)}
    return sorted(up, key=order.__getitem__)


def _mask_operand(nodes: list[torch.fx.Node]):
    """The mask an eager chain adds to its scores: the add operand that is not on the chain."""
    inside = set(nodes)
    for n in nodes:
        if op_of(n) in ("add", "masked_fill", "where") and n.op == "call_function":
            for a in tensor_args(n):
                if a not in inside and a.meta["val"].dim() >= 2:
                    return a
    return None


def _out_projection(output: torch.fx.Node, hops: int = 6) -> str | None:
    frontier = [output]
    for _ in range(hops):
        nxt = []
        for n in frontier:
            for u in n.users:
                hit = projection(u)
                if hit is not None:
                    return hit["module"]
                if u.op == "call_function" and (op_of(u) in SHAPE_ONLY or op_of(u) in ("addmm", "mm")):
                    nxt.append(u)
        frontier = nxt
    return None


def _mark_attention(roles: Roles, att: Attention, order: dict) -> None:
    roles.modules.setdefault(att.path, "attention")
    for n in att.nodes:
        roles.values.setdefault(n, "attention")
    roles.values[att.output] = "attn_output"
    if att.weights is not None:
        roles.values[att.weights] = "attn_weights"
    for op in att.operands.values():
        if op.target is not None:
            roles.values.setdefault(op.target, op.role)
            roles.modules.setdefault(op.projection, f"{op.role}_proj" if op.columns is None else "qkv_proj")
        if op.role in ("query", "key"):
            _mark_rotary(roles, op)
    if att.fused is not None:
        roles.values.setdefault(att.fused, "qkv")
    if att.out_projection:
        roles.modules.setdefault(att.out_projection, "out_proj")
    if att.mask is not None:
        _mark_mask(roles, att.mask, order)


def _mark_rotary(roles: Roles, op: Operand) -> None:
    """Arithmetic between a projection and the core that mixes in other tensors (cos, sin) is rotary."""
    node, seen = op.node, 0
    while isinstance(node, torch.fx.Node) and node is not op.target and seen < 60:
        seen += 1
        name = op_of(node)
        if node.op != "call_function":
            return
        if name in SHAPE_ONLY or name in ("slice", "select", "getitem", "expand", "repeat_interleave"):
            node = node.args[0] if isinstance(node.args[0], torch.fx.Node) else None
            continue
        if name in ("add", "sub", "mul", "cat"):
            _rotary_region(roles, node, op.target)
            return
        return


def _rotary_region(roles: Roles, top: torch.fx.Node, stop: torch.fx.Node | None) -> None:
    """Mark the rotary arithmetic under `top` and the cos/sin values it reads."""
    todo, seen = [top], set()
    while todo:
        n = todo.pop()
        if n in seen or n is stop or n.op != "call_function":
            continue
        seen.add(n)
        roles.rotary.add(n)
        roles.values.setdefault(n, "rotary")
        for a in tensor_args(n):
            if op_of(a) in ("cos", "sin") or _trig_source(a):
                _mark_trig(roles, a)
            elif a.op == "call_function" and op_of(a) in ("mul", "add", "sub", "cat", "neg", "slice", "unsqueeze"):
                todo.append(a)


def _trig_source(node: torch.fx.Node, hops: int = 4) -> str | None:
    while node is not None and hops > 0 and node.op == "call_function":
        name = op_of(node)
        if name in ("cos", "sin"):
            return name
        if name not in SHAPE_ONLY and name not in ("mul", "unsqueeze", "slice", "index", "getitem"):
            return None
        node = node.args[0] if isinstance(node.args[0], torch.fx.Node) else None
        hops -= 1
    return None


def _mark_trig(roles: Roles, node: torch.fx.Node) -> None:
    """Name every step from aten.cos/sin to the rotary arithmetic 'cos'/'sin' (they carry that value)."""
    which = _trig_source(node)
    while which and isinstance(node, torch.fx.Node) and node.op == "call_function":
        roles.values.setdefault(node, which)
        if op_of(node) == which:
            path = module_of(node)[0]
            if path:
                roles.modules.setdefault(path, "rotary")
            return
        node = node.args[0]


def _same_size(a, b) -> bool:
    """True when two sizes are equal for every input (no guard: DeBERTa's sizes read from data have no value)."""
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    return bool(statically_known_true(a == b))


def _mark_mask(roles: Roles, mask: torch.fx.Node, order: dict) -> None:
    """The mask builder: everything the mask is computed from that carries no hidden state."""
    builder, todo = set(), [mask]
    while todo:
        n = todo.pop()
        if n in builder or n.op != "call_function":
            continue
        if is_float(n) and n.meta["val"].dim() >= 3 and not _same_size(*n.meta["val"].shape[-2:]) \
                and op_of(n) not in ("expand", "unsqueeze", "view", "reshape"):
            continue  # a hidden state: not part of the mask
        builder.add(n)
        todo.extend(n.all_input_nodes)
    changed = True
    while changed:  # values also used outside the mask (position ids) are inputs of the builder, not part of it
        changed = False
        for n in list(builder):
            if n is not mask and any(u not in builder and u.op != "output" and not _is_assert(u) for u in n.users):
                builder.discard(n)
                changed = True
    roles.mask_builder |= builder
    causal = any(_compares_positions(n) for n in builder)
    roles.values[mask] = "causal_mask" if causal else "attention_mask"
    for n in builder:
        roles.values.setdefault(n, "mask")


def _compares_positions(node: torch.fx.Node) -> bool:
    """A causal mask compares two position tensors (kv_idx <= q_idx) or takes a triangle; padding masks do not."""
    name = op_of(node)
    if name in ("tril", "triu"):
        return True
    return name in COMPARISONS and len(tensor_args(node)) == 2


def _is_assert(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and "assert" in op_of(node)
