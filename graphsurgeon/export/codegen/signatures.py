"""The signatures of the scopes model.py writes: a function's parameters in the order the source passes them, a
module's forward parameters as its source declares them, its results in the order it returns them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from graphsurgeon.export.codegen import names

if TYPE_CHECKING:
    from graphsurgeon.export.codegen.scopes import Program, Scope

ROLE_ORDER = ("query", "key", "value")


def as_called(prog: Program, scope: Scope, ins: list) -> list:
    """A function's parameters in the order the model's source passes them (`attention_interface(query_states,
    key_states, value_states, attention_mask)`); values the call does not name follow, query/key/value first,
    then in order of first use."""
    args = [a for a in names.call_arguments(prog.cm, scope.path) if a]
    caller = scope.parent.path if scope.parent is not None else ""

    def key(item):
        i, node = item
        name = names.value_name(prog.cm, node, caller)
        if name in args:
            return (0, args.index(name), i)
        role = names.role(prog.cm, node)
        return (1, ROLE_ORDER.index(role) if role in ROLE_ORDER else len(ROLE_ORDER), i)
    return [n for _, n in sorted(enumerate(ins), key=key)]


def as_declared(prog: Program, calls: list[Scope], inputs_of: Callable[[Scope], list]) -> dict:
    """Each call's inputs in the order its module's forward declares them, with the parameter name each binds
    there (BertOutput.forward(hidden_states, input_tensor)); inputs the call does not bind by name follow in order
    of first use. Alike layers of a list take the order of the layer whose call binds most (the first layer reads
    `inputs_embeds`, which its loop calls `hidden_states`)."""
    found = {}
    for s in calls:
        ins = inputs_of(s)
        nodes = s.nodes()
        declared, binding = names.parameters(prog.cm, nodes[0], s.path) if nodes and ins else ((), {})
        bound = [binding.get(caller_name(prog, s.parent, n)) for n in ins]
        if len(ins) == 1 and bound[0] is None:  # one value into a one-argument call (`self.cls(outputs[0])`)
            bound[0] = binding.get("")
        if len({b for b in bound if b}) != len([b for b in bound if b]) or any(b not in declared for b in bound if b):
            bound = [None] * len(ins)
        found[id(s)] = (ins, bound, declared)
    best = max(found.values(), key=lambda f: sum(b is not None for b in f[1]))  # ties: the first call
    out = {}
    for key, (ins, bound, declared) in found.items():
        if len(ins) == len(best[0]):
            bound, declared = best[1], best[2]
        taken = {b for b in bound if b}
        free = next((declared.index(d) for d in declared if d not in taken), len(declared))  # an input the call
        # passes under no name of its own is a part of the first parameter nothing else binds (LlamaAttention's
        # cos and sin, of `position_embeddings`, come right after hidden_states, as HF declares them)
        order = sorted(range(len(ins)), key=lambda i: (declared.index(bound[i]), 0, i) if bound[i] else (free, 1, i))
        out[key] = ([ins[i] for i in order], [bound[i] for i in order])
    return out


def caller_name(prog: Program, caller: Scope | None, node) -> str:
    """What the caller's source calls `node`: its own parameter name for a value it was given (scopes are settled
    parents first), else the value's name in the caller's module (BertEncoder passes the first layer
    `hidden_states`, its parameter, not BertModel's `embedding_output`)."""
    if caller is None:
        return ""
    if node in caller.inputs and caller.params:
        i = caller.inputs.index(node)
        if i < len(caller.params) and caller.params[i]:
            return caller.params[i]
    return names.value_name(prog.cm, node, caller.path)


def as_returned(prog: Program, scope: Scope, outs: list) -> list:
    """A module's results in the order its source returns them (T5Attention: `attn_output, position_bias`,
    though the bias is computed first); production order when the source does not say."""
    if len(outs) < 2:
        return outs
    where = [names.return_position(prog.cm, n, scope.path) for n in outs]
    if None in where or len(set(where)) != len(where):
        return outs
    return [n for _, n in sorted(zip(where, outs), key=lambda p: p[0])]
