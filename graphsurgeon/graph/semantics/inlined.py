"""Names inside a model function whose own frames the capture lost.

GPT-NeoX's `apply_rotary_pos_emb` (a plain function, not a module forward) leaves no frame of its own in the ops'
stack traces: every op of the call reads as the caller's line `query_states, key_states = apply_rotary_pos_emb(…)`,
so its temporaries had only op names (`slice_`, `add_2`). The function's source is read instead: its assignments in
order (`q_rot, q_pass = q[..., :rotary_dim], q[..., rotary_dim:]`, `q_embed = (q_rot * cos) + …`), each with the
op its value ends in (slice, add, cat, unsqueeze …), are lined up with the call's ops of that kind in graph order.
A statement whose last op cannot be told from its source (a helper call, an attribute) is skipped.
"""

from __future__ import annotations

import ast
import inspect
import sys
from functools import lru_cache

import torch.fx

from graphsurgeon.graph.semantics.dataflow import op_of
from graphsurgeon.graph.semantics.source import called_function

BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.MatMult: "matmul"}


def inlined_names(nodes: list[torch.fx.Node], file: str, code: str) -> dict[torch.fx.Node, str]:
    """The names the function that line `code` of `file` calls gives the ops of one call (`nodes`, graph order)."""
    name = called_function(code)
    if not name or "." in name:
        return {}
    steps = _assignments(file, name)
    out: dict[torch.fx.Node, str] = {}
    at = 0
    for target, kind in steps:
        while at < len(nodes) and _kind(nodes[at]) != kind:
            at += 1
        if at == len(nodes):
            break
        out[nodes[at]] = target
        at += 1
    return out


def _kind(node: torch.fx.Node) -> str:
    return op_of(node).strip("_") if node.op == "call_function" else ""


@lru_cache(maxsize=256)
def _assignments(file: str, function: str) -> tuple[tuple[str, str], ...]:
    """(name, op kind) of each assignment of the module-level `function` defined beside `file`, in order."""
    module = next((m for m in list(sys.modules.values()) if getattr(m, "__file__", None) == file), None)
    fn = getattr(module, function, None) if module is not None else None
    try:
        tree = ast.parse(inspect.getsource(fn)) if fn is not None else None
    except (OSError, TypeError, SyntaxError):
        return ()
    if tree is None or not tree.body or not isinstance(tree.body[0], ast.FunctionDef):
        return ()
    out = []
    for st in tree.body[0].body:
        if not isinstance(st, ast.Assign) or len(st.targets) != 1:
            continue
        target, value = st.targets[0], st.value
        pairs = list(zip(target.elts, value.elts)) if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) \
            and len(target.elts) == len(value.elts) else [(target, value)]
        for t, v in pairs:
            kind = _ends_in(v)
            if isinstance(t, ast.Name) and kind:
                out.append((t.id, kind))
    return tuple(out)


def _ends_in(expr: ast.expr) -> str | None:
    """The op a source expression's value comes from last (None: not known from the source alone)."""
    if isinstance(expr, ast.BinOp):
        return BINOPS.get(type(expr.op))
    if isinstance(expr, ast.UnaryOp) and isinstance(expr.op, ast.USub):
        return "neg"
    if isinstance(expr, ast.Subscript):
        index = expr.slice.elts if isinstance(expr.slice, ast.Tuple) else [expr.slice]
        return "slice" if any(isinstance(i, ast.Slice) for i in index) else None
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute):
        return expr.func.attr
    return None
