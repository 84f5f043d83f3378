"""Layer stacks: numbered sibling modules (h.0 … h.11) whose sub-graphs are isomorphic — the same ops on the
same shapes, parameters aside — are one stack, shown as one block "h.0 … h.11 ×12". Layers that differ
(LoRA on layer 3 only) split the stack into runs of alike layers: 0–2, 3, 4–11.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
import torch.fx

from graphsurgeon.graph.semantics.source import module_paths

_NUMBERED = re.compile(r"^(.*)\.(\d+)$")


@dataclass
class LayerStack:
    """The numbered layers of one container (a ModuleList) and how they group into runs of alike layers."""

    container: str  # the ModuleList's path: "transformer.h"
    parent: str  # the module the layers run in: "transformer"
    runs: list[list[str]] = field(default_factory=list)  # layer paths, alike layers together, in order

    @property
    def layers(self) -> list[str]:
        return [p for run in self.runs for p in run]

    def run_path(self, run: list[str]) -> str:
        """The composite path of a run: the container when one run covers every layer, else container[a:b]."""
        if len(self.runs) == 1:
            return self.container
        first, last = _index(run[0]), _index(run[-1])
        return f"{self.container}[{first}:{last + 1}]"

    def run_title(self, run: list[str]) -> str:
        """'h.0 … h.11 ×12'."""
        leaf = self.container[len(self.parent) + 1:] if self.parent else self.container
        return f"{leaf}.{_index(run[0])} … {leaf}.{_index(run[-1])} ×{len(run)}"


def _index(path: str) -> int:
    return int(path.rsplit(".", 1)[-1])


def find_stacks(gm: torch.fx.GraphModule) -> list[LayerStack]:
    """Stacks of ≥ 2 numbered layers; a run holds ≥ 2 alike consecutive layers (a lone layer is no run)."""
    by_layer: dict[str, list[torch.fx.Node]] = {}
    parents: dict[str, str] = {}
    for node in gm.graph.nodes:
        mods = module_paths(node)
        for i, path in enumerate(mods[1:], 1):
            m = _NUMBERED.match(path)
            if m:
                by_layer.setdefault(path, []).append(node)
                parents.setdefault(path, mods[i - 1])
                break
    containers: dict[str, list[str]] = {}
    for path in by_layer:
        containers.setdefault(_NUMBERED.match(path).group(1), []).append(path)
    stacks = []
    for container, layers in containers.items():
        layers.sort(key=_index)
        if len(layers) < 2 or [_index(p) for p in layers] != list(range(_index(layers[0]), _index(layers[-1]) + 1)):
            continue
        memo: dict = {}  # what layers share (values, module stacks, op names), for this call only
        sigs = [_cached_signature(p, by_layer[p], memo) for p in layers]
        runs: list[list[str]] = []
        for path, sig in zip(layers, sigs):
            if runs and sigs[layers.index(runs[-1][0])] == sig:
                runs[-1].append(path)
            else:
                runs.append([path])
        if all(len(r) == 1 for r in runs):
            continue  # nothing alike: the layers stand alone
        stacks.append(LayerStack(container, parents[layers[0]], runs))
    return stacks


_SIGNATURES: dict[tuple, tuple[list, int]] = {}  # (layer, ids of its nodes/args) -> (those objects, signature)


def _cached_signature(layer: str, nodes: list[torch.fx.Node], memo: dict | None = None) -> int:
    """A layer's signature, recomputed only when one of its nodes or their arguments changed (an edit).

    The entry keeps the objects it was computed from alive, so their ids cannot be reused meanwhile.
    """
    parts = [(n, n.args, n.kwargs, n.meta.get("val")) for n in nodes]
    key = (layer, tuple(id(x) for p in parts for x in p))
    if key not in _SIGNATURES:
        if len(_SIGNATURES) > 1024:
            _SIGNATURES.clear()
        _SIGNATURES[key] = (parts, _signature(layer, nodes, memo))
    return _SIGNATURES[key][1]


def _signature(layer: str, nodes: list[torch.fx.Node], memo: dict | None = None) -> int:
    """A hash of the layer's ops, argument structure, shapes and relative module paths (not its weights).

    memo: caches keyed by the identity of what replicated layers share — a node's value (`meta["val"]`), its module
    paths (one tuple per module stack), its op — valid while those objects live: one `find_stacks` call.
    """
    memo = {} if memo is None else memo
    shapes, names = memo.setdefault("shapes", {}), memo.setdefault("names", {})
    local = {n: i for i, n in enumerate(nodes)}
    outside: dict[torch.fx.Node, int] = {}
    prefix = layer + "."
    rels: dict[int, tuple] = {}  # id(module paths) -> those paths relative to this layer

    def arg(a):
        if isinstance(a, torch.fx.Node):
            if a in local:
                return ("n", local[a])
            if a.op == "get_attr":
                target = str(a.target)
                return ("p", target[len(prefix):] if target.startswith(prefix) else target, shape(a))
            return ("x", outside.setdefault(a, len(outside)))
        if isinstance(a, (list, tuple)):
            return tuple(arg(x) for x in a)
        if isinstance(a, dict):
            return tuple(sorted((k, arg(v)) for k, v in a.items()))
        return repr(a)

    def shape(n):
        val = n.meta.get("val")
        key = id(val)
        if key not in shapes:
            shapes[key] = (_shape(n), val)  # the value held: its id stays its own
        return shapes[key][0]

    parts = []
    for n in nodes:
        mods = module_paths(n)
        rel = rels.get(id(mods))
        if rel is None:
            rel = rels[id(mods)] = tuple(p[len(prefix):] if p.startswith(prefix) else "" for p in mods
                                         if p.startswith(layer))
        if n.op == "call_module":
            target = str(n.target)[len(prefix):] if str(n.target).startswith(prefix) else str(n.target)
        else:
            name = names.get(id(n.target))
            if name is None:
                t = n.target
                name = names[id(n.target)] = (str(t if isinstance(t, str) else getattr(t, "__name__", str(t))), t)
            target = name[0]
        parts.append((n.op, target, rel, arg(n.args), arg(n.kwargs), shape(n)))
    return hash(tuple(parts))


def _shape(n: torch.fx.Node):
    """Shape and dtype, symbolic dims as their (hashable, cheap) sympy expressions."""
    val = n.meta.get("val")
    if isinstance(val, torch.Tensor):
        return tuple(d.node.expr if isinstance(d, torch.SymInt) else int(d) for d in val.shape), val.dtype
    return type(val).__name__
