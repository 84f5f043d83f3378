"""Insert and remove an "Add LoRA Layer" block as plain fx nodes in `cm.gm`.

The block at path P (``<attention path>.lora_<role>``, e.g. ``transformer.h.0.attn.lora_q``) is::

    x ─ reshape [N, in] ─ dropout(p) ─ P.lora.lora_A (in→r) ─ P.lora.lora_B (r→out) ─ mul(scaling)
      ─ reshape [target shape] ─┐
    target ─────────────────────┴─ add ─▶ the target's former users

The add carries ``nn_module_stack`` … + (P, "AddLoRALayer"); the branch … + (P.lora, "LoRALayer"),
so the block view shows an "Add LoRA Layer" composite that unboxes into the add and a "LoRA Layer".
Whatever lies between the projection and the target, the branch equals ΔW = B·A·scaling added to the
projection's weight on the target's output columns: x is the projection's own input. When the target
holds an interleaved column set in another layout (GPT-NeoX's heads before seq), the final reshape is
``reshape [target dims, tokens first] ─ permute`` — a fixed permutation, so still exact.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from itertools import pairwise

import torch
import torch.fx

from graphsurgeon.graph.stale_code import recompile_later
from graphsurgeon.graph.lora_sites import other_calls
from graphsurgeon.surgery.spec import LoRABlock, LoRAConfig, Target
from graphsurgeon.validate.diagnostics import Diagnostic, ValidationError
from graphsurgeon.validate.local import check_insertion

aten = torch.ops.aten
_SUFFIXED = re.compile(r"^(.*?)_(\d+)$")  # an fx node name with the suffix fx adds to a name already used


_BATCHED: set[int] = set()  # id(gm) of graphs inside `batched`: code marked stale once at the end


@contextmanager
def batched(cm):
    """Several inserts/removes as one edit: the module's code is marked stale once, at the end."""
    key = id(cm.gm)
    if key in _BATCHED:
        yield
        return
    _BATCHED.add(key)
    try:
        yield
    finally:
        _BATCHED.discard(key)
        recompile_later(cm.gm)


def _recompile(gm: torch.fx.GraphModule) -> None:
    """After an edit of the graph: its Python code is regenerated when next needed (graph/stale_code.py)."""
    if id(gm) not in _BATCHED:
        recompile_later(gm)


def block_path(target: Target) -> str:
    """Composite path of the block: beside the projection's consumer, named by role."""
    parent = target.attention or target.module.rpartition(".")[0]
    return f"{parent}.lora_{target.role}" if parent else f"lora_{target.role}"


def init_weights(a: torch.nn.Linear, b: torch.nn.Linear, config: LoRAConfig) -> None:
    """PEFT's initialisation: A kaiming-uniform(a=√5) (or normal std 1/r), B zeros."""
    with torch.no_grad():
        if config.init == "gaussian":
            torch.nn.init.normal_(a.weight, std=1.0 / config.r)
        else:
            torch.nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
        torch.nn.init.zeros_(b.weight)


def _stack(node: torch.fx.Node) -> dict:
    return dict(node.meta.get("nn_module_stack") or {})


def insert_lora(cm, target: Target, config: LoRAConfig,
                weights: tuple[torch.Tensor, torch.Tensor] | None = None, check: bool = True,
                bare: bool = False) -> LoRABlock:
    """Insert an Add LoRA Layer on `target` and at every other call of its module; refused (nothing changed) with
    a ValidationError on a bad edit, or when one of the calls cannot take it (never a LoRA on some calls only).

    A LoRA belongs to its module: a module that runs N > 1 times per forward (PegasusX's q on the tokens and on
    the global states, a shared layer) gets one LoRA module, one pair of weights, applied at every call, as PEFT's
    adapter and the merged weights apply it (`lora_calls` counts them). bare=True inserts the "LoRA Layer" alone at
    this call: the same branch reading the projection's input, its output left unconnected until `connect_lora`
    adds it onto a value the user picks.
    """
    from graphsurgeon.surgery.targets import TargetError, calls_of

    try:
        calls = [target] if bare else calls_of(cm, target)
    except TargetError as err:
        raise ValidationError([Diagnostic(target.target_node, str(err))]) from None
    if check:
        problems = _call_problems(cm, calls, target, config)
        if problems:
            raise ValidationError(problems)
    with batched(cm):  # in graph order: the first call makes the LoRA module, the others read it
        block = _insert_at(cm, calls[0], config, weights, bare)
        for call in calls[1:]:  # the module's other calls read the same LoRA module
            block = _insert_at(cm, call, config, None, bare, shared=True)
    return block


