"""Column provenance: which output columns of a projection a tensor downstream of it holds, and in which order.

The ops between a projection P (output [*tokens, out]) and a tensor T are replayed on integer
tensors at small example sizes (every dynamic dim 2): P's stand-in is ``arange(numel).view(P's shape)``,
so every element says ``token * out + column``. Layout ops (view, transpose, permute, split, chunk, unbind,
slice, select, index, cat, stack, expand, …) run as themselves; element-wise ops (rotary
arithmetic, scaling, a bias add, a per-head norm) pass on the provenance of their first operand
that comes from P. That covers GPT-2's last-dim split as well as GPT-NeoX's per-head
[heads, 3, head_dim] interleave, BLOOM's select, Falcon's grouped split on the heads axis and
CodeGen's per-group interleave — with no knowledge of any of them.

The result names the *role tensor*: the first tensor on the way from P to T that is a pure layout
(no arithmetic) of P's columns S, each (token, column) once. A LoRA adds B·A·x onto it after a
fixed reshape + permute (`layout`), which is exactly ΔW on the rows S of P's weight.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass

import torch
import torch.fx

# ops that move data without computing on it: replayed as themselves on the provenance tensors
LAYOUT = {"view", "reshape", "_unsafe_view", "transpose", "t", "numpy_T", "permute", "unsqueeze", "squeeze",
          "expand", "broadcast_to", "repeat", "repeat_interleave", "flatten", "unflatten", "split",
          "split_with_sizes", "chunk", "unbind", "slice", "select", "index", "index_select", "narrow", "cat",
          "stack", "movedim", "contiguous", "clone", "alias", "detach", "roll", "flip", "getitem",
          "view_as_complex", "view_as_real"}  # complex rotary (Llama 4): pairs of columns as one complex value
# ops after which the value no longer equals P's columns exactly (a LoRA cannot be added behind them)
# unless they are identities: dropout outside training, a cast to the same dtype
ELEMENTWISE = {"mul", "add", "sub", "div", "neg", "rsub", "pow", "sqrt", "rsqrt", "exp", "tanh", "sigmoid", "silu",
               "gelu", "relu", "clamp", "clamp_min", "clamp_max", "clip", "masked_fill", "where", "to", "_to_copy",
               "type_as", "dropout", "layer_norm", "rms_norm", "abs", "square", "sin", "cos"}
WALK = LAYOUT | ELEMENTWISE
# where a projection can end besides view/add (checked, not walked)
PRODUCT_OPS = {"linear", "matmul", "mm", "addmm", "conv1d"}
_IDENTITY = {"dropout", "to", "_to_copy", "type_as"}  # exact when the dtype is unchanged (dropout: p=0 or eval)
_BUDGET = 400  # nodes looked at behind one tensor before giving up
_CACHE: dict = {}  # replay results by sub-graph signature: layer 11 costs what layer 0 did
_CACHE_MAX = 2048


def op_of(node: torch.fx.Node) -> str:
    if node.target is operator.getitem:
        return "getitem"
    packet = getattr(node.target, "_overloadpacket", None)
    return packet.__name__ if packet is not None else getattr(node.target, "__name__", str(node.target))


@dataclass(frozen=True)
class Columns:
    """What a tensor holds of one projection's output columns."""

    projection: torch.fx.Node  # P: the projection output
    columns: tuple[int, ...] | None  # S in the role tensor's order; None = every column in order (a whole projection)
    role: torch.fx.Node  # the first pure-layout tensor holding exactly S (P itself for a whole projection)
    layout: tuple[int, ...] | None  # dims of `role` in the order that lays [tokens, |S|] out (None: a plain reshape)

    @property
    def width(self) -> int:
        if self.columns is not None:
            return len(self.columns)
        return int(self.projection.meta["val"].shape[_column_dim(self.projection)])


def _column_dim(proj: torch.fx.Node) -> int:
    """The dim of a projection's output that holds its columns: the last, or 1 for a kernel-1 conv (channels)."""
    return 1 if op_of(proj) == "conv1d" else -1


SMALL = 2  # every dynamic size replays as 2 (batch 2, seq 2): token dims stay apart from column dims, and the
# tensors stay below torch's parallel grain (32k elements), whose thread wake-ups cost milliseconds on a busy CPU


def _hint(v) -> int:
    """A size at the replay's small example: dynamic symbols set to 2 (or their lower bound when higher)."""
    if isinstance(v, torch.SymInt):
        return _small(v.node.expr, v.node.shape_env)
    return int(v)


