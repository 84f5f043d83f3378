"""Grow a shallow twin's captured graph to the full model's depth (see capture/replicate.py).

The twin's graph holds, per stack, its first `keep` layers as torch.export wrote them. For each kind of layer the
last two captured layers of that kind are checked isomorphic — node for node the same op and target, the same
arguments (a value of the layer itself at the same place, the same value from outside the stacks, the same output
of the layer before, the same value of an earlier layer), the same shapes and dtypes (same symbolic dims), stack
traces and module paths up to the layer's index. The last one is then the template of its kind: layer i of the
full model is a copy of its kind's template with `{stack}.{template}` read as `{stack}.{i}` in module paths and
parameter names, its inputs from the previous layer wired to the previous copy's outputs; what read the last
captured layer's outputs (the final norm) reads the last copy's. Parameters and buffers are `get_attr` nodes named
as the full model names them, in the full model's order, bound to the full model's tensors.
"""

from __future__ import annotations

import re
import time
from typing import Callable

import torch
import torch.fx

from graphsurgeon.capture.replicate import NotReplicable, Stack
from graphsurgeon.graph.stale_code import recompile_later

_MEMO_KEYS = ("_graphsurgeon_module_paths",)  # derived caches in node.meta that a copy must not inherit
Progress = Callable[[str], None]


class _Layers:
    """The nodes of one stack's captured layers: layer index -> nodes in graph order, and node -> (layer, pos)."""

    def __init__(self, gm: torch.fx.GraphModule, stack: str, keep: int) -> None:
        self.stack = stack
        self.nodes: list[list[torch.fx.Node]] = [[] for _ in range(keep)]
        self.where: dict[torch.fx.Node, tuple[int, int]] = {}
        pat = re.compile(rf"^{re.escape(stack)}\.(\d+)(?:\.|$)")
        for node in gm.graph.nodes:
            if node.op == "get_attr":
                m = pat.match(str(node.target))
            else:
                nms = node.meta.get("nn_module_stack")
                m = pat.match(next(reversed(nms.values()))[0]) if nms else None
            if m:
                j = int(m.group(1))
                if j >= keep:
                    raise NotReplicable(f"the twin's graph has a layer {stack}.{j} it should not have")
                self.where[node] = (j, len(self.nodes[j]))
                self.nodes[j].append(node)
        if any(not layer for layer in self.nodes):
            raise NotReplicable(f"a captured layer of {stack} has no ops")
        self.outputs = [[n for n in layer if any(self.where.get(u, (-1,))[0] != j for u in n.users)]
                        for j, layer in enumerate(self.nodes)]
        self.slot = [{n: k for k, n in enumerate(outs)} for outs in self.outputs]

    def ref(self, arg: torch.fx.Node, j: int):
        """How layer j reads `arg`: its own value, an output slot of the layer before, an earlier layer's value,
        or a value from outside the stack."""
        at = self.where.get(arg)
        if at is None:
            return ("outside", arg)
        if at[0] == j:
            return ("own", at[1])
        if at[0] == j - 1:
            return ("previous", self.slot[j - 1][arg])
        return ("layer", arg)


def _val_key(val):
    if isinstance(val, torch.Tensor):
        return ("tensor", tuple(str(d) for d in val.shape), val.dtype, tuple(str(s) for s in val.stride()))
    if isinstance(val, (list, tuple)):
        return tuple(_val_key(v) for v in val)
    return ("value", str(val))


def _swap_path(path: str, old: str, new: str) -> str:
    return new + path[len(old):] if path == old or path.startswith(old + ".") else path


def _swap_stack(nms: dict, old: str, new: str) -> dict:
    out = {}
    for key, (path, cls) in nms.items():
        moved = _swap_path(path, old, new)
        if moved != path:
            if not key.endswith(path):
                raise NotReplicable(f"an nn_module_stack key {key!r} does not end with its path")
            key = key[: len(key) - len(path)] + moved
        out[key] = (moved, cls)
    return out