def _call_problems(cm, calls: list[Target], given: Target, config: LoRAConfig) -> list[Diagnostic]:
    """check_insertion at each call; a refused other call than `given` is named (module, call number, node)."""
    held = cm.loras.get(block_path(given))
    if len(calls) > 1 and held is not None and held.kind == "add":
        return [Diagnostic(given.target_node, f"{held.path} already adapts {given.module} at every one of its "
                                              f"{len(calls)} calls; change its r/alpha/dropout instead of adding a "
                                              "second LoRA.", "no LoRA", held.path)]
    number = {t.target_node: i for i, t in enumerate(calls, 1)}  # calls are in graph order
    for call in sorted(calls, key=lambda t: t is not given):  # the given call's own problems first
        problems = check_insertion(cm, call, config)
        if problems and call is not given:
            reason = problems[0].message.rstrip(".")
            return [Diagnostic(call.target_node, f"{given.module} runs {len(calls)} times per forward and its LoRA "
                                                 "applies at every call (one adapter, as PEFT and merged weights "
                                                 f"apply it), but its call {number[call.target_node]} "
                                                 f"({call.target_node}) cannot take it: {reason}; nothing was added.",
                               problems[0].expected, problems[0].found)]
        if problems:
            return problems
    return []


def lora_calls(cm, path: str) -> int:
    """How many calls of its module the Add LoRA Layer at `path` is inserted at (1 for a module that runs once)."""
    block = cm.loras.get(path)
    return 0 if block is None else 1 + len(other_calls(cm, block))