@functools.lru_cache(maxsize=4096)
def _small(expr, env) -> int:
    values = {}
    for sym in expr.free_symbols:
        bounds = getattr(env, "var_to_range", {}).get(sym)
        if bounds is None or str(sym).startswith("u"):  # an unbacked size (data-dependent): no example
            raise _NoReplay(f"no example value for {sym}")
        lower = bounds.lower
        values[sym] = max(SMALL, int(lower)) if lower.is_finite else SMALL
    return int(expr.xreplace(values))


def _hint_shape(node) -> tuple[int, ...]:
    val = node.meta.get("val")
    if not isinstance(val, torch.Tensor):
        raise _NoReplay("no tensor value")
    return tuple(_hint(s) for s in val.shape)


class _NoReplay(Exception):
    """The ops cannot be replayed on provenance tensors (an unknown op, a size without example value)."""


def trace_columns(node: torch.fx.Node, is_projection, lora_adds=frozenset(), cache: dict | None = None) -> Columns | None:
    """The projection `node` reads and the columns it holds (None: no unique projection, or not replayable)."""
    walk = _walk_back(node, is_projection, lora_adds)
    if walk is None:
        return None
    proj, derived = walk
    cache = _CACHE if cache is None else cache
    if len(cache) > _CACHE_MAX:
        cache.clear()
    key = _signature(node, proj, derived, lora_adds)
    if key in cache:
        hit = cache[key]
        return None if hit is None else Columns(proj, hit[0], _path_node(node, proj, derived, lora_adds, hit[1]), hit[2])
    try:
        result = _replay(node, proj, derived, lora_adds)
    except (_NoReplay, RuntimeError, IndexError, ValueError, TypeError):
        result = None
    cache[key] = None if result is None else (result[0], result[1], result[2])
    if result is None:
        return None
    return Columns(proj, result[0], _path_node(node, proj, derived, lora_adds, result[1]), result[2])


def sources(node, is_projection, lora_adds=frozenset()) -> tuple[set, torch.fx.Node | None]:
    """(projections behind `node` through LAYOUT/ELEMENTWISE ops, the first other op on its first-input chain)."""
    found = _walk(node, is_projection, lora_adds)
    stop = node
    while isinstance(stop, torch.fx.Node) and not is_projection(stop) and (
            stop.name in lora_adds or stop.op == "call_function" and op_of(stop) in WALK):
        args = _inputs(stop, lora_adds)
        stop = args[0] if args else None
    return (found[1] if found else set()), (stop if isinstance(stop, torch.fx.Node) and not is_projection(stop) else None)


def _walk_back(node, is_projection, lora_adds):
    """(P, nodes that depend on P) behind `node` through LAYOUT/ELEMENTWISE ops; None unless P is unique."""
    walked = _walk(node, is_projection, lora_adds)
    if walked is None or len(walked[1]) != 1:
        return None
    order, found = walked
    proj = next(iter(found))
    visited = set(order)
    memo: dict = {proj: True}

    def depends(n) -> bool:  # does n read P (through the visited ops)?
        if n not in memo:
            memo[n] = False
            memo[n] = n in visited and any([depends(a) for a in _inputs(n, lora_adds)])  # every input, no short cut
        return memo[n]

    if not depends(node):
        return None
    return proj, {n for n, yes in memo.items() if yes}


def _walk(node, is_projection, lora_adds):
    """(ops walked, projections reached) behind `node`; None when the walk exceeds its budget."""
    seen: set = set()
    stack, found, order = [node], set(), []
    while stack:
        n = stack.pop()
        if n in seen or not isinstance(n, torch.fx.Node):
            continue
        seen.add(n)
        if len(seen) > _BUDGET:
            return None
        if n.name in lora_adds:
            order.append(n)
            stack.append(n.args[0])
            continue
        if n.op != "call_function":
            continue
        op = op_of(n)
        if op not in WALK and op not in PRODUCT_OPS:
            continue
        if is_projection(n):
            found.add(n)
            continue
        if op in WALK:
            order.append(n)
            stack.extend(n.all_input_nodes)
    return order, found


def _inputs(n, lora_adds) -> list:
    return [n.args[0]] if n.name in lora_adds else _tensor_args(n)


def _tensor_args(n: torch.fx.Node) -> list:
    """The node's inputs in argument order (fx keeps them: args, then kwargs)."""
    return n.all_input_nodes


def _first_derived(n, derived):
    for a in _tensor_args(n):
        if a in derived:
            return a
    return None


