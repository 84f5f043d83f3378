"""Display names of values, as the model's authors wrote them, per module scope.

A value's name depends on where it is read: inside ``LlamaAttention`` the output of ``q_proj`` is a step of
``query_states = self.q_proj(hidden_states).view(...).transpose(1, 2)`` (so it is the ``query``), while the
transpose at the end of that line *is* ``query_states``. So names are asked for a scope (a module path):

1. LoRA branches: ``lora_q.x → lora_q.Ax → lora_q.BAx → lora_q.out``; the sum keeps the adapted value's
   name, the value before it becomes ``<name>_base``.
2. Graph inputs keep their names; the graph's outputs are named by the model's output names (``logits``).
3. The result of a statement in that scope takes the name its left-hand side assigns (``query_states``);
   a ``return`` gives the name the caller assigns. The values a submodule call gives are lined up with the
   left-hand side by where the submodule's ``return`` puts them (T5Attention returns ``attn_output,
   position_bias`` although it computes the bias first).
4. Otherwise the value's role (``query``, ``attn_weights``, ``causal_mask``, ``cos`` …), the operand an attention
   core reads it as (``key``), the attribute name of the submodule that returned it (``gate_proj``), or the op
   (``view``).
A name the source rebinds (`query_states = query_states.view(...).transpose(1, 2)`) is the name of each value it
is bound to; `rebound_steps` says which binding each one is. (`unique_names` suffixes names for lists that need them
unique.)
"""

from __future__ import annotations

import operator
import re

import torch
import torch.fx

from graphsurgeon.graph.semantics.dataflow import op_of
from graphsurgeon.graph.semantics.inlined import inlined_names
from graphsurgeon.graph.semantics.source import assigned_names, module_paths, returned_names, scope_frames

ROLE_NAMES = {
    "query": "query", "key": "key", "value": "value", "qkv": "qkv", "attn_output": "attn_output",
    "attn_weights": "attn_weights", "causal_mask": "causal_mask", "attention_mask": "attention_mask",
    "cos": "cos", "sin": "sin", "logits": "logits", "token_embedding": "inputs_embeds",
    "position_embedding": "position_embeds", "token_type_embedding": "token_type_embeds",
}
# the first names of a statement's LHS that a value's role may override when they do not line up
_STRONG = {"cos", "sin", "query", "key", "value"}
_LORA_STEPS = {"x": "x", "dropout": "dropout", "A": "Ax", "B": "BAx", "scale": "scaled", "out": "out"}