def _insert_at(cm, target: Target, config: LoRAConfig, weights: tuple[torch.Tensor, torch.Tensor] | None,
               bare: bool, shared: bool = False) -> LoRABlock:
    """Insert the block at one call of `target`'s module; shared=True reads the LoRA module an earlier call made."""
    gm, graph = cm.gm, cm.gm.graph
    nodes = {n.name: n for n in graph.nodes}
    tnode, xnode = nodes[target.target_node], nodes[target.input_node]
    tval, xval = tnode.meta["val"], xnode.meta["val"]
    path = block_path(target)
    mod_path = path if bare else f"{path}.lora"
    fake = tval.fake_mode
    dtype, device = _weight_placement(gm, target, tval)

    if not shared:
        lora_A = torch.nn.Linear(target.in_features, config.r, bias=False, device=device, dtype=dtype)
        lora_B = torch.nn.Linear(config.r, target.out_features, bias=False, device=device, dtype=dtype)
        if weights is not None:
            with torch.no_grad():
                lora_A.weight.copy_(weights[0])
                lora_B.weight.copy_(weights[1])
        else:
            init_weights(lora_A, lora_B, config)
        container = torch.nn.Module()
        container.add_module("lora_A", lora_A)
        container.add_module("lora_B", lora_B)
        gm.add_submodule(mod_path, container)

    consumer = _consumer_stack(tnode, path.rpartition(".")[0])
    branch_stack = ({**consumer, path: (path, "LoRALayer")} if bare else
                    {**consumer, path: (path, "AddLoRALayer"), mod_path: (mod_path, "LoRALayer")})
    add_stack = {**consumer, path: (path, "AddLoRALayer")}
    new: list[torch.fx.Node] = []
    prefix = path.replace(".", "_")

    cursor = [tnode]  # every new node goes right after the previous one, all before the target's users

    def emit(op, fn, args, name, val, stack):
        with graph.inserting_after(cursor[0]):
            node = graph.create_node(op, fn, args, {}, name=f"{prefix}_{name}")
        node.meta["val"] = val
        node.meta["nn_module_stack"] = stack
        new.append(node)
        cursor[0] = node
        return node

    order = list(target.layout) if target.layout else list(range(tval.dim()))  # target dims in [tokens, out] order
    unpermute = sorted(range(len(order)), key=order.__getitem__)
    with fake:
        xval = xval.transpose(1, 2) if target.kind == "conv1x1" else xval  # [batch, in, seq] -> [batch, seq, in]
        # the values of the reshapes made with their shapes written out (same shape, strides and dtype): a fake
        # reshape re-derives the symbolic sizes through sympy, ~4 ms of a drop's frame
        x2 = xval.new_empty((math.prod(xval.shape[:-1]), target.in_features))  # (tokens…, in) -> (N, in)
        h = x2.new_empty((x2.shape[0], config.r))  # (N, r)
        o = x2.new_empty((x2.shape[0], target.out_features))  # (N, out)
        laid = o.new_empty([tval.shape[d] for d in order])  # (N, out) -> the target's dims, tokens first
        back = laid.permute(unpermute) if target.layout else laid  # -> the target's shape (GPT-NeoX: heads before seq)
        added = _sum_value(tval, back)
    sizes = [emit("call_function", aten.sym_size.int, (tnode, d), f"size{d}", size, branch_stack)
             if isinstance(size, torch.SymInt) else int(size) for d, size in enumerate(tval.shape)]
    x_in = xnode
    if target.kind == "conv1x1":  # a kernel-1 Conv1d reads [batch, in, seq]: the tokens first, as PEFT's conv LoRA
        x_in = emit("call_function", aten.transpose.int, (xnode, 1, 2), "channels_last", xval, branch_stack)
    r_x = emit("call_function", aten.reshape.default, (x_in, [-1, target.in_features]), "x", x2, branch_stack)
    drop = emit("call_function", aten.dropout.default, (r_x, float(config.dropout), False), "dropout", x2, branch_stack)
    a = emit("call_module", f"{mod_path}.lora_A", (drop,), "A", h,
             {**branch_stack, f"{mod_path}.lora_A": (f"{mod_path}.lora_A", "Linear")})
    b = emit("call_module", f"{mod_path}.lora_B", (a,), "B", o,
             {**branch_stack, f"{mod_path}.lora_B": (f"{mod_path}.lora_B", "Linear")})
    scaled = emit("call_function", aten.mul.Tensor, (b, float(config.scaling)), "scale", o, branch_stack)
    if target.layout:  # an interleaved column set: the fixed permutation that lays B·A·x out like the target
        laid_node = emit("call_function", aten.reshape.default, (scaled, [sizes[d] for d in order]), "laid", laid,
                         branch_stack)
        shaped = emit("call_function", aten.permute.default, (laid_node, unpermute), "out", back, branch_stack)
    else:
        shaped = emit("call_function", aten.reshape.default, (scaled, sizes), "out", back, branch_stack)
    add_name = ""
    if not bare:
        add = emit("call_function", aten.add.Tensor, (tnode, shaped), "add", added, add_stack)
        members = set(new)
        tnode.replace_all_uses_with(add, delete_user_cb=lambda user: user not in members)
        add_name = add.name
    _recompile(gm)
    block = LoRABlock(path=path, target=target, config=config, module_path=mod_path,
                      nodes=[n.name for n in new], add_node=add_name, kind="bare" if bare else "add")
    cm.loras[path] = block
    cm.touch()
    return block