def _signature(node, proj, derived, lora_adds) -> tuple:
    """A key equal for structurally identical sub-graphs (layer 0 and layer 11), for caching the replay."""
    index: dict = {}
    order: list = []

    def visit(n):  # depth-first over the inputs that read P: the same order in every layer
        if n in index or n is proj:
            return
        index[n] = len(index)
        order.append(n)
        for a in _inputs(n, lora_adds):
            if a in derived:
                visit(a)

    visit(node)
    parts: list = [("P", tuple(_hint_or_none(d) for d in proj.meta["val"].shape))]
    for n in order:
        val = n.meta.get("val")
        dtype = val.dtype if isinstance(val, torch.Tensor) else None
        if n.name in lora_adds:
            parts.append(("lora", _norm(n.args[0], index, proj, derived)))
        else:
            parts.append((n.target, dtype, _norm(n.args, index, proj, derived),
                          _norm(n.kwargs, index, proj, derived) if n.kwargs else ()))
    return tuple(parts)


def _norm(a, index, proj, derived):
    if type(a) in (int, float, bool, str) or a is None:
        return a
    if isinstance(a, torch.fx.Node):
        if a is proj:
            return ("P",)
        if a in derived:
            return ("d", index.get(a, -2))
        val = a.meta.get("val")
        if isinstance(val, torch.SymInt):
            return ("i", val.node.expr)
        if isinstance(val, torch.Tensor):
            const = _constant(a)
            return ("t", tuple(_hint_or_none(s) for s in val.shape), str(val.dtype),
                    tuple(const.flatten().tolist()) if const is not None and const.numel() <= 64 else None)
        return ("?", repr(val))
    if isinstance(a, (list, tuple)):
        return tuple(_norm(x, index, proj, derived) for x in a)
    if isinstance(a, dict):
        return tuple((k, _norm(v, index, proj, derived)) for k, v in sorted(a.items()))
    return a if isinstance(a, (int, float, bool, str, type(None))) else repr(a)


def _hint_or_none(s):
    """A size for the signature: the symbolic expression itself (batch and seq never confused), or the int."""
    return s.node.expr if isinstance(s, torch.SymInt) else int(s)


def _constant(node) -> torch.Tensor | None:
    """The value of an integer constant tensor the graph holds (Falcon's lifted index tensors), else None."""
    while isinstance(node, torch.fx.Node) and node.op == "call_function" and op_of(node) in (
            "lift_fresh_copy", "clone", "detach", "to", "_to_copy", "alias"):
        node = node.args[0]
    if not isinstance(node, torch.fx.Node) or node.op != "get_attr":
        return None
    obj = node.graph.owning_module
    try:
        for part in node.target.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        return None
    if isinstance(obj, torch.Tensor) and not obj.is_meta and not obj.is_floating_point():
        return obj.detach().cpu()
    return None


def _path_node(node, proj, derived, lora_adds, steps: int):
    """The node `steps` hops from `node` back towards P along first-derived inputs (the replay's path)."""
    for _ in range(steps):
        node = node.args[0] if node.name in lora_adds else _first_derived(node, derived)
    return node


# ----------------------------------------------------------------------------------------------- replay

