"""Roles by dataflow: what each value and module is for (query, attention core, MLP up/down, norm, mask …).

Everything is found from the graph's structure — attention cores and projections (dataflow.py), op kinds,
which value depends on which — never from module or parameter names. A few config sizes (vocab size,
max positions, type vocab size) tell embedding tables apart where the structure alone cannot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx

from graphsurgeon.graph.semantics.dataflow import (SHAPE_ONLY, attention_operands, module_of, op_of, projection,
                                                   trace_back)

ACTIVATIONS = {"gelu", "silu", "relu", "tanh", "sigmoid", "erf", "mish", "elu", "leaky_relu", "hardswish",
               "hardtanh", "softplus", "relu6", "gelu_"}
NORMS = {"layer_norm", "native_layer_norm", "rms_norm", "group_norm", "_fused_rms_norm"}
COMPARISONS = {"le", "lt", "ge", "gt", "tril", "triu"}
SDPA = {"scaled_dot_product_attention", "_scaled_dot_product_flash_attention",
        "_scaled_dot_product_efficient_attention", "_scaled_dot_product_flash_attention_for_cpu"}
_ROLE_OF = {"q": "query", "k": "key", "v": "value"}


@dataclass
class Operand:
    """One input of an attention core, traced back to the projection that makes it."""

    role: str  # "query", "key" or "value"
    node: torch.fx.Node  # the value the core reads (after view/transpose/rotary)
    target: torch.fx.Node | None  # the projection output, or the part of a fused one, it comes from
    projection: str | None  # module path of that projection
    columns: object = None  # which output columns of a fused projection, in order (None: all of them)
    output: torch.fx.Node | None = None  # the projection's whole output (the fused qkv for a part)


@dataclass
class Attention:
    """One attention: its core ops, operands, mask and output projection."""

    path: str  # module path the core runs in
    core: torch.fx.Node  # the SDPA op, or the softmax of an eager chain
    kind: str  # "sdpa" or "eager"
    nodes: list[torch.fx.Node]  # the core's ops (SDPA: one; eager: scores … output)
    output: torch.fx.Node  # the attention output (before heads are merged)
    weights: torch.fx.Node | None  # the attention probabilities (eager only)
    operands: dict[str, Operand] = field(default_factory=dict)
    mask: torch.fx.Node | None = None  # the mask value the core reads
    fused: torch.fx.Node | None = None  # output of a fused q/k/v projection, if any
    out_projection: str | None = None  # module path of the output projection


@dataclass
class Roles:
    """The result: roles of values (fx nodes) and of module paths, and the attentions."""

    values: dict[torch.fx.Node, str] = field(default_factory=dict)
    modules: dict[str, str] = field(default_factory=dict)
    attentions: list[Attention] = field(default_factory=list)
    mask_builder: set[torch.fx.Node] = field(default_factory=set)
    rotary: set[torch.fx.Node] = field(default_factory=set)
    residuals: dict[torch.fx.Node, torch.fx.Node] = field(default_factory=dict)  # add -> its skip operand


def is_tensor(node) -> bool:
    return isinstance(node, torch.fx.Node) and isinstance(node.meta.get("val"), torch.Tensor)


def is_float(node) -> bool:
    return is_tensor(node) and node.meta["val"].is_floating_point()


def tensor_args(node: torch.fx.Node) -> list[torch.fx.Node]:
    flat = []
    for a in list(node.args) + list(node.kwargs.values()):
        for x in (a if isinstance(a, (list, tuple)) else [a]):
            if is_tensor(x):
                flat.append(x)
    return flat


def find_roles(gm: torch.fx.GraphModule, config: dict | None, lora_adds: set[str] = frozenset()) -> Roles:
    """Every role the graph's structure shows."""
    roles = Roles()
    order = {n: i for i, n in enumerate(gm.graph.nodes)}
    for core, operands in attention_operands(gm):
        roles.attentions.append(_attention(core, operands, lora_adds))
    for att in roles.attentions:
        _mark_attention(roles, att, order)
    _mark_norms_and_activations(roles, gm)
    _mark_heads(roles, gm, config or {})
    _mark_mlps(roles, gm)
    _mark_embeddings(roles, gm, config or {})
    _mark_residuals(roles, gm, order)
    return roles