def remove_lora(cm, path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove the block at `path` from every call of its module; returns its (A, B) weights so the removal can be
    reverted exactly (`first_call` gives the insertion to insert again)."""
    from graphsurgeon.errors import GraphsurgeonError

    if path not in cm.loras:
        raise GraphsurgeonError(f"there is no LoRA block at {path!r}; existing: {', '.join(cm.loras) or 'none'}.")
    with batched(cm):
        while path in cm.loras:
            weights = _remove_one(cm, path)
    return weights


def first_call(cm, path: str) -> LoRABlock:
    """The insertion of the block at `path` made first (its nodes' names carry no fx suffix; the first call in graph
    order): inserting it again inserts every call in the order and under the names they had."""
    block = cm.loras[path]
    calls = [block] + other_calls(cm, block)
    return min(calls, key=lambda b: (len(b.add_node), b.add_node))


def _remove_one(cm, path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove the block's insertion `cm.loras[path]`; the module's other calls keep the LoRA module and weights."""
    block = cm.loras[path]
    gm, graph = cm.gm, cm.gm.graph
    nodes = {n.name: n for n in graph.nodes}
    others = other_calls(cm, block)  # a module that runs more than once: an insertion per call, one LoRA module
    if block.add_node:
        add = nodes[block.add_node]
        add.replace_all_uses_with(add.args[0])  # the value it added onto (another block's add when stacked)
        if block.add_node not in block.nodes:  # a bare block's wire
            graph.erase_node(add)
    for name in reversed(block.nodes):
        graph.erase_node(nodes[name])
    _free_names(graph, set(block.nodes) | {block.add_node})
    container = gm.get_submodule(block.module_path)
    weights = (container.lora_A.weight.detach().clone(), container.lora_B.weight.detach().clone())
    if others:  # the module's other calls keep the LoRA module and its weights
        cm.loras[path] = others[-1]
    else:
        _delete_submodule(gm, block.module_path)
        del cm.loras[path]
    _recompile(gm)
    cm.touch()
    return weights


def reinsert(cm, block: LoRABlock, config: LoRAConfig, weights) -> LoRABlock:
    """Insert `block` again (same kind, same connection) with `config` and `weights`: for undo and changes."""
    new = insert_lora(cm, block.target, config, weights=weights, check=False, bare=block.kind == "bare")
    if block.kind == "bare" and block.wired_to:
        new = connect_lora(cm, block.path, block.wired_to)
    return new


def check_connect(cm, path: str, onto: str) -> list[Diagnostic]:
    """Why the bare block at `path` cannot be wired onto the value `onto` (empty: it can). Changes nothing."""
    from graphsurgeon.graph.meta import tensor_meta

    block = cm.loras.get(path)
    if block is None:
        return [Diagnostic(onto, f"there is no LoRA block at {path!r}; existing: {', '.join(cm.loras) or 'none'}.")]
    if block.kind != "bare":
        return [Diagnostic(onto, f"{path} is an Add LoRA Layer, already added onto its target; only a bare LoRA Layer "
                                 "is wired by hand.")]
    if block.wired_to:
        return [Diagnostic(onto, f"{path} is already connected onto {block.wired_to}; disconnect it (undo, or delete "
                                 "and insert it again) first.")]
    graph = cm.gm.graph
    nodes = {n.name: n for n in graph.nodes}
    node, out = nodes.get(onto), nodes[block.nodes[-1]]
    if node is None or node.op == "output":
        return [Diagnostic(onto, "this is not a value in the graph; wire onto a link or an output.")]
    want = tensor_meta(out.meta["val"], cm.dims)
    val = node.meta.get("val")
    found = tensor_meta(val, cm.dims) if isinstance(val, torch.Tensor) else None
    expected_text, found_text = f"{want.shape_text} floating point", (f"{found.shape_text} {found.dtype}" if found
                                                                       else "not a tensor")
    if found is None or found.kind != "float":
        return [Diagnostic(onto, "a LoRA output can only be added onto a floating-point tensor.", expected_text, found_text)]
    if found.shape != want.shape:
        return [Diagnostic(onto, f"the output of {path} has another shape; wire it onto a value of shape "
                                 f"{want.shape_text}.", expected_text, found_text)]
    members = {nodes[n] for n in block.nodes}
    order = {n: i for i, n in enumerate(graph.nodes)}
    at = max(node, out, key=order.__getitem__)
    early = [u for u in node.users if u not in members and order[u] <= order[at]]
    if early or node in members:
        who = early[0].name if early else node.name
        return [Diagnostic(onto, f"{who} uses {onto} before the output of {path} is computed; wire it onto a value "
                                 "computed after the LoRA's input.")]
    return []


def connect_lora(cm, path: str, onto: str) -> LoRABlock:
    """Wire a bare LoRA Layer: add its output onto the value `onto` (an fx node name); refused with a reason."""
    problems = check_connect(cm, path, onto)
    if problems:
        raise ValidationError(problems)
    block = cm.loras[path]
    graph = cm.gm.graph
    nodes = {n.name: n for n in graph.nodes}
    node, out = nodes[onto], nodes[block.nodes[-1]]
    members = {nodes[n] for n in block.nodes}
    order = {n: i for i, n in enumerate(graph.nodes)}
    at = max(node, out, key=order.__getitem__)
    stack = {k: v for k, v in _stack(out).items() if not (isinstance(v[0], str) and
                                                          (v[0] == path or v[0].startswith(path + ".")))}
    val = node.meta["val"]
    with val.fake_mode:
        added = val + out.meta["val"]
    with graph.inserting_after(at):
        add = graph.create_node("call_function", aten.add.Tensor, (node, out), {}, name=f"{path.replace('.', '_')}_add")
    add.meta["val"], add.meta["nn_module_stack"] = added, stack
    node.replace_all_uses_with(add, delete_user_cb=lambda user: user is not add and user not in members)
    _recompile(cm.gm)
    block.add_node, block.wired_to = add.name, onto
    cm.touch()
    return block


def disconnect_lora(cm, path: str) -> None:
    """Undo `connect_lora`: the bare block's output is unconnected again, the graph as before."""
    block = cm.loras[path]
    graph = cm.gm.graph
    nodes = {n.name: n for n in graph.nodes}
    add = nodes[block.add_node]
    add.replace_all_uses_with(nodes[block.wired_to])
    graph.erase_node(add)
    _free_names(graph, {block.add_node})
    block.add_node, block.wired_to = "", None
    _recompile(cm.gm)
    cm.touch()


def _free_names(graph: torch.fx.Graph, names: set[str]) -> None:
    """Let erased nodes' names be used again, so undo + redo gives byte-identical code (fx never frees them)."""
    ns = getattr(graph, "_graph_namespace", None)
    used, owners = getattr(ns, "_used_names", None), getattr(ns, "_obj_to_name", None)
    if not isinstance(used, set) or not isinstance(owners, dict):
        return  # another torch: names get a suffix on re-insertion, nothing else changes
    used.difference_update(names)
    for obj in [o for o, n in owners.items() if n in names]:
        del owners[obj]
    counts = getattr(ns, "_base_count", None)  # the last suffix per base: wound back to the highest still used
    if isinstance(counts, dict):
        for name in names:
            suffixed = _SUFFIXED.match(name)
            base = suffixed.group(1) if suffixed else name
            n = counts.get(base, 0)
            while n > 0 and f"{base}_{n}" not in used:
                n -= 1
            if base in counts:
                counts[base] = n


def _delete_submodule(gm: torch.nn.Module, path: str) -> None:
    """Delete `path` and then every now-empty parent that only existed for it (the block's container)."""
    gm.delete_submodule(path)
    parent = path.rpartition(".")[0]
    while parent:
        mod = gm.get_submodule(parent)
        if type(mod) is torch.nn.Module and not list(mod.children()) and not list(mod.parameters(recurse=False)) \
                and not list(mod.buffers(recurse=False)) and parent.rsplit(".", 1)[-1].startswith("lora_"):
            gm.delete_submodule(parent)
            parent = parent.rpartition(".")[0]
        else:
            break


def lora_weights(cm, path: str) -> tuple[torch.nn.Linear, torch.nn.Linear]:
    """The (lora_A, lora_B) modules of a block."""
    container = cm.gm.get_submodule(cm.loras[path].module_path)
    return container.lora_A, container.lora_B


def _sum_value(tval: torch.Tensor, back: torch.Tensor) -> torch.Tensor:
    """The value of ``tval + back`` (equal shapes; inside their fake mode). When both tensors' strides fall strictly at
    their example sizes (every size > 1), TensorIterator lays the sum out contiguously: made so directly, without the
    fake add's symbolic broadcasting and stride reasoning (~4 ms of a drop's frame); otherwise the add itself."""
    if tval.dtype == back.dtype and tval.device == back.device and not (tval.requires_grad or back.requires_grad) \
            and _falling(tval) and _falling(back):
        return tval.new_empty(tval.shape)
    return tval + back


def _falling(t: torch.Tensor) -> bool:
    """Strides strictly decreasing and every size > 1, read at the example sizes (no guard on the shape env)."""
    sizes, strides = [_example(s) for s in t.shape], [_example(s) for s in t.stride()]
    return None not in sizes + strides and all(s > 1 for s in sizes) and all(a > b for a, b in pairwise(strides))


def _example(v) -> int | None:
    if isinstance(v, torch.SymInt):
        return v.node.hint if v.node.has_hint() else None
    return int(v)


def _weight_placement(gm, target: Target, tval) -> tuple[torch.dtype, torch.device]:
    """LoRA weights take the base projection weight's dtype and device (meta stays meta)."""
    try:
        w = gm.get_parameter(f"{target.module}.weight")
        return w.dtype, w.device
    except AttributeError:
        pass
    return tval.dtype, tval.device


def _consumer_stack(tnode: torch.fx.Node, parent: str) -> dict:
    """The target's module stack cut at `parent` (the composite the block sits in): its ancestors only."""
    return {key: (path, cls) for key, (path, cls) in _stack(tnode).items()
            if isinstance(path, str) and (path == parent or parent.startswith(path + ".") or path == ""
                                          or path.startswith("_empty"))}
