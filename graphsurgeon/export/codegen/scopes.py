"""The scopes code is written in: one per module call, function group and LoRA update, from the fx graph.

A scope is a function body to be: its items are fx nodes (statements) and child scopes (calls), in graph
order; its inputs are the values it reads from outside, its outputs the values read outside it. Module calls
come from each node's ``nn_module_stack`` (a key per call, so a module called twice is two scopes); function
groups (the causal-mask builder, rotary embedding) from the semantic layer (`names.function_groups`); an
inserted LoRA becomes the call of a small module at its exported path. Before that the graph is cleaned as a
person would write it: `alias` and same-dtype `.to()` are the value itself, repeated pure ops within one scope
are computed once (CSE), values nobody reads are not computed (DCE). `cm.gm` is never changed.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import torch
import torch.fx

from graphsurgeon.export.codegen import call_kinds, fastpath, lift, names, packing, signatures, soft_casts
from graphsurgeon.graph.hf_meta import DEFAULT_OF
from graphsurgeon.graph.lora_sites import lora_sites

ROOT = ""


@dataclass
class Scope:
    key: str  # the call: nn_module_stack key, "fn:<path>#<n>" or "lora:<path>"; "" for the model itself
    path: str  # module path (the function group's path for functions)
    kind: str  # "root", "module", "function" or "lora"
    cls: str  # class name of the module, or the function's name
    parent: Scope | None = None
    items: list = field(default_factory=list)  # fx nodes and child Scopes, in graph order
    inputs: list = field(default_factory=list)  # fx nodes read from outside, in order of first use
    outputs: list = field(default_factory=list)  # fx nodes read outside, in order of production
    leaf: object = None  # a leaves.Leaf when the module is a torch.nn layer (or a LoRA wrapper)
    lora: object = None  # the LoRABlock this scope writes (kind "lora", or a LoRA-wrapped projection)
    sizes: list = field(default_factory=list)  # size symbols its caller passes (no input tensor has them)
    params: list = field(default_factory=list)  # per input: the parameter name the module's source gives it, or None

    def nodes(self) -> list[torch.fx.Node]:
        """Every fx node inside, at any depth, in order."""
        out = []
        for item in self.items:
            out += item.nodes() if isinstance(item, Scope) else [item]
        return out

    def scopes(self) -> list[Scope]:
        """This scope and every scope below it, parents first."""
        out = [self]
        for item in self.items:
            if isinstance(item, Scope):
                out += item.scopes()
        return out


@dataclass
class Program:
    """The cleaned graph cut into scopes."""

    cm: object
    root: Scope
    canon: dict  # node -> the node whose value it is (identity ops, CSE)
    users: dict  # node -> live nodes reading it (after canon), in graph order
    order: dict  # node -> position in the graph
    owner: dict  # live node -> its scope
    params: dict  # get_attr node -> every name of that tensor (tied weights have several)
    defaults: dict = field(default_factory=dict)  # node holding HF's default of an optional input -> that input
    soft: dict = field(default_factory=dict)  # `.to(dtype)` of a tensor already of that dtype -> its input
    constants: dict = field(default_factory=dict)  # get_attr of a small lifted constant -> its tensor (a literal)
    packs: dict = field(default_factory=dict)  # key of a mask-builder function scope -> the packed-sequence input
    loras: list = field(default_factory=list)  # every call of each LoRA block (graph/lora_sites.py)

    def rep(self, value, scope: Scope | None = None):
        """The value a node stands for after identity ops and CSE. Read from another scope than its own, a
        `.to(dtype)` that changed nothing is its input (tracing gives later readers of a tensor the last node that
        returned it: RMSNorm's `x.to(float32)` would otherwise leak out as the residual)."""
        while isinstance(value, torch.fx.Node):
            if value in self.canon:
                value = self.canon[value]
            elif value in self.soft and scope is not None and self.owner.get(value) is not scope:
                value = self.soft[value]
            else:
                break
        return value


INLINE_NUMEL = 16  # constants torch.export lifted out of the code (an index tensor [-2]) up to this size are literals


def inline_constant(t: torch.Tensor) -> bool:
    """True for a small constant tensor model.py writes as `torch.tensor([...])` (not stored in model.safetensors)."""
    return isinstance(t, torch.Tensor) and not t.is_meta and t.numel() <= INLINE_NUMEL and not t.is_floating_point() \
        or (isinstance(t, torch.Tensor) and not t.is_meta and t.dim() == 0)


def lora_export_name(block) -> str:
    """Module path of a LoRA in the exported tree: the target `T`, `<fused module>.<role>` for a slice, and
    the block's own path for a bare LoRA Layer added onto another value than its projection's output."""
    t = block.target
    if not block.mergeable:
        return block.path
    return f"{t.module}.{t.role}" if t.is_slice else t.module


def export_path(blocks, name: str) -> str:
    """A graph name under a LoRA's module (`layers.0.lora_q.lora.lora_A`) at its exported place (`layers.0.q.lora_A`)."""
    for b in blocks:
        if name.startswith(b.module_path + "."):
            return lora_export_name(b) + name[len(b.module_path):]
    return name


def is_symbolic(node: torch.fx.Node) -> bool:
    """Sizes and size arithmetic (SymInt values): written as expressions of the dims, never as statements."""
    val = node.meta.get("val")
    return isinstance(val, (torch.SymInt, torch.SymFloat, torch.SymBool, int, float)) and not isinstance(val, bool) \
        and node.op == "call_function" and lift.op_key(node) not in DATA_DEPENDENT


DATA_DEPENDENT = ("item", "_local_scalar_dense")  # a number read from a tensor's data: a statement (`n = x.item()`)


def _stack(node: torch.fx.Node) -> list[tuple[str, str, str]]:
    """(key, path, class) of the module calls the node ran in, outermost first, the model itself left out."""
    out = []
    for key, value in (node.meta.get("nn_module_stack") or {}).items():
        path, cls = value
        if not isinstance(path, str) or path == "" or path.startswith("_empty") or str(key).startswith("_empty"):
            continue
        cls = cls if isinstance(cls, str) else getattr(cls, "__name__", str(cls))
        if out and out[-1][1] == path and out[-1][0] == key:
            continue
        out.append((str(key), path, cls.rsplit(".", 1)[-1]))
    return out


def build(cm) -> Program:
    """Cut the captured graph into scopes (see the module docstring)."""
    graph = cm.gm.graph
    order = {n: i for i, n in enumerate(graph.nodes)}
    loras = lora_sites(cm)
    chains, lora_of = _chains(cm, loras)
    canon: dict = {}
    emitted = []
    for node in graph.nodes:
        if node.op not in ("call_function", "call_module") or node.target == "_guards_fn":
            continue
        if node.op == "call_function" and (lift.op_key(node) in lift.SKIP or is_symbolic(node)):
            continue
        if node.op == "call_function" and lift.is_identity(node) and isinstance(node.args[0], torch.fx.Node) \
                and DEFAULT_OF not in node.meta:
            canon[node] = node.args[0]
            continue
        emitted.append(node)
    canon.update(fastpath.repeat_kv(emitted, canon))
    prog = Program(cm, Scope(ROOT, "", "root", cm.model_class), canon, {}, order, {}, {},
                   soft=soft_casts.soft(emitted), loras=loras)
    _cse(prog, emitted, chains)
    live = _live(prog, emitted)
    aliases = tensor_aliases(cm.gm)
    for n in graph.nodes:
        if n.op == "get_attr":
            prog.params[n] = aliases.get(str(n.target), [str(n.target)])
            if str(n.target) not in aliases:
                owner, _, leaf = str(n.target).rpartition(".")
                value = getattr(cm.gm.get_submodule(owner) if owner else cm.gm, leaf, None)
                if inline_constant(value):
                    prog.constants[n] = value.detach().cpu()
    scopes: dict[str, Scope] = {ROOT: prog.root}
    for node in emitted:
        if node not in live:
            continue
        scope = prog.root
        chain = chains[node]
        if node.target is operator.getitem and isinstance(node.args[0], torch.fx.Node) and node.args[0] in prog.owner:
            scope = prog.owner[node.args[0]]  # a tuple element lives where the tuple is made
            chain = []
        for key, path, cls, kind in chain:
            if key not in scopes:
                child = Scope(key, path, kind, cls, parent=scope, lora=lora_of.get(key))
                scopes[key] = child
                scope.items.append(child)
            scope = scopes[key]
        scope.items.append(node)
        prog.owner[node] = scope
    # one module called with different code: written where it is called, before the reads are counted (a no-op cast
    # read from another call's scope is its input there, but itself once both calls are in one scope: DeepSeek V4)
    for scope in call_kinds.unalike(prog):
        _flatten(prog, scope)
    soft_casts.keep_call_arguments(prog)
    for node, users in _users(prog, live).items():
        prog.users[node] = users
    soft_casts.drop_unread(prog)
    _settle(prog, prog.root)
    _optional_inputs(prog)
    packing.thread(prog)
    return prog


def _optional_inputs(prog: Program) -> None:
    """An input the captured graph computes when it is not given (position_ids): every scope down to the value
    HF computes as its default takes it, so the code can write `position_ids if position_ids is not None else …`
    (inputs_embeds: the token embedding's lookup, hf_forward.inputs_embeds_node)."""
    from graphsurgeon.export.hf_forward import inputs_embeds_node

    embeds = inputs_embeds_node(prog.cm)
    made: dict[str, torch.fx.Node] = {}
    for node, scope in list(prog.owner.items()):
        name = "inputs_embeds" if node is embeds else node.meta.get(DEFAULT_OF)
        if not name:
            continue
        if name not in made:
            made[name] = torch.fx.Graph().placeholder(name)
        pseudo = made[name]
        prog.defaults[node] = pseudo
        prog.users.setdefault(pseudo, []).append(node)
        if node is embeds and scope.items == [node]:  # an nn.Embedding: its caller writes the default
            scope = scope.parent
        while scope is not None:
            if pseudo not in scope.inputs:
                scope.inputs.append(pseudo)
            scope = scope.parent


def _chains(cm, loras: list) -> tuple[dict, dict]:
    """Every node's scope chain: (key, path, class, kind) from its module stack, function group, LoRA (each call
    of a LoRA module its own scope)."""
    graph = cm.gm.graph
    groups = names.function_groups(cm)
    by_name = {n.name: n for n in graph.nodes}
    chains, lora_of = {}, {}
    for node in graph.nodes:
        chain = [(k, p, c, "module") for k, p, c in _stack(node)]
        group = groups.get(node.name)
        if group is not None:  # one scope per call: a module called twice calls its function twice
            path, function, key = group
            chain.append((f"{key}|{chain[-1][0] if chain else ''}", path, function, "function"))
        chains[node] = chain
    calls: dict[str, int] = {}
    for block in loras:
        if not block.add_node:
            continue
        add = by_name.get(block.add_node)
        members = [by_name[n] for n in block.nodes if n in by_name and n != block.add_node]
        if add is None:
            continue
        export = lora_export_name(block)
        if _wraps(cm, block, by_name):  # the projection itself becomes LoRALinear / LoRAConv1D
            inner = chains[by_name[block.target.target_node]]
            for n in members + [add]:
                chains[n] = list(inner)
            lora_of[inner[-1][0]] = block
            continue
        outer = [c for c in chains[add] if not (c[1] == block.path or c[1].startswith(block.path + "."))]
        while outer and not export.startswith(outer[-1][1] + "."):
            outer.pop()  # the LoRA module must be reachable from the scope that calls it
        chains[add] = outer
        tail = _after_lora_reshape(members)  # laying an interleaved column set out (a permute) stays in the caller
        calls[export] = calls.get(export, 0) + 1
        key = f"lora:{export}" + (f"@{calls[export] - 1}" if calls[export] > 1 else "")
        for n in members:
            chains[n] = outer if n in tail else outer + [(key, export, "LoRA", "lora")]
        lora_of[key] = block
    return chains, lora_of


def _after_lora_reshape(members: list[torch.fx.Node]) -> list[torch.fx.Node]:
    """The block's ops after the reshape that follows its scaling: the LoRA module computes B·A·x scaled and
    shaped like the target's rows; a permutation after that (an interleaved column set) is the caller's code."""
    scale = next((i for i, n in enumerate(members) if n.op == "call_function" and lift.op_key(n) == "mul"), None)
    if scale is None:
        return []
    after = members[scale + 1:]
    shaped = next((i for i, n in enumerate(after) if lift.op_key(n) in ("reshape", "view", "_unsafe_view")), None)
    return after[shaped + 1:] if shaped is not None else []


def _wraps(cm, block, by_name) -> bool:
    """A LoRA on a whole Linear / Conv1D whose module call is only that projection: written as the wrapped layer."""
    t = block.target
    if not block.mergeable or t.is_slice:
        return False
    target = by_name.get(t.target_node)
    stack = _stack(target) if target is not None else []
    if not stack or stack[-1][1] != t.module:
        return False
    key = stack[-1][0]
    ops = [lift.op_key(n) for n in cm.gm.graph.nodes if n.op == "call_function" and _stack(n)
           and _stack(n)[-1][0] == key and lift.op_key(n) not in lift.SKIP and not is_symbolic(n)]
    return ops in (["linear"], ["view", "addmm", "view"], ["reshape", "addmm", "reshape"], ["conv1d"])


def _cse(prog: Program, emitted: list, chains: dict) -> None:
    """Pure ops repeated with the same inputs in the same scope: the later ones are the first one's value."""
    seen: dict = {}
    for node in emitted:
        if node.op != "call_function" or lift.op_key(node) in lift.IMPURE or node.target is operator.getitem \
                or DEFAULT_OF in node.meta:
            continue
        scope = chains[node][-1][0] if chains[node] else ROOT
        try:
            key = (scope, node.target, _freeze(prog, node.args), _freeze(prog, tuple(node.kwargs.items())))
            hash(key)
        except TypeError:
            continue
        if key in seen:
            prog.canon[node] = seen[key]
        else:
            seen[key] = node


def _freeze(prog: Program, value):
    if isinstance(value, torch.fx.Node):
        return ("node", prog.rep(value).name)
    if isinstance(value, (list, tuple)):
        return (type(value).__name__,) + tuple(_freeze(prog, v) for v in value)
    if isinstance(value, (torch.SymInt, torch.SymFloat)):
        return ("sym", str(value.node.expr))
    if isinstance(value, float) and value != value:
        return ("nan",)
    return value


def _inputs_of(node: torch.fx.Node) -> list[torch.fx.Node]:
    return list(node.all_input_nodes)


def _live(prog: Program, emitted: list) -> set:
    """Nodes whose value reaches an output (or that mutate something)."""
    graph = prog.cm.gm.graph
    out = next(n for n in graph.nodes if n.op == "output")
    todo = [prog.rep(n) for n in out.all_input_nodes]
    todo += [n for n in emitted if n.op == "call_function" and lift.op_key(n).endswith("_")
             and lift.op_key(n) not in lift.SKIP and n not in prog.canon]
    live: set = set()
    while todo:
        n = prog.rep(todo.pop())
        if n in live:
            continue
        live.add(n)
        todo += [prog.rep(a) for a in _inputs_of(n)]
    return {n for n in emitted if n in live and n not in prog.canon}


def _users(prog: Program, live: set) -> dict:
    users: dict = {}
    graph = prog.cm.gm.graph
    for node in graph.nodes:
        if node not in live and node.op != "output":
            continue
        scope = prog.owner.get(node, prog.root)
        for a in _inputs_of(node):
            users.setdefault(prog.rep(a, scope), []).append(node)
    return users


def reads(prog: Program, node: torch.fx.Node) -> list[torch.fx.Node]:
    """The values a statement reads (after canon), SymInt arithmetic looked through to the tensors it measures."""
    out = []
    for a in _inputs_of(node):
        a = prog.rep(a, prog.owner.get(node, prog.root))
        if a.op == "call_function" and is_symbolic(a):
            continue
        out.append(a)
    return out


def _settle(prog: Program, scope: Scope) -> None:
    """Inputs and outputs of every scope; a child whose call cannot stand in one place is inlined into its parent."""
    changed = True
    while changed:
        changed = False
        for s in scope.scopes():
            if s.kind == "root":
                continue
            inside = set(s.nodes())
            first = min(prog.order[n] for n in inside) if inside else 0
            for n in inside:
                for a in reads(prog, n):
                    if a not in inside and a.op == "call_function" and prog.order[a] > first:
                        _flatten(prog, s)  # it reads a value its parent computes after the call starts
                        changed = True
                        break
                if changed:
                    break
            if changed:
                break
    declared: dict = {}  # id of a module scope -> (inputs in declared order, their parameter names)
    for s in scope.scopes():  # parents first: a call is read with its caller's parameter names known
        ins, outs = _io(prog, s)
        if s.kind == "root":
            ins = [n for n in prog.cm.gm.graph.nodes if n.op == "placeholder"]
        elif s.kind == "function":
            ins = signatures.as_called(prog, s, ins)
        elif s.kind == "module":
            outs = signatures.as_returned(prog, s, outs)
            if id(s) not in declared:
                declared.update(signatures.as_declared(prog, _alike_siblings(s), lambda c: _io(prog, c)[0]))
            ins, s.params = declared[id(s)]
        s.inputs, s.outputs = ins, outs


def _io(prog: Program, s: Scope) -> tuple[list, list]:
    """The values a scope reads from outside (in order of first use) and those read outside it (in order made)."""
    inside = set(s.nodes())
    ins, outs = [], []
    for n in s.nodes():
        for a in reads(prog, n):
            if a not in inside and a not in ins and not (a.op == "get_attr" and owns(s, prog.params[a])) \
                    and a not in prog.constants:
                ins.append(a)
    for n in s.nodes():
        if any(u not in inside for u in prog.users.get(n, [])):
            outs.append(n)
    return ins, outs


def _alike_siblings(s: Scope) -> list[Scope]:
    """The calls of the layers of one list with s's class (h.0, h.1, …): they get one parameter order."""
    prefix, _, last = s.path.rpartition(".")
    if not last.isdigit() or s.parent is None:
        return [s]
    return [x for x in s.parent.items if isinstance(x, Scope) and x.kind == "module" and x.cls == s.cls
            and x.path.rpartition(".")[0] == prefix and x.path.rpartition(".")[2].isdigit()]


def owns(scope: Scope, names: list[str]) -> str | None:
    """The name (of a tensor's names) reachable as self.<...> in the class of `scope`, or None."""
    for name in names:
        if scope.kind == "root" or (scope.kind in ("module", "lora") and name.startswith(scope.path + ".")):
            return name
    return None


def tensor_aliases(gm) -> dict[str, list[str]]:
    """Every parameter / buffer name -> all names of its tensor (tied weights), in registration order."""
    by_id: dict[int, list[str]] = {}
    for name, t in list(gm.named_parameters(remove_duplicate=False)) + list(gm.named_buffers(remove_duplicate=False)):
        by_id.setdefault(id(t), []).append(name)
    return {name: names for names in by_id.values() for name in names}


def _flatten(prog: Program, scope: Scope) -> None:
    parent = scope.parent
    i = parent.items.index(scope)
    parent.items[i:i + 1] = scope.items
    for item in scope.items:
        if isinstance(item, Scope):
            item.parent = parent
        else:
            prog.owner[item] = parent
    first = lambda item: prog.order[item.nodes()[0] if isinstance(item, Scope) else item]
    parent.items.sort(key=first)  # its ops go back between the parent's calls, in the order they run
