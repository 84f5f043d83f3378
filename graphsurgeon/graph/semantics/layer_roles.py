"""Roles of the parts of a layer around attention: MLP up / gate / down and activations, norms, embeddings, the
LM head / classifier / pooler, residual adds — found from the graph's structure (see roles.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.fx

from graphsurgeon.graph.semantics.dataflow import (SHAPE_ONLY, is_float, is_tensor, module_of, op_of, projection,
                                                   tensor_args)

if TYPE_CHECKING:
    from graphsurgeon.graph.semantics.roles import Roles

ACTIVATIONS = {"gelu", "silu", "relu", "tanh", "sigmoid", "erf", "mish", "elu", "leaky_relu", "hardswish",
               "hardtanh", "softplus", "relu6", "gelu_"}
NORMS = {"layer_norm", "native_layer_norm", "rms_norm", "group_norm", "_fused_rms_norm"}


# ---- MLP, norms, activations --------------------------------------------------------------------
def _is_activation(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and op_of(node).rstrip("_") in ACTIVATIONS


def _activation_after(node: torch.fx.Node, hops: int = 3) -> torch.fx.Node | None:
    """The activation `node` feeds (through shape-only ops), e.g. a projection output into GELU."""
    frontier = [node]
    for _ in range(hops):
        nxt = []
        for n in frontier:
            for u in n.users:
                if _is_activation(u) or _activation_module(u):
                    return u
                if u.op == "call_function" and op_of(u) in SHAPE_ONLY:
                    nxt.append(u)
        frontier = nxt
    return None


_ACTIVATION_MODULES: dict[int, set[str]] = {}  # id(graph) -> module paths found to be activations


def _activation_module(node: torch.fx.Node) -> bool:
    """An op of an activation module such as GPT-2's NewGELUActivation (set by `_mark_norms_and_activations`)."""
    return node.op == "call_function" and module_of(node)[0] in _ACTIVATION_MODULES.get(id(node.graph), ())


def mark_mlps(roles: Roles, gm: torch.fx.GraphModule) -> None:
    """Projections outside attention: up (into an activation), gate (activation × up), down (out of it)."""
    claimed = set(roles.modules)
    for node in gm.graph.nodes:
        hit = projection(node)
        if hit is None or hit["module"] in claimed:
            continue
        act = _activation_after(node)
        if act is not None:
            gated = [u for u in _users_through_shape(act) if op_of(u) == "mul" and u.op == "call_function"]
            roles.modules[hit["module"]] = "mlp_gate" if gated and _other_projection(gated[0], act) else "mlp_up"
            continue
        source = _source_through_shape(hit["x"])
        if source is not None and (_is_activation(source) or _activation_module(source)
                                   or (op_of(source) == "mul" and any(_is_activation(a) or _activation_module(a)
                                                                      for a in tensor_args(source)))):
            roles.modules[hit["module"]] = "mlp_down"
    for node in gm.graph.nodes:
        hit = projection(node)
        if hit is not None and hit["module"] not in roles.modules:
            for u in _users_through_shape(node):
                if op_of(u) == "mul" and any(_is_activation(a) or _activation_module(a) for a in tensor_args(u)):
                    roles.modules[hit["module"]] = "mlp_up"
    ups = [p for p, r in roles.modules.items() if r in ("mlp_up", "mlp_gate")]
    downs = [p for p, r in roles.modules.items() if r == "mlp_down"]
    down_parents = {d.rpartition(".")[0] for d in downs}  # an MLP is the module holding both, right above them
    for up in ups:
        parent = up.rpartition(".")[0]
        if parent and parent in down_parents and parent not in roles.modules:
            roles.modules[parent] = "mlp"


def _users_through_shape(node: torch.fx.Node, hops: int = 3) -> list[torch.fx.Node]:
    out, frontier = [], [node]
    for _ in range(hops):
        nxt = []
        for n in frontier:
            for u in n.users:
                (nxt if u.op == "call_function" and op_of(u) in SHAPE_ONLY else out).append(u)
        frontier = nxt
    return out


