"""Function groups: the ops of one call of a plain function (``create_causal_mask(...)``,
``apply_rotary_pos_emb(...)``, ``attention_interface(...)``) become one composite that unboxes like a module.

A group is found from the source line the ops came from: ops that run directly in one module (not in a
submodule) on a line that calls a function of the model's own are that call. Its title says what it is for,
from the roles inside (attention core, rotary arithmetic, mask builder), else the function's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.fx

from graphsurgeon.graph.hf_meta import default_node
from graphsurgeon.graph.semantics.dataflow import op_of
from graphsurgeon.graph.semantics.source import called_function, module_paths, scope_frames

MIN_OPS = 2  # a call that lowers to one op stays that op


@dataclass
class FunctionGroup:
    """The ops of one function call inside a module."""

    path: str  # composite path: "<module path>.<function>" ("model.create_causal_mask")
    parent: str  # the module path the call runs in ("" for the root)
    function: str  # the function called ("create_causal_mask")
    title: str  # what a person calls it ("Causal mask", "Rotary embedding", "Scaled dot-product attention")
    kind: str  # "causal_mask", "attention_mask", "rotary", "attention", "positions", "embeddings" or "function"
    nodes: list[torch.fx.Node] = field(default_factory=list)  # ops that run directly in it
    members: list[str] = field(default_factory=list)  # submodules and groups it holds (an embeddings group)


def find_groups(gm: torch.fx.GraphModule, roles, hidden: set) -> dict[str, FunctionGroup]:
    """Every function call with at least MIN_OPS visible ops, by composite path."""
    calls: dict[tuple, tuple[str, list[torch.fx.Node]]] = {}
    modules = {p for n in gm.graph.nodes for p in module_paths(n)}
    for node in gm.graph.nodes:
        if node.op != "call_function" or node in hidden:
            continue
        mods = module_paths(node)
        frames = scope_frames(node)
        frame = frames[-1] if frames else None
        if frame is None:
            continue
        fn = called_function(frame.code)
        if fn is not None and fn.startswith("self."):  # a helper method, unless it names a submodule
            fn = fn[5:]
            if (f"{mods[-1]}.{fn}" if mods[-1] else fn) in modules:
                fn = None
        if fn is None:
            continue
        key = (mods[-1], frame.file, frame.line)
        calls.setdefault(key, (fn, []))[1].append(node)
    groups: dict[str, FunctionGroup] = {}
    direct: dict[str, int] = {}  # module path -> ops that run directly in it
    for node in gm.graph.nodes:
        if node.op == "call_function" and node not in hidden:
            direct[module_paths(node)[-1]] = direct.get(module_paths(node)[-1], 0) + 1
    by_core = {a.core: a for a in reversed(roles.attentions)}  # the first attention of each core
    for (module, _file, _line), (fn, nodes) in calls.items():
        visible = [n for n in nodes if op_of(n) not in ("sym_size", "getitem")]
        if len(visible) < MIN_OPS:
            continue
        kind, title = _describe(nodes, roles, fn, by_core)
        if kind == "function" and module and len(nodes) >= direct.get(module, 0) - 2:
            continue  # a helper that does nearly all its module's work (Gemma's RMSNorm._norm) adds nothing
        path = f"{module}.{fn}" if module else fn
        k = 2
        while path in groups:
            path = f"{module}.{fn}_{k}" if module else f"{fn}_{k}"
            k += 1
        groups[path] = FunctionGroup(path, module, fn, title, kind, nodes)
    _position_groups(gm, groups, hidden)
    _embedding_groups(gm, roles, groups, hidden)
    return groups


_SOURCES = {"arange", "zeros", "ones", "full", "scalar_tensor"}


def _position_groups(gm: torch.fx.GraphModule, groups: dict[str, FunctionGroup], hidden: set) -> None:
    """Arithmetic on tensors made from sizes alone (arange, ones: position ids, cache positions), run in one
    module and in no function group: one "Position ids" group per module."""
    grouped = {n for g in groups.values() for n in g.nodes}
    sized: set[torch.fx.Node] = set()  # tensors computed from sizes and constants only
    for n in gm.graph.nodes:
        if n.op != "call_function" or n in hidden or n in grouped or not isinstance(n.meta.get("val"), torch.Tensor):
            continue
        ins = [a for a in n.all_input_nodes if isinstance(a.meta.get("val"), torch.Tensor)]
        if (not ins and op_of(n) in _SOURCES) or (ins and all(a in sized for a in ins)):
            sized.add(n)
    sized |= _default_position_ids(gm, grouped, hidden)
    by_module: dict[str, list[torch.fx.Node]] = {}
    for n in sized:
        by_module.setdefault(module_paths(n)[-1], []).append(n)
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    for module, nodes in by_module.items():
        if len(nodes) < MIN_OPS or not any(op_of(n) in _SOURCES | {"cumsum"} for n in nodes):
            continue  # arithmetic on positions passed in is part of what receives them
        title = "Position ids" if any(op_of(n) in ("arange", "cumsum") for n in nodes) else "Index arithmetic"
        path = f"{module}.position_ids" if module else "position_ids"
        if path not in groups:
            groups[path] = FunctionGroup(path, module, "position_ids", title, "positions",
                                         sorted(nodes, key=order.__getitem__))


def _default_position_ids(gm: torch.fx.GraphModule, grouped: set, hidden: set) -> set[torch.fx.Node]:
    """The ops computing HF's default position ids (capture tags the value, graph/hf_meta.py) in its module,
    e.g. OPT's cumsum of the attention mask: that value and what leads to it there."""
    end = default_node(gm, "position_ids")
    if end is None or end in grouped or end in hidden:
        return set()
    module, found, todo = module_paths(end)[-1], set(), [end]
    while todo:
        n = todo.pop()
        if n in found or n.op != "call_function" or n in grouped or n in hidden or module_paths(n)[-1] != module \
                or not isinstance(n.meta.get("val"), torch.Tensor):
            continue
        found.add(n)
        todo.extend(n.all_input_nodes)
    return found