class Namer:
    """Display names of the values of one graph (cached per value and scope depth)."""

    def __init__(self, gm: torch.fx.GraphModule, roles, loras: dict, output_names: list[str]) -> None:
        self.roles = roles
        self._cache: dict[tuple[torch.fx.Node, int], str] = {}
        self._statements: dict[int, dict[tuple, list[torch.fx.Node]]] = {}
        self._inlined_names: dict[tuple, dict[torch.fx.Node, str]] = {}  # statement -> names its callee gives
        self._iterations: dict[tuple, dict[str | None, list[torch.fx.Node]]] = {}  # (depth, key) -> call -> members
        self._result_memo: dict[tuple, list[torch.fx.Node]] = {}  # (depth, key, call) -> _results
        self._returning: set[tuple[torch.fx.Node, int]] = set()  # return positions being worked out (no loops)
        self._operands = {op.node: op.role for a in getattr(roles, "attentions", []) for op in a.operands.values()
                          if op.node is not None}
        self._nodes = list(gm.graph.nodes)
        self._outputs: dict[torch.fx.Node, str] = {}
        out = next((n for n in reversed(self._nodes) if n.op == "output"), None)
        if out is not None:
            flat = out.args[0] if isinstance(out.args[0], (list, tuple)) else [out.args[0]]
            for i, v in enumerate(flat):
                if isinstance(v, torch.fx.Node) and i < len(output_names):
                    self._outputs.setdefault(v, output_names[i])
        self._lora: dict[str, str] = {}  # fx name -> fixed display name
        self._base: dict[str, str] = {}  # fx name of an adapted value -> fx name of the LoRA sum that replaces it
        for block in loras.values():
            short = block.path.rsplit(".", 1)[-1]
            for name in block.nodes:
                step = name.rsplit("_", 1)[-1]
                if name != block.add_node:
                    self._lora[name] = f"{short}.{_LORA_STEPS.get(step, step)}"
            if block.add_node and block.onto:
                self._base[block.onto] = block.add_node
        by_name = {n.name: n for n in self._nodes}
        self._sums = {add: by_name[base] for base, add in self._base.items() if base in by_name}  # sum -> adapted value

    # ---- public -------------------------------------------------------------------------------
    def name(self, node: torch.fx.Node, scope: tuple[str, ...] = ("",)) -> str:
        """The name of `node` as the code of the module with module chain `scope` reads it."""
        depth = _common_depth(module_paths(node), scope)
        key = (node, depth)
        if key not in self._cache:
            self._cache[key] = self._name(node, depth)
        return self._cache[key]

    def statement(self, node: torch.fx.Node, scope: tuple[str, ...] = ("",)) -> str | None:
        """The source line of the module with chain `scope` that computes `node` (None: not known)."""
        depth = _common_depth(module_paths(node), scope)
        frames = scope_frames(node) if node.op == "call_function" or node.op == "call_module" else ()
        return frames[depth].code if depth < len(frames) and frames[depth] is not None else None

    # ---- rules --------------------------------------------------------------------------------
    def _name(self, node: torch.fx.Node, depth: int) -> str:
        if node.name in self._lora:
            return self._lora[node.name]
        if node.name in self._sums:  # the LoRA sum reads like the value it adapts
            return self._plain(self._sums[node.name], depth)
        plain = self._plain(node, depth)
        return f"{plain}_base" if node.name in self._base else plain

    def _plain(self, node: torch.fx.Node, depth: int) -> str:
        if node.op == "placeholder":
            return node.name
        if node in self._outputs:
            return self._outputs[node]
        role = self.roles.values.get(node)
        named = self._from_source(node, depth)
        if named and not (role in _STRONG and named.endswith("embeddings")):
            return named
        if role in ROLE_NAMES:
            return ROLE_NAMES[role]
        if node in self._operands:  # what an attention core reads, named by nothing else (GQA's repeat_kv result)
            return self._operands[node]
        child = _child_attr(node, depth)
        if child:
            return child
        return self._inlined(node, depth) or self._step_of(node, depth) or _op_name(node)

    def _inlined(self, node: torch.fx.Node, depth: int) -> str | None:
        """A temporary of a function the line at `depth` calls whose own frames the capture lost (inlined.py)."""
        frames = scope_frames(node)
        if depth != len(frames) - 1 or frames[depth] is None:
            return None
        key = _statement_key(node, depth)
        found = self._inlined_names.get(key)
        if found is None:
            frame = frames[depth]
            found = self._inlined_names[key] = inlined_names(self._statement_index(depth).get(key, []), frame.file,
                                                             frame.code)
        return found.get(node)

    def _step_of(self, node: torch.fx.Node, depth: int) -> str | None:
        """`query_states.view` for a step inside `query_states = x.view(...).transpose(1, 2)` (one name assigned)."""
        frames = scope_frames(node)
        if depth >= len(frames) or frames[depth] is None or frames[depth].code.startswith("return"):
            return None
        names = assigned_names(frames[depth].code)
        if len(names) != 1 or names[0] == "_":
            return None
        return f"{names[0]}.{_op_name(node)}"

    def _from_source(self, node: torch.fx.Node, depth: int, hops: int = 0) -> str | None:
        """The LHS name of the statement at `depth` if `node` is one of its results (a `return` asks the caller)."""
        frames = scope_frames(node)
        if depth >= len(frames) or frames[depth] is None or hops > 8:
            return None
        frame = frames[depth]
        results = self._results(node, depth)
        if node not in results:
            return None
        if frame.code.startswith("return") and depth > 0:
            return self._from_source(node, depth - 1, hops + 1)
        names = [n for n in assigned_names(frame.code)]
        if not names:
            return None
        if len(names) > 1:  # lined up by position: a step a LoRA adapts inside the line is no result of it
            results = [r for r in results if not self._adapted_inside(r, depth)]
            if node not in results:
                return None
        if len(names) == len(results) or (len(names) > len(results) and len(results) == 1):
            pick = names[results.index(node)] if len(names) == len(results) else names[0]
        elif len(names) == 1:
            role = self.roles.values.get(node)
            pick = ROLE_NAMES.get(role) if role in _STRONG else names[0]
        else:
            pick = names[results.index(node)] if results.index(node) < len(names) else None
        return pick if pick and pick != "_" else None

    def _adapted_inside(self, node: torch.fx.Node, depth: int) -> bool:
        """Whether `node` is a step of its line that a LoRA adapts and the line goes on from (a LoRA on one of Bloom's
        fused q/k/v slices, transposed after it): read outside the line only by the LoRA, whose sum the line reads."""
        key = _statement_key(node, depth)
        outside = [u for u in node.users if u.op == "output" or _statement_key(u, depth) != key]
        if not outside or not all(u.name in self._lora or u.name in self._sums for u in outside):
            return False
        return any(_statement_key(v, depth) == key for u in outside if u.name in self._sums for v in u.users)

    def _results(self, node: torch.fx.Node, depth: int) -> list[torch.fx.Node]:
        """The values of node's statement (at `depth`) that are read outside it, in LHS order."""
        key = _statement_key(node, depth)
        call = _looped_call(node, depth)
        memo_key = (depth, key, call)
        if memo_key in self._result_memo:  # the same for every value of one statement (and loop iteration)
            return self._result_memo[memo_key]
        members = self._statement_index(depth).get(key, [])
        if call is not None:  # a line in a loop over layers: each layer's call has its own results
            members = self._iteration(depth, key, members, call)
        out = []
        for n in members:
            if n.op == "output":
                continue
            for u in n.users:
                if u.op == "output" or _statement_key(u, depth) != key or _next_iteration(n, u, depth):
                    out.append(n)
                    break
        positions = {n: self.return_position(n, depth) for n in out} if len(out) > 1 else {}
        out = sorted(out, key=_lhs_order(out, positions))
        if not self._returning:  # a result read inside the cycle guard of return_position may differ: not kept
            self._result_memo[memo_key] = out
        return out

    def _iteration(self, depth: int, key, members: list[torch.fx.Node], call: str) -> list[torch.fx.Node]:
        """The statement's members that ran in loop iteration `call` or outside any (graph order), grouped once per
        statement: an 80-layer loop line has every layer's ops as members."""
        groups = self._iterations.get((depth, key))
        if groups is None:
            groups = {}
            for n in members:
                groups.setdefault(_looped_call(n, depth), []).append(n)
            self._iterations[(depth, key)] = groups
        if None not in groups:
            return groups.get(call, [])
        order = {n: i for i, n in enumerate(members)}
        return sorted(groups.get(call, []) + groups[None], key=order.__getitem__)

    def return_position(self, node: torch.fx.Node, depth: int) -> int | None:
        """Where `node` stands in the `return` of the module below `depth` that made it (None: not known)."""
        frames = scope_frames(node)
        if depth + 1 >= len(frames) or frames[depth + 1] is None or (node, depth) in self._returning:
            return None
        frame = frames[depth + 1]
        returned = returned_names(frame.file, frame.line)
        if not any(returned):
            return None
        self._returning.add((node, depth))
        try:
            inner = self._plain(node, depth + 1)
        finally:
            self._returning.discard((node, depth))
        return returned.index(inner) if inner in returned else None

    def _statement_index(self, depth: int) -> dict[tuple, list[torch.fx.Node]]:
        if depth not in self._statements:
            index: dict[tuple, list[torch.fx.Node]] = {}
            for n in self._nodes:
                k = _statement_key(n, depth)
                if k is not None:
                    index.setdefault(k, []).append(n)
            self._statements[depth] = index
        return self._statements[depth]


