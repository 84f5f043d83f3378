"""torch.nn layers recognised from what a module call computes (its ops and its own parameters), never its name.

A module call whose ops are exactly one `linear` on its own weight is an `nn.Linear`; `view → addmm → view`
on a weight stored [in, out] is GPT-2's `Conv1D`; one `embedding`, `layer_norm` or `dropout` is the nn layer;
a parameter-free element-wise function of one tensor is the activation it equals bit for bit on a probe in the
graph's dtype (`nn.GELU()` for F.gelu; `gelu_new`'s eight ops round otherwise than the fused tanh GELU, so they
stay a class of their own: model.py computes what the graph computes, op for op). A projection with a LoRA added
onto its whole output is the wrapped layer (`LoRALinear`, `LoRAConv1D`), a LoRA update on its own is `LoRA`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx

from graphsurgeon.export.codegen import lift
from graphsurgeon.export.codegen.scopes import Program, Scope
from graphsurgeon.graph.hf_meta import train_dropout_p


@dataclass
class Leaf:
    ctor: str  # constructor text: "nn.Linear(64, 192)", "LoRALinear(64, 64, r=4, scaling=2.0)"
    base_ctor: str  # the same layer without its LoRA (what layers that differ only by LoRA share)
    kind: str  # linear, conv1d, embedding, layer_norm, dropout, activation, lora
    input: torch.fx.Node  # the tensor the call takes
    needs: set[str] = field(default_factory=set)  # helper classes model.py must define (Conv1D, LoRA, LoRALinear…)
    lora: object = None  # the LoRABlock when the layer carries one
    channels_last: bool = False  # called on input.transpose(1, 2): a LoRA update of a slice of a kernel-1 Conv1d

    def argument(self, x: str) -> str:
        """What the layer is called with, given its input's expression `x`."""
        if not self.channels_last:
            return x
        return f"{x if x.isidentifier() else f'({x})'}.transpose(1, 2)"  # [batch, in, seq] -> [batch, seq, in]


def recognise(prog: Program, scope: Scope) -> Leaf | None:
    """The torch.nn layer a module / LoRA scope is, or None (it becomes a class of its own)."""
    if scope.kind not in ("module", "lora") or any(isinstance(i, Scope) for i in scope.items):
        return None
    nodes = [n for n in scope.items]
    block = _lora_in(prog, scope)
    if scope.kind == "lora":
        return _lora_delta(prog, scope, block)
    if block is not None:
        members = set(block.nodes) | {block.add_node}
        base = [n for n in nodes if n.name not in members]
        leaf = _projection(prog, scope, base)
        if leaf is None:
            return None
        return _wrapped(leaf, block)
    return (_projection(prog, scope, nodes) or _single(prog, scope, nodes) or _activation(prog, scope, nodes))


def sequential(scope: Scope, leaves: dict) -> Leaf | None:
    """An `nn.Sequential` of torch.nn layers: a module whose children are numbered 0…n-1 and whose whole call is
    those layers in order, each reading the one before (children are recognised first, in `leaves`)."""
    kids = scope.items
    if scope.kind != "module" or not kids or any(
            not isinstance(k, Scope) or k.kind != "module" or leaves.get(k.key) is None for k in kids):
        return None
    if [k.path for k in kids] != [f"{scope.path}.{i}" for i in range(len(kids))]:
        return None
    layers = [leaves[k.key] for k in kids]
    ins = [i for i in scope.inputs if i.op != "get_attr"]
    if ins != [layers[0].input] or scope.outputs != kids[-1].outputs or \
            any(len(k.outputs) != 1 for k in kids):
        return None
    if any(layer.input is not prev.outputs[0] for layer, prev in zip(layers[1:], kids)):
        return None
    return Leaf(f"nn.Sequential({', '.join(x.ctor for x in layers)})",
                f"nn.Sequential({', '.join(x.base_ctor or x.ctor for x in layers)})", "sequential", layers[0].input,
                set().union(*(x.needs for x in layers)))


def _lora_in(prog: Program, scope: Scope):
    names = {n.name for n in scope.items if isinstance(n, torch.fx.Node)}
    for block in prog.loras:
        if block.add_node and (block.add_node in names or any(n in names for n in block.nodes)):
            return block
    return None