def check_isomorphic(layers: _Layers, a: int, b: int) -> None:
    """Raise NotReplicable unless captured layers a < b compute the same thing in the same way."""
    A, B = layers.nodes[a], layers.nodes[b]
    pa, pb = f"{layers.stack}.{a}", f"{layers.stack}.{b}"
    if len(A) != len(B):
        raise NotReplicable(f"{pa} and {pb} have {len(A)} and {len(B)} ops")
    for x, y in zip(A, B):
        what = f"{pb} ({y.format_node()[:80]})"
        target_x = _swap_path(x.target, pa, pb) if x.op == "get_attr" else x.target
        if x.op != y.op or target_x != y.target:
            raise NotReplicable(f"{pa} and {pb} differ at {what}")
        _same_args((x.args, x.kwargs), (y.args, y.kwargs), layers, a, b, what)
        if _val_key(x.meta.get("val")) != _val_key(y.meta.get("val")):
            raise NotReplicable(f"{pa} and {pb} differ in shape at {what}")
        if x.meta.get("stack_trace") != y.meta.get("stack_trace") \
                or x.meta.get("train_dropout_p") != y.meta.get("train_dropout_p"):
            raise NotReplicable(f"{pa} and {pb} come from different source lines at {what}")
        if x.op != "get_attr" and _swap_stack(x.meta.get("nn_module_stack") or {}, pa, pb) != (y.meta.get("nn_module_stack") or {}):
            raise NotReplicable(f"{pa} and {pb} differ in module paths at {what}")


def _same_args(x, y, layers: _Layers, a: int, b: int, what: str) -> None:
    if isinstance(x, torch.fx.Node) or isinstance(y, torch.fx.Node):
        if not (isinstance(x, torch.fx.Node) and isinstance(y, torch.fx.Node)):
            raise NotReplicable(f"arguments differ at {what}")
        rx, ry = layers.ref(x, a), layers.ref(y, b)
        if rx == ry or (a == 0 and rx[0] == "outside" and ry[0] == "previous"):
            return  # the first layer reads the stack's input where the others read the layer before
        raise NotReplicable(f"{layers.stack}.{a} and {layers.stack}.{b} read different values at {what}")
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)) and type(x) is type(y) and len(x) == len(y):
        for u, v in zip(x, y):
            _same_args(u, v, layers, a, b, what)
        return
    if isinstance(x, dict) and isinstance(y, dict) and list(x) == list(y):
        for k in x:
            _same_args(x[k], y[k], layers, a, b, what)
        return
    if type(x) is not type(y) or (x != y and not (isinstance(x, float) and x != x and y != y)):
        raise NotReplicable(f"constant arguments differ at {what}")


def expand(gm: torch.fx.GraphModule, model: torch.nn.Module, stacks: list[Stack],
           progress: Progress | None = None) -> None:
    """Grow `gm` (the twin's capture) in place to `model`'s depth, bound to `model`'s tensors; its Python code is
    regenerated when first needed (graph/stale_code.py: ~0.8 s for 80 Llama layers, ~50 s for 5,000)."""
    graph = gm.graph
    for stack in stacks:
        if stack.length > stack.keep:
            _expand_stack(graph, stack, progress)
    _order_and_bind(gm, model)
    graph.lint()
    recompile_later(gm)


