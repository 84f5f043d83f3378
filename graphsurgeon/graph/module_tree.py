"""The module hierarchy of an instantiated model as a view snapshot: what the editor paints while torch.export runs.

A model built on the meta device costs no weight memory and, once transformers is imported, a few milliseconds; its
modules are known before the capture. Each composite view holds the composite's child modules (class, parameter
count) and nothing else: dataflow, ops and shapes exist only after the capture. Containers without a forward of
their own (ModuleList, ModuleDict) are not composites: their children appear in the parent as "h.0", "h.1", …,
as in the captured block view.
"""

from __future__ import annotations

from dataclasses import asdict

from graphsurgeon.graph.blocks import Block, CompositeView
from graphsurgeon.graph.snapshot import FORMAT, ViewSnapshot


def _is_container(module) -> bool:
    import torch

    return isinstance(module, (torch.nn.ModuleList, torch.nn.ModuleDict))


def module_snapshot(model, source_name: str) -> ViewSnapshot:
    """A ViewSnapshot of `model`'s module hierarchy (no links, no table rows), marked `modules_only`."""
    modules = dict(model.named_modules())
    paths = [p for p, m in modules.items() if not _is_container(m)]
    parent_of: dict[str, str] = {}
    for p in paths:
        if p:
            up = p.rpartition(".")[0]
            while up and _is_container(modules[up]):
                up = up.rpartition(".")[0]
            parent_of[p] = up
    children: dict[str, list[str]] = {p: [] for p in paths}
    for p in paths:  # named_modules is in registration order: children keep it
        if p:
            children[parent_of[p]].append(p)

    def title(path: str) -> str:
        parent = parent_of[path]
        return path[len(parent) + 1:] if parent else path

    def params(path: str) -> int:  # each shared tensor once, as the captured view counts them
        return sum(t.numel() for t in modules[path].parameters())

    crumbs: dict[str, list[list[str]]] = {}
    for p in paths:
        chain, up = [], p
        while up:
            chain.append([title(up), up])
            up = parent_of[up]
        crumbs[p] = [[type(model).__name__, ""]] + chain[::-1]
    views = {}
    for p in paths:
        blocks = [Block(f"m:{c}", "composite", title(c), type(modules[c]).__name__, module_path=c, param_count=params(c))
                  for c in children[p]]
        views[p] = asdict(CompositeView(p, type(modules[p]).__name__, blocks, [], []))
    return ViewSnapshot({
        "format": FORMAT, "modules_only": True, "model_class": type(model).__name__, "source_name": source_name,
        "children": children, "crumbs": crumbs, "search": {p: [parent_of[p], f"m:{p}"] for p in paths if p},
        "views": views,
    })
