"""What the self-check (export/verify.py) runs: inputs at two sequence lengths, random non-zero LoRA weights, and
the graph's output of every module path (from nn_module_stack) to localise a difference."""

from __future__ import annotations

import math

import torch
import torch.fx

from graphsurgeon.export.codegen.scopes import lora_export_name

SEED = 20


def _dim_sizes(cm, length: int) -> dict[str, int]:
    """Every dynamic dim's size in case `length` (0 or 1): batch 2, each sequence dim its example size -/+ 3,
    kept within the range it was captured with."""
    from graphsurgeon.export.verify import BATCH, LENGTH_STEP

    sizes = {}
    for name, example in cm.dims.examples.items():
        if name == "batch":
            sizes[name] = BATCH
            continue
        hi = cm.dims.bounds.get(name) or math.inf
        lo = getattr(cm.dims, "lows", {}).get(name, 2)  # the range capture used (capture/ranges.py)
        size = example - LENGTH_STEP if length == 0 else example + LENGTH_STEP
        m = getattr(cm.dims, "multiples", {}).get(name, 1)  # a dim captured as a multiple of m (capture/ranges.py)
        if m > 1:
            size, lo, hi = m * round(size / m), -(-lo // m) * m, hi // m * m if hi != math.inf else hi
            size = size if size != example else size + (m if length else -m)
        sizes[name] = int(max(lo, min(hi, size)))
    return sizes


def _axes(cm) -> dict[str, dict[int, str]]:
    """input name -> {axis: dim name} for the dynamic axes of each placeholder."""
    axes: dict[str, dict[int, str]] = {}
    for node in cm.gm.graph.nodes:
        val = node.meta.get("val")
        if node.op != "placeholder" or not isinstance(val, torch.Tensor):
            continue
        for i, size in enumerate(val.shape):
            if isinstance(size, torch.SymInt):
                name = cm.dims.names.get(str(size.node.expr))
                if name:
                    axes.setdefault(node.name, {})[i] = name
    return axes


def _vocab(cm, input_name: str) -> int | None:
    """The rows of the embedding an integer input indexes (its valid ids), read from the graph."""
    for node in cm.gm.graph.nodes:
        if node.op == "placeholder" and node.name == input_name:
            for user in node.users:
                if user.target is torch.ops.aten.embedding.default and user.args[1] is node:
                    weight = user.args[0]
                    val = weight.meta.get("val") if isinstance(weight, torch.fx.Node) else None
                    if isinstance(val, torch.Tensor) and isinstance(val.shape[0], int):
                        return int(val.shape[0])
                    if isinstance(weight, torch.fx.Node) and weight.op == "get_attr":
                        return int(cm.gm.get_parameter(weight.target).shape[0])
    vocab = (cm.config or {}).get("vocab_size")
    return int(vocab) if "input_ids" in input_name and vocab else None


def cases(cm) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """(label, inputs) at two sequence lengths: ids drawn at random among the valid ids, an attention mask with
    right padding on the last row at the second length, other inputs repeated from the capture's example."""
    gen = torch.Generator().manual_seed(SEED)
    axes = _axes(cm)
    out = []
    for length in (0, 1):
        sizes = _dim_sizes(cm, length)
        inputs = {}
        for name in cm.input_names:
            example = cm.example_inputs[name]
            shape = list(example.shape)
            for axis, dim in axes.get(name, {}).items():
                shape[axis] = sizes[dim]
            vocab = _vocab(cm, name) if not example.is_floating_point() else None
            if example.is_floating_point():
                t = torch.randn(shape, generator=gen).to(example.dtype)
            elif vocab:
                t = torch.randint(0, vocab, shape, generator=gen, dtype=example.dtype)
            else:
                t = example.cpu()
                for axis in range(len(shape)):
                    idx = torch.arange(shape[axis]) % max(1, example.shape[axis])
                    t = t.index_select(axis, idx)
            if name == "attention_mask" and length == 1 and t.dim() == 2 and t.shape[1] > 3:
                t = t.clone()
                t[-1, -2:] = 0  # right padding: the mask paths are run too
            inputs[name] = t
        seq = [f"{d} {s}" for d, s in sizes.items() if d != "batch"]
        out.append((", ".join(seq) or "fixed sizes", inputs))
    if out[0][0] == out[1][0]:  # nothing dynamic but the batch: one case
        out = out[:1]
    return out


def random_lora(cm) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Random non-zero weights for every LoRA: (by graph parameter name, by model.py's parameter name)."""
    gen = torch.Generator().manual_seed(SEED + 1)
    by_graph, by_export = {}, {}
    for block in cm.loras.values():
        module = cm.gm.get_submodule(block.module_path)
        for pname, p in module.named_parameters():
            t = (torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1])).to(p.dtype)
            by_graph[f"{block.module_path}.{pname}"] = t
            by_export[f"{lora_export_name(block)}.{pname}"] = t
    return by_graph, by_export


def _chain(node: torch.fx.Node) -> tuple[str, ...]:
    stack = node.meta.get("nn_module_stack") or {}
    paths = []
    for path, _ in stack.values():
        if isinstance(path, str) and path and not path.startswith("_empty_nn_module_stack"):
            path = path.split("@")[0]
            if path not in paths:
                paths.append(path)
    return tuple(paths)


def graph_module_values(cm, inputs: dict[str, torch.Tensor]) -> dict[tuple[str, str], list[torch.Tensor]]:
    """(module path, "out" | "in") -> the floating values its ops produce that are read outside it (its outputs) or
    that its ops read from outside it (its inputs), from one run of the graph on `inputs`; {} when the graph's
    inputs cannot be given."""
    gm = cm.gm
    nodes = list(gm.graph.nodes)
    chains = {n: set(_chain(n)) for n in nodes}
    wanted: dict[torch.fx.Node, set[tuple[str, str]]] = {}
    for n in nodes:
        for path in chains[n]:
            if any(u.op == "output" or path not in chains[u] for u in n.users):
                wanted.setdefault(n, set()).add((path, "out"))
        for a in n.all_input_nodes:
            for path in chains[n] - chains[a]:
                wanted.setdefault(a, set()).add((path, "in"))
    values: dict[tuple[str, str], list[torch.Tensor]] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            result = super().run_node(n)
            if n in wanted and isinstance(result, torch.Tensor) and result.is_floating_point():
                for key in wanted[n]:
                    values.setdefault(key, []).append(result.detach())
            return result

    full = dict(inputs)
    first = full.get(cm.input_names[0]) if cm.input_names else None
    for name, fill in cm.optional_inputs.items():
        if name not in full and first is not None:
            full[name] = torch.ones_like(first) if fill == "ones" else torch.zeros_like(first)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if any(p.name not in full for p in placeholders):
        return {}
    Recorder(gm).run(*[full[p.name] for p in placeholders])
    return values