def _expand_stack(graph: torch.fx.Graph, stack: Stack, progress: Progress | None) -> None:
    layers = _Layers(graph.owning_module, stack.path, stack.keep)
    kinds = stack.kinds
    template: dict[int, int] = {}
    for j in range(stack.keep):
        template[kinds[j]] = j
    for kind, b in template.items():
        captured = [j for j in range(stack.keep) if kinds[j] == kind]
        if len(captured) >= 2:
            check_isomorphic(layers, captured[-2], b)
        elif kind in kinds[stack.keep:]:
            raise NotReplicable(f"only one layer of a kind of {stack.path} was captured")
    last = stack.keep - 1
    for n in layers.outputs[last]:
        if any(u not in layers.where and not _after(u, layers.nodes[last][-1]) for u in n.users):
            raise NotReplicable(f"a value outside {stack.path} reads its last captured layer before it ends")
    for j in range(last):  # only the last layer's outputs may leave the stack
        for n in layers.outputs[j]:
            if any(u not in layers.where for u in n.users):
                raise NotReplicable(f"{stack.path}.{j}'s values are read outside the stack")
    outside_after = _downstream(graph, layers)
    for j, nodes in enumerate(layers.nodes):
        for n in nodes:
            if any(a in outside_after for a in n.all_input_nodes):
                raise NotReplicable(f"{stack.path}.{j} reads a value computed outside the stack after its layers began")

    readers = {u for n in layers.outputs[last] for u in n.users if u not in layers.where}  # the final norm …
    anchor = layers.nodes[last][-1].next
    prev_out, prev_kind = list(layers.outputs[last]), kinds[last]
    templates = {b: _Template(layers, b) for b in set(template.values())}
    tick = time.monotonic()
    with graph.inserting_before(anchor):
        for i in range(stack.keep, stack.length):
            b = template[kinds[i]]
            if len(layers.outputs[b - 1]) != len(prev_out) or (len(prev_out) > 1 and kinds[b - 1] != prev_kind):
                raise NotReplicable(f"{stack.path}.{i} reads a layer of another kind than its template does")
            prev_out = templates[b].copy(graph, i, prev_out)
            prev_kind = kinds[i]
            if progress is not None and time.monotonic() - tick > 0.5:
                tick = time.monotonic()
                progress(f"replicating {stack.path}: layer {i + 1} of {stack.length}")
    for k, old in enumerate(layers.outputs[last]):
        old.replace_all_uses_with(prev_out[k], delete_user_cb=readers.__contains__)


def _after(node: torch.fx.Node, mark: torch.fx.Node) -> bool:
    """True when `node` comes after `mark` in graph order (or is it)."""
    n = mark
    while n.op != "root":
        if n is node:
            return True
        n = n.next
    return False


def _downstream(graph: torch.fx.Graph, layers: _Layers) -> set[torch.fx.Node]:
    """Values outside the stack that depend on its layers."""
    tainted: set[torch.fx.Node] = set()
    out = set()
    for node in graph.nodes:
        if node in layers.where or any(a in tainted for a in node.all_input_nodes):
            tainted.add(node)
            if node not in layers.where:
                out.add(node)
    return out


class _Template:
    """What copying captured layer b needs, worked out once for all its copies: each node's op, target, fx name,
    how its arguments read (layers.ref), its meta without derived caches, and its nn_module_stack split around
    the layer's path (so a copy's stack is a string join, not a search)."""

    def __init__(self, layers: _Layers, b: int) -> None:
        self.layers, self.b, self.old = layers, b, f"{layers.stack}.{b}"
        self.refs = {a: layers.ref(a, b) for x in layers.nodes[b] for a in x.all_input_nodes}
        self.nodes = []
        split: dict[tuple, list] = {}  # equal stacks (the ops of one module) share one split, so copies share a dict
        for x in layers.nodes[b]:
            meta = {k: v for k, v in x.meta.items() if k not in _MEMO_KEYS and k != "nn_module_stack"}
            stack = x.meta.get("nn_module_stack")
            if stack is not None:
                key = tuple((k, v[0], str(v[1])) for k, v in stack.items())
                if key not in split:
                    split[key] = self._split(stack)
                stack = split[key]
            self.nodes.append((x, re.sub(r"_\d+$", "", x.name), meta, stack))
        self.outputs = [layers.where[n][1] for n in layers.outputs[b]]

    def _split(self, nms: dict) -> list[tuple]:
        """nn_module_stack entries as (key head, path tail, class, moved): a copy's key is head + new + tail."""
        old, parts = self.old, []
        for key, (path, cls) in nms.items():
            if path == old or path.startswith(old + "."):
                if not key.endswith(path):
                    raise NotReplicable(f"an nn_module_stack key {key!r} does not end with its path")
                parts.append((key[: len(key) - len(path)], path[len(old):], cls, True))
            else:
                parts.append((key, path, cls, False))
        return parts

    def copy(self, graph: torch.fx.Graph, i: int, prev_out: list[torch.fx.Node]) -> list[torch.fx.Node]:
        """Layer i as a copy of captured layer b, reading `prev_out` where b reads the layer before; its outputs."""
        new = f"{self.layers.stack}.{i}"
        made: list[torch.fx.Node] = []
        refs = self.refs
        stacks: dict[int, dict] = {}

        def arg(a: torch.fx.Node) -> torch.fx.Node:
            kind, what = refs[a]
            if kind == "own":
                return made[what]
            if kind == "previous":
                return prev_out[what]
            return a  # a value from outside the stack, or of a captured layer the template reads by index

        for x, name, meta, stack in self.nodes:
            if x.op == "get_attr":
                target = _swap_path(x.target, self.old, new)
                node = graph.create_node("get_attr", target, name=graph._target_to_str(target))  # as Graph.get_attr
            else:
                # arguments set after creation: create_node would walk them through pytree (a check for raw SymInts
                # the captured template already passed), the largest cost of a 5,000-layer copy
                node = graph.create_node(x.op, x.target, name=name, type_expr=x.type)
                if x.args or x.kwargs:
                    _set_args(node, torch.fx.map_arg(x.args, arg), torch.fx.map_arg(x.kwargs, arg))
            node.meta.update(meta)  # not `node.meta = …`: Node.__setattr__ re-files the node in a lookup table
            if stack is not None:
                key = id(stack)
                if key not in stacks:  # one dict per module path of this copy, shared by its ops
                    stacks[key] = {(head + new + tail if moved else head): ((new + tail) if moved else tail, cls)
                                   for head, tail, cls, moved in stack}
                node.meta["nn_module_stack"] = stacks[key]
            made.append(node)
        return [made[k] for k in self.outputs]