def _common_depth(chain: tuple[str, ...], scope: tuple[str, ...]) -> int:
    depth = 0
    for a, b in zip(chain, scope):
        if a != b:
            break
        depth += 1
    return max(depth - 1, 0)


def _statement_key(node: torch.fx.Node, depth: int):
    if node.op in ("placeholder", "get_attr", "output"):
        return None
    frames = scope_frames(node)
    if depth >= len(frames) or frames[depth] is None:
        return None
    f = frames[depth]
    return (module_paths(node)[depth], f.file, f.line)


_INDEXED = re.compile(r"^(.*)\.(\d+)$")


def _next_iteration(node: torch.fx.Node, user: torch.fx.Node, depth: int) -> bool:
    """True when `user` runs in the next call of a loop over numbered submodules (h.0 -> h.1)."""
    a, b = module_paths(node), module_paths(user)
    if len(a) <= depth + 1 or len(b) <= depth + 1 or a[depth + 1] == b[depth + 1]:
        return False
    ma, mb = _INDEXED.match(a[depth + 1]), _INDEXED.match(b[depth + 1])
    return bool(ma and mb and ma.group(1) == mb.group(1))


def _looped_call(node: torch.fx.Node, depth: int) -> str | None:
    """The numbered submodule (`block.0`) below `depth` the op ran in, if any: one iteration of a loop."""
    mods = module_paths(node)
    return mods[depth + 1] if len(mods) > depth + 1 and _INDEXED.match(mods[depth + 1]) else None