def _param(prog: Program, scope: Scope, value, leaf: str) -> torch.Tensor | None:
    """The tensor of get_attr `value` if it is `<scope path>.<leaf>`."""
    if not isinstance(value, torch.fx.Node) or value.op != "get_attr" or \
            f"{scope.path}.{leaf}" not in prog.params.get(value, ()):
        return None
    return tensor_of(prog.cm.gm, str(value.target))


def tensor_of(gm, name: str) -> torch.Tensor | None:
    owner, _, attr = name.rpartition(".")
    try:
        mod = gm.get_submodule(owner) if owner else gm
    except AttributeError:
        return None
    t = getattr(mod, attr, None)
    return t if isinstance(t, torch.Tensor) else None


def _projection(prog: Program, scope: Scope, nodes: list) -> Leaf | None:
    ops = [lift.op_key(n) for n in nodes]
    if ops == ["linear"]:
        a = lift.bound(nodes[0])
        w = _param(prog, scope, a["weight"], "weight")
        b = a["bias"]
        if w is None or w.dim() != 2 or (b is not None and _param(prog, scope, b, "bias") is None):
            return None
        bias = "" if b is not None else ", bias=False"
        return Leaf(f"nn.Linear({w.shape[1]}, {w.shape[0]}{bias})", "", "linear", prog.rep(a["input"], scope))
    if ops == ["conv1d"]:
        return _pointwise_conv(prog, scope, nodes[0])
    if len(ops) == 3 and ops[1] == "addmm" and ops[0] in ("view", "reshape") and ops[2] in ("view", "reshape"):
        first, mm, last = nodes
        a = lift.bound(mm)
        w, b = _param(prog, scope, a["mat2"], "weight"), _param(prog, scope, a["self"], "bias")
        if w is None or b is None or prog.rep(a["mat1"]) is not first or prog.rep(last.args[0]) is not mm:
            return None
        if "beta" not in a["_defaults"] or "alpha" not in a["_defaults"]:
            return None
        return Leaf(f"Conv1D({w.shape[1]}, {w.shape[0]})", "", "conv1d", prog.rep(first.args[0], scope), {"Conv1D"})
    return None


def _pointwise_conv(prog: Program, scope: Scope, node) -> Leaf | None:
    """A kernel-1 `nn.Conv1d` (stride 1, no padding or dilation): the layer PEFT adapts as a conv."""
    a = lift.bound(node)
    w, b = _param(prog, scope, a["weight"], "weight"), a["bias"]
    if w is None or w.dim() != 3 or w.shape[2] != 1 or (b is not None and _param(prog, scope, b, "bias") is None):
        return None
    if list(a["stride"]) != [1] or list(a["padding"]) != [0] or list(a["dilation"]) != [1]:
        return None
    g = int(a["groups"])
    extra = ("" if g == 1 else f", groups={g}") + ("" if b is not None else ", bias=False")
    return Leaf(f"nn.Conv1d({w.shape[1] * g}, {w.shape[0]}, 1{extra})", "", "conv1x1", prog.rep(a["input"], scope))


def _single(prog: Program, scope: Scope, nodes: list) -> Leaf | None:
    if len(nodes) != 1 or nodes[0].op != "call_function" or not hasattr(nodes[0].target, "_schema"):
        return None
    node, op = nodes[0], lift.op_key(nodes[0])
    a = lift.bound(node)
    if op == "embedding":
        w = _param(prog, scope, a["weight"], "weight")
        if w is None or a["scale_grad_by_freq"] or a["sparse"]:
            return None
        pad = "" if a["padding_idx"] == -1 else f", padding_idx={a['padding_idx']}"
        return Leaf(f"nn.Embedding({w.shape[0]}, {w.shape[1]}{pad})", "", "embedding", prog.rep(a["indices"], scope))
    if op == "layer_norm":
        shape = list(a["normalized_shape"])
        w, b = a["weight"], a["bias"]
        if (w is not None and _param(prog, scope, w, "weight") is None) or \
                (b is not None and _param(prog, scope, b, "bias") is None) or (w is None and b is not None):
            return None
        extra = f", eps={a['eps']!r}"  # the default left out by ConfigSizes.ctor unless the config has it
        extra += "" if w is not None else ", elementwise_affine=False"
        extra += "" if b is not None or w is None else ", bias=False"
        dims = shape[0] if len(shape) == 1 else tuple(shape)
        return Leaf(f"nn.LayerNorm({dims}{extra})", "", "layer_norm", prog.rep(a["input"], scope))
    if op == "dropout":  # Hugging Face's p in training (the eval graph's p can be 0)
        return Leaf(f"nn.Dropout({train_dropout_p(node)!r})", "", "dropout", prog.rep(a["input"], scope))
    return None


