"""Every call of each LoRA: a LoRA on a module that runs more than once (one layer shared by the whole stack, as
ALBERT's; a layer called twice in one forward) is inserted at each call under one path, with one pair of weights,
and `cm.loras` holds one of those insertions. The others are found here by their module stack, each as a copy of
the block with that call's nodes, so the code writes every call site as a call of the one LoRA module, and removing the block's
last insertion leaves the others (and the weights) in place."""

from __future__ import annotations

import dataclasses

import torch.fx

aten = torch.ops.aten


def lora_sites(cm) -> list:
    """The blocks of `cm.loras`, each followed by a copy per other call of its LoRA module."""
    graph = cm.gm.graph
    by_name = {n.name: n for n in graph.nodes}
    paths = {b.path for b in cm.loras.values() if b.kind == "add" and b.add_node in by_name}
    under: dict[str, list[torch.fx.Node]] = {}  # block path -> the nodes whose module stack holds it
    for n in graph.nodes:
        for key in n.meta.get("nn_module_stack") or ():
            if key in paths:
                under.setdefault(key, []).append(n)
    out = []
    for block in cm.loras.values():
        out.append(block)
        if block.path in paths and len(under.get(block.path, ())) > len(block.nodes):
            out += _other_calls(block, under[block.path], by_name)
    return out


def other_calls(cm, block) -> list:
    """The copies of `block` for the other calls of its LoRA module (none for a module that runs once)."""
    if block.kind != "add" or not block.add_node:
        return []
    nodes = [n for n in cm.gm.graph.nodes if block.path in (n.meta.get("nn_module_stack") or ())]
    if len(nodes) <= len(block.nodes):
        return []
    return _other_calls(block, nodes, {n.name: n for n in nodes})


def _other_calls(block, nodes: list[torch.fx.Node], by_name: dict) -> list:
    own = set(block.nodes) | {block.add_node}
    mine = _steps([by_name[name] for name in block.nodes if name in by_name])
    out = []
    for every in _insertions([n for n in nodes if n.name not in own], block.path):
        found = _steps(every)
        if [(n.op, n.target) for n in found] != [(n.op, n.target) for n in mine]:
            continue  # not an insertion of this block (an edited graph): left as it is
        twin = dict(zip(mine, found))
        add = twin[by_name[block.add_node]]
        x = _counterpart(mine, found, block.target.input_node)
        if x is None or not isinstance(add.args[0], torch.fx.Node):
            continue
        target = dataclasses.replace(block.target, target_node=add.args[0].name, input_node=x.name)
        out.append(dataclasses.replace(block, target=target, nodes=[n.name for n in every], add_node=add.name))
    return out


def _insertions(nodes: list[torch.fx.Node], path: str) -> list[list[torch.fx.Node]]:
    """The other insertions, in graph order: each one's nodes are consecutive and end with its add (two calls in one
    module call, PegasusX's q_proj on the tokens and on the global states, are told apart by their adds)."""
    out: list[list[torch.fx.Node]] = [[]]
    for n in nodes:
        out[-1].append(n)
        if n.target is aten.add.Tensor and list(n.meta["nn_module_stack"])[-1] == path:  # the add sits in the block
            out.append([])
    return [found for found in out if found]


def _steps(nodes: list[torch.fx.Node]) -> list[torch.fx.Node]:
    """An insertion's nodes without its size reads (a call on fixed-length states reads fewer sizes)."""
    return [n for n in nodes if n.target is not aten.sym_size.int]


def _counterpart(mine: list, found: list, name: str) -> torch.fx.Node | None:
    """The argument at the place where the block's own insertion reads node `name`, in the other insertion."""
    for a, b in zip(mine, found):
        for x, y in zip(a.all_input_nodes, b.all_input_nodes):
            if x.name == name:
                return y
    return None