def _lhs_order(results: list[torch.fx.Node], positions: dict):
    """Parts of one tuple (split outputs) by their index; values a submodule returns by their place in its
    `return` (`positions`, when every one is known); anything else in graph order."""
    index = {n: i for i, n in enumerate(results)}
    known = bool(positions) and all(positions.get(n) is not None for n in results) \
        and len(set(positions.values())) == len(results)

    def key(n: torch.fx.Node):
        if n.op == "call_function" and n.target is operator.getitem and isinstance(n.args[1], int):
            return (0, n.args[1], index[n])
        if known:
            return (1, positions[n], index[n])
        return (1, index[n], 0)
    return key


def _child_attr(node: torch.fx.Node, depth: int) -> str | None:
    """The attribute name of the submodule (one below `depth`) whose output `node` is."""
    mods = module_paths(node)
    if len(mods) <= depth + 1:
        return None
    if any(len(module_paths(u)) > depth + 1 and module_paths(u)[depth + 1] == mods[depth + 1] for u in node.users):
        return None  # still inside that submodule
    return mods[depth + 1].rsplit(".", 1)[-1]


def _op_name(node: torch.fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target).rsplit(".", 1)[-1]
    if node.op == "get_attr":
        return str(node.target).rsplit(".", 1)[-1]
    name = op_of(node).strip("_")
    return {"getitem": "part", "and": "and_", "or": "or_"}.get(name, name)


def rebound_steps(names: list[str], statements: list[str | None]) -> list[str]:
    """For values in order with their display names and source lines: "" for a name carried by one value, else which
    binding of the name each is ("query_states, 2 of 2: query_states = query_states.view(…).transpose(1, 2)")."""
    total: dict[str, int] = {}
    for n in names:
        total[n] = total.get(n, 0) + 1
    seen: dict[str, int] = {}
    out = []
    for n, code in zip(names, statements):
        seen[n] = seen.get(n, 0) + 1
        if total[n] == 1:
            out.append("")
            continue
        where = f": {code}" if code else ""
        out.append(f"{n}, {seen[n]} of {total[n]}{where}")
    return out


def unique_names(names: list[str]) -> list[str]:
    """Make names unique in order: the first keeps its name, later ones get _1, _2 …"""
    seen: dict[str, int] = {}
    taken = set(names)
    out = []
    for n in names:
        if n not in seen:
            seen[n] = 0
            out.append(n)
            continue
        k = seen[n] + 1
        while f"{n}_{k}" in taken:
            k += 1
        seen[n] = k
        taken.add(f"{n}_{k}")
        out.append(f"{n}_{k}")
    return out