def _source_through_shape(node, hops: int = 4):
    while isinstance(node, torch.fx.Node) and hops > 0 and node.op == "call_function" and op_of(node) in SHAPE_ONLY:
        node = node.args[0]
        hops -= 1
    return node if isinstance(node, torch.fx.Node) else None


def _other_projection(mul: torch.fx.Node, act: torch.fx.Node) -> bool:
    return any(projection(_source_through_shape(a) or a) is not None for a in tensor_args(mul) if a is not act)


_ELEMENTWISE = {"mul", "add", "sub", "div", "pow", "neg", "exp", "log", "sqrt", "rsqrt", "reciprocal", "clamp",
                "where", "to", "_to_copy", "minimum", "maximum", "abs", "sign", "erf", "tanh", "sigmoid"}


def _activation_modules(gm: torch.fx.GraphModule) -> set[str]:
    """Modules made of elementwise ops only, one of them a non-linearity, with no weights: activations."""
    ops: dict[str, set[str]] = {}
    weighted: set[str] = set()
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        path = module_of(node)[0]
        if not path:
            continue
        ops.setdefault(path, set()).add(op_of(node).rstrip("_"))
        if any(a.op == "get_attr" for a in node.all_input_nodes):
            weighted.add(path)
    return {p for p, o in ops.items() if p not in weighted and o & (ACTIVATIONS | {"erf"})
            and o <= _ELEMENTWISE | ACTIVATIONS | {"_assert_tensor_metadata"}}


def mark_norms_and_activations(roles: Roles, gm: torch.fx.GraphModule) -> None:
    _ACTIVATION_MODULES[id(gm.graph)] = _activation_modules(gm)
    rsqrt_modules: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        name = op_of(node)
        path, cls = module_of(node)
        if name in NORMS:
            roles.values.setdefault(node, "norm")
            if path:
                roles.modules.setdefault(path, "norm")
        elif name == "rsqrt" and path:
            rsqrt_modules[path] = rsqrt_modules.get(path, 0) + 1
        elif _is_activation(node) or _activation_module(node):
            roles.values.setdefault(node, "activation")
            if path and _activation_module(node):
                roles.modules.setdefault(path, "activation")
    for path in rsqrt_modules:
        roles.modules.setdefault(path, "norm")


# ---- embeddings and heads ----------------------------------------------------------------------
def _size(config: dict, *keys: str) -> int | None:
    for k in keys:
        v = config.get(k)
        if isinstance(v, int):
            return v
    return None


def mark_embeddings(roles: Roles, gm: torch.fx.GraphModule, config: dict) -> None:
    vocab = _size(config, "vocab_size")
    positions = _size(config, "max_position_embeddings", "n_positions", "n_ctx")
    types = _size(config, "type_vocab_size")
    lookups: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op != "call_function" or op_of(node) != "embedding" or not isinstance(node.args[0], torch.fx.Node):
            continue
        rows = node.args[0].meta["val"].shape[0] if is_tensor(node.args[0]) else None
        from_input = _reads_placeholder(node.args[1])
        if from_input == "input_ids" or (rows == vocab and from_input is None and not _reads_arange(node.args[1])):
            kind = "token_embedding"
        elif from_input == "token_type_ids" or (types is not None and rows == types):
            kind = "token_type_embedding"
        elif from_input == "position_ids" or _reads_arange(node.args[1]) or (positions and rows in (positions, positions + 2)):
            kind = "position_embedding"
        else:
            kind = "embedding"
        roles.values.setdefault(node, kind)
        path = module_of(node)[0]
        if path:
            roles.modules.setdefault(path, kind)
            parent = path.rpartition(".")[0]
            lookups[parent] = lookups.get(parent, 0) + 1
    for parent, count in lookups.items():  # a module that only combines lookups (BertEmbeddings)
        if count >= 2 and parent and not any(a.path.startswith(parent + ".") or a.path == parent for a in roles.attentions):
            roles.modules.setdefault(parent, "embeddings")


