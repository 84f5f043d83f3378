"""Python expressions of ops: precedence, a node's arguments by schema name, and the builders the lift table is
made of (`x.view(...)`, `torch.cat(...)`, `a + b`), plus constants as Python text."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.fx

# Python operator precedence (higher binds tighter)
CMP, BOR, XOR, BAND, ADD, MUL, UNARY, POW, CALL, ATOM = 5, 6, 7, 8, 10, 11, 12, 13, 15, 16
INT_MAX = 2 ** 63 - 1


@dataclass(frozen=True)
class Expr:
    """Python text of a value and how tightly it binds."""

    text: str
    prec: int = ATOM


class Ctx(Protocol):
    """What a renderer needs from the function being written."""

    def arg(self, value, prec: int = 0) -> str: ...  # any argument as text, parenthesised to bind at `prec`

    def device(self) -> str: ...  # the device expression ("hidden_states.device")

    def training(self) -> str: ...  # "self.training" in a class, "training" in a function

    def dtype(self) -> str: ...  # the activations' dtype a "follow" cast returns to ("input_dtype")

    def value_of(self, value): ...  # the node a value stands for after identity ops (repeat_kv read through)

    def kv_cache(self) -> bool: ...  # the model keeps a KV cache (generation)

    def mask_form(self, value) -> str | None: ...  # "causal mask" / "padding mask" for a mask that may be None


def bound(node: torch.fx.Node) -> dict:
    """The node's arguments by schema name, defaults filled in; '_defaults' holds the names left at default."""
    schema = node.target._schema
    out, defaults = {}, set()
    for i, a in enumerate(schema.arguments):
        if i < len(node.args) and not a.kwarg_only:
            out[a.name] = node.args[i]
        elif a.name in node.kwargs:
            out[a.name] = node.kwargs[a.name]
        elif a.has_default_value():
            out[a.name] = a.default_value
        else:
            out[a.name] = None
        if a.has_default_value() and _same(out[a.name], a.default_value):
            defaults.add(a.name)
    out["_defaults"] = defaults
    return out


def _same(a, b) -> bool:
    if isinstance(a, torch.fx.Node) or isinstance(b, torch.fx.Node):
        return False
    try:
        return bool(a == b) and type(a) is type(b) or (a is None and b is None)
    except Exception:  # noqa: BLE001 - SymInts and tensors compare lazily
        return False


def rank(value) -> int:
    val = value.meta.get("val") if isinstance(value, torch.fx.Node) else None
    return val.dim() if isinstance(val, torch.Tensor) else 0


def val_dtype(value):
    val = value.meta.get("val") if isinstance(value, torch.fx.Node) else None
    return val.dtype if isinstance(val, torch.Tensor) else None


# ---------------------------------------------------------------------------------------------- helpers

def _splat(ctx: Ctx, seq) -> str:
    return ", ".join(ctx.arg(x) for x in seq) if isinstance(seq, (list, tuple)) else ctx.arg(seq)


def method(name: str, *positional: str, splat: str | None = None, keywords: tuple = ()) -> Callable:
    """`self.name(positional..., *splat, kw=...)` with arguments left at their default omitted (from the right)."""

    def render(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
        parts = []
        pos = [p for p in positional if p in a]
        while pos and pos[-1] in a["_defaults"]:
            pos.pop()
        parts += [ctx.arg(a[p]) for p in pos]
        if splat and splat in a:
            parts.append(_splat(ctx, a[splat]))
        parts += [f"{k}={ctx.arg(a[k])}" for k in keywords if k in a and k not in a["_defaults"]]
        first = next(iter(k for k in a if k != "_defaults"))
        return Expr(f"{ctx.arg(a[first], CALL)}.{name}({', '.join(parts)})", CALL)

    return render


def function(qual: str, *positional: str, keywords: tuple = (), required: tuple = ()) -> Callable:
    """`qual(positional..., kw=...)`: positional arguments always written, keywords only when not default."""

    def render(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
        parts = [ctx.arg(a[p]) for p in positional]
        parts += [f"{k}={ctx.arg(a[k])}" for k in keywords if k not in a["_defaults"] or k in required]
        return Expr(f"{qual}({', '.join(parts)})", CALL)

    return render


def infix(op: str, prec: int, left: str = "self", right: str = "other") -> Callable:
    def render(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
        alpha = a.get("alpha", 1)
        rhs = a[right]
        if alpha != 1:  # add/sub with alpha: the public API keeps the one fused op
            fn = "torch.add" if op == "+" else "torch.sub"
            return Expr(f"{fn}({ctx.arg(a[left])}, {ctx.arg(rhs)}, alpha={ctx.arg(alpha)})", CALL)
        lp = prec + 1 if prec == CMP else prec
        return Expr(f"{ctx.arg(a[left], lp)} {op} {ctx.arg(rhs, prec + 1)}", prec)

    return render


def unary(op: str) -> Callable:
    return lambda ctx, node, a: Expr(f"{op}{ctx.arg(a['self'], UNARY)}", UNARY)


def torch_fn(name: str) -> Callable:
    return lambda ctx, node, a: Expr(f"torch.{name}({ctx.arg(a['self'])})", CALL)


def _identity(ctx: Ctx, node: torch.fx.Node, a: dict) -> Expr:
    first = next(iter(k for k in a if k != "_defaults"))
    return Expr(ctx.arg(a[first]), ATOM if isinstance(a[first], torch.fx.Node) else UNARY)


def constant(value) -> str | None:
    """Python text of a constant argument (None if `value` is not a plain constant)."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, float):
        if math.isinf(value):
            return 'float("inf")' if value > 0 else 'float("-inf")'
        if math.isnan(value):
            return 'float("nan")'
        return repr(value).replace("e+", "e")  # 1e38, as ruff format writes it
    if isinstance(value, int):
        return repr(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, torch.memory_format):
        return str(value)
    if isinstance(value, torch.layout):
        return str(value)
    return None
