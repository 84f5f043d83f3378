"""Structural recognisers on the fx graph: projections, the columns a tensor holds of one, attention cores.

Everything here reads the graph's structure (ops, shapes, parameters), never module names.
Surgery (LoRA targets), validation and the semantic roles all build on it.

A projection is a weight parameter applied to x, in any form torch.export writes it:
- ``linear(x, W, b)``;
- ``view(addmm(b, view(x, [-1, in]), t(W)), [..., out])`` / ``mm`` without bias (a Linear on 3-D input);
- GPT-2's Conv1D: the same with W itself ([in, out], kind "conv1d");
- ``matmul(x, W.T)`` (Falcon's ``x @ self.weight.T``), ``matmul(x, W)`` ([in, out]);
- any of those without bias followed by ``add(…, b)`` with a bias parameter of shape [out].
Which of its output columns an attention operand reads — a whole projection, GPT-2's last-dim split,
GPT-NeoX's per-head interleave — is column provenance (`columns.py`).
"""

from __future__ import annotations

import functools
import re
import threading
from contextlib import contextmanager

import torch
import torch.fx

from graphsurgeon.graph.semantics.columns import LAYOUT, op_of, sources, trace_columns

aten = torch.ops.aten

# ops that move or re-lay data without mixing values across columns (the semantic roles walk through them)
SHAPE_ONLY = {"view", "reshape", "_unsafe_view", "transpose", "permute", "contiguous", "unsqueeze", "squeeze",
              "clone", "expand", "alias", "detach", "to", "_to_copy", "type_as", "repeat_interleave",
              "_assert_tensor_metadata", "dropout"}

_MEMO = "_graphsurgeon_module_of"  # node.meta key: (the nn_module_stack it was read from, the result)


def is_tensor(node) -> bool:
    """A graph value holding one tensor."""
    return isinstance(node, torch.fx.Node) and isinstance(node.meta.get("val"), torch.Tensor)


def is_float(node) -> bool:
    """A graph value holding a floating-point tensor."""
    return is_tensor(node) and node.meta["val"].is_floating_point()


def tensor_args(node: torch.fx.Node) -> list[torch.fx.Node]:
    """The tensor inputs of `node` (lists flattened), in argument order."""
    flat = []
    for a in list(node.args) + list(node.kwargs.values()):
        for x in (a if isinstance(a, (list, tuple)) else [a]):
            if is_tensor(x):
                flat.append(x)
    return flat


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


def _param(node) -> torch.fx.Node | None:
    """`node` if it reads a parameter (get_attr of an nn.Parameter: a weight, not a buffer or constant)."""
    if not isinstance(node, torch.fx.Node) or node.op != "get_attr":
        return None
    obj = node.graph.owning_module
    for part in node.target.split("."):
        obj = getattr(obj, part, None)
    return node if isinstance(obj, torch.nn.Parameter) else None


def _weight(node) -> tuple[torch.fx.Node, bool] | None:
    """(weight get_attr, transposed) for W or W.T / t(W) / permute(W, [1, 0]) / transpose(W, 0, 1)."""
    if isinstance(node, torch.fx.Node) and node.op == "call_function" and op_of(node) in ("t", "numpy_T", "permute",
                                                                                           "transpose"):
        w = _param(node.args[0])
        return (w, True) if w is not None and len(_shape(w)) == 2 else None
    w = _param(node)
    return (w, False) if w is not None and len(_shape(w)) == 2 else None


def _shape(node) -> tuple:
    val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return tuple(val.shape) if isinstance(val, torch.Tensor) else ()


def _describe(node, x, w, transposed: bool, module: str = "") -> dict:
    """The projection dict: weight [out, in] when transposed in the product (a Linear), else [in, out]."""
    a, b = _shape(w)
    out, inn = (a, b) if transposed else (b, a)
    path = module or module_of(node)[0] or w.target.rpartition(".")[0]
    return dict(module=path, kind="linear" if transposed else "conv1d", x=x, in_features=int(inn),
                out_features=int(out), weight=w.target)


_SCOPE = threading.local()  # .memo: node -> projection(node) while one derivation runs (see `unchanged_graph`)


