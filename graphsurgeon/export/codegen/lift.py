"""aten → torch.nn.functional / tensor methods / operators: the one table the code generator writes ops with.

Each entry renders one fx node as a Python expression a person would write (`x.view(batch, seq, 4, 16)`,
`F.linear(x, w, b)`, `q @ k.transpose(-2, -1)`, `x[..., 8:]`). Every form calls the same ATen op the graph
holds, so the numbers are the graph's. An op missing from the table is written as the public function of the
same name (`torch.<op>` or a tensor method) when torch has one, else as `torch.ops.aten.<op>.<overload>`
(counted by the benchmark; the goal is none).
"""

from __future__ import annotations

import re
from typing import Callable

import torch
import torch.fx

from graphsurgeon.graph.hf_meta import train_dropout_p
from graphsurgeon.graph.tidy import PRECISION
from graphsurgeon.export.codegen.exprs import (ADD, ATOM, BAND, BOR, CALL, CMP, INT_MAX, MUL, POW, UNARY, XOR,
                                               Ctx, Expr, _identity, bound, constant, function, infix,
                                               method, rank, torch_fn, unary, val_dtype)

# what the other codegen modules read as `lift.<name>` (the expression vocabulary of exprs, passed on, and lift's own)
__all__ = ["ADD", "ATOM", "CALL", "IMPURE", "MUL", "SKIP", "UNARY", "Ctx", "Expr", "bound", "constant", "is_identity",
           "is_noop_cast", "op_key", "render", "rotate_half_parts"]


# ---------------------------------------------------------------------------------------------- special forms

