"""Full validation: fake-tensor propagation over the whole graph with dynamic batch/seq, plus graph.lint().

The placeholders keep their captured fake values (same ShapeEnv, same symbols), so every recomputed
shape is compared with the recorded `meta["val"]` symbol for symbol. Recorded meta is never overwritten.
"""

from __future__ import annotations

import re

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


def validate_full(cm) -> list[Diagnostic]:
    """Every diagnostic of the whole graph (empty = valid): lint, then fake-tensor propagation."""
    gm = cm.gm
    try:
        gm.graph.lint()
    except Exception as err:  # noqa: BLE001
        return [Diagnostic("", f"graph.lint() fails: {str(err).splitlines()[0]}")]
    mode = _fake_mode(gm)
    checker = _Checker(gm, mode)
    try:
        with quiet_fake_kernels(), mode:  # a failing meta kernel is retried, not printed
            checker.run(*_placeholder_vals(gm))
    except _Stop:
        pass
    return checker.diagnostics + unconnected_blocks(cm)


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