@contextmanager
def unchanged_graph():
    """While the graph cannot change (one semantic derivation), `projection` answers each node once.

    The roles' walks (residuals, MLPs, attention operands, heads) ask it of the same nodes 2–3 times."""
    outer = getattr(_SCOPE, "memo", None)
    if outer is None:
        _SCOPE.memo = {}
    try:
        yield
    finally:
        if outer is None:
            _SCOPE.memo = None


def projection(node: torch.fx.Node) -> dict | None:
    """If `node` is the output of a whole projection, describe it (module, kind, x, in/out_features, weight)."""
    memo = getattr(_SCOPE, "memo", None)
    if memo is None:
        return _projection(node)
    if node not in memo:
        memo[node] = _projection(node)
    return memo[node]


def _projection(node) -> dict | None:
    if not isinstance(node, torch.fx.Node) or node.op != "call_function":
        return None
    op = op_of(node)
    if op == "linear":
        w = _param(node.args[1])
        return _describe(node, node.args[0], w, True) if w is not None else None
    if op == "conv1d":
        return _pointwise_conv(node)
    if op == "add" and len(node.args) == 2:  # a bias-free product + a bias parameter [out]
        inner, bias = node.args
        hit = _product(inner) if _param(bias) is not None and len(_shape(bias)) == 1 else None
        return hit if hit is not None and _shape(bias)[0] == hit["out_features"] else None
    if op in ("view", "reshape", "_unsafe_view") and isinstance(node.args[0], torch.fx.Node) \
            and op_of(node.args[0]) == "addmm":
        return _flat_product(node, node.args[0], node.args[0].args[1], node.args[0].args[2])
    hit = _product(node)
    return hit if hit is not None and not _bias_follows(node, hit) else None


def _pointwise_conv(node) -> dict | None:
    """A kernel-1 `nn.Conv1d` over [batch, channels, seq]: a projection of the channels (kind "conv1x1"; its
    output columns are dim 1, so [tokens, out] is laid out as (0, 2, 1)); `groups` kept (PEFT's B is grouped)."""
    args = list(node.args) + [None] * (7 - len(node.args))
    x, w, _, stride, padding, dilation, groups = args[:7]
    w = _param(w)
    shape = _shape(w)
    if w is None or len(shape) != 3 or shape[2] != 1 or len(_shape(node)) != 3:
        return None
    if any(v not in (None, 1, [1], (1,)) for v in (stride, dilation)) or padding not in (None, 0, [0], (0,)):
        return None
    g = int(groups or 1)
    path = module_of(node)[0] or w.target.rpartition(".")[0]
    return dict(module=path, kind="conv1x1", x=x, in_features=int(shape[1]) * g, out_features=int(shape[0]),
                weight=w.target, layout=(0, 2, 1), groups=g)


def _bias_follows(node, hit: dict) -> bool:
    """True when a bias parameter is added right after this product (the add is the projection's output)."""
    return any(op_of(u) == "add" and len(u.args) == 2 and u.args[0] is node and _param(u.args[1]) is not None
               and _shape(u.args[1]) == (hit["out_features"],) for u in node.users)


def _product(node) -> dict | None:
    """x @ W (mm/matmul, possibly flattened to 2-D and viewed back), without bias."""
    if not isinstance(node, torch.fx.Node) or node.op != "call_function":
        return None
    op = op_of(node)
    if op == "matmul":
        w = _weight(node.args[1])
        return _describe(node, node.args[0], *w) if w is not None and len(_shape(node)) >= 2 else None
    if op in ("view", "reshape", "_unsafe_view") and isinstance(node.args[0], torch.fx.Node) \
            and op_of(node.args[0]) == "mm":
        return _flat_product(node, node.args[0], node.args[0].args[0], node.args[0].args[1])
    return None


def _flat_product(node, mm, mat, wnode) -> dict | None:
    """view(addmm/mm(view(x, [-1, in]), W), [..., out]): the 2-D product viewed back to x's token dims."""
    w = _weight(wnode)
    if w is None:
        return None
    x = mat.args[0] if isinstance(mat, torch.fx.Node) and op_of(mat) in ("view", "reshape", "_unsafe_view") else mat
    hit = _describe(mm, x, *w, module=module_of(mm)[0])
    return hit if _shape(node) and _shape(node)[-1] == hit["out_features"] else None


