"""Independent ground truth: which rows of a projection feed each attention's q, k and v (no graphsurgeon code).

Marker rows: in each pass, row c of the projection's weight is a fixed random vector or zero, set by one bit
of c (every bias of the attention module zero), so an output column is non-zero exactly when its row is on.
The Hugging Face model runs eagerly on one token (batch 1, seq 1: rotary embeddings are the identity at
position 0) while a TorchFunctionMode records the attention inputs: the q, k, v of
`scaled_dot_product_attention`, or for eager attention the operands of the first batched matmul before each
softmax (q, kᵀ; `baddbmm`'s batch1/batch2) and of the first one after it (probs, v). Reading which elements
are non-zero in each pass spells, for every element of q, k and v, the row it comes from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_MATMULS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm, torch.Tensor.bmm,
            torch.baddbmm, torch.Tensor.baddbmm}
_SOFTMAX = {torch.softmax, F.softmax, torch.Tensor.softmax, torch.nn.functional.softmax}


class _Recorder(TorchFunctionMode):
    """Records attention inputs in call order: ("sdpa", q, k, v), ("mm", a, b), ("softmax",)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, k, v = (list(args) + [kwargs.get(n) for n in ("query", "key", "value")][len(args):])[:3]
            self.events.append(("sdpa", q.detach().clone(), k.detach().clone(), v.detach().clone()))
        elif func in _MATMULS:
            batched = func in (torch.baddbmm, torch.Tensor.baddbmm)
            names = ("input", "batch1", "batch2") if batched else ("input", "other")
            given = list(args) + [kwargs.get(n) for n in names[len(args):]]
            a, b = given[-2], given[-1]
            if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dim() >= 3 and b.dim() >= 3:
                self.events.append(("mm", a.detach().clone(), b.detach().clone()))
        elif func in _SOFTMAX:
            self.events.append(("softmax",))
        return func(*args, **kwargs)


def attention_inputs(model: torch.nn.Module, inputs: dict) -> list[dict[str, torch.Tensor]]:
    """{"q", "k", "v"} of every attention call, in call order."""
    rec = _Recorder()
    with torch.no_grad(), rec:
        model(**inputs)
    calls, qk, waiting = [], None, False
    for event in rec.events:
        if event[0] == "sdpa":
            calls.append({"q": event[1], "k": event[2], "v": event[3]})
            qk, waiting = None, False
        elif event[0] == "mm":
            if waiting:
                calls.append({"q": qk[1], "k": qk[2], "v": event[2]})
                qk, waiting = None, False
            elif qk is None:
                qk = event
        elif qk is not None:  # a softmax after a QK product: the next product multiplies V
            waiting = True
    return calls


def row_sources(model: torch.nn.Module, targets, inputs: dict) -> list[dict[str, dict]]:
    """Per attention call, per role: {module leaf name: set of its output rows that role reads}.

    `targets` says which projections, as PEFT's table does: leaf names ("query_key_value", "q_proj") or one
    regular expression matched against the whole module path. Every such module (one per layer each) is
    marked in the same passes: the bits of a row spell its index, and one more pass per extra leaf name
    (only that name's rows on) tells which module an element comes from.
    """
    import re

    def chosen(path: str) -> bool:
        return bool(re.fullmatch(targets, path)) if isinstance(targets, str) else path.rsplit(".", 1)[-1] in targets

    mods = [(p, m) for p, m in model.named_modules() if chosen(p) and isinstance(getattr(m, "weight", None), torch.Tensor)]
    names = list(dict.fromkeys(p.rsplit(".", 1)[-1] for p, _ in mods))
    saved = {p: {k: v.detach().clone() for k, v in _state(model, p, m).items()} for p, m in mods}
    bits = max(1, (max(_out_features(m) for _, m in mods) - 1).bit_length())
    plans = [("none", lambda leaf, out: torch.zeros(out, dtype=torch.bool)),
             ("all", lambda leaf, out: torch.ones(out, dtype=torch.bool))]
    plans += [(b, lambda leaf, out, b=b: (torch.arange(out) >> b) & 1 == 1) for b in range(bits)]
    plans += [(n, lambda leaf, out, n=n: torch.full((out,), leaf == n)) for n in names[1:]]
    passes = {}
    try:
        for key, rows in plans:
            for p, m in mods:
                _mark(model, p, m, rows(p.rsplit(".", 1)[-1], _out_features(m)))
            passes[key] = attention_inputs(model, inputs)
    finally:
        with torch.no_grad():
            for p, m in mods:
                for k, v in _state(model, p, m).items():
                    v.copy_(saved[p][k])
    calls = [{role: {} for role in "qkv"} for _ in passes["all"]]
    for i, call in enumerate(passes["all"]):
        for role in "qkv":
            mine = (call[role] != 0) & (passes["none"][i][role] == 0)
            col = torch.zeros_like(call[role], dtype=torch.long)
            for b in range(bits):
                col |= (passes[b][i][role] != 0).long() << b
            owner = torch.zeros_like(col)  # index into names: 0 unless an identity pass claims the element
            for j, n in enumerate(names[1:], start=1):
                owner[passes[n][i][role] != 0] = j
            for j, n in enumerate(names):
                here = mine & (owner == j)
                if here.any():
                    calls[i][role][n] = set(col[here].tolist())
    return calls


def _out_features(m) -> int:
    return m.weight.shape[0] if isinstance(m, torch.nn.Linear) else m.weight.shape[1]  # Conv1D: [in, out]


def _state(model, path: str, module) -> dict:
    """The projection's weight and bias, and every bias of its parent (DeBERTa's q_bias / v_bias)."""
    parent = model.get_submodule(path.rpartition(".")[0]) if "." in path else model
    out = {"weight": module.weight}
    if getattr(module, "bias", None) is not None:
        out["bias"] = module.bias
    out.update({f"parent.{n}": p for n, p in parent.named_parameters(recurse=False) if "bias" in n})
    return out


def _mark(model, path: str, module, rows: torch.Tensor) -> None:
    gen = torch.Generator().manual_seed(0)
    w = module.weight
    fan_in = w.shape[1] if isinstance(module, torch.nn.Linear) else w.shape[0]
    vec = torch.randn(fan_in, generator=gen, dtype=w.dtype)
    with torch.no_grad():
        for key, p in _state(model, path, module).items():
            if key != "weight":
                p.zero_()
        if isinstance(module, torch.nn.Linear):
            w.copy_(rows[:, None].to(w.dtype) * vec[None, :])
        else:
            w.copy_(vec[:, None] * rows[None, :].to(w.dtype))
