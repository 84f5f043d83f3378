"""The module tree of an instantiated model as a view snapshot: what the editor paints while torch.export runs.

A model built on the meta device costs no weight memory and, once transformers is imported, a few milliseconds; its
modules are known before the capture. Each composite view holds the composite's child modules (class, parameter
count) and nothing else: dataflow, ops, shapes and the function groups found in them exist only after the capture.
The tree follows the captured block view where the modules alone tell: containers without a forward of their own
(ModuleList, ModuleDict) are not composites, and consecutive alike layers of a ModuleList (same class, same
parameter shapes) form a layer stack with the semantic layer's path and title ("transformer.h", "h.0 … h.11 ×12").
"""

from __future__ import annotations

import json
from dataclasses import asdict

from graphsurgeon.graph.blocks import Block, CompositeView
from graphsurgeon.graph.semantics.stacks import LayerStack
from graphsurgeon.graph.snapshot import FORMAT, ViewSnapshot


def module_snapshot(model, source_name: str) -> ViewSnapshot:
    """A ViewSnapshot of `model`'s module tree (no links, no table rows), marked `modules_only`."""
    return ViewSnapshot(module_tree_data(model, source_name))


def module_tree_data(model, source_name: str) -> dict:
    """`model`'s module tree as JSON data (lists, never tuples): what ViewSnapshot reads and a preset ships."""
    import torch

    from graphsurgeon.graph.peft_classes import is_projection_layer

    modules = dict(model.named_modules())
    container = {p for p, m in modules.items() if isinstance(m, (torch.nn.ModuleList, torch.nn.ModuleDict))}

    def owner(path: str) -> str:
        """The module a path's forward runs in: its nearest ancestor that is not a container."""
        up = path.rpartition(".")[0]
        while up in container:
            up = up.rpartition(".")[0]
        return up

    def params(path: str) -> int:  # each shared tensor once, as the captured view counts them
        return sum(t.numel() for t in modules[path].parameters())

    stack_of: dict[str, tuple[LayerStack, list[str]]] = {}  # layer path -> its stack and run
    for path in container:
        if isinstance(modules[path], torch.nn.ModuleList):
            for stack, run in _runs(path, owner(path), modules):
                stack_of.update({layer: (stack, run) for layer in run})

    parent_of: dict[str, str] = {}
    titles: dict[str, str] = {}
    subtitles: dict[str, str] = {}
    sizes: dict[str, int] = {}
    children: dict[str, list[str]] = {"": []}
    for path in modules:  # registration order: children keep it, a stack sits where its first layer is
        if not path or path in container:
            continue
        up = owner(path)
        titles[path] = path[len(up) + 1:] if up else path
        subtitles[path] = type(modules[path]).__name__
        sizes[path] = params(path)
        children.setdefault(path, [])
        if path in stack_of:
            stack, run = stack_of[path]
            spath = stack.run_path(run)
            if spath not in parent_of:
                parent_of[spath] = up
                children[up].append(spath)
                children[spath] = []
                titles[spath] = stack.run_title(run)
                subtitles[spath] = f"{type(modules[run[0]]).__name__} ×{len(run)}"
                sizes[spath] = sum(params(layer) for layer in run)
            up = spath
        parent_of[path] = up
        children[up].append(path)

    def crumbs(path: str) -> list[list[str]]:
        chain = []
        while path:
            chain.append([titles[path], path])
            path = parent_of[path]
        return [[type(model).__name__, ""]] + chain[::-1]

    def block(path: str) -> Block:
        kind = "stack" if path in titles and path not in modules else "module"
        return Block(f"m:{path}", "composite", titles[path], subtitles[path], module_path=path, param_count=sizes[path],
                     group=kind)

    views = {}
    for path, kids in children.items():
        class_name = subtitles.get(path, type(model).__name__)
        views[path] = asdict(CompositeView(path, class_name, [block(k) for k in kids], [], []))
    data = {
        "format": FORMAT, "modules_only": True, "model_class": type(model).__name__, "source_name": source_name,
        "children": children, "crumbs": {p: crumbs(p) for p in children},
        "search": {p: [parent_of[p], f"m:{p}"] for p in parent_of}, "views": views,
        "projections": [p for p in titles if p in modules and is_projection_layer(modules[p])],
    }
    return json.loads(json.dumps(data))  # the dataclasses' tuples as lists: equal to the same tree read from a file


def _runs(path: str, parent: str, modules: dict) -> list[tuple[LayerStack, list[str]]]:
    """The runs of ≥ 2 consecutive alike numbered layers of the ModuleList at `path` (a lone layer is no run)."""
    layers = [p for p in modules if p.rpartition(".")[0] == path and p.rpartition(".")[2].isdigit()]

    def signature(layer: str) -> tuple:
        m = modules[layer]
        return type(m).__name__, tuple((n, tuple(t.shape)) for n, t in m.named_parameters())

    runs: list[list[str]] = []
    for layer in layers:
        if runs and signature(runs[-1][-1]) == signature(layer):
            runs[-1].append(layer)
        else:
            runs.append([layer])
    stack = LayerStack(path, parent, runs)  # lone layers stay in `runs`: they decide the paths, as in semantics
    return [(stack, run) for run in runs if len(run) >= 2]
