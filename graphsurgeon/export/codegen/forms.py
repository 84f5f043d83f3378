"""Known forms: a function group that computes exactly what a short, well-known function computes is written as
that function — Hugging Face's mask builder (a dozen index ops) becomes `causal & keep[:, None, None, :]`.

Decided by running, never by names: the group's own generated code and each candidate are run on probe inputs
(attention masks of several sizes, padded on the left, on the right, at random, not at all) and a candidate is
used only when its output equals the group's on every probe (`torch.equal`: same values, dtype and shape).

The fast path: a mask builder whose every reader is SDPA's `attn_mask` returns None when nothing is padded, and
SDPA then runs with no mask tensor (`is_causal=True` for the causal form), which lets it pick its fused kernels.
"""

from __future__ import annotations

import torch

from graphsurgeon.export.codegen.body import Body, Line

FAST = [  # the first lines of a form read only by SDPA: no padding, no mask tensor; under torch.compile the mask is
    # always built, as HF does, so the data-dependent test does not break the compiled graph in two
    "if not torch.compiler.is_compiling() and {m}.all():  # nothing is padded: no mask tensor",
    "    return None",
]
# name -> body (the mask argument is {m}); each returns what the group returned
CANDIDATES = {
    "padding mask": [
        "batch, seq = {m}.shape",
        "keep = {m}.bool()[:, None, None, :]  # [batch, 1, 1, seq]: the keys that are not padding",
        "return keep.expand(batch, 1, seq, seq)  # [batch, 1, seq, seq] bool",
    ],
    "causal mask": [
        "seq = {m}.shape[1]",
        "causal = torch.ones(seq, seq, dtype=torch.bool, device={m}.device).tril()  # [seq, seq]: key <= query",
        "return causal & {m}.bool()[:, None, None, :]  # [batch, 1, seq, seq] bool: earlier keys, not padding",
    ],
}


def probes() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    out = []
    for batch, seq in ((1, 1), (2, 5), (3, 7), (4, 16)):
        out.append(torch.ones(batch, seq, dtype=torch.long))
        left = torch.ones(batch, seq, dtype=torch.long)
        left[0, : seq // 2] = 0
        right = torch.ones(batch, seq, dtype=torch.long)
        right[-1, seq - seq // 2:] = 0
        out += [left, right, torch.randint(0, 2, (batch, seq), generator=gen)]
    return out


def _function(name: str, params: list[str], lines: list[str]):
    src = f"def {name}({', '.join(params)}):\n" + "\n".join("    " + ln for ln in lines) + "\n"
    scope = {"torch": torch, "F": torch.nn.functional, "nn": torch.nn}
    exec(compile(src, f"<{name}>", "exec"), scope)  # noqa: S102 - our own generated code, run on probes
    return scope[name]


_FOUND: dict[tuple, str | None] = {}  # (params, code) -> the candidate's name: each group is probed once


def shorter(scope, body: Body, fast: bool = False) -> Body | None:
    """A known form equal to the function group (written with the group's parameter name), or None; `fast`: the
    form returns None when nothing is padded (its readers are SDPA calls that take None)."""
    found = form_of(scope, body)
    if found is None:
        return None
    text = CANDIDATES[found]
    text = [ln.format(m=body.params[0]) for ln in (FAST if fast else []) + text]
    blocks = tuple(b for ln in body.lines for b in ln.blocks)
    lines = [Line(t.lstrip(" "), depth=(len(t) - len(t.lstrip(" "))) // 4, blocks=blocks) for t in text[:-1]]
    return Body(list(body.params), lines, [text[-1][len("return "):]])


def form_of(scope, body: Body) -> str | None:
    """The name of the known form the function group computes ("causal mask", "padding mask"), or None."""
    if len(body.params) != 1 or body.training or len(scope.inputs) != 1 or len(scope.outputs) != 1:
        return None
    x, y = scope.inputs[0].meta.get("val"), scope.outputs[0].meta.get("val")
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.is_floating_point() or not isinstance(y, torch.Tensor):
        return None
    own_lines = ["    " * ln.depth + ln.text for ln in body.lines] + ["return " + ", ".join(body.returns)]
    key = (tuple(body.params), tuple(own_lines))
    if key not in _FOUND:
        _FOUND[key] = _probe(body, own_lines)
    return _FOUND[key]


def _probe(body: Body, own_lines: list[str]) -> str | None:
    try:
        own = _function("own", body.params, own_lines)
        inputs = probes()
        want = [own(m) for m in inputs]
    except Exception:  # noqa: BLE001 - a group the probes cannot run keeps its own code
        return None
    for name, lines in CANDIDATES.items():
        text = [ln.format(m=body.params[0]) for ln in lines]
        try:
            cand = _function("candidate", body.params, text)
            same = all(torch.equal(cand(m), w) and cand(m).dtype == w.dtype for m, w in zip(inputs, want))
        except Exception:  # noqa: BLE001
            same = False
        if same:
            return name
    return None