def _reads_placeholder(node, hops: int = 6) -> str | None:
    """The graph input whose data `node` carries (through view/reshape/expand/to …), if any."""
    while isinstance(node, torch.fx.Node) and hops > 0:
        if node.op == "placeholder":
            return node.name
        if node.op != "call_function" or op_of(node) not in SHAPE_ONLY | {"slice", "select", "expand"} \
                or not node.args or not isinstance(node.args[0], torch.fx.Node):
            return None
        node = node.args[0]
        hops -= 1
    return None


def _reads_arange(node, limit: int = 12) -> bool:
    todo, seen = [node], 0
    while todo and seen < limit:
        n = todo.pop()
        seen += 1
        if not isinstance(n, torch.fx.Node) or n.op != "call_function":
            continue
        if op_of(n) in ("arange", "cumsum"):
            return True
        todo.extend(n.all_input_nodes)
    return False


def mark_heads(roles: Roles, gm: torch.fx.GraphModule, config: dict) -> None:
    out = next((n for n in gm.graph.nodes if n.op == "output"), None)
    if out is None:
        return
    vocab = _size(config, "vocab_size")
    flat = out.args[0] if isinstance(out.args[0], (list, tuple)) else [out.args[0]]
    for value in flat:
        node = value
        for _ in range(4):
            if not isinstance(node, torch.fx.Node):
                break
            hit = projection(node)
            if hit is not None:
                kind = "lm_head" if vocab and hit["out_features"] == vocab else "classifier"
                roles.modules.setdefault(hit["module"], kind)
                roles.values.setdefault(value, "logits")
                break
            if node.op != "call_function" or op_of(node) not in SHAPE_ONLY | {"slice", "select"}:
                break
            node = node.args[0]
    for node in gm.graph.nodes:
        if node.op == "call_function" and op_of(node) == "tanh":
            src = node.args[0]
            hit = projection(src) if isinstance(src, torch.fx.Node) else None
            first = _source_through_shape(hit["x"]) if hit is not None else None
            if hit is not None and hit["module"] not in roles.modules and first is not None \
                    and op_of(first) in ("select", "slice", "getitem"):
                parent = hit["module"].rpartition(".")[0]
                roles.modules[hit["module"]] = "pooler_dense"
                if parent:
                    roles.modules.setdefault(parent, "pooler")


# ---- residual connections ----------------------------------------------------------------------
def mark_residuals(roles: Roles, gm: torch.fx.GraphModule, order: dict) -> None:
    """x + f(x) where f holds a projection: the skip operand is the residual."""
    for node in gm.graph.nodes:
        if node.op != "call_function" or op_of(node) != "add" or len(node.args) < 2:
            continue
        a, b = node.args[0], node.args[1]
        if not (is_float(a) and is_float(b)) or not _same_shape(a.meta["val"].shape, b.meta["val"].shape):
            continue
        for skip, other in ((a, b), (b, a)):
            if _depends_through_projection(other, skip, order):
                roles.residuals[node] = skip
                roles.values.setdefault(node, "residual")
                break


def _same_shape(x: torch.Size, y: torch.Size) -> bool:
    """x == y; sizes that are the same expression are equal without asking the shape environment (a symbolic
    comparison costs ~0.1 ms, and a residual add's operands share their sizes' expressions)."""
    if len(x) == len(y) and all(a is b or (a == b if type(a) is int and type(b) is int else
                                           type(a) is type(b) is torch.SymInt and a.node.expr == b.node.expr)
                                for a, b in zip(x, y)):
        return True
    return x == y


def _depends_through_projection(node: torch.fx.Node, source: torch.fx.Node, order: dict, limit: int = 600) -> bool:
    """True when `node` is computed from `source` along a path that passes a projection."""
    floor = order[source]
    todo: list[tuple[torch.fx.Node, bool]] = [(node, False)]
    seen: set[tuple[torch.fx.Node, bool]] = set()
    while todo and len(seen) < limit:
        n, through = todo.pop()
        if (n, through) in seen:
            continue
        seen.add((n, through))
        through = through or projection(n) is not None or n.op == "call_module"
        for a in n.all_input_nodes:
            if a is source:
                if through:
                    return True
            elif order.get(a, -1) > floor:
                todo.append((a, through))
    return False
