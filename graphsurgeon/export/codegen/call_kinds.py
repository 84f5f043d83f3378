"""Modules called more than once with different code: their calls are written inline in the caller.

One module, one class: `self.rotary_emb` is one instance, so every call of it runs the same forward. A module
whose calls run different code (Gemma 3's rotary embedding called once per layer type, each call reading its own
`<type>_inv_freq` buffer; a position table read with another scaling per call) cannot be one class with one
forward. Each such call's statements go into its caller (`_flatten`), reading the module's tensors as
`self.rotary_emb.sliding_attention_inv_freq`; the module itself stays in the tree holding its tensors, so the
state-dict keys are unchanged. Calls that run the same code (a shared embedding read twice) keep their class.
"""

from __future__ import annotations

import math

import torch
import torch.fx

from graphsurgeon.export.codegen import lift


def unalike(prog) -> list:
    """The module-call scopes (outermost first) whose module is also called with other code."""
    calls: dict[str, list] = {}
    for s in prog.root.scopes():
        if s.kind == "module":
            calls.setdefault(s.path, []).append(s)
    out = []
    for scopes in calls.values():
        if all(s.lora is not None for s in scopes):
            continue  # a LoRA-wrapped projection: every call runs the wrapper's one forward (on any length)
        if len(scopes) > 1 and len({code_key(prog, s) for s in scopes}) > 1:
            out += scopes
    return out


def code_key(prog, scope) -> tuple:
    """What a call runs, names and shapes left out: each op with its constant arguments and the tensors it reads
    from the module (by name); values computed in the call are numbered in the order they are made."""
    nodes = scope.nodes()
    index = {n: i for i, n in enumerate(nodes)}
    return tuple((lift.op_key(n), _freeze(prog, n.args, index), _freeze(prog, tuple(n.kwargs.items()), index))
                 for n in nodes)


def _freeze(prog, value, index: dict):
    if isinstance(value, torch.fx.Node):
        value = prog.rep(value)
        if value in index:
            return ("made", index[value])
        if value.op == "get_attr":
            return ("tensor", str(value.target))
        return ("input",)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__,) + tuple(_freeze(prog, v, index) for v in value)
    if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        return ("size",)
    if isinstance(value, float) and math.isnan(value):
        return ("nan",)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value
