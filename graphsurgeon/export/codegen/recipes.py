"""Values the trace computed from a config size and kept as constants, written as the code that computes them at any
config: ALiBi's per-head slopes (`_get_alibi_slopes(num_heads, device)`, as Hugging Face's Bloom and Falcon compute
them; the helper is in templates/model_layers.py), where the graph holds `full((), 0.25) ** arange(1, 5)` for 4 heads.
A mixin of the FunctionWriter, beside sizes.py."""

from __future__ import annotations

import torch
import torch.fx

from graphsurgeon.export.codegen import lift

# the ops a constant folded from literals is made of
FACTORIES = {"full", "arange", "pow", "cat", "mul", "scalar_tensor", "_to_copy", "to"}


def constant_value(node: torch.fx.Node, limit: int = 16) -> torch.Tensor | None:
    """The value of `node` when it is computed from literals only (factory ops, at most `limit` of them), else None."""
    seen: dict[torch.fx.Node, torch.Tensor] = {}

    def run(n: torch.fx.Node):
        if n in seen:
            return seen[n]
        if n.op != "call_function" or lift.op_key(n) not in FACTORIES or len(seen) >= limit:
            raise LookupError(n.name)
        args, kwargs = torch.fx.node.map_arg((n.args, n.kwargs), run)
        kwargs = {k: (torch.device("cpu") if k == "device" else v) for k, v in kwargs.items()}
        seen[n] = n.target(*args, **kwargs)
        return seen[n]

    try:
        out = run(node)
    except (LookupError, RuntimeError, TypeError):
        return None
    return out if isinstance(out, torch.Tensor) else None


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """Hugging Face's ALiBi slopes for `num_heads` (the oracle the graph's constant is compared with)."""
    from transformers.models.bloom.modeling_bloom import _get_alibi_slopes

    return _get_alibi_slopes(num_heads, torch.device("cpu"))


class Recipes:
    def _recipe(self, node: torch.fx.Node) -> lift.Expr | None:
        """`_get_alibi_slopes(num_heads, device)` for a constant equal to the slopes of as many heads as it has
        (the heads read from the config), else None."""
        if node.op != "call_function" or lift.op_key(node) not in ("pow", "cat"):
            return None
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor) or val.dim() != 1 or val.dtype != torch.float32 or val.numel() < 2:
            return None
        value = constant_value(node)
        if value is None or value.shape != val.shape or not torch.equal(value, alibi_slopes(val.numel())):
            return None
        heads = self._config_number(val.numel(), "shape")
        if heads is val.numel():  # no config size of that value: the trace's constant stays
            return None
        return lift.Expr(f"_get_alibi_slopes({self.arg(heads)}, {self.device()})", lift.CALL)