# ---- attention ---------------------------------------------------------------------------------
def _attention(core: torch.fx.Node, operands: dict, lora_adds) -> Attention:
    kind = "sdpa" if op_of(core) in SDPA else "eager"
    nodes, output, weights, mask = [core], core, None, None
    if kind == "sdpa":
        mask = core.args[3] if len(core.args) > 3 else core.kwargs.get("attn_mask")
    else:
        weights = core
        scores = _chain_back(core, ("matmul", "bmm", "baddbmm"))
        output = _forward_to(core, ("matmul", "bmm")) or core
        nodes = _between(scores, output) if scores is not None else [core]
        mask = _mask_operand(nodes)
    att = Attention(module_of(core)[0], core, kind, nodes, output, weights,
                    mask=mask if isinstance(mask, torch.fx.Node) else None)
    for short, node in operands.items():
        hit = trace_back(node, lora_adds)
        att.operands[_ROLE_OF[short]] = Operand(
            _ROLE_OF[short], node, hit["target"] if hit else None, hit["module"] if hit else None,
            hit.get("columns") if hit else None, hit.get("projection") if hit else None)
    fused = {o.output for o in att.operands.values() if o.output is not None and o.columns is not None}
    if len(fused) == 1:
        att.fused = fused.pop()
    att.out_projection = _out_projection(output)
    return att


def _chain_back(node: torch.fx.Node, ops, hops: int = 8):
    while isinstance(node, torch.fx.Node) and hops > 0:
        if node.op == "call_function" and op_of(node) in ops:
            return node
        floats = [a for a in tensor_args(node) if a.meta["val"].dim() >= 3 and a.meta["val"].is_floating_point()]
        node = floats[0] if floats else None
        hops -= 1
    return None


def _forward_to(node: torch.fx.Node, ops, hops: int = 4):
    frontier = [node]
    for _ in range(hops):
        frontier = [u for n in frontier for u in n.users if u.op == "call_function"]
        for u in frontier:
            if op_of(u) in ops:
                return u
    return None


def _between(first: torch.fx.Node, last: torch.fx.Node) -> list[torch.fx.Node]:
    """Nodes on a path from `first` to `last` (both included), in graph order."""
    down, todo = {first}, [first]
    while todo:
        n = todo.pop()
        for u in n.users:
            if u not in down and u is not last:
                down.add(u)
                todo.append(u)
    up, todo = {last}, [last]
    while todo:
        n = todo.pop()
        for a in n.all_input_nodes:
            if a not in up and a in down:
                up.add(a)
                todo.append(a)
    up.add(first)
    order = {n: i for i, n in enumerate(first.graph.nodes)}
    return sorted(up, key=order.__getitem__)


def _mask_operand(nodes: list[torch.fx.Node]):
    """The mask an eager chain adds to its scores: the add operand that is not on the chain."""
    inside = set(nodes)
    for n in nodes:
        if op_of(n) in ("add", "masked_fill", "where") and n.op == "call_function":
            for a in tensor_args(n):
                if a not in inside and a.meta["val"].dim() >= 2:
                    return a
    return None


def _out_projection(output: torch.fx.Node, hops: int = 6) -> str | None:
    frontier = [output]
    for _ in range(hops):
        nxt = []
        for n in frontier:
            for u in n.users:
                hit = projection(u)
                if hit is not None:
                    return hit["module"]
                if u.op == "call_function" and (op_of(u) in SHAPE_ONLY or op_of(u) in ("addmm", "mm")):
                    nxt.append(u)
        frontier = nxt
    return None


def _mark_attention(roles: Roles, att: Attention, order: dict) -> None:
    roles.modules.setdefault(att.path, "attention")
    for n in att.nodes:
        roles.values.setdefault(n, "attention")
    roles.values[att.output] = "attn_output"
    if att.weights is not None:
        roles.values[att.weights] = "attn_weights"
    for op in att.operands.values():
        if op.target is not None:
            roles.values.setdefault(op.target, op.role)
            roles.modules.setdefault(op.projection, f"{op.role}_proj" if op.columns is None else "qkv_proj")
        if op.role in ("query", "key"):
            _mark_rotary(roles, op)
    if att.fused is not None:
        roles.values.setdefault(att.fused, "qkv")
    if att.out_projection:
        roles.modules.setdefault(att.out_projection, "out_proj")
    if att.mask is not None:
        _mark_mask(roles, att.mask, order)


def _mark_rotary(roles: Roles, op: Operand) -> None:
    """Arithmetic between a projection and the core that mixes in other tensors (cos, sin) is rotary."""
    node, seen = op.node, 0
    while isinstance(node, torch.fx.Node) and node is not op.target and seen < 60:
        seen += 1
        name = op_of(node)
        if node.op != "call_function":
            return
        if name in SHAPE_ONLY or name in ("slice", "select", "getitem", "expand", "repeat_interleave"):
            node = node.args[0] if isinstance(node.args[0], torch.fx.Node) else None
            continue
        if name in ("add", "sub", "mul", "cat"):
            _rotary_region(roles, node, op.target)
            return
        return