_EMBEDDINGS = {"token_embedding", "position_embedding", "token_type_embedding", "embedding"}


def _embedding_groups(gm: torch.fx.GraphModule, roles, groups: dict[str, FunctionGroup], hidden: set) -> None:
    """Token + position (+ type) embedding lookups summed in a module that does more: one "Embeddings" group.

    It holds the lookups (submodules), the sums, what only prepares their inputs (a view of input_ids, the
    position ids) and a dropout or norm applied right after the sum.
    """
    by_parent: dict[str, list[str]] = {}
    for n in gm.graph.nodes:
        if n.op == "call_function" and roles.values.get(n) in _EMBEDDINGS:
            mods = module_paths(n)
            if len(mods) >= 2 and roles.modules.get(mods[-1]) in _EMBEDDINGS and mods[-1] not in by_parent.get(mods[-2], []):
                by_parent.setdefault(mods[-2], []).append(mods[-1])
    grouped = {n for g in groups.values() for n in g.nodes}
    for parent, lookups in by_parent.items():
        if len(lookups) < 2 or roles.modules.get(parent) in _EMBEDDINGS | {"embeddings"}:
            continue
        at = {n: _module_at(n, parent) for n in gm.graph.nodes}  # the submodule of `parent` each node runs in
        inside = at.__getitem__
        made = {n for n in gm.graph.nodes if inside(n) in lookups}  # outputs of the lookups
        direct: list[torch.fx.Node] = []
        members = list(lookups)
        for n in gm.graph.nodes:  # sums of embeddings, in the parent itself
            if n.op == "call_function" and inside(n) == "" and op_of(n) == "add" and n not in grouped \
                    and all(a in made for a in n.all_input_nodes):
                direct.append(n)
                made.add(n)
        if not direct:
            continue
        for n in gm.graph.nodes:  # input preparation: ops on graph inputs used only by the lookups
            if n.op == "call_function" and inside(n) == "" and n not in grouped and n not in made \
                    and all(a.op == "placeholder" or op_of(a) == "sym_size" for a in n.all_input_nodes) and n.users \
                    and all(inside(u) in lookups for u in n.users):
                direct.append(n)
        for g in groups.values():
            if g.parent == parent and g.kind == "positions":
                members.append(g.path)
        last = direct[0] if len(direct) == 1 else max((d for d in direct if d in made), key=lambda d: d.name)
        users = list(last.users)
        after = inside(users[0]) if len(users) == 1 else None
        if after and roles.modules.get(after) in (None, "norm") \
                and all(op_of(u) in ("dropout", "layer_norm", "native_layer_norm", "rms_norm")
                        for u in gm.graph.nodes if inside(u) == after and u.op == "call_function"):
            members.append(after)
        order = {n: i for i, n in enumerate(gm.graph.nodes)}
        path = f"{parent}.embeddings" if parent else "embeddings"
        groups[path] = FunctionGroup(path, parent, "embeddings", "Embeddings", "embeddings",
                                     sorted(direct, key=order.__getitem__), members)


def _module_at(node: torch.fx.Node, parent: str) -> str | None:
    """The direct submodule of `parent` a node runs in ('' when it runs in `parent` itself, None outside it)."""
    mods = module_paths(node)
    if parent not in mods:
        return None
    i = mods.index(parent)
    return mods[i + 1] if i + 1 < len(mods) else ""


def _describe(nodes: list[torch.fx.Node], roles, fn: str, by_core: dict) -> tuple[str, str]:
    """(kind, title) from the roles of the ops inside (`by_core`: attention core node -> its Attention)."""
    cores = [by_core[n] for n in nodes if n in by_core]
    if cores:
        first = min(cores, key=roles.attentions.index) if len(cores) > 1 else cores[0]
        return "attention", "Scaled dot-product attention" if first.kind == "sdpa" else "Eager attention"
    if sum(n in roles.rotary for n in nodes) >= len(nodes) / 2:
        return "rotary", "Rotary embedding"
    if sum(n in roles.mask_builder for n in nodes) >= len(nodes) / 2:
        causal = any(roles.values.get(n) == "causal_mask" for n in nodes)
        return ("causal_mask", "Causal mask") if causal else ("attention_mask", "Attention mask")
    return "function", f"{fn}()"


def activation_title(nodes: list[torch.fx.Node]) -> str | None:
    """What an activation module computes, read from its ops: 'GELU (tanh)', 'GELU', 'SiLU', 'ReLU'."""
    ops = {op_of(n) for n in nodes if n.op == "call_function"}
    gelu = [n for n in nodes if n.op == "call_function" and op_of(n) == "gelu"]
    if gelu:
        approx = gelu[0].kwargs.get("approximate", gelu[0].args[1] if len(gelu[0].args) > 1 else "none")
        return "GELU (tanh)" if approx == "tanh" else "GELU"
    if "tanh" in ops and "pow" in ops:
        return "GELU (tanh)"
    if "erf" in ops:
        return "GELU"
    if "silu" in ops or ("sigmoid" in ops and "mul" in ops):
        return "SiLU"
    for op, title in (("relu", "ReLU"), ("tanh", "Tanh"), ("sigmoid", "Sigmoid"), ("mish", "Mish"),
                      ("elu", "ELU"), ("leaky_relu", "LeakyReLU"), ("hardswish", "HardSwish")):
        if op in ops:
            return title
    return None
