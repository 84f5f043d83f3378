"""Full validation: fake-tensor propagation over the whole graph with dynamic batch/seq, plus graph.lint().

The placeholders keep their captured fake values (same ShapeEnv, same symbols), so every recomputed
shape is compared with the recorded `meta["val"]` symbol for symbol. Recorded meta is never overwritten.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import weakref

import torch
import torch.fx
from torch.fx.passes.fake_tensor_prop import FakeTensorProp

from graphsurgeon.graph.quiet import quiet_fake_kernels
from graphsurgeon.validate.diagnostics import Diagnostic


def _fake_mode(gm: torch.fx.GraphModule):
    for node in gm.graph.nodes:
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor) and hasattr(val, "fake_mode"):
            return val.fake_mode
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode()


def _placeholder_vals(gm: torch.fx.GraphModule) -> list:
    return [n.meta.get("val") for n in gm.graph.nodes if n.op == "placeholder"]


def _dims(val) -> tuple:
    """The shape as text; data-dependent sizes (u0, u1: DeBERTa's relative-position slice) read as one "u", since
    propagation names them afresh and no symbol can be compared for them."""
    return tuple(re.sub(r"\bu\d+\b", "u", str(d.node.expr)) if isinstance(d, torch.SymInt) else str(int(d))
                 for d in val.shape)


def _specialized(result: torch.Tensor, recorded: torch.Tensor) -> bool:
    """True when `result` has the recorded shape with some symbolic sizes replaced by their example values."""
    if result.dtype != recorded.dtype or result.dim() != recorded.dim():
        return False
    fixed = False
    for a, b in zip(result.shape, recorded.shape):
        if isinstance(b, torch.SymInt) and not isinstance(a, torch.SymInt):
            if b.node.hint is None or int(a) != int(b.node.hint):
                return False
            fixed = True
        elif _dims_of(a) != _dims_of(b):
            return False
    return fixed


def _dims_of(d) -> str:
    return re.sub(r"\bu\d+\b", "u", str(d.node.expr)) if isinstance(d, torch.SymInt) else str(int(d))


class _Checker(FakeTensorProp):
    """FakeTensorProp that compares each result with the recorded meta instead of storing it."""

    def __init__(self, gm, mode) -> None:
        super().__init__(gm, mode)
        self.diagnostics: list[Diagnostic] = []

    def run_node(self, n: torch.fx.Node):
        if n.op == "call_module" and n.target == "_guards_fn" or n.target is torch.ops.aten._assert_tensor_metadata.default:
            return None  # export's input guards and device asserts: checked by real runs, not needed for shapes
            # (a materialized meta capture keeps its inputs' meta-device fake values)
        if n.op == "get_attr":
            value = super(FakeTensorProp, self).run_node(n)
            return self._mode.from_tensor(value, static_shapes=True) if isinstance(value, torch.Tensor) else value
        try:
            result = torch.fx.Interpreter.run_node(self, n)
        except Exception as err:  # noqa: BLE001 - every failure becomes a diagnostic naming the node
            result = self._decomposed(n)
            if result is None and not self.diagnostics and isinstance(n.meta.get("val"), torch.Tensor):
                result = n.meta["val"]  # no symbolic kernel (BLIP-2's masked_scatter): everything before it matched,
                # so the shape torch.export recorded for it stands
            if result is None:
                self.diagnostics.append(Diagnostic(n.name, f"{n.format_node()}: fails shape propagation: "
                                                           f"{str(err).splitlines()[0][:200]}"))
                raise _Stop() from err
        recorded = n.meta.get("val")
        if isinstance(result, torch.Tensor) and isinstance(recorded, torch.Tensor):
            if _specialized(result, recorded):
                return recorded  # a kernel without symbolic sizes (aten.polar, Llama 4's rotary) gave the example's
                # sizes: the recorded symbolic shape stands, and nothing is specialized
            if _dims(result) != _dims(recorded) or result.dtype != recorded.dtype:
                self.diagnostics.append(Diagnostic(
                    n.name, f"{n.format_node()}: the recomputed shape/dtype differs from the recorded one.",
                    f"[{', '.join(_dims(recorded))}] {recorded.dtype}", f"[{', '.join(_dims(result))}] {result.dtype}"))
        return result


    def _decomposed(self, n: torch.fx.Node):
        """The op through its decomposition, for ops whose meta kernel fails on symbolic sizes (baddbmm with a
        broadcast bias, BLOOM's ALiBi); None when there is none or it fails too."""
        from torch._decomp import decomposition_table

        fn = decomposition_table.get(n.target) if n.op == "call_function" else None
        if fn is None:
            return None
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        try:
            return fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - the original failure is reported
            return None


class _Stop(Exception):
    pass


_LAST: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # gm -> (its fingerprint, its graph diagnostics)


def validate_full(cm) -> list[Diagnostic]:
    """Every diagnostic of the whole graph (empty = valid): lint, then fake-tensor propagation. A graph whose
    fingerprint (every node, argument, recorded shape and tensor it reads) is the one last validated is not
    propagated again (validate, then export: once)."""
    key = fingerprint(cm.gm)
    last = _LAST.get(cm.gm)
    if last is not None and last[0] == key:
        return list(last[1]) + unconnected_blocks(cm)
    found = _graph_diagnostics(cm.gm)
    _LAST[cm.gm] = (key, tuple(found))
    return found + unconnected_blocks(cm)


def fingerprint(gm: torch.fx.GraphModule) -> tuple:
    """What full validation reads, as one comparable value: each node (name, op, target, arguments, recorded
    shape and dtype) in graph order, and the shape, dtype and device of every tensor the graph reads."""
    def arg(a):
        if isinstance(a, torch.fx.Node):
            return ("%", a.name)
        return ("T", _sig(a)) if isinstance(a, torch.Tensor) else a

    nodes = []
    for n in gm.graph.nodes:
        val = n.meta.get("val")
        recorded = _sig(val) if isinstance(val, torch.Tensor) else repr(type(val))
        owned = _sig(_attr(gm, n.target)) if n.op == "get_attr" else None
        nodes.append((n.name, n.op, str(n.target), repr(torch.fx.node.map_aggregate(n.args, arg)),
                      repr(torch.fx.node.map_aggregate(n.kwargs, arg)), recorded, owned))
    tensors = tuple((k, _sig(t)) for k, t in itertools.chain(gm.named_parameters(), gm.named_buffers()))
    return tuple(nodes), tensors


def _sig(t) -> tuple | None:
    return (tuple(str(d) for d in t.shape), str(t.dtype), str(t.device)) if isinstance(t, torch.Tensor) else None


def _attr(gm: torch.fx.GraphModule, target: str):
    obj = gm
    for part in str(target).split("."):
        obj = getattr(obj, part, None)
    return obj


def _graph_diagnostics(gm: torch.fx.GraphModule) -> list[Diagnostic]:
    """lint, then fake-tensor propagation compared with the recorded meta."""
    try:
        gm.graph.lint()
    except Exception as err:  # noqa: BLE001
        return [Diagnostic("", f"graph.lint() fails: {str(err).splitlines()[0]}")]
    mode = _fake_mode(gm)
    checker = _Checker(gm, mode)
    env = getattr(mode, "shape_env", None)
    try:  # guards are not recorded: propagating must not specialize the capture's symbols (a symbol guarded often
        # enough becomes its example value, and the exported model.py would then be fixed at that length)
        with quiet_fake_kernels(), mode, (env.suppress_guards() if env is not None else contextlib.nullcontext()):
            checker.run(*_placeholder_vals(gm))
    except _Stop:
        pass
    return checker.diagnostics


def unconnected_blocks(cm) -> list[Diagnostic]:
    """A bare LoRA Layer whose output nothing reads: computed for nothing, and not something to export."""
    from graphsurgeon.graph.meta import tensor_meta

    out = []
    nodes = {n.name: n for n in cm.gm.graph.nodes}
    for block in cm.loras.values():
        if block.kind == "bare" and not block.wired_to:
            meta = tensor_meta(nodes[block.nodes[-1]].meta.get("val"), cm.dims)
            shape = meta.shape_text if meta else "its output's shape"
            out.append(Diagnostic(block.nodes[-1], f"{block.path} (a bare LoRA Layer) is not connected: drag its output "
                                                   f"onto a value of shape {shape} (e.g. {block.target.target_node}, "
                                                   "its projection's output) or delete it.", "connected", "unconnected"))
    return out


def bare_fake_prop(cm):
    """A plain FakeTensorProp over a copy of the graph, as a callable (the benchmark's peer for validate_full)."""
    graph = torch.fx.Graph()
    env: dict = {}
    for node in cm.gm.graph.nodes:
        if node.op == "call_module" and node.target == "_guards_fn":
            continue
        env[node] = graph.node_copy(node, lambda x: env[x])  # meta is copied: the original is never written
    gm = torch.fx.GraphModule(cm.gm, graph)
    mode, args = _fake_mode(cm.gm), _placeholder_vals(cm.gm)
    return lambda: FakeTensorProp(gm, mode).propagate_dont_convert_inputs(*args)