def _set_args(node: torch.fx.Node, args: tuple, kwargs: dict) -> None:
    """node.args and node.kwargs at once, without Node.__setattr__ re-filing the node in the graph's (op, target)
    lookup table twice; the same accounting of users as the property setters."""
    update = getattr(node, "_update_args_kwargs", None)
    if update is None:  # another torch: the public setters
        node.args, node.kwargs = args, kwargs
    else:
        update(args, kwargs)


def _order_and_bind(gm: torch.fx.GraphModule, model: torch.nn.Module) -> None:
    """get_attr nodes in the full model's order (parameters, then buffers, as torch.export lists them), each bound
    to the full model's tensor."""
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    n_params = len(names)
    names += [n for n, _ in model.named_buffers(remove_duplicate=False)]
    rank = {n: r for r, n in enumerate(names)}
    graph = gm.graph
    attrs = [n for n in graph.nodes if n.op == "get_attr"]
    unknown = [n.target for n in attrs if n.target not in rank]
    if unknown:
        raise NotReplicable(f"the graph reads {unknown[0]}, which is not a parameter or buffer of the model")
    tensors = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    modules = dict(model.named_modules())
    first = next(n for n in graph.nodes if n.op != "get_attr")
    for node in sorted(attrs, key=lambda n: rank[n.target]):
        first.prepend(node)
        owner_path, _, leaf = node.target.rpartition(".")
        owner = _submodule(gm, owner_path)
        if rank[node.target] < n_params:
            owner.register_parameter(leaf, tensors[node.target])
        else:
            owner.register_buffer(leaf, tensors[node.target],
                                  persistent=leaf not in modules[owner_path]._non_persistent_buffers_set)


def _submodule(root: torch.nn.Module, path: str) -> torch.nn.Module:
    """The module at `path` under root, plain Modules created where missing (as ep.module() lays out its state)."""
    m = root
    for part in path.split(".") if path else ():
        nxt = m._modules.get(part)
        if nxt is None:
            nxt = torch.nn.Module()
            m.add_module(part, nxt)
        m = nxt
    return m


def attr_order_holds(gm: torch.fx.GraphModule, model: torch.nn.Module) -> bool:
    """True when the graph's get_attr nodes are in `model`'s parameter-then-buffer order (what _order_and_bind
    reproduces for the full model), checked on the twin."""
    names = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    names += [n for n, _ in model.named_buffers(remove_duplicate=False)]
    rank = {n: r for r, n in enumerate(names)}
    targets = [n.target for n in gm.graph.nodes if n.op == "get_attr"]
    ranks = [rank.get(t, -1) for t in targets]
    return -1 not in ranks and ranks == sorted(ranks)