def _slice(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
    r = max(rank(a["self"]), 1)
    dim = a["dim"] % r
    start = "" if a["start"] in (None, 0) else ctx.arg(a["start"])
    end = "" if a["end"] is None or (isinstance(a["end"], int) and a["end"] >= INT_MAX) else ctx.arg(a["end"])
    step = "" if a["step"] == 1 else f":{ctx.arg(a['step'])}"
    return Expr(f"{ctx.arg(a['self'], CALL)}[{_lead(dim, r)}{start}:{end}{step}]", CALL)


def _lead(dim: int, r: int) -> str:
    """Index text before dimension `dim` of an r-dim tensor: '', ':, ', '..., '."""
    if dim == 0:
        return ""
    if dim == r - 1 and dim > 1:
        return "..., "
    return ":, " * dim


def _select(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
    r = max(rank(a["self"]), 1)
    dim = a["dim"] % r
    return Expr(f"{ctx.arg(a['self'], CALL)}[{_lead(dim, r)}{ctx.arg(a['index'])}]", CALL)


def _index(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
    idx = list(a["indices"])
    while idx and idx[-1] is None:
        idx.pop()
    text = ", ".join(":" if i is None else ctx.arg(i) for i in idx)
    return Expr(f"{ctx.arg(a['self'], CALL)}[{text}]", CALL)


def _to(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
    """`.to(dtype)` as the model wrote it; moving to the capture device is the model's device: no call."""
    src, dtype = a["self"], a.get("dtype")
    if dtype is None or (dtype == val_dtype(src) and node.target._overloadname != "dtype"):
        return _identity(ctx, node, a)
    if node.meta.get(PRECISION) == "follow":  # `.to(input_dtype)`: back to the activations' dtype, whatever it is
        return Expr(f"{ctx.arg(src, CALL)}.to({ctx.dtype()})", CALL)
    return Expr(f"{ctx.arg(src, CALL)}.to({ctx.arg(dtype)})", CALL)


def _factory(name: str, *positional: str) -> Callable:
    """torch.arange / ones / zeros / full / empty with device= the model's and dtype= only when not inferred."""

    def render(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
        if name == "arange":
            parts = _arange_parts(ctx, a)
        else:
            parts = [_size_arg(ctx, a[p]) if p == "size" else ctx.arg(a[p]) for p in positional]
        want = val_dtype(node)
        if want is not None and want != _inferred(name, a):
            parts.append(f"dtype={ctx.arg(want)}")
        parts.append(f"device={ctx.device()}")
        return Expr(f"torch.{name}({', '.join(parts)})", CALL)

    return render


def _inferred(name: str, a: dict):
    """The dtype torch picks for a factory call written without dtype=."""
    if name == "arange":
        nums = [a.get(k) for k in ("start", "end", "step") if k in a]
        return torch.get_default_dtype() if any(isinstance(n, (float, torch.SymFloat)) for n in nums) else torch.int64
    if name == "full":
        v = a.get("fill_value")
        return torch.bool if isinstance(v, bool) else torch.int64 if isinstance(v, int) else torch.get_default_dtype()
    return torch.get_default_dtype()


def _size_arg(ctx: Ctx, size) -> str:
    if isinstance(size, (list, tuple)):
        return "(" + ", ".join(ctx.arg(s) for s in size) + ("," if len(size) == 1 else "") + ")"
    return ctx.arg(size)


def _arange_parts(ctx: Ctx, a: dict) -> list[str]:
    if "start" not in a:
        return [ctx.arg(a["end"])]
    parts = [ctx.arg(a["start"]), ctx.arg(a["end"])]
    if "step" in a and a["step"] != 1:
        parts.append(ctx.arg(a["step"]))
    return parts


def _new(name: str) -> Callable:
    def render(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
        parts = [_size_arg(ctx, a["size"])]
        if "fill_value" in a:
            parts.append(ctx.arg(a["fill_value"]))
        if a.get("dtype") is not None and a["dtype"] != val_dtype(a["self"]):
            parts.append(f"dtype={ctx.arg(a['dtype'])}")
        return Expr(f"{ctx.arg(a['self'], CALL)}.{name}({', '.join(parts)})", CALL)

    return render


def _scalar_tensor(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
    dtype = a.get("dtype") or torch.get_default_dtype()
    return Expr(f"torch.tensor({ctx.arg(a['s'])}, dtype={ctx.arg(dtype)}, device={ctx.device()})", CALL)


def _dropout(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
    """Hugging Face's p in training (recorded at capture), nothing in eval."""
    p = a.get("_dropout_p", train_dropout_p(node))  # marked by the writer: the module's attribute
    return Expr(f"F.dropout({ctx.arg(a['input'])}, {ctx.arg(p)}, {ctx.training()})", CALL)


def _sdpa(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
    parts = [ctx.arg(a["query"]), ctx.arg(a["key"]), ctx.arg(a["value"])]
    p = a.get("_dropout_p", train_dropout_p(node))  # marked by the writer: the module's attribute
    mask = ctx.arg(a["attn_mask"]) if isinstance(a["attn_mask"], torch.fx.Node) else None
    q = parts[0]
    causal = mask is not None and mask.isidentifier() and ctx.mask_form(a["attn_mask"]) == "causal mask" \
        and not a["is_causal"] and q.isidentifier() and parts[1].isidentifier()
    cached = ctx.kv_cache()  # keys may be longer than queries: one new token reads every earlier one
    # a mask built over the whole sequence (causal, sliding-window): with cached keys, the rows of the new tokens
    rows = cached and mask is not None and mask.isidentifier() and q.isidentifier() and parts[1].isidentifier()
    for k in ("attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"):
        if k == "dropout_p" and p > 0:  # attention dropout: the eval graph has 0.0, training has HF's p
            parts.append(f"dropout_p={ctx.arg(p)} if {ctx.training()} else 0.0")
        elif k == "attn_mask" and rows:
            parts.append(f"attn_mask=causal_rows({mask}, {q}, {parts[1]})")
        elif k == "attn_mask" and mask is not None:
            parts.append(f"attn_mask={mask}")
        elif k == "is_causal" and causal:  # the mask builder returns None when nothing is padded
            parts.append(f"is_causal={mask} is None and {q}.shape[2] == {parts[1]}.shape[2]" if cached
                         else f"is_causal={mask} is None")
        elif k == "enable_gqa" and _heads(ctx.value_of(a["key"])) != _heads(a["query"]):  # grouped-query: SDPA repeats k, v
            parts.append("enable_gqa=True")
        elif k not in a["_defaults"]:
            parts.append(f"{k}={ctx.arg(a[k])}")
    return Expr(f"F.scaled_dot_product_attention({', '.join(parts)})", CALL)


def _heads(value) -> int | None:
    """The heads of a [batch, heads, seq, head_dim] value as the code reads it (after repeat_kv is read through)."""
    val = value.meta.get("val") if isinstance(value, torch.fx.Node) else None
    return val.shape[-3] if isinstance(val, torch.Tensor) and val.dim() == 4 else None


def _embedding(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
    parts = [ctx.arg(a["indices"]), ctx.arg(a["weight"])]
    if a["padding_idx"] != -1:
        parts.append(f"padding_idx={ctx.arg(a['padding_idx'])}")
    if a["scale_grad_by_freq"]:
        parts.append("scale_grad_by_freq=True")
    return Expr(f"F.embedding({', '.join(parts)})", CALL)


def _layer_norm(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
    shape = a["normalized_shape"]
    parts = [ctx.arg(a["input"]), _size_arg(ctx, shape), ctx.arg(a["weight"]), ctx.arg(a["bias"]), ctx.arg(a["eps"])]
    return Expr(f"F.layer_norm({', '.join(parts)})", CALL)


def _split(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
    size = a.get("split_size", a.get("split_sizes"))
    dim = a["dim"] % max(rank(a["self"]), 1)
    return Expr(f"{ctx.arg(a['self'], CALL)}.split({ctx.arg(size)}, dim={dim})", CALL)


def rotate_half_parts(node: torch.fx.Node) -> tuple[torch.fx.Node, tuple[torch.fx.Node, ...]] | None:
    """(x, the slice and neg nodes) when `node` is Hugging Face's `rotate_half(x)`: torch.cat((-x2, x1), dim=-1) of
    x's halves on its last dimension; else None."""
    if node.op != "call_function" or op_key(node) != "cat" or len(node.args[0]) != 2:
        return None
    neg, x1 = node.args[0]
    r = rank(node)
    if (node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)) % max(r, 1) != r - 1 \
            or not isinstance(neg, torch.fx.Node) or op_key(neg) != "neg" or not isinstance(x1, torch.fx.Node):
        return None
    x2 = neg.args[0]
    halves = []
    for part in (x1, x2):
        if not isinstance(part, torch.fx.Node) or op_key(part) != "slice" or len(part.args) < 4:
            return None
        halves.append(bound(part))
    (a1, a2), x = halves, halves[0]["self"]
    size = x.meta["val"].shape[-1] if isinstance(x, torch.fx.Node) and isinstance(x.meta.get("val"), torch.Tensor) \
        else None
    if size is None or a2["self"] is not x or any(h["dim"] % r != r - 1 or h["step"] != 1 for h in halves):
        return None
    if a1["start"] not in (None, 0) or a1["end"] != size // 2 or a2["start"] != size // 2 \
            or not (a2["end"] is None or a2["end"] >= size):
        return None
    return x, (x1, x2, neg)


def _cat(name: str) -> Callable:
    def render(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
        found = rotate_half_parts(node) if name == "cat" else None
        if found is not None:  # Hugging Face's helper, written as a call of it
            return Expr(f"rotate_half({ctx.arg(found[0])})", CALL)
        dim = "" if "dim" in a["_defaults"] else f", dim={ctx.arg(a['dim'])}"
        return Expr(f"torch.{name}([{', '.join(ctx.arg(t) for t in a['tensors'])}]{dim})", CALL)

    return render


def _pow(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
    base, exponent = ctx.arg(a.get("self"), POW + 1), ctx.arg(a["exponent"], UNARY)
    simple = all(re.fullmatch(r"-?[\w.]+", t) for t in (base, exponent))  # `x**2` as ruff format writes it
    return Expr(f"{base}**{exponent}" if simple else f"{base} ** {exponent}", POW)


def _softmax(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
    extra = f", dtype={ctx.arg(a['dtype'])}" if a.get("dtype") is not None else ""
    return Expr(f"{ctx.arg(a['self'], CALL)}.softmax({ctx.arg(a['dim'])}{extra})", CALL)


def _gelu(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
    approx = "" if a["approximate"] == "none" else f", approximate={a['approximate']!r}"
    return Expr(f"F.gelu({ctx.arg(a['self'])}{approx})", CALL)


def _masked_fill(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
    return Expr(f"{ctx.arg(a['self'], CALL)}.masked_fill({ctx.arg(a['mask'])}, {ctx.arg(a['value'])})", CALL)


def _div(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
    if a.get("rounding_mode") is not None:
        return Expr(f"torch.div({ctx.arg(a['self'])}, {ctx.arg(a['other'])}, rounding_mode={a['rounding_mode']!r})", CALL)
    return infix("/", MUL)(ctx, node, a)


def _rsub(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
    return Expr(f"{ctx.arg(a['other'], ADD)} - {ctx.arg(a['self'], ADD + 1)}", ADD)


def _addmm(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
    extra = "".join(f", {k}={ctx.arg(a[k])}" for k in ("beta", "alpha") if k not in a["_defaults"])
    return Expr(f"torch.addmm({ctx.arg(a['self'])}, {ctx.arg(a['mat1'])}, {ctx.arg(a['mat2'])}{extra})", CALL)


def _reduce(name: str) -> Callable:
    def render(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
        parts = []
        if a.get("dim") is not None and "dim" not in a["_defaults"]:
            dim = a["dim"]
            parts.append(ctx.arg(dim[0] if isinstance(dim, (list, tuple)) and len(dim) == 1 else dim))
        if a.get("keepdim"):
            parts.append("keepdim=True")
        if a.get("dtype") is not None:
            parts.append(f"dtype={ctx.arg(a['dtype'])}")
        return Expr(f"{ctx.arg(a['self'], CALL)}.{name}({', '.join(parts)})", CALL)

    return render


def _where(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
    return Expr(f"torch.where({ctx.arg(a['condition'])}, {ctx.arg(a['self'])}, {ctx.arg(a['other'])})", CALL)


# ---------------------------------------------------------------------------------------------- the table

_M, _F = method, function
TABLE: dict[str, Callable] = {
    # shape and layout (tensor methods, as written by hand)
    "view": _M("view", splat="size"), "_unsafe_view": _M("reshape", splat="size"),
    "reshape": _M("reshape", splat="shape"), "expand": _M("expand", splat="size"),
    "permute": _M("permute", splat="dims"), "transpose": _M("transpose", "dim0", "dim1"), "t": _M("t"),
    "unsqueeze": _M("unsqueeze", "dim"), "squeeze": _M("squeeze", "dim"), "contiguous": _M("contiguous"),
    "clone": _M("clone"), "flatten": _M("flatten", "start_dim", "end_dim"), "repeat": _M("repeat", splat="repeats"),
    "repeat_interleave": _M("repeat_interleave", "repeats", "dim"), "detach": _M("detach"), "detach_": _M("detach"),
    "numpy_T": lambda ctx, node, a: Expr(f"{ctx.arg(a['self'], CALL)}.T", CALL),
    "slice": _slice, "select": _select, "index": _index, "split": _split, "split_with_sizes": _split,
    "unbind": _M("unbind", "dim"), "chunk": _M("chunk", "chunks", "dim"),
    "index_select": _M("index_select", "dim", "index"), "gather": _M("gather", "dim", "index"),
    "cat": _cat("cat"), "stack": _cat("stack"), "narrow": _M("narrow", "dim", "start", "length"),
    "alias": _identity, "lift_fresh_copy": _identity,
    "to": _to, "_to_copy": _to, "type_as": _M("type_as", "other"),
    # arithmetic
    "add": infix("+", ADD), "sub": infix("-", ADD), "mul": infix("*", MUL), "div": _div, "rsub": _rsub,
    "floor_divide": infix("//", MUL), "remainder": infix("%", MUL), "matmul": infix("@", MUL),
    "pow": _pow, "neg": unary("-"), "bitwise_not": unary("~"),
    "eq": infix("==", CMP), "ne": infix("!=", CMP), "lt": infix("<", CMP), "le": infix("<=", CMP),
    "gt": infix(">", CMP), "ge": infix(">=", CMP),
    "__and__": infix("&", BAND), "bitwise_and": infix("&", BAND), "__or__": infix("|", BOR),
    "bitwise_or": infix("|", BOR), "__xor__": infix("^", XOR), "bitwise_xor": infix("^", XOR),
    "logical_not": _M("logical_not"), "logical_and": _M("logical_and", "other"), "logical_or": _M("logical_or", "other"),
    "grouped_mm_fallback": _F("grouped_mm", "input", "weight", "offs"),  # transformers' MoE op: model.py's helper
    "mm": _F("torch.mm", "self", "mat2"), "bmm": _F("torch.bmm", "self", "mat2"), "addmm": _addmm,
    "baddbmm": _F("torch.baddbmm", "self", "batch1", "batch2", keywords=("beta", "alpha")),
    "cumsum": _M("cumsum", "dim", keywords=("dtype",)), "diff": _M("diff", "n", "dim", keywords=("prepend", "append")),
    "mean": _reduce("mean"), "sum": _reduce("sum"), "amax": _reduce("amax"), "amin": _reduce("amin"),
    "any": _reduce("any"), "all": _reduce("all"), "argmax": _reduce("argmax"),
    "clamp": _M("clamp", keywords=("min", "max")), "clamp_min": _M("clamp_min", "min"), "clamp_max": _M("clamp_max", "max"),
    "maximum": _F("torch.maximum", "self", "other"), "minimum": _F("torch.minimum", "self", "other"),
    "masked_fill": _masked_fill, "where": _where, "triu": _M("triu", "diagonal"), "tril": _M("tril", "diagonal"),
    "tanh": torch_fn("tanh"), "sin": torch_fn("sin"), "cos": torch_fn("cos"), "exp": torch_fn("exp"),
    "log": torch_fn("log"), "sqrt": torch_fn("sqrt"), "rsqrt": torch_fn("rsqrt"), "abs": torch_fn("abs"),
    "erf": torch_fn("erf"), "sigmoid": torch_fn("sigmoid"), "reciprocal": torch_fn("reciprocal"),
    "item": _M("item"),
    # factories (device: the model's)
    "arange": _factory("arange"), "ones": _factory("ones", "size"), "zeros": _factory("zeros", "size"),
    "empty": _factory("empty", "size"), "full": _factory("full", "size", "fill_value"),
    "new_ones": _new("new_ones"), "new_zeros": _new("new_zeros"), "new_empty": _new("new_empty"),
    "new_full": _new("new_full"), "scalar_tensor": _scalar_tensor,
    "ones_like": _F("torch.ones_like", "self"), "zeros_like": _F("torch.zeros_like", "self"),
    "full_like": _F("torch.full_like", "self", "fill_value"),
    # layers as functions
    "linear": _F("F.linear", "input", "weight", "bias"), "embedding": _embedding, "layer_norm": _layer_norm,
    "rms_norm": _F("F.rms_norm", "input", "normalized_shape", "weight", "eps"),
    "dropout": _dropout, "scaled_dot_product_attention": _sdpa,
    "gelu": _gelu, "silu": _F("F.silu", "self"), "relu": _F("F.relu", "self"), "softmax": _softmax,
    "_softmax": _softmax, "log_softmax": _M("log_softmax", "dim"),
}

# ops that are pure functions of their inputs (safe to merge when repeated, and to drop when unused)
IMPURE = {"dropout", "bernoulli", "bernoulli_", "rand", "randn", "rand_like", "randn_like", "randint", "uniform_",
          "normal_", "native_dropout", "copy_", "fill_", "index_put_", "masked_fill_", "zero_", "add_", "mul_",
          "_assert_tensor_metadata", "_assert_scalar", "_assert_async", "sym_constrain_range_for_size",
          "sym_constrain_range"}
# ops with no effect on values here (checks torch.export inserts)
SKIP = {"_assert_tensor_metadata", "_assert_scalar", "_assert_async", "sym_constrain_range_for_size",
        "sym_constrain_range"}
IDENTITY = {"alias", "lift_fresh_copy"}


def op_key(node: torch.fx.Node) -> str:
    packet = getattr(node.target, "_overloadpacket", None)
    return packet.__name__ if packet is not None else getattr(node.target, "__name__", str(node.target))


def is_identity(node: torch.fx.Node) -> bool:
    """Ops that give back their input: alias, a device move (`.to(device)`, the model's device here), and
    `x * 1` / `x + 0` that keep dtype and shape. `.to(dtype)` as the model's code wrote it is kept."""
    if not isinstance(getattr(node.target, "_schema", None), torch._C.FunctionSchema):
        return False
    key = op_key(node)
    if key in IDENTITY:
        return True
    a = bound(node)
    if key in ("to", "_to_copy") and node.target._overloadname != "dtype":
        return a.get("dtype") is None or a["dtype"] == val_dtype(a["self"])
    if key in ("mul", "add", "sub") and isinstance(a.get("other"), (int, float)) and not isinstance(a["other"], bool):
        neutral = 1 if key == "mul" else 0
        src, val = a["self"], node.meta.get("val")
        same = isinstance(src, torch.fx.Node) and isinstance(val, torch.Tensor) and \
            isinstance(src.meta.get("val"), torch.Tensor) and src.meta["val"].dtype == val.dtype and \
            src.meta["val"].shape == val.shape
        return same and a["other"] == neutral and a.get("alpha", 1) == 1
    return False


def is_noop_cast(node: torch.fx.Node) -> bool:
    """`x.to(dtype)` the model wrote on a tensor that already has that dtype (kept: it matters in half precision)."""
    return node.op == "call_function" and op_key(node) == "to" and node.target._overloadname == "dtype" \
        and node.args[1:2] == (val_dtype(node.args[0]),)


def render(ctx: Ctx, node: torch.fx.Node, a: dict | None = None) -> Expr:
    """The expression of one aten node (the table, else the public function of that name, else torch.ops.aten);
    `a`: its bound arguments when the caller marked some (sizes read from the config)."""
    target = node.target
    key = op_key(node)
    if not isinstance(getattr(target, "_schema", None), torch._C.FunctionSchema):
        raise NotImplementedError(f"model.py codegen cannot write {node.format_node()}")
    a = bound(node) if a is None else a
    if key in TABLE:
        return TABLE[key](ctx, node, a)
    return _fallback(ctx, node, a, key)


SUBMODULES = ("fft", "linalg", "special")  # aten names their functions `<module>_<name>`


def _fallback(ctx: Ctx, node: torch.fx.Node, a: dict, key: str) -> Expr:
    schema = node.target._schema
    pos = [x for x in schema.arguments if not x.kwarg_only]
    kw = [x for x in schema.arguments if x.kwarg_only and x.name not in a["_defaults"]]
    first = pos[0].name if pos else None
    if first == "self" and hasattr(torch.Tensor, key) and not key.startswith("_"):
        rest = [ctx.arg(a[x.name]) for x in pos[1:]] + [f"{x.name}={ctx.arg(a[x.name])}" for x in kw]
        if not callable(getattr(torch.Tensor, key)) and not rest:  # a property (`x.real`, `x.imag`): no call
            return Expr(f"{ctx.arg(a['self'], CALL)}.{key}", CALL)
        if callable(getattr(torch.Tensor, key)):
            return Expr(f"{ctx.arg(a['self'], CALL)}.{key}({', '.join(rest)})", CALL)
    while len(pos) > 1 and pos[-1].name in a["_defaults"]:  # trailing defaults left out: fftn(x, None, [1, 2])
        pos = pos[:-1]
    args = [ctx.arg(a[x.name]) for x in pos] + [f"{x.name}={ctx.arg(a[x.name])}" for x in kw]
    space, _, name = key.partition("_")
    if space in SUBMODULES and name and callable(getattr(getattr(torch, space), name, None)):
        return Expr(f"torch.{space}.{name}({', '.join(args)})", CALL)  # aten's fft_fftn is torch.fft.fftn
    if callable(getattr(torch, key, None)) and not key.startswith("_"):
        return Expr(f"torch.{key}({', '.join(args)})", CALL)
    if hasattr(torch.nn.functional, key) and not key.startswith("_"):
        return Expr(f"F.{key}({', '.join(args)})", CALL)
    return Expr(f"torch.ops.{target_name(node)}({', '.join(args)})", CALL)


def target_name(node: torch.fx.Node) -> str:
    """`aten.<op>.<overload>` (the op's own namespace for a library's custom op)."""
    t = node.target
    return f"{getattr(t, 'namespace', 'aten')}.{t._opname}.{t._overloadname}"