def _replay(node, proj, derived, lora_adds):
    """(columns or None, hops from `node` back to the role tensor, layout) by replaying on provenance tensors."""
    shape = _hint_shape(proj)
    if _column_dim(proj) == 1:  # channels first ([batch, out, seq]): provenance is still token * out + column
        out = shape[1]
        base = torch.arange(_numel(shape), dtype=torch.int64).view(shape[0], shape[2], out).transpose(1, 2)
    else:
        out = shape[-1]
        base = torch.arange(_numel(shape), dtype=torch.int64).view(shape)
    memo: dict = {proj: base}

    def prov(n):
        if n in memo:
            return memo[n]
        if n.name in lora_adds:
            value = prov(n.args[0])
        else:
            op = op_of(n)
            if op == "view_as_complex":  # provenance of the pair as (real, imaginary): exact in float64 below 2**53
                value = torch.view_as_complex(prov(n.args[0]).to(torch.float64).contiguous())
            elif op in LAYOUT:
                value = n.target(*_args(n.args), **_args(n.kwargs))
            elif op in ELEMENTWISE:
                first = _first_derived(n, derived)
                value = prov(first).broadcast_to(_hint_shape(n))
            else:
                raise _NoReplay(op)
        memo[n] = value
        return value

    def _args(a):
        if isinstance(a, torch.fx.Node):
            if a in derived:
                return prov(a)
            val = a.meta.get("val")
            if isinstance(val, torch.SymInt):
                return _hint(val)
            if isinstance(val, torch.Tensor):
                const = _constant(a)
                return const if const is not None else torch.full(_hint_shape(a), -1, dtype=torch.int64)
            raise _NoReplay(f"argument {a.name}")
        if isinstance(a, (list, tuple)):
            return type(a)(_args(x) for x in a)
        if isinstance(a, dict):
            return {k: _args(v) for k, v in a.items()}
        if isinstance(a, torch.dtype) and a.is_floating_point:
            return torch.int64  # casts keep the provenance integer
        return a

    target = _int(prov(node))
    if not isinstance(target, torch.Tensor):
        return None
    wanted = _present(target, out)  # which of P's columns the tensor holds (a bool per column)
    count = int(wanted.sum())
    path = [node]
    while path[-1] is not proj:
        step = path[-1]
        path.append(step.args[0] if step.name in lora_adds else _first_derived(step, derived))
    path.reverse()  # P … node
    n_tokens = base.numel() // out
    for i, n in enumerate(path):
        if i and not _pure_layout(n, lora_adds):
            break
        value = _int(prov(n))
        if not isinstance(value, torch.Tensor) or value.numel() != n_tokens * count:
            continue
        found = _factor(value, out, n_tokens)
        if found is None or not torch.equal(_present(found[2], out), wanted):
            continue
        cols, layout, _ = found
        columns = None if cols == tuple(range(out)) else cols
        return columns, len(path) - 1 - i, layout
    return None


def _int(value):
    """Provenance as int64 (a complex-rotary stretch carries it as float64; a complex value holds no single column)."""
    if not isinstance(value, torch.Tensor) or value.is_complex():
        return None
    return value if value.dtype == torch.int64 else value.to(torch.int64)


def _present(value: torch.Tensor, out: int) -> torch.Tensor:
    """A bool per column of P: does `value` hold it (negative entries hold none)? Counted, not masked: boolean
    indexing runs torch's parallel nonzero, which costs milliseconds on a busy CPU."""
    cols = torch.where(value >= 0, value % out, out).flatten()
    return torch.bincount(cols, minlength=out + 1)[:out] > 0


def _pure_layout(n, lora_adds) -> bool:
    if n.name in lora_adds:
        return True
    op = op_of(n)
    if op in LAYOUT:
        return True
    if op in _IDENTITY and n.args and isinstance(n.args[0], torch.fx.Node):
        src, val = n.args[0].meta.get("val"), n.meta.get("val")
        same = isinstance(src, torch.Tensor) and isinstance(val, torch.Tensor) and src.dtype == val.dtype
        return same and (op != "dropout" or len(n.args) < 3 or n.args[1] == 0 or n.args[2] is False)
    return False


def _factor(value: torch.Tensor, out: int, n_tokens: int):
    """(S, layout, S as a tensor) if `value` lays out every token × the columns S once, dims separable into
    tokens and columns.

    Each dim is classed by one step from the origin (does it move the token or the column?); the whole
    tensor is then checked against that reading, so a wrong guess only loses the match, never misleads.
    """
    if value.dim() == 0 or bool((value < 0).any()):
        return None
    flat = value.flatten()
    origin = int(flat[0])
    token_dims, col_dims, token_step = [], [], {}
    for d, size in enumerate(value.shape):
        if size == 1:
            col_dims.append(d)
            continue
        step = int(flat[_flat_index(value, d)]) - origin  # one step along d: tokens and columns apart?
        dtok, dcol = (origin + step) // out - origin // out, (origin + step) % out - origin % out
        if (dtok != 0) == (dcol != 0):
            return None
        if dtok:
            token_dims.append(d)
            token_step[d] = dtok
        else:
            col_dims.append(d)
    token_dims.sort(key=lambda d: -token_step[d])
    layout = tuple(token_dims + col_dims)
    laid = value.permute(layout).reshape(n_tokens, -1)
    cols = laid[0] % out
    expected = torch.arange(n_tokens, dtype=torch.int64)[:, None] * out + cols[None, :]
    if not torch.equal(laid, expected):
        return None
    moved = [d for d in layout if value.shape[d] > 1] != [d for d in range(value.dim()) if value.shape[d] > 1]
    return tuple(cols.tolist()), (layout if moved else None), cols  # size-1 dims never need a permute


def _flat_index(value: torch.Tensor, d: int) -> int:
    """The row-major flat index of the element one step from the origin along dim d."""
    n = 1
    for size in value.shape[d + 1:]:
        n *= size
    return n


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