def producer(node: torch.fx.Node) -> dict | None:
    """A projection output, or a pure layout of some of its columns (GPT-2's q slice, GPT-NeoX's q heads)."""
    whole = projection(node)
    if whole is not None:
        return dict(whole, target=node, columns=None, width=whole["out_features"], layout=whole.get("layout"),
                    projection=node)
    if node.op != "call_function" or op_of(node) not in LAYOUT:
        return None
    hit = trace_back(node)
    return hit if hit is not None and hit["target"] is node else None


def trace_back(node, lora_adds: set[str] = frozenset(), cache: dict | None = None,
               memo: dict | None = None) -> dict | None:
    """The projection `node` reads and what of it: the projection dict plus

    target: the tensor a LoRA adds onto (the role tensor: P itself, GPT-2's split, GPT-NeoX's chunk of heads);
    columns: the projection's output columns it holds, in order (None: all of them, a whole projection);
    width: how many; layout: how [tokens, width] is laid out as target (None: a plain reshape);
    projection: the projection's output node. None when no unique projection feeds it.
    """
    if not isinstance(node, torch.fx.Node):
        return None
    memo = {} if memo is None else memo  # projection() per node, shared by the operands of one search

    def project(n):
        if n not in memo:
            memo[n] = projection(n)
        return memo[n]

    found = trace_columns(node, lambda n: project(n) is not None, lora_adds, cache)
    if found is None:
        return None
    return dict(project(found.projection), target=found.role, columns=found.columns, width=found.width,
                layout=found.layout, projection=found.projection)


def why_untraced(node, lora_adds: set[str] = frozenset()) -> str:
    """Why `node` (an attention operand) has no projection columns of its own, as a clause for a sentence."""
    found, stop = sources(node, lambda n: projection(n) is not None, lora_adds)
    if not found:
        if stop is not None and op_of(stop).rstrip("_") in SCATTER_ADDS:
            return _scattered(stop)
        where = f" (it comes from {op_of(stop)} {stop.name})" if stop is not None else ""
        return f"no projection feeds it{where}"
    if len(found) > 1:
        mods = sorted({projection(p)["module"] for p in found})
        return f"it mixes {len(found)} projections ({', '.join(mods[:4])})"
    module = projection(next(iter(found)))["module"]
    return f"the columns of {module} it reads are computed on before they are separated, so no weight rows are its own"


SCATTER_ADDS = {"index_add", "scatter_add", "index_put", "scatter_reduce"}  # rows summed back by index


def _scattered(stop: torch.fx.Node, budget: int = 80) -> str:
    """The clause for an operand summed back row by row by index: routed experts when a top-k near it (breadth
    first, a few ops back) chose the rows."""
    seen, todo = set(), [stop]
    while todo and len(seen) < budget:
        n = todo.pop(0)
        if n in seen or not isinstance(n, torch.fx.Node):
            continue
        seen.add(n)
        if n.op == "call_function" and op_of(n) == "topk":
            return (f"it is a mixture of experts (each token's rows computed by the experts a router chose, summed back "
                    f"by {op_of(stop)}), so no one weight holds its columns")
        todo += list(n.all_input_nodes)
    return f"it is summed back row by row by {op_of(stop)} ({stop.name}), so no one weight holds its columns"


def overlapping(hits: dict[str, dict | None]) -> dict[str, str]:
    """Roles whose columns overlap another role's of the same projection: {role: the other role}.

    A LoRA on such columns would change both (e.g. q and k read the same columns): they cannot be adapted apart.
    """
    out: dict[str, str] = {}
    roles = [r for r, h in hits.items() if h is not None]
    for i, a in enumerate(roles):
        for b in roles[i + 1:]:
            ha, hb = hits[a], hits[b]
            if ha["projection"] is not hb["projection"]:
                continue
            if ha["columns"] is None or hb["columns"] is None or not _as_set(ha["columns"]).isdisjoint(hb["columns"]):
                out.setdefault(a, b)
                out.setdefault(b, a)
    return out


@functools.lru_cache(maxsize=256)
def _as_set(columns: tuple[int, ...]) -> frozenset[int]:
    return frozenset(columns)  # column tuples come from the replay cache: layer 11's is layer 0's object