def _rotary_region(roles: Roles, top: torch.fx.Node, stop: torch.fx.Node | None) -> None:
    """Mark the rotary arithmetic under `top` and the cos/sin values it reads."""
    todo, seen = [top], set()
    while todo:
        n = todo.pop()
        if n in seen or n is stop or n.op != "call_function":
            continue
        seen.add(n)
        roles.rotary.add(n)
        roles.values.setdefault(n, "rotary")
        for a in tensor_args(n):
            if op_of(a) in ("cos", "sin") or _trig_source(a):
                _mark_trig(roles, a)
            elif a.op == "call_function" and op_of(a) in ("mul", "add", "sub", "cat", "neg", "slice", "unsqueeze"):
                todo.append(a)


def _trig_source(node: torch.fx.Node, hops: int = 4) -> str | None:
    while node is not None and hops > 0 and node.op == "call_function":
        name = op_of(node)
        if name in ("cos", "sin"):
            return name
        if name not in SHAPE_ONLY and name not in ("mul", "unsqueeze", "slice", "index", "getitem"):
            return None
        node = node.args[0] if isinstance(node.args[0], torch.fx.Node) else None
        hops -= 1
    return None


def _mark_trig(roles: Roles, node: torch.fx.Node) -> None:
    """Name every step from aten.cos/sin to the rotary arithmetic 'cos'/'sin' (they carry that value)."""
    which = _trig_source(node)
    while which and isinstance(node, torch.fx.Node) and node.op == "call_function":
        roles.values.setdefault(node, which)
        if op_of(node) == which:
            path = module_of(node)[0]
            if path:
                roles.modules.setdefault(path, "rotary")
            return
        node = node.args[0]


def _same_size(a, b) -> bool:
    """True when two sizes are equal for every input (no guard: DeBERTa's sizes read from data have no value)."""
    from torch.fx.experimental.symbolic_shapes import statically_known_true

    return bool(statically_known_true(a == b))


def _mark_mask(roles: Roles, mask: torch.fx.Node, order: dict) -> None:
    """The mask builder: everything the mask is computed from that carries no hidden state."""
    builder, todo = set(), [mask]
    while todo:
        n = todo.pop()
        if n in builder or n.op != "call_function":
            continue
        if is_float(n) and n.meta["val"].dim() >= 3 and not _same_size(*n.meta["val"].shape[-2:]) \
                and op_of(n) not in ("expand", "unsqueeze", "view", "reshape"):
            continue  # a hidden state: not part of the mask
        builder.add(n)
        todo.extend(n.all_input_nodes)
    changed = True
    while changed:  # values also used outside the mask (position ids) are inputs of the builder, not part of it
        changed = False
        for n in list(builder):
            if n is not mask and any(u not in builder and u.op != "output" and not _is_assert(u) for u in n.users):
                builder.discard(n)
                changed = True
    roles.mask_builder |= builder
    causal = any(_compares_positions(n) for n in builder)
    roles.values[mask] = "causal_mask" if causal else "attention_mask"
    for n in builder:
        roles.values.setdefault(n, "mask")


def _compares_positions(node: torch.fx.Node) -> bool:
    """A causal mask compares two position tensors (kv_idx <= q_idx) or takes a triangle; padding masks do not."""
    name = op_of(node)
    if name in ("tril", "triu"):
        return True
    return name in COMPARISONS and len(tensor_args(node)) == 2


def _is_assert(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and "assert" in op_of(node)


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


def _mark_mlps(roles: Roles, gm: torch.fx.GraphModule) -> None:
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
    for up in ups:
        for down in downs:
            parent = _common_parent(up, down)
            if parent and parent not in roles.modules and parent.count(".") >= max(up.count("."), down.count(".")) - 1:
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


def _common_parent(a: str, b: str) -> str:
    pa, pb = a.split("."), b.split(".")
    common = []
    for x, y in zip(pa, pb):
        if x != y:
            break
        common.append(x)
    return ".".join(common)


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


def _mark_norms_and_activations(roles: Roles, gm: torch.fx.GraphModule) -> None:
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


def _mark_embeddings(roles: Roles, gm: torch.fx.GraphModule, config: dict) -> None:
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


def _mark_heads(roles: Roles, gm: torch.fx.GraphModule, config: dict) -> None:
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
def _mark_residuals(roles: Roles, gm: torch.fx.GraphModule, order: dict) -> None:
    """x + f(x) where f holds a projection: the skip operand is the residual."""
    for node in gm.graph.nodes:
        if node.op != "call_function" or op_of(node) != "add" or len(node.args) < 2:
            continue
        a, b = node.args[0], node.args[1]
        if not (is_float(a) and is_float(b)) or a.meta["val"].shape != b.meta["val"].shape:
            continue
        for skip, other in ((a, b), (b, a)):
            if _depends_through_projection(other, skip, order):
                roles.residuals[node] = skip
                roles.values.setdefault(node, "residual")
                break


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