# element-wise activations a probe can tell apart: constructor -> the function it computes
ACTIVATIONS = {
    "nn.GELU()": lambda x: torch.nn.functional.gelu(x),
    'nn.GELU(approximate="tanh")': lambda x: torch.nn.functional.gelu(x, approximate="tanh"),
    "nn.SiLU()": torch.nn.functional.silu,
    "nn.ReLU()": torch.nn.functional.relu,
    "nn.Tanh()": torch.tanh,
    "nn.Sigmoid()": torch.sigmoid,
    "nn.Mish()": torch.nn.functional.mish,
    "nn.ELU()": torch.nn.functional.elu,
}


def _activation(prog: Program, scope: Scope, nodes: list) -> Leaf | None:
    """A parameter-free element-wise function of one input that equals a torch activation bit for bit on a probe in
    the input's dtype. Close is not enough: a formula that rounds otherwise (gelu_new's eight ops against the fused
    tanh GELU, 1 ulp) is amplified by large logits past the self-check's tolerance (mT5: 1.6e-5)."""
    if not nodes or len(scope.inputs) != 1 or len(scope.outputs) != 1 or scope.outputs[0] is not nodes[-1]:
        return None
    x = scope.inputs[0]
    xv = x.meta.get("val")
    if not isinstance(xv, torch.Tensor) or not xv.is_floating_point():
        return None
    for n in nodes:
        v = n.meta.get("val")
        if n.op != "call_function" or not isinstance(v, torch.Tensor) or v.shape != xv.shape \
                or any(a.op == "get_attr" for a in n.all_input_nodes):
            return None
    probe = torch.linspace(-8.0, 8.0, 2001, dtype=xv.dtype)
    try:
        got = _evaluate(prog, nodes, x, probe)
    except Exception:  # noqa: BLE001 - an op the probe cannot run: not an activation we know
        return None
    for ctor, fn in ACTIVATIONS.items():
        want = fn(probe)
        if got.shape == want.shape and got.dtype == want.dtype and torch.equal(got, want):
            return Leaf(ctor, "", "activation", x)
    return None


def _evaluate(prog: Program, nodes: list, x: torch.fx.Node, probe: torch.Tensor) -> torch.Tensor:
    env = {x: probe}

    def load(a):
        if isinstance(a, torch.fx.Node):
            return env[prog.rep(a)]
        if isinstance(a, (list, tuple)):
            return type(a)(load(i) for i in a)
        return a

    for n in nodes:
        kwargs = {k: load(v) for k, v in n.kwargs.items()}
        if lift.op_key(n) in ("to", "_to_copy"):
            kwargs.pop("device", None)  # the probe runs on the CPU, in the graph's dtype
        env[n] = n.target(*load(n.args), **kwargs)
    return env[nodes[-1]]


def _hp(block) -> str:
    c = block.config
    text = f"r={c.r}, scaling={float(c.scaling)!r}"
    return text + (f", dropout={float(c.dropout)!r}" if c.dropout else "")


def _wrapped(leaf: Leaf, block) -> Leaf:
    """The projection with its LoRA, as PEFT wraps it."""
    cls = {"linear": "LoRALinear", "conv1d": "LoRAConv1D", "conv1x1": "LoRAConv1x1"}[leaf.kind]
    args = leaf.ctor[leaf.ctor.index("(") + 1:-1]
    return Leaf(f"{cls}({args}, {_hp(block)})", leaf.ctor, leaf.kind, leaf.input,
                set(leaf.needs) | {cls}, block)


def _lora_delta(prog: Program, scope: Scope, block) -> Leaf | None:
    if block is None:
        return None
    t = block.target
    x = prog.rep(next(n for n in prog.cm.gm.graph.nodes if n.name == t.input_node), scope)
    return Leaf(f"LoRA({t.in_features}, {t.out_features}, {_hp(block)})", "", "lora", x, {"LoRA"}, block,
                channels_last=t.kind == "conv1x1")
